"""Opus encoding of a room's mixes: once per distinct mix, not once per listener.

Listeners who hear the same set of speakers (in a meeting usually everyone but the one who
talks) get the same mix, so one encoder per set serves them all. A mix of nobody is digital
silence: every listener of it gets one silence packet encoded at start-up, with no encode at
all, and then mostly nothing (``service/dtx.py``).

An encoder outlives the pauses of its set: it is let go only after ``IDLE_TICKS`` ticks that
nobody heard that set (or, past ``MAX_ENCODERS``, the longest idle first), so a talker who
resumes continues the stream the listeners' decoders last played. A fresh encoder at each talk
spurt put Chromium's playout of the spurt's onset 10–15 ms later and less steadily
(``python -m loadtest.browser_delay``; docs/performance.md).
"""

from __future__ import annotations

import numpy as np

from service.audio_frames import FRAME_SAMPLES
from service.opus import OpusPacketEncoder, OpusSettings

SILENCE_WARM_UP_FRAMES = 3  # a fresh encoder's first packets still carry its start-up
IDLE_TICKS = 500  # 10 s of 20 ms ticks: an encoder nobody heard for this long is let go
MAX_ENCODERS = 64  # per room; past it, the longest idle encoder is let go first


def silence_packet(settings: OpusSettings) -> bytes:
    """The packet ``settings``' encoder settles on for digital silence."""
    encoder = OpusPacketEncoder(settings)
    packets = [
        encoder.encode(np.zeros(FRAME_SAMPLES, np.float32)) for _ in range(SILENCE_WARM_UP_FRAMES)
    ]
    return packets[-1]


class MixEncoders:
    """One Opus encoder per set of speakers heard; :meth:`encode` runs once per tick."""

    def __init__(self, settings: OpusSettings) -> None:
        self.settings = settings
        self.silence = silence_packet(settings)
        self._ticks = 0
        # each set's encoder and the tick it was last heard, the longest unheard first
        self._encoders: dict[frozenset[str], tuple[OpusPacketEncoder, int]] = {}

    @property
    def live(self) -> int:
        """Encoders kept (those in use and those waiting for their set to be heard again)."""
        return len(self._encoders)

    def encode(self, mixes: dict[frozenset[str], np.ndarray]) -> dict[frozenset[str], bytes]:
        """This tick's packet of each mix, keyed by who is heard in it; ``len(mixes)`` less the
        silent one are encoded. Encoders of sets nobody heard for ``IDLE_TICKS`` are let go."""
        self._ticks += 1
        payloads: dict[frozenset[str], bytes] = {}
        for speakers, mix in mixes.items():
            if not speakers:
                payloads[speakers] = self.silence
                continue
            kept = self._encoders.pop(speakers, None)  # heard now: to the end of the order
            encoder = kept[0] if kept is not None else OpusPacketEncoder(self.settings)
            self._encoders[speakers] = (encoder, self._ticks)
            payloads[speakers] = encoder.encode(mix)
        self._let_go()
        return payloads

    def _let_go(self) -> None:
        """Drop the encoders unheard for ``IDLE_TICKS``, then, past the cap, the longest
        unheard (never one in use this tick)."""
        while self._encoders:
            speakers, (_, heard_at) = next(iter(self._encoders.items()))
            idle = self._ticks - heard_at
            if idle == 0 or (idle < IDLE_TICKS and len(self._encoders) <= MAX_ENCODERS):
                return
            del self._encoders[speakers]

    @staticmethod
    def encodes(mixes: dict[frozenset[str], np.ndarray]) -> int:
        """How many of ``mixes`` :meth:`encode` runs the encoder for."""
        return sum(1 for speakers in mixes if speakers)
