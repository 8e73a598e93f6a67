"""`serve`: one node per usable core (two here: PORT and PORT+1, each pinned to its core) sharing
this process's directory, rooms placed by load, every request through the first node (WHIP
redirected), SIGTERM drains both; and how many nodes a host's cores and cgroup limit give."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from relay_peers import Peer, wait_until, whip_join
from signals import speech_like

from loadtest.process_stats import process_tree
from loadtest.server import serve_on_loopback
from model.runtime import DEFAULT_MODEL
from service.cluster import node_count, with_port
from service.cores import cgroup_cpu_limit, node_cores, usable_cores
from service.settings import Settings

needs_model = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")


def level(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def test_public_urls_get_each_node_s_port() -> None:
    assert with_port("https://relay.example:8443/", 8444) == "https://relay.example:8444"
    assert with_port("http://[::1]:8080", 8081) == "http://[::1]:8081"


def cgroup(root: Path, v2: str | None = None, v1: tuple[str, str] | None = None) -> Path:
    """A fake cgroup folder with a v2 ``cpu.max`` or v1 quota and period files."""
    root.mkdir(exist_ok=True)
    if v2 is not None:
        (root / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (root / "cpu" / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    return root


@pytest.mark.parametrize(
    ("v2", "v1", "limit"),
    [
        ("max 100000", None, None),
        ("150000 100000", None, 1.5),
        ("400000 100000", None, 4.0),
        (None, ("-1", "100000"), None),
        (None, ("250000", "100000"), 2.5),
        (None, None, None),
    ],
)
def test_cgroup_cpu_limit_reads_v2_and_v1(
    tmp_path: Path, v2: str | None, v1: tuple[str, str] | None, limit: float | None
) -> None:
    assert cgroup_cpu_limit(cgroup(tmp_path, v2, v1)) == limit


def test_usable_cores_are_the_affinity_capped_by_whole_granted_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3, 5, 7})
    assert usable_cores(tmp_path) == 4  # no cgroup limit: the mask
    assert node_cores(4, tmp_path) == [2, 3, 5, 7]  # a node for each core of the mask
    assert node_cores(2, tmp_path) is None  # fewer: the kernel knows which cores are idle
    assert node_cores(5, tmp_path) is None  # more nodes than cores: the kernel spreads them
    quota = cgroup(tmp_path / "quota", v2="250000 100000")  # a pod limited to 2.5 cores
    assert usable_cores(quota) == 2  # rounded down: a throttled node stalls audio
    assert node_cores(2, quota) is None  # granted by a quota, not by a cpuset: not pinned
    tiny = cgroup(tmp_path / "tiny", v2="50000 100000")
    assert usable_cores(tiny) == 1


def test_serve_starts_one_node_per_usable_core_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("service.cluster.usable_cores", lambda: 3)
    assert node_count(Settings(port=8080)) == 3
    assert node_count(Settings(port=8080, processes=1)) == 1
    assert node_count(Settings(port=8080, processes=5)) == 5
    assert node_count(Settings(port=0)) == 1  # any free port: no consecutive run to count on


def place_rooms(url: str, rooms: list[str]) -> dict[str, str]:
    """Open ``rooms`` through the node at ``url``; returns each room's node URL, once every
    node's heartbeat has listed them."""
    for room in rooms:
        assert httpx.put(f"{url}/rooms/{room}").status_code == 200
    urls = {node["node_id"]: node["url"] for node in httpx.get(url + "/nodes").json()}
    deadline = time.monotonic() + 10
    while True:
        placed = {r["room"]: urls[r["node"]] for r in httpx.get(url + "/rooms").json()}
        if len(placed) == len(rooms) or time.monotonic() > deadline:
            return placed
        time.sleep(0.1)


@needs_model
def test_processes_need_real_consecutive_ports() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--processes", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.startswith("error: 2 nodes need the ports"), done.stderr
    assert "Traceback" not in done.stderr


