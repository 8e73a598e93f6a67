"""The audio track the relay sends to each participant: Opus packets handed over by the room."""

from __future__ import annotations

import asyncio

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.audio_frames import FRAME_SAMPLES
from service.opus import TIME_BASE


class MixedAudioTrack(MediaStreamTrack):
    """An outgoing track paced by the mixer's 20 ms clock, with a bounded queue. The room
    encodes each distinct mix once and hands every listener of it the same Opus payload; this
    track gives it its own timestamps (aiortc then only packetises it)."""

    kind = "audio"

    def __init__(self, max_frames: int = 3) -> None:
        super().__init__()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._max_frames = max_frames
        self._pts = 0
        self.dropped_frames = 0

    def put(self, payload: bytes) -> int:
        """Queue one 20 ms Opus packet; returns the number of stale ones dropped to make room."""
        dropped = 0
        while self._queue.qsize() >= self._max_frames:
            self._queue.get_nowait()
            dropped += 1
        self._queue.put_nowait(payload)
        self.dropped_frames += dropped
        return dropped

    async def recv(self) -> av.Packet:
        """The next mix's Opus packet (waits for the mixer's next tick)."""
        if self.readyState != "live":
            raise MediaStreamError
        payload = await self._queue.get()
        if payload is None:
            raise MediaStreamError
        packet = av.Packet(payload)
        packet.pts = self._pts
        packet.time_base = TIME_BASE
        self._pts += FRAME_SAMPLES
        return packet

    def stop(self) -> None:
        """End the track; a waiting ``recv`` ends too."""
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()
