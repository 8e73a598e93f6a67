"""Test helpers: a relay served on 127.0.0.1 in a thread, and aiortc peers that send and record."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import av
import httpx
import numpy as np
import uvicorn
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.app import create_app
from service.relay import Relay
from service.settings import Settings

FRAME = 960
RATE = 48000


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningRelay:
    """A relay served by uvicorn in a background thread (its own event loop)."""

    def __init__(self, **overrides: object) -> None:
        port = free_port()
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": port,
            "ice_host_addresses": ["127.0.0.1"],
            "worker_threads": 2,
        }
        values.update(overrides)
        self.settings = Settings(**values)  # type: ignore[arg-type]
        self.app = create_app(self.settings)
        self.relay: Relay = self.app.state.relay
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="relay-under-test", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        asyncio.run(main())

    def start(self, timeout: float = 60.0) -> RunningRelay:
        """Start and wait until /readyz says ready."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError("relay did not become ready")

    def call(self, coroutine_factory, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        """Run a coroutine on the relay's own loop and return its result."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine_factory(), self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        """Shut down (lifespan closes every call) and join the thread."""
        self.server.should_exit = True
        self.thread.join(30.0)


@contextlib.contextmanager
def running_relay(**overrides: object) -> Iterator[RunningRelay]:
    """A started relay, stopped afterwards."""
    relay = RunningRelay(**overrides).start()
    try:
        yield relay
    finally:
        relay.stop()


class ArrayAudioTrack(MediaStreamTrack):
    """Sends a mono float signal as 20 ms frames in real time, then silence."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self.signal = np.asarray(signal, dtype=np.float32)
        self.frame_index = 0
        self.send_times: list[float] = []  # wall-clock time each frame was handed to the encoder
        self.stalled = False  # True: stop sending (a peer whose audio vanishes, no BYE)
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while self.stalled:
            await asyncio.sleep(0.05)
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.frame_index * FRAME / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        start = self.frame_index * FRAME
        chunk = np.zeros(FRAME, dtype=np.float32)
        part = self.signal[start : start + FRAME]
        chunk[: part.shape[0]] = part
        pcm = np.clip(np.rint(chunk * 32767), -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.time_base = Fraction(1, RATE)
        frame.pts = start
        self.frame_index += 1
        self.send_times.append(time.monotonic())
        return frame


class Recorder:
    """Collects what a remote audio track delivers, with arrival times."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.arrivals: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def attach(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray().astype(np.float32) / 32768.0
            channels = len(frame.layout.channels)
            mono = data.reshape(-1, channels).mean(axis=1)
            self.chunks.append(mono)
            self.arrivals.append(time.monotonic())

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Peer:
    """An aiortc client: optionally sends a signal, records what the relay sends back."""

    def __init__(self, signal: np.ndarray | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.sender = ArrayAudioTrack(signal) if signal is not None else None
        self.recorder = Recorder()
        self.response: dict[str, object] = {}

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self.recorder.attach(track)

        if self.sender is not None:
            self.pc.addTrack(self.sender)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")

    async def offer_sdp(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def join(self, base_url: str, room: str, **fields: object) -> dict[str, object]:
        """POST /offer and apply the answer; raises for a non-200 answer."""
        body = {"sdp": await self.offer_sdp(), "type": "offer", "room": room, **fields}
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
            response = await client.post("/offer", json=body)
        response.raise_for_status()
        self.response = response.json()
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=str(self.response["sdp"]), type="answer")
        )
        return self.response

    async def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer stuck in {self.pc.connectionState}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.recorder.stop()
        await self.pc.close()
