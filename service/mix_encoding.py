"""Opus encoding of a room's mixes: once per distinct mix, not once per listener.

Listeners who hear the same set of speakers (in a meeting usually everyone but the one who
talks) get the same mix, so one encoder per set serves them all; its stream lives as long as
some listener hears that set. A mix of nobody is digital silence: every listener of it gets
one silence packet encoded at start-up, with no encode at all, and then mostly nothing
(``service/dtx.py``).
"""

from __future__ import annotations

import numpy as np

from service.audio_frames import FRAME_SAMPLES
from service.opus import OpusPacketEncoder, OpusSettings

SILENCE_WARM_UP_FRAMES = 3  # a fresh encoder's first packets still carry its start-up


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
        self._encoders: dict[frozenset[str], OpusPacketEncoder] = {}

    def encode(self, mixes: dict[frozenset[str], np.ndarray]) -> dict[frozenset[str], bytes]:
        """This tick's packet of each mix, keyed by who is heard in it; encoders of sets nobody
        hears any more are let go. ``len(mixes)`` less the silent one are encoded."""
        payloads: dict[frozenset[str], bytes] = {}
        encoders: dict[frozenset[str], OpusPacketEncoder] = {}
        for speakers, mix in mixes.items():
            if not speakers:
                payloads[speakers] = self.silence
                continue
            encoder = self._encoders.get(speakers) or OpusPacketEncoder(self.settings)
            encoders[speakers] = encoder
            payloads[speakers] = encoder.encode(mix)
        self._encoders = encoders
        return payloads

    @staticmethod
    def encodes(mixes: dict[frozenset[str], np.ndarray]) -> int:
        """How many of ``mixes`` :meth:`encode` runs the encoder for."""
        return sum(1 for speakers in mixes if speakers)
