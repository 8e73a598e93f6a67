"""`serve --processes 2`: two nodes on PORT and PORT+1 sharing this process's directory, rooms
placed by load, every request through the first node, SIGTERM drains both."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest
from relay_peers import Peer, wait_until
from signals import speech_like

from loadtest.server import serve_on_loopback
from model.runtime import DEFAULT_MODEL
from service.cluster import with_port

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")


def level(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def test_public_urls_get_each_node_s_port() -> None:
    assert with_port("https://relay.example:8443/", 8444) == "https://relay.example:8444"
    assert with_port("http://[::1]:8080", 8081) == "http://[::1]:8081"


def test_processes_need_real_consecutive_ports() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--processes", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.startswith("error: --processes 2 needs the ports"), done.stderr
    assert "Traceback" not in done.stderr


def test_two_nodes_on_one_host_share_a_directory() -> None:
    served = serve_on_loopback(
        {"PNR_DRAIN_SECONDS": "1"},
        args=["--processes", "2"],
        capture_output=True,
        timeout=120,
        nodes=2,
    )
    parent, url = served.process, served.url
    second = with_port(url, int(url.rsplit(":", 1)[1]) + 1)
    try:
        nodes = httpx.get(url + "/nodes").json()
        assert sorted(n["url"] for n in nodes) == sorted([url, second])
        for room in ("a", "b"):
            assert httpx.put(f"{url}/rooms/{room}").status_code == 200

        async def scenario() -> tuple[float, list, list[str]]:
            speaker = Peer(speech_like(4.0, seed=3))
            listener, other = Peer(None), Peer(None)
            await listener.join(url, "a")
            await speaker.join(url, "a")
            await other.join(url, "b")
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
            return level(received), listing, metrics

        heard, listing, metrics = asyncio.run(scenario())
        assert {r["room"]: r["participants"] for r in listing} == {"a": 2, "b": 1}
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
