"""`percepnet-relay serve` as a real process: start-up time, and SIGTERM as a drain
(readiness off, new joins refused with 503, calls ended cleanly, exit status 0)."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import numpy as np
import pytest
from relay_peers import Peer

from loadtest.server import serve_on_loopback
from model.runtime import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")


def test_sigterm_drains_then_exits_cleanly() -> None:
    # the grace outlasts the checks made during it, however slow a loaded machine makes them
    served = serve_on_loopback(
        {"PNR_DRAIN_SECONDS": "5", "PNR_LOG_FORMAT": "json"}, capture_output=True, timeout=180
    )
    server, url, ready_after = served.process, served.url, served.ready_seconds
    try:

        async def scenario() -> tuple[httpx.Response, httpx.Response, str, float]:
            peer = Peer(np.zeros(48000 * 30, np.float32))
            await peer.join(url, "drain")
            await peer.wait_connected()
            server.send_signal(signal.SIGTERM)
            async with httpx.AsyncClient() as client:
                deadline = time.monotonic() + 30  # until the signal is handled
                while (ready := await client.get(url + "/readyz")).status_code == 200:
                    assert time.monotonic() < deadline, "SIGTERM did not start a drain"
                    await asyncio.sleep(0.05)
                late = Peer(None)
                join = await client.post(
                    url + "/offer", json={"sdp": await late.offer_sdp(), "room": "drain"}
                )
                await late.pc.close()
            start = time.monotonic()
            while peer.pc.connectionState not in ("closed", "failed"):
                if time.monotonic() - start > 60:
                    break
                await asyncio.sleep(0.05)
            state = peer.pc.connectionState
            await peer.close()
            return ready, join, state, time.monotonic() - start

        ready, join, state, ended_after = asyncio.run(scenario())
        code = server.wait(60)
        output = served.output()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    print(
        f"\nserve: ready {ready_after:.2f} s after start (process start, imports, model, "
        f"kernels); call ended {ended_after:.2f} s after the drain's checks"
    )
    assert ready.status_code == 503 and ready.json()["state"] == "draining"
    assert join.status_code == 503 and join.json()["error"] == "draining"
    assert join.headers["retry-after"].isdigit()
    assert state == "closed", f"the call did not end cleanly: {state}"
    assert code == 0, output
    assert '"message": "draining' in output  # JSON logs
