"""Who is speaking: a per-speaker flag and level from what the enhancer already computes.

Two rules, per 20 ms frame, both from the model's gains:

- ``kept_snr`` (default): the energy the gains keep against the running mean of the energy
  they remove (:mod:`dsp.speech_presence`), the louder of the frame's two hops. A speaker
  starts speaking on a frame above ``START_DB`` (or with a mean gain above ``START_GAIN``:
  a word onset that loud noise in other bands masks) and stays on frames above ``STAY_DB``
  or with a mean gain above ``STAY_GAIN``. After the last such frame the flag holds
  ``HOLD_FRAMES`` (600 ms) once ``CONFIRM_FRAMES`` frames above ``CONFIRM_DB`` made it
  speech, else only ``BRIEF_HOLD_FRAMES``: a burst of noise the model kept costs 40 ms, not a
  hangover. For the first ``WARM_UP_FRAMES`` (1 s, while the noise mean settles) a mean gain
  above ``threshold`` also starts speech.
- ``gain``: the mean gain above ``threshold``, held ``HANGOVER_FRAMES`` (500 ms).

On 48 dev mixtures at 0–15 dB SNR and their noise alone (``python -m
loadtest.voice_activity_rates --per-snr 12 --seed 1``, the draw the constants were chosen on;
``--seed 2`` in brackets) ``kept_snr`` covers 99.2 % (98.9 %) of speech frames and counts a
silent speaker's noise as speaking 22 % (21 %) of the time, ``gain`` at 0.1 99.2 % (98.8 %)
and 54 % (60 %). What it leaves out costs 0.025 PESQ-WB at 0 dB (``gain`` 0.1: 0.020), 0.019
at 5 dB (0.024). A frame below ``QUIET_DB`` is never speech: the model keeps (near-)digital
silence with gains near 1, and a muted microphone sends just that. Not enhanced (``None``
evidence), a frame is speech when louder than ``PASS_THROUGH_SPEECH_DB``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Rule = Literal["kept_snr", "gain"]

HANGOVER_FRAMES = 25  # ``gain`` rule: 500 ms of 20 ms frames
START_DB = -12.0  # kept energy re the removed noise that starts speech...
STAY_DB = -14.0  # ...and that keeps it going
START_GAIN = 0.3  # a mean gain that starts it (a word onset that the noise in other bands masks)
STAY_GAIN = 0.15  # a mean gain that keeps it going (quiet word endings)
CONFIRM_DB = -6.0  # frames above this make a start speech...
CONFIRM_FRAMES = 3  # ...once there are this many
HOLD_FRAMES = 30  # hangover of confirmed speech: 600 ms
BRIEF_HOLD_FRAMES = 2  # hangover of an unconfirmed start: 40 ms
WARM_UP_FRAMES = 50  # the noise mean settles over 1 s: until then the gain rule also starts
SILENCE_DB = -100.0  # level reported for digital silence
PASS_THROUGH_SPEECH_DB = -50.0  # without the model's gains, speech is anything this loud
QUIET_DB = -70.0  # quieter than this is not speech, whatever the gains (inaudible in a mix)


def level_db(samples: np.ndarray) -> float:
    """RMS level of ``samples`` in dB relative to full scale (floored at -100 dB)."""
    power = float(np.dot(samples, samples)) / max(samples.shape[0], 1)
    return max(10.0 * math.log10(power), SILENCE_DB) if power > 0 else SILENCE_DB


class VoiceActivity:
    """One speaker's speaking flag, updated once per 20 ms frame."""

    def __init__(
        self,
        threshold: float,
        hangover_frames: int = HANGOVER_FRAMES,
        rule: Rule = "kept_snr",
    ) -> None:
        """``threshold``: the ``gain`` rule's mean gain (0: every frame is speech, either
        rule); ``hangover_frames`` applies to the ``gain`` rule."""
        self.threshold = threshold
        self.hangover_frames = hangover_frames
        self.rule = rule
        self.speaking = False
        self.level_db = SILENCE_DB
        self._quiet_frames = 0
        self._confirmed = 0  # frames above CONFIRM_DB since this stretch of speech started
        self._frames = 0  # frames judged so far

    def update(
        self,
        samples: np.ndarray,
        speech_probability: float | None,
        kept_to_noise_db: float | None = None,
    ) -> bool:
        """Take one output frame and the enhancer's evidence for it (the mean gain and the
        kept-to-noise ratio; ``None``: not enhanced, judged by level); returns whether the
        speaker is speaking now."""
        self.level_db = level_db(samples)
        # not enhanced: when enhancement resumes, its noise mean starts over
        self._frames = (
            0 if speech_probability is None else min(self._frames + 1, WARM_UP_FRAMES + 1)
        )
        starts, stays = self.evidence(
            self.level_db,
            speech_probability,
            kept_to_noise_db,
            warming_up=self._frames <= WARM_UP_FRAMES,
        )
        kept_rule = self._kept_rule(speech_probability, kept_to_noise_db)
        if starts or (self.speaking and stays):
            if not self.speaking:
                self._confirmed = 0
            self.speaking = True
            self._quiet_frames = 0
            if kept_rule and kept_to_noise_db is not None and kept_to_noise_db > CONFIRM_DB:
                self._confirmed += 1
        elif self.speaking:
            self._quiet_frames += 1
            self.speaking = self._quiet_frames <= (
                self._hold() if kept_rule else self.hangover_frames
            )
        return self.speaking

    def evidence(
        self,
        frame_db: float,
        speech_probability: float | None,
        kept_to_noise_db: float | None,
        warming_up: bool = False,
    ) -> tuple[bool, bool]:
        """Whether a frame at ``frame_db`` with this evidence starts speech, and whether it
        keeps speech going, whatever came before (``warming_up``: one of the stream's first
        ``WARM_UP_FRAMES``)."""
        if self.threshold <= 0.0:
            return True, True
        if speech_probability is None:
            loud = frame_db > PASS_THROUGH_SPEECH_DB
            return loud, loud
        if frame_db < QUIET_DB:
            return False, False
        if self.rule == "gain" or kept_to_noise_db is None:
            above = speech_probability > self.threshold
            return above, above
        start_gain = self.threshold if warming_up else START_GAIN
        return kept_to_noise_db > START_DB or speech_probability > start_gain, (
            kept_to_noise_db > STAY_DB or speech_probability > STAY_GAIN
        )

    def _kept_rule(self, speech_probability: float | None, kept_to_noise_db: float | None) -> bool:
        return (
            self.rule == "kept_snr"
            and speech_probability is not None
            and kept_to_noise_db is not None
        )

    def _hold(self) -> int:
        return HOLD_FRAMES if self._confirmed >= CONFIRM_FRAMES else BRIEF_HOLD_FRAMES
