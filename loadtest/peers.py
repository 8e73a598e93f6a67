"""aiortc client peers for tests and the load test: one sends a signal in real time and
records what the relay sends back, with send and arrival times (``time.monotonic``, which is
system-wide on Linux, so times compare across processes)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from fractions import Fraction

import av
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from service.aiortc_patches import count_packets_only
from service.audio_frames import frame_to_mono, mono_to_frame
from service.opus import OpusPacketEncoder, OpusSettings

FRAME = 960
RATE = 48000


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

    async def _next_turn(self) -> int:
        """Wait until the next frame is due (real time from the first); returns its index."""
        if self.readyState != "live":
            raise MediaStreamError
        while self.stalled:
            await asyncio.sleep(0.05)
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.frame_index * FRAME / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return self.frame_index

    def _sent(self) -> None:
        self.frame_index += 1
        self.send_times.append(time.monotonic())

    def _chunk(self, index: int) -> np.ndarray:
        """Frame ``index`` of the signal, silence past its end."""
        chunk = np.zeros(FRAME, dtype=np.float32)
        part = self.signal[index * FRAME : (index + 1) * FRAME]
        chunk[: part.shape[0]] = part
        return chunk

    async def recv(self) -> av.AudioFrame:
        index = await self._next_turn()
        frame = mono_to_frame(self._chunk(index), index * FRAME)
        self._sent()
        return frame


class EncodedAudioTrack(ArrayAudioTrack):
    """Like :class:`ArrayAudioTrack`, but the signal is Opus-encoded once up front and the
    packets are sent in real time (aiortc packs them without encoding): a cheap load generator.
    ``fec_loss_percent`` > 0 adds in-band FEC, as Chromium does when it sees loss."""

    def __init__(self, signal: np.ndarray, bitrate: int = 32000, fec_loss_percent: int = 0) -> None:
        super().__init__(signal)
        settings = OpusSettings(
            bitrate=bitrate, application="voip", fec_loss_percent=fec_loss_percent
        )
        encoder = OpusPacketEncoder(settings)
        self.packets = [
            av.Packet(encoder.encode(self._chunk(index)))
            for index in range(-(-self.signal.shape[0] // FRAME))
        ]

    async def recv(self) -> av.Packet:  # type: ignore[override]
        index = await self._next_turn()
        packet = self.packets[index % len(self.packets)]
        packet.pts = index * FRAME
        packet.time_base = Fraction(1, RATE)
        self._sent()
        return packet


class Recorder:
    """Collects what a remote audio track delivers, with arrival times. Frames the relay left
    unsent while the mix was silent (DTX: the RTP timestamp jumps, the sequence numbers do
    not) are filled with silence, as a receiver's comfort noise would be, and timed as if
    they had come every 20 ms before the frame that ended the gap."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.arrivals: list[float] = []
        self.gap_frames = 0  # frames filled in, in all
        self._next_timestamp: int | None = None
        self._task: asyncio.Task[None] | None = None

    def _arrived(self, timestamp: int | None, samples: int, chunk: np.ndarray | None) -> None:
        now = time.monotonic()
        if timestamp is not None and self._next_timestamp is not None:
            missing = max(0, (timestamp - self._next_timestamp) // samples)
            for k in range(missing, 0, -1):
                if chunk is not None:
                    self.chunks.append(np.zeros(samples, np.float32))
                self.arrivals.append(now - k * samples / RATE)
            self.gap_frames += missing
        if chunk is not None:
            self.chunks.append(chunk)
        self.arrivals.append(now)
        if timestamp is not None:  # a reordered packet does not move it back
            self._next_timestamp = max(timestamp + samples, self._next_timestamp or 0)

    def count(self, packet: RtpPacket) -> None:
        """A packet arrived that is not decoded (a listener that only times what it gets)."""
        self._arrived(packet.timestamp, FRAME, None)

    def attach(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            self._arrived(frame.pts, frame.samples, frame_to_mono(frame))

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Peer:
    """An aiortc client: optionally sends a signal, records what the relay sends back
    (``decode=False``: only the packets' arrival times; nothing is decoded)."""

    def __init__(
        self,
        signal: np.ndarray | None = None,
        pre_encoded: bool = False,
        fec_loss_percent: int = 0,
        decode: bool = True,
    ) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.sender: ArrayAudioTrack | None = None
        if signal is not None and (pre_encoded or fec_loss_percent):
            self.sender = EncodedAudioTrack(signal, fec_loss_percent=fec_loss_percent)
        elif signal is not None:
            self.sender = ArrayAudioTrack(signal)
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
        if not decode:
            for transceiver in self.pc.getTransceivers():
                count_packets_only(transceiver.receiver, self.recorder.count)

    async def offer_sdp(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def join(
        self,
        base_url: str,
        room: str,
        verify: ssl.SSLContext | bool = True,
        **fields: object,
    ) -> dict[str, object]:
        """POST /offer and apply the answer; raises for a non-200 answer."""
        body = {"sdp": await self.offer_sdp(), "type": "offer", "room": room, **fields}
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0, verify=verify) as client:
            response = await client.post("/offer", json=body)
        response.raise_for_status()
        self.response = response.json()
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=str(self.response["sdp"]), type="answer")
        )
        return self.response

    async def wait_connected(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer stuck in {self.pc.connectionState}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.recorder.stop()
        await self.pc.close()
