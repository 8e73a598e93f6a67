"""Resource bounds against the real server on 127.0.0.1: pending-peer caps per address and in
all, the signaling rate limit, the fd and ICE refusals, room expiry and closing, room names on
every route, and room control when tokens are on. Client addresses other than 127.0.0.1 come
from ``X-Forwarded-For``, trusted from loopback through ``forwarded_allow_ips``."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import aioice.ice
import httpx
import numpy as np
import pytest
from relay_peers import Peer, RunningRelay, emptied_after_each_test, running_relay
from test_relay_signaling import assert_error, make_offer

from model.runtime import DEFAULT_MODEL
from service.tokens import mint_token

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")


@pytest.fixture(scope="module")
def offer() -> str:
    return make_offer()


@pytest.fixture(scope="module")
def served_relay() -> Iterator[RunningRelay]:
    with running_relay(
        max_pending_per_address=2,
        max_pending_peers=3,
        forwarded_allow_ips="127.0.0.1",
        connect_timeout_seconds=120,
    ) as running:
        yield running


@pytest.fixture
def relay(served_relay: RunningRelay) -> Iterator[RunningRelay]:
    yield from emptied_after_each_test(served_relay)


def post_offer(relay: RunningRelay, offer: str, room: str, address: str) -> httpx.Response:
    return httpx.post(
        relay.url + "/offer",
        json={"sdp": offer, "room": room},
        headers={"X-Forwarded-For": address},
    )


def counted(relay: RunningRelay, reason: str, counter: str = "pnr_signaling_errors_total") -> float:
    text = httpx.get(relay.url + "/metrics").text
    match = re.search(rf'{counter}\{{reason="{reason}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def remove_all(relay: RunningRelay) -> None:
    for room in httpx.get(relay.url + "/rooms").json():
        assert httpx.delete(f"{relay.url}/rooms/{room['room']}").status_code == 204
    assert not relay.relay.rooms and len(relay.relay.pending) == 0


def test_pending_joins_are_capped_per_address_then_in_all(relay: RunningRelay, offer: str) -> None:
    first = post_offer(relay, offer, "cap", "198.51.100.1")
    assert first.status_code == 200, first.text
    assert post_offer(relay, offer, "cap", "198.51.100.1").status_code == 200
    third = post_offer(relay, offer, "cap", "198.51.100.1")
    assert_error(third, 429, "too_many_pending")
    assert third.headers["retry-after"].isdigit()
    assert post_offer(relay, offer, "cap", "198.51.100.2").status_code == 200
    assert_error(post_offer(relay, offer, "cap", "198.51.100.3"), 503, "pending_full")
    assert relay.relay.participant_count == 3 and len(relay.relay.pending) == 3
    pid = first.json()["participant_id"]
    assert httpx.delete(f"{relay.url}/rooms/cap/participants/{pid}").status_code == 204
    assert post_offer(relay, offer, "cap", "198.51.100.3").status_code == 200
    assert counted(relay, "too_many_pending") >= 1 and counted(relay, "pending_full") >= 1
    remove_all(relay)


async def wait_until_not_pending(relay: RunningRelay, timeout_seconds: float) -> None:
    """Until the relay has seen its side of every connection reach "connected" (the client's
    side may get there first), polled; TimeoutError after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while len(relay.relay.pending):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(relay.relay.pending)} peers still pending")
        await asyncio.sleep(0.02)


def test_a_connected_peer_no_longer_counts_as_pending(relay: RunningRelay) -> None:
    async def scenario() -> None:
        peers = [Peer(np.zeros(48000 * 5, np.float32)) for _ in range(3)]
        try:
            for peer in peers:  # one address, a cap of two pending: each connects before the next
                await peer.join(relay.url, "connected")
                await peer.wait_connected(60)
                await wait_until_not_pending(relay, 60)
            assert relay.relay.participant_count == 3
        finally:
            for peer in peers:
                await peer.close()

    asyncio.run(scenario())
    remove_all(relay)


def test_a_join_without_ice_candidates_is_refused(
    relay: RunningRelay, offer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [])
    response = post_offer(relay, offer, "noice", "198.51.100.9")
    assert_error(response, 503, "no_ice_candidates")
    assert response.headers["retry-after"].isdigit()
    assert not relay.relay.rooms and len(relay.relay.pending) == 0


def test_closing_a_room_ends_its_calls(relay: RunningRelay) -> None:
    closed_before = counted(relay, "room_closed", "pnr_leaves_total")

    async def scenario() -> str:
        peer = Peer(np.zeros(48000 * 30, np.float32))
        await peer.join(relay.url, "closing")
        await peer.wait_connected(20)
        async with httpx.AsyncClient() as client:
            closed = await client.delete(relay.url + "/rooms/closing")
            assert closed.status_code == 204, closed.text
        deadline = time.monotonic() + 10
        while peer.pc.connectionState not in ("closed", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        state = peer.pc.connectionState
        await peer.close()
        return state

    assert asyncio.run(scenario()) == "closed"
    assert_error(httpx.get(relay.url + "/rooms/closing"), 404, "unknown_room")
    assert_error(httpx.delete(relay.url + "/rooms/closing"), 404, "unknown_room")
    assert counted(relay, "room_closed", "pnr_leaves_total") == closed_before + 1


@pytest.mark.parametrize("room", ["%2E", "%2E%2E", ".hidden", "-x", "x" * 65])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/whip/{room}"),
        ("DELETE", "/whip/{room}/p1"),
        ("PATCH", "/whip/{room}/p1"),
        ("POST", "/whep/{room}"),
        ("DELETE", "/whep/{room}/p1"),
        ("PATCH", "/whep/{room}/p1"),
        ("GET", "/rooms/{room}"),
        ("PUT", "/rooms/{room}"),
        ("DELETE", "/rooms/{room}"),
        ("PATCH", "/rooms/{room}/participants/p1"),
        ("DELETE", "/rooms/{room}/participants/p1"),
    ],
)
def test_every_route_that_names_a_room_checks_the_name(
    relay: RunningRelay, offer: str, method: str, path: str, room: str
) -> None:
    sdp = path in ("/whip/{room}", "/whep/{room}")
    headers = {"content-type": "application/sdp" if sdp else "application/json"}
    body = offer if method == "POST" else "{}" if method == "PATCH" else None
    response = httpx.request(
        method, relay.url + path.format(room=room), content=body, headers=headers
    )
    assert_error(response, 400, "invalid_room")
    assert not relay.relay.rooms


