"""The cluster directory's leases (in memory and in a real redis-server), placement by load,
and which requests the router sends on."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from loadtest.redis_server import RedisServer
from service import routing
from service.cli import main
from service.directory import (
    Directory,
    DirectoryUnavailable,
    MemoryDirectory,
    NodeStats,
    RedisDirectory,
    parse_table_address,
)
from service.metrics import FORWARDED_HOWS, RelayMetrics
from service.placement import choose_node
from service.routing import match_route, room_of_offer

# What must still be held is leased far longer than any stall of a loaded machine; what must
# lapse is leased briefly and waited out: neither check depends on how fast the test runs.
LONG_LEASE_SECONDS = 60.0
SHORT_LEASE_SECONDS = 0.4


def node(node_id: str, **changes: object) -> NodeStats:
    values: dict[str, object] = {
        "node_id": node_id,
        "url": f"http://{node_id}:8080",
        "state": "ready",
        "cpu_percent": 10.0,
        "participants": 0,
        "speakers": 0,
        "max_rooms": 100,
        "max_cpu_percent": None,
    }
    values.update(changes)
    return NodeStats(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
def directory(request: pytest.FixtureRequest) -> Directory:
    if request.param == "memory":
        return MemoryDirectory()
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisDirectory(server.url)


def test_leases_are_claimed_renewed_released_and_lapse(directory: Directory) -> None:
    async def scenario() -> None:
        room = f"r-{id(directory)}"
        assert await directory.owner(room) is None
        assert await directory.claim(room, "a", LONG_LEASE_SECONDS) == "a"
        assert await directory.claim(room, "b", LONG_LEASE_SECONDS) == "a"  # a holds it
        assert await directory.claim(room, "b", LONG_LEASE_SECONDS, replacing="a") == "b"
        await directory.renew("a", [room], LONG_LEASE_SECONDS)  # a's renewal takes nothing back
        assert await directory.owner(room) == "b"
        assert (await directory.room_counts()).get("b") == 1
        await directory.release("a", [room])
        assert await directory.owner(room) == "b"
        await directory.release("b", [room])
        assert await directory.owner(room) is None
        await directory.renew("b", [room], LONG_LEASE_SECONDS)  # a free room is taken back
        assert await directory.owner(room) == "b"
        await directory.publish(node("b", rooms=[{"room": room}]), LONG_LEASE_SECONDS)
        assert [n.rooms for n in await directory.nodes()] == [[{"room": room}]]
        await directory.publish(node("b", rooms=[{"room": room}]), SHORT_LEASE_SECONDS)
        await directory.renew("b", [room], SHORT_LEASE_SECONDS)
        await asyncio.sleep(SHORT_LEASE_SECONDS * 1.5)
        assert await directory.owner(room) is None  # a renewal sets the lease, shorter too
        assert await directory.nodes() == []  # so does publishing
        await directory.renew("b", [room], SHORT_LEASE_SECONDS)
        await directory.renew("b", [room], LONG_LEASE_SECONDS)
        await asyncio.sleep(SHORT_LEASE_SECONDS * 1.5)
        assert await directory.owner(room) == "b"  # renewed: held past the first lease's end
        await directory.publish(node("c"), LONG_LEASE_SECONDS)
        await directory.claim(room, "c", LONG_LEASE_SECONDS, replacing="b")
        await directory.withdraw("c", [room])
        assert await directory.nodes() == [] and await directory.owner(room) is None
        await directory.close()

    asyncio.run(scenario())


def test_redis_gone_is_reported_as_unavailable(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: redis-server)")
    server = RedisServer(tmp_path)

    async def scenario() -> None:
        directory = RedisDirectory(server.url)  # nothing listens on the port
        with pytest.raises(DirectoryUnavailable):
            await directory.owner("x")
        server.start()
        try:
            assert await directory.claim("x", "a", 5.0) == "a"
        finally:
            server.stop()
        with pytest.raises(DirectoryUnavailable):
            await directory.nodes()
        await directory.close()

    asyncio.run(scenario())


def test_placement_prefers_the_least_loaded_node_that_takes_rooms() -> None:
    busy, idle = node("busy", participants=6), node("idle", participants=2)
    assert choose_node([busy, idle], {}) == idle
    assert choose_node([node("a"), node("b")], {"a": 2, "b": 1}).node_id == "b"  # type: ignore[union-attr]
    hot = node("hot", cpu_percent=95.0, max_cpu_percent=80.0)
    assert choose_node([hot, busy], {}) == busy
    assert choose_node([busy, node("full", max_rooms=1)], {"full": 1}) == busy
    assert choose_node([node("draining", state="draining"), busy], {}) == busy
    assert choose_node([hot, node("starting", state="starting")], {}) is None  # cluster full


def test_router_knows_which_requests_name_a_room() -> None:
    assert match_route("POST", "/whip/lobby") == ("lobby", "redirect", True)
    assert match_route("DELETE", "/whip/lobby/p1") == ("lobby", "redirect", False)
    assert match_route("PUT", "/rooms/lobby") == ("lobby", "proxy", True)
    assert match_route("PATCH", "/rooms/lobby/participants/p1") == ("lobby", "proxy", False)
    assert match_route("GET", "/rooms") is None and match_route("GET", "/metrics") is None
    assert room_of_offer(b'{"room": "lobby", "sdp": "v=0"}') == "lobby"
    assert room_of_offer(b"{") is None and room_of_offer(b"[1]") is None
    assert room_of_offer(b'{"room": 3}') is None


def test_forwarded_requests_are_counted_by_how_from_zero() -> None:
    hows = {how for _, _, how, _ in routing._ROUTES} | {"proxy"}  # /offer is proxied
    assert hows == set(FORWARDED_HOWS)
    exported = generate_latest(RelayMetrics().registry).decode()
    for how in FORWARDED_HOWS:
        assert f'pnr_signaling_forwarded_total{{how="{how}"}} 0.0' in exported


def test_shared_directory_addresses_are_checked() -> None:
    assert parse_table_address("key@127.0.0.1:5000") == (("127.0.0.1", 5000), b"key")
    for bad in ("127.0.0.1:5000", "key@127.0.0.1", "key@:x"):
        with pytest.raises(ValueError):
            parse_table_address(bad)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("PNR_REDIS_URL", "localhost:6379", "PNR_REDIS_URL"),
        ("PNR_PUBLIC_URL", "relay.example:8080", "PNR_PUBLIC_URL"),
        ("PNR_SHARED_DIRECTORY", "127.0.0.1:5000", "PNR_SHARED_DIRECTORY"),
        ("PNR_DIRECTORY_LEASE_SECONDS", "30", "PNR_DIRECTORY_LEASE_SECONDS"),
        ("PNR_DIRECTORY_HEARTBEAT_SECONDS", "5", "half the lease"),
    ],
)
def test_a_bad_cluster_setting_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code = main(["serve"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert named in err and "Traceback" not in err
