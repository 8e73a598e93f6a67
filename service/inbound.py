"""One speaker's received audio: Opus packets from the receive buffer, decoded and enhanced on
an enhancement shard.

The peer connection's receiver hands each packet its receive buffer releases to
:meth:`InboundAudio.put` on the event loop (:func:`service.aiortc_patches.take_encoded_frames`:
no decoder thread per speaker, no frame objects). The packets wait here; the stream is queued
on its shard when the first arrives, and the shard's :meth:`InboundAudio.take` decodes all that
wait (with PLC/FEC for the packets the buffer gave up) into one stretch of samples, enhanced
in the shard's next batch; the result comes back to :meth:`InboundAudio.deliver` on the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc.jitterbuffer import JitterFrame

from service.audio_frames import S16_SCALE
from service.batching import EnhancerPool, Outcome
from service.concealment import ConcealingOpusDecoder
from service.speaker import SpeakerPipeline


@dataclass(frozen=True)
class Received:
    """What one take held, besides its samples."""

    samples: np.ndarray  # decoded, before enhancement
    frames: int  # packets decoded, and lost packets concealed
    concealed: int  # of those, stand-ins for lost packets
    arrival: float  # time.monotonic() when its first packet was released


class InboundAudio:
    """The packets of one speaker waiting for their shard, and the decoder they go through."""

    def __init__(
        self,
        pipeline: SpeakerPipeline,
        pool: EnhancerPool,
        shard: int,
        max_queued_packets: int,
        on_audio: Callable[[Received, Outcome], None],
        on_dropped: Callable[[str], None],
    ) -> None:
        self.pipeline = pipeline
        self.loop = asyncio.get_running_loop()
        self.pool = pool
        self.shard = shard
        self.max_queued_packets = max_queued_packets
        self.on_audio = on_audio
        self.on_dropped = on_dropped
        self.decoder = ConcealingOpusDecoder()  # used on the shard only
        self._packets: deque[tuple[JitterFrame, float]] = deque()
        self._queued = False  # on the shard's queue, not yet taken
        self.closed = False

    def put(self, frame: JitterFrame | None) -> None:
        """On the event loop: one packet from the receive buffer (None: the receiver stopped)."""
        if frame is None or self.closed:
            return
        if len(self._packets) >= self.max_queued_packets:
            try:
                self._packets.popleft()  # enhancement is behind real time: lose the oldest
                self.on_dropped("behind")
            except IndexError:  # the shard took them all meanwhile
                pass
        self._packets.append((frame, time.monotonic()))
        if not self._queued:
            self._queued = True
            self.pool.submit(self.shard, self)

    def take(self) -> tuple[np.ndarray, Received] | None:
        """On the shard: every waiting packet, decoded, as one stretch of samples."""
        self._queued = False  # before draining: a packet put after this queues the stream again
        packets = []
        while True:
            try:
                packets.append(self._packets.popleft())
            except IndexError:
                break
        if not packets or self.closed:
            return None
        decoded = [audio for frame, _ in packets for audio in self.decoder.decode_pcm(frame)]
        pcm = decoded[0].pcm if len(decoded) == 1 else np.concatenate([d.pcm for d in decoded])
        samples = pcm.astype(np.float32)
        samples *= S16_SCALE
        received = Received(
            samples, len(decoded), sum(audio.concealed for audio in decoded), packets[0][1]
        )
        return samples, received

    def deliver(self, taken: object, outcome: Outcome) -> None:
        """On the event loop: the enhanced audio of one take."""
        assert isinstance(taken, Received)
        if not self.closed:
            self.on_audio(taken, outcome)
