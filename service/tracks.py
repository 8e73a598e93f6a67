"""The audio track the relay sends to each participant: frames handed over by the room mixer."""

from __future__ import annotations

import asyncio

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.audio_frames import FRAME_SAMPLES, mono_to_frame, to_pcm16
from service.opus import OpusPacketEncoder


class MixedAudioTrack(MediaStreamTrack):
    """An outgoing track paced by the mixer's 20 ms clock, with a bounded queue.

    With an ``encoder`` it hands aiortc Opus packets (aiortc then only packetises them);
    without one, audio frames for aiortc to encode.
    """

    kind = "audio"

    def __init__(self, max_frames: int = 3, encoder: OpusPacketEncoder | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self._queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._max_frames = max_frames
        self._pts = 0
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

    async def recv(self) -> av.AudioFrame | av.Packet:
        """The next mixed frame (waits for the mixer's next tick), or its Opus packet."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            samples = await self._queue.get()
            if samples is None:
                raise MediaStreamError
            if self.encoder is None:
                frame = mono_to_frame(samples, self._pts)
                self._pts += FRAME_SAMPLES
                return frame
            packets = self.encoder.encode(to_pcm16(samples))
            if packets:  # libopus hands one packet per 20 ms frame
                return packets[0]

    def stop(self) -> None:
        """End the track; a waiting ``recv`` ends too."""
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()
