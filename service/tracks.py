"""The audio track the relay sends to each participant: Opus packets handed over by the room,
none while its mix is silent (``service/dtx.py``)."""

from __future__ import annotations

import asyncio

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.audio_frames import FRAME_SAMPLES
from service.dtx import DtxGate
from service.opus import TIME_BASE


class MixedAudioTrack(MediaStreamTrack):
    """An outgoing track paced by the mixer's 20 ms clock, with a bounded queue. The room
    encodes each distinct mix once and hands every listener of it the same Opus payload; this
    track gives it its own timestamps (aiortc then only packetises it)."""

    kind = "audio"

    def __init__(self, max_frames: int = 3, dtx: bool = True) -> None:
        super().__init__()
        # (packet, frames not sent just before it): the timestamp skips those frames
        self._queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._max_frames = max_frames
        self._pts = 0
        self._gap_frames = 0
        self.dtx = DtxGate(dtx)
        self.dropped_frames = 0

    def put(self, payload: bytes, silent: bool = False) -> int:
        """Queue one 20 ms Opus packet (``silent``: the silence of a mix of nobody, which DTX
        may leave unsent); returns the number of stale ones dropped to make room."""
        packet = self.dtx.packet(payload, silent)
        if packet is None:
            self._gap_frames += 1
            return 0
        dropped = 0
        while self._queue.qsize() >= self._max_frames:
            self._queue.get_nowait()
            dropped += 1
        self._queue.put_nowait((packet, self._gap_frames))
        self._gap_frames = 0
        self.dropped_frames += dropped
        return dropped

    async def recv(self) -> av.Packet:
        """The next mix's Opus packet (waits for the mixer's next tick that sends one)."""
        if self.readyState != "live":
            raise MediaStreamError
        queued = await self._queue.get()
        if queued is None:
            raise MediaStreamError
        payload, gap_frames = queued
        self._pts += gap_frames * FRAME_SAMPLES
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