def test_offers_for_dot_rooms_are_refused(relay: RunningRelay, offer: str) -> None:
    for room in (".", ".."):
        assert_error(post_offer(relay, offer, room, "198.51.100.4"), 400, "invalid_room")
    assert not relay.relay.rooms and len(relay.relay.pending) == 0


def test_cors_is_off_unless_configured(relay: RunningRelay, offer: str) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    preflight = httpx.options(
        relay.url + "/offer", headers=origin | {"Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    response = httpx.get(relay.url + "/rooms", headers=origin)
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_signaling_is_rate_limited_per_client_address() -> None:
    malformed = {"content": b"{", "headers": {"content-type": "application/json"}}
    with running_relay(
        signaling_rate_per_second=0.01, signaling_burst=2, forwarded_allow_ips="127.0.0.1"
    ) as relay:

        def post(address: str) -> httpx.Response:
            return httpx.post(
                relay.url + "/offer",
                content=b"{",
                headers={"content-type": "application/json", "X-Forwarded-For": address},
            )

        assert_error(post("203.0.113.1"), 400, "malformed_json")
        assert_error(post("203.0.113.1"), 400, "malformed_json")
        limited = post("203.0.113.1")
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        whip = httpx.post(
            relay.url + "/whip/r",
            content=b"v=0",
            headers={"content-type": "application/sdp", "X-Forwarded-For": "203.0.113.1"},
        )
        assert_error(whip, 429, "rate_limited")
        assert_error(post("203.0.113.2"), 400, "malformed_json")  # its own bucket
        assert httpx.get(relay.url + "/livez").status_code == 200  # health is never limited
        assert counted(relay, "rate_limited") == 2
    with running_relay(signaling_rate_per_second=0.01, signaling_burst=1) as relay:
        # no trusted proxy: X-Forwarded-For is ignored, both requests are 127.0.0.1's
        first = httpx.post(relay.url + "/offer", **malformed)  # type: ignore[arg-type]
        assert_error(first, 400, "malformed_json")
        headers = malformed["headers"] | {"X-Forwarded-For": "203.0.113.3"}  # type: ignore[operator]
        assert_error(
            httpx.post(relay.url + "/offer", content=b"{", headers=headers), 429, "rate_limited"
        )


def test_joins_are_refused_near_the_fd_limit(offer: str) -> None:
    with running_relay(fd_reserve=10**9) as relay:
        response = httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "fd"})
        assert_error(response, 503, "too_many_open_files")
        assert not relay.relay.rooms and len(relay.relay.pending) == 0


def test_rooms_left_empty_expire(offer: str) -> None:
    with running_relay(empty_room_ttl_seconds=0.5, auto_create_rooms=False) as relay:
        assert httpx.put(relay.url + "/rooms/opened").status_code == 200
        assert httpx.put(relay.url + "/rooms/emptied").status_code == 200
        joined = httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "emptied"})
        assert joined.status_code == 200, joined.text
        pid = joined.json()["participant_id"]
        assert httpx.delete(f"{relay.url}/rooms/emptied/participants/{pid}").status_code == 204
        deadline = time.monotonic() + 20
        while relay.relay.rooms and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not relay.relay.rooms
        assert httpx.get(relay.url + "/metrics").text.count("pnr_rooms 0.0") == 1


def test_room_control_needs_the_admin_token_whenever_tokens_are_on(offer: str) -> None:
    secret = "limits-secret-1"
    with running_relay(token_secret=secret) as relay:
        for method in ("GET", "PUT", "DELETE"):
            response = httpx.request(method, relay.url + "/rooms/r1")
            assert_error(response, 403, "admin_token_not_configured")
        assert_error(httpx.get(relay.url + "/rooms"), 403, "admin_token_not_configured")
        joined = httpx.post(
            relay.url + "/offer",
            json={"sdp": offer, "room": "r1", "token": mint_token(secret, "r1")},
        )
        assert joined.status_code == 200, joined.text
        url = f"{relay.url}/rooms/r1/participants/{joined.json()['participant_id']}"
        assert_error(httpx.delete(url), 403, "admin_token_not_configured")
        own = {"X-Participant-Key": str(joined.json()["participant_key"])}
        assert httpx.delete(url, headers=own).status_code == 204  # a participant may leave
        assert not relay.relay.rooms


def test_a_flood_of_pending_joins_gets_the_cap_and_no_more() -> None:
    from loadtest.pending_flood import flood

    with running_relay(max_pending_per_address=3, connect_timeout_seconds=120) as relay:
        counts = asyncio.run(flood(relay.url, joins=40, concurrency=8, rooms=4))
        assert counts == {"200": 3, "429 too_many_pending": 37}
        assert relay.relay.participant_count == 3 and len(relay.relay.pending) == 3
        assert counted(relay, "too_many_pending") == 37
