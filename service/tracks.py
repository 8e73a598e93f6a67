"""The audio track the relay sends to each participant: Opus packets handed over by the room,
none while its mix is silent (``service/dtx.py``).

A receiver sizes its jitter buffer by how late packets come against their RTP timestamps, so
the timestamps follow the room's clock: they skip the frames DTX left unsent, the mixing ticks
the room skipped after a stall and the packets dropped from a full queue, and, while the
stream pauses, they take up a move of the clock's phase (the next packet goes out that much
earlier or later, and its timestamp says so).
"""

from __future__ import annotations

import asyncio

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.audio_frames import FRAME_SAMPLES, SAMPLE_RATE
from service.dtx import DtxGate
from service.opus import TIME_BASE


class MixedAudioTrack(MediaStreamTrack):
    """An outgoing track paced by the mixer's 20 ms clock, with a bounded queue. The room
    encodes each distinct mix once and hands every listener of it the same Opus payload; this
    track gives it its own timestamps (aiortc then only packetises it)."""

    kind = "audio"

    def __init__(self, max_frames: int = 3, dtx: bool = True) -> None:
        super().__init__()
        # (packet, samples not sent just before it): its timestamp skips those samples
        self._queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._max_frames = max_frames
        self._pts = 0
        self._gap_frames = 0
        self._shift_samples = 0  # the clock's moves while paused
        self._dropped_samples = 0  # of queued packets dropped, not yet skipped
        self._silent = False  # the last frame was the silence of a mix of nobody
        self.dtx = DtxGate(dtx)
        self.dropped_frames = 0

    @property
    def paused(self) -> bool:
        """True while no packet went out for the last frame (DTX): the stream pauses."""
        return self._gap_frames > 0

    def put(self, payload: bytes, silent: bool = False) -> int:
        """Queue one 20 ms Opus packet (``silent``: the silence of a mix of nobody, which DTX
        may leave unsent); returns the number of stale ones dropped to make room."""
        self._silent = silent
        packet = self.dtx.packet(payload, silent)
        if packet is None:
            self._gap_frames += 1
            return 0
        dropped = 0
        while self._queue.qsize() >= self._max_frames:
            stale = self._queue.get_nowait()
            if stale is not None:
                self._dropped_samples += stale[1] + FRAME_SAMPLES
            dropped += 1
        gap_samples = max(0, self._gap_frames * FRAME_SAMPLES + self._shift_samples)
        self._queue.put_nowait((packet, gap_samples))
        self._gap_frames = self._shift_samples = 0
        self.dropped_frames += dropped
        return dropped

    def clock_moved(self, seconds: float) -> bool:
        """The room's clock ticks ``seconds`` later from now on (negative: earlier); taken up
        by the timestamps (returns whether it was) if the stream pauses, or, for a later tick,
        if it sends silence (without DTX): a receiver takes that as a short gap in the silence.
        An earlier tick there is left as it is: packets that come early only fill the
        receiver's buffer for a while."""
        if not (self.paused or (seconds > 0 and self._silent)):
            return False
        self._shift_samples += round(seconds * SAMPLE_RATE)
        return True

    def ticks_skipped(self, frames: int) -> None:
        """The room skipped ``frames`` ticks (it fell behind): the timestamps skip them too."""
        self._gap_frames += frames

    async def recv(self) -> av.Packet:
        """The next mix's Opus packet (waits for the mixer's next tick that sends one)."""
        if self.readyState != "live":
            raise MediaStreamError
        queued = await self._queue.get()
        if queued is None:
            raise MediaStreamError
        payload, gap_samples = queued
        self._pts += self._dropped_samples + gap_samples
        self._dropped_samples = 0
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
