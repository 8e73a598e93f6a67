"""`serve --processes 2`: a routing front over two relay processes, rooms pinned to a worker,
media straight to the worker, merged /rooms, /readyz and /metrics, SIGTERM drains all."""

from __future__ import annotations

import asyncio
import signal

import httpx
import numpy as np
import pytest
from relay_peers import Peer
from signals import speech_like

from loadtest.server import serve_on_loopback
from model.runtime import DEFAULT_MODEL
from service.cluster import merge_metrics, owner_index

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")


def test_metrics_from_workers_merge_with_a_worker_label() -> None:
    text = (
        "# HELP pnr_rooms Rooms open\n# TYPE pnr_rooms gauge\npnr_rooms 2.0\n"
        "# HELP pnr_leaves_total Gone\n# TYPE pnr_leaves_total counter\n"
        'pnr_leaves_total{reason="removed"} 1.0\n'
    )
    merged = merge_metrics([text, text.replace("2.0", "3.0")])
    assert merged.count("# TYPE pnr_rooms gauge") == 1
    assert 'pnr_rooms{worker="0"} 2.0' in merged and 'pnr_rooms{worker="1"} 3.0' in merged
    assert 'pnr_leaves_total{worker="1",reason="removed"} 1.0' in merged
    lines = merged.splitlines()
    assert lines.index('pnr_rooms{worker="1"} 3.0') < lines.index("# HELP pnr_leaves_total Gone")


def test_two_processes_behind_one_address() -> None:
    rooms = ["a0", "a1", "a2", "a3", "a4", "a5"]
    first = rooms[0]
    second = next(r for r in rooms if owner_index(r, 2) != owner_index(first, 2))
    served = serve_on_loopback(
        {"PNR_DRAIN_SECONDS": "1"}, args=["--processes", "2"], capture_output=True, timeout=90
    )
    front, url = served.process, served.url
    try:
        ready = httpx.get(url + "/readyz").json()
        assert ready == {"ready": True, "workers": ["ready", "ready"]}

        async def scenario() -> tuple[float, list, str]:
            # Speech-like, not a steady tone: the enhancer rightly treats a tone held for
            # seconds as noise and removes it.
            speaker = Peer(speech_like(4.0, seed=3))
            listener, other = Peer(None), Peer(None)
            await listener.join(url, first)
            await speaker.join(url, first)
            await other.join(url, second)
            await asyncio.gather(
                speaker.wait_connected(), listener.wait_connected(), other.wait_connected()
            )
            await asyncio.sleep(2.0)
            async with httpx.AsyncClient() as client:
                listing = (await client.get(url + "/rooms")).json()
                metrics = (await client.get(url + "/metrics")).text
            received = listener.recorder.samples
            for peer in (speaker, listener, other):
                await peer.close()
            return float(np.sqrt(np.mean(received**2))), listing, metrics

        level, listing, metrics = asyncio.run(scenario())
        assert {r["room"]: r["participants"] for r in listing} == {first: 2, second: 1}
        assert level > 0.001, "no audio came through the worker"
        assert 'pnr_joins_total{worker="0"} ' in metrics
        assert 'pnr_joins_total{worker="1"} ' in metrics
        bad = httpx.post(url + "/offer", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"] == "malformed_json"
        front.send_signal(signal.SIGTERM)
        code = front.wait(30)
    finally:
        if front.poll() is None:
            front.kill()
            front.wait()
    assert code == 0, served.output()