@needs_model
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_serve_runs_a_pinned_node_per_core_sharing_a_directory() -> None:
    cores = set(sorted(os.sched_getaffinity(0))[:2])
    served = serve_on_loopback(  # the default (0: one node per core), on two cores
        {"PNR_DRAIN_SECONDS": "1", "PNR_PROCESSES": "0"},
        capture_output=True,
        timeout=120,
        nodes=2,
        cpus=cores,
    )
    parent, url = served.process, served.url
    second = with_port(url, int(url.rsplit(":", 1)[1]) + 1)
    try:
        nodes = [pid for pid in process_tree(parent.pid) if pid != parent.pid]
        assert len(nodes) == 2
        pinned = [os.sched_getaffinity(pid) for pid in nodes]
        assert sorted(map(sorted, pinned)) == [[core] for core in sorted(cores)], pinned
        nodes = httpx.get(url + "/nodes").json()
        assert sorted(n["url"] for n in nodes) == sorted([url, second])

        placed = place_rooms(url, ["a", "b"])
        assert sorted(placed.values()) == sorted([url, second]), placed
        (on_second,) = [room for room, node in placed.items() if node == second]
        targets = httpx.get(url + "/metrics/targets").json()
        assert sorted(t for group in targets for t in group["targets"]) == sorted(
            u.removeprefix("http://") for u in (url, second)
        )
        assert {group["labels"]["__scheme__"] for group in targets} == {"http"}

        async def scenario() -> tuple[float, list, list[str], httpx.Response]:
            speaker = Peer(speech_like(4.0, seed=3))
            listener, other = Peer(None), Peer(None)
            # all through the first node: /offer proxied, WHIP redirected to the second
            await listener.join(url, on_second)
            await speaker.join(url, on_second)
            whip = await whip_join(other, url, on_second)
            await asyncio.gather(
                speaker.wait_connected(), listener.wait_connected(), other.wait_connected()
            )
            with contextlib.suppress(TimeoutError):  # the speaker's voice reaches the listener
                await wait_until(lambda: level(listener.recorder.samples) > 0.001, 60)
            async with httpx.AsyncClient() as client:
                listing = (await client.get(url + "/rooms")).json()
                metrics = [(await client.get(u + "/metrics")).text for u in (url, second)]
            received = listener.recorder.samples
            for peer in (speaker, listener, other):
                await peer.close()
            return level(received), listing, metrics, whip

        heard, listing, metrics, whip = asyncio.run(scenario())
        assert [r.status_code for r in whip.history] == [307]
        assert str(whip.url).startswith(second), whip.url
        assert {r["room"]: r["participants"] for r in listing} == {on_second: 3} | {
            room: 0 for room in placed if room != on_second
        }
        assert len({r["node"] for r in listing}) == 2, "both rooms on one node"
        assert heard > 0.001, "no audio came through"
        assert all("pnr_joins_total " in text for text in metrics)  # each node its own
        forwarded = [
            float(line.split()[-1])
            for line in metrics[0].splitlines()
            if line.startswith('pnr_signaling_forwarded_total{how="proxy"}')
        ]
        assert forwarded and forwarded[0] >= 1, "the first node proxied nothing"
        bad = httpx.post(url + "/offer", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"] == "malformed_json"
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert code == 0, served.output()


def running(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie waiting to be reaped has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@needs_model
def test_nodes_end_when_their_serve_is_killed() -> None:
    served = serve_on_loopback({"PNR_DRAIN_SECONDS": "1"}, nodes=2, timeout=120)
    nodes = [pid for pid in process_tree(served.process.pid) if pid != served.process.pid]
    assert len(nodes) == 2
    served.process.kill()  # SIGKILL: nothing of serve's own runs
    served.process.wait()
    deadline = time.monotonic() + 30
    while any(map(running, nodes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in nodes if running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "nodes outlived their serve"
