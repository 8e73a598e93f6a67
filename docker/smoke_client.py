"""The container smoke test's client, run inside the image (``python - URL SECONDS [hold] <
this``): joins a room over WebRTC with a token and ``echo`` on, speaks a noisy voiced signal,
and checks that its own voice comes back enhanced; with ``hold`` it only keeps the call up until
the relay ends it or SECONDS pass. Uses only what the image installs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.audio_frames import frame_to_mono, mono_to_frame
from service.tokens import mint_token

RATE = 48000
FRAME = 960  # 20 ms


def voiced_signal(seconds: float) -> np.ndarray:
    """A 140 Hz harmonic voice in bursts of 400 ms, over steady white noise 12 dB below it."""
    t = np.arange(int(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    voice *= (np.sin(2 * np.pi * 1.25 * t) > 0).astype(np.float64)
    noise = np.random.default_rng(0).standard_normal(t.shape[0])
    voice *= 0.1 / np.sqrt(np.mean(voice**2))
    return (voice + 0.025 * noise).astype(np.float32)


class SignalTrack(MediaStreamTrack):
    """Sends the signal in 20 ms frames in real time, then silence."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self.signal = signal
        self.index = 0
        self.start = time.monotonic()

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(max(0.0, self.start + self.index * FRAME / RATE - time.monotonic()))
        chunk = np.zeros(FRAME, dtype=np.float32)
        part = self.signal[self.index * FRAME : (self.index + 1) * FRAME]
        chunk[: part.shape[0]] = part
        frame = mono_to_frame(chunk, self.index * FRAME)
        self.index += 1
        return frame


def post_offer(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url + "/offer", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def main(url: str, seconds: float, hold: bool) -> None:
    signal = voiced_signal(seconds)
    pc = RTCPeerConnection()
    pc.addTrack(SignalTrack(signal))
    received: list[np.ndarray] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def record() -> None:
            while True:
                try:
                    received.append(frame_to_mono(await track.recv()))
                except MediaStreamError:
                    return

        asyncio.ensure_future(record())

    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": "offer", "room": "smoke", "echo": True}
    status, answer = await asyncio.to_thread(post_offer, url, offer)
    assert status == 401 and answer["error"] == "invalid_token", (status, answer)
    token = mint_token(os.environ["PNR_TOKEN_SECRET"], "smoke", ttl_seconds=600)
    status, answer = await asyncio.to_thread(post_offer, url, {**offer, "token": token})
    assert status == 200, (status, answer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=str(answer["sdp"]), type="answer"))
    if hold:
        deadline = time.monotonic() + seconds
        while pc.connectionState not in ("closed", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        print(f"smoke client: call {pc.connectionState} after holding it")
        await pc.close()
        return
    await asyncio.sleep(seconds + 1.0)
    await pc.close()

    heard = np.concatenate(received) if received else np.zeros(0, np.float32)
    assert heard.shape[0] >= RATE * seconds / 2, f"heard only {heard.shape[0] / RATE:.2f} s"
    level_db = 10 * np.log10(np.mean(heard.astype(np.float64) ** 2) + 1e-12)
    sent_db = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2))
    assert level_db > sent_db - 30, f"own voice came back at {level_db:.1f} dB"
    print(f"smoke client: heard {heard.shape[0] / RATE:.1f} s of its own enhanced voice")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3:] == ["hold"]))
