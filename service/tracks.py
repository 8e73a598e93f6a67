"""The audio track the relay sends to each participant: frames handed over by the room mixer."""

from __future__ import annotations

import asyncio

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.opus import OpusPacketEncoder


class MixedAudioTrack(MediaStreamTrack):
    """An outgoing track paced by the mixer's 20 ms clock, with a bounded queue. It hands aiortc
    Opus packets from its own ``encoder`` (aiortc then only packetises them)."""

    kind = "audio"

    def __init__(self, encoder: OpusPacketEncoder, max_frames: int = 3) -> None:
        super().__init__()
        self.encoder = encoder
        self._queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._max_frames = max_frames
        self.dropped_frames = 0

    def put(self, samples: np.ndarray) -> int:
        """Queue one mixed frame; returns the number of stale frames dropped to make room."""
        dropped = 0
        while self._queue.qsize() >= self._max_frames:
            self._queue.get_nowait()
            dropped += 1
        self._queue.put_nowait(samples)
        self.dropped_frames += dropped
        return dropped

    async def recv(self) -> av.Packet:
        """The next mixed frame's Opus packet (waits for the mixer's next tick)."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            samples = await self._queue.get()
            if samples is None:
                raise MediaStreamError
            packets = self.encoder.encode(samples)
            if packets:  # libopus hands one packet per 20 ms frame
                return packets[0]

    def stop(self) -> None:
        """End the track; a waiting ``recv`` ends too."""
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()
