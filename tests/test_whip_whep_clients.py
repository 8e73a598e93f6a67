"""Interoperability with WHIP and WHEP clients nobody here wrote: the ``whip-whep`` npm package
(``tests/browser_clients``, installed by ``.ci/run`` with ``npm ci``) in headless Chromium
publishes a fake microphone over WHIP and listens to the room over WHEP, while an aiortc peer
in the room speaks and listens."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from relay_peers import Peer, free_port, running_relay
from test_relay_media import noisy_speech

from loadtest.browsers import CHROMIUM, chromium_command
from model.runtime import DEFAULT_MODEL

CLIENTS = Path(__file__).resolve().parent / "browser_clients"
LIBRARY = CLIENTS / "node_modules" / "whip-whep"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: chromium)"),
    pytest.mark.skipif(
        not (LIBRARY / "whip.js").exists(),
        reason="whip-whep is not installed (npm ci --prefix tests/browser_clients)",
    ),
    pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model"),
]

FILES = {
    "/whip_whep.html": (CLIENTS / "whip_whep.html", "text/html"),
    "/whip.js": (LIBRARY / "whip.js", "text/javascript"),
    "/whep.js": (LIBRARY / "whep.js", "text/javascript"),
}


@contextmanager
def client_page() -> Iterator[tuple[str, queue.Queue[dict[str, object]]]]:
    """The test page and the library, served on 127.0.0.1; yields the origin and the queue the
    page's reports arrive on."""
    reports: queue.Queue[dict[str, object]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path, content_type = FILES.get(self.path.split("?")[0], (None, ""))
            if path is None:
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", "0"))
            reports.put(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", reports
    finally:
        server.shutdown()
        server.server_close()


def test_whip_whep_clients_publish_and_listen_in_chromium(tmp_path: Path) -> None:
    clean, noisy = noisy_speech(8.0, snr_db=5.0)
    wav = tmp_path / "microphone.wav"
    sf.write(wav, noisy, 48000, subtype="PCM_16")
    room = "interop"
    with client_page() as (origin, reports), running_relay(cors_origins=[origin]) as relay:

        async def run() -> tuple[dict[str, Any], list[dict[str, Any]], Peer]:
            peer = Peer(noisy.astype(np.float32))  # speaks, and hears the browser's WHIP voice
            await peer.join(relay.url, room)
            await peer.wait_connected()
            page = f"{origin}/whip_whep.html?relay={relay.url}&room={room}&listen_ms=4000"
            browser = subprocess.Popen(
                chromium_command(page, tmp_path / "profile", microphone_wav=wav),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                report = await asyncio.to_thread(reports.get, True, 90.0)
                async with httpx.AsyncClient() as client:
                    described = (await client.get(f"{relay.url}/rooms/{room}")).json()
            finally:
                browser.terminate()
                await asyncio.to_thread(browser.wait, 15)
                await peer.close()
            return report, described["participants"], peer

        report, participants, peer = asyncio.run(run())

    assert report.get("ok"), report
    print(f"\nwhip-whep in Chromium: {report}")
    assert report["publisher"] == "connected" and report["viewer"] == "connected"
    assert float(report["rms"]) > 0.003  # the WHEP session heard the room's voices
    # the WHIP publisher sends (its voice is enhanced), the WHEP viewer only listens
    by_listening = sorted((p["listening"], p["frames"]["enhanced"] > 0) for p in participants)
    assert by_listening == [(False, True), (True, False), (True, True)], participants
    heard = peer.recorder.samples  # the aiortc peer heard the browser's WHIP voice
    assert heard.shape[0] > 3 * 48000
    assert np.sqrt(np.mean(heard[-3 * 48000 :] ** 2)) > 0.005
