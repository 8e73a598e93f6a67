"""Who is speaking: a per-speaker flag and level from what the enhancer already computes.

Two rules, per 20 ms frame, both from the model's gains:

- ``kept_snr`` (default): the energy the gains keep against the running mean of the energy
  they remove (:mod:`dsp.speech_presence`), the louder of the frame's two hops. A speaker
  starts speaking on a frame above ``START_DB`` and ``START_MARGIN_DB`` over the residual (or
  with a mean gain above ``START_GAIN``: a word onset that loud noise in other bands masks)
  and stays on frames above ``STAY_DB`` and ``STAY_MARGIN_DB`` over the residual, or with a
  mean gain above ``STAY_GAIN``. After the last such frame the flag holds ``HOLD_FRAMES``
  (600 ms) once ``CONFIRM_FRAMES`` frames above ``CONFIRM_DB`` made it speech, else only
  ``BRIEF_HOLD_FRAMES``: a burst of noise the model kept costs 40 ms, not a hangover. For the
  first ``WARM_UP_FRAMES`` (1 s, while the noise mean settles) a mean gain above
  ``threshold`` also starts speech.
- ``gain``: the mean gain above ``threshold``, held ``HANGOVER_FRAMES`` (500 ms).

The residual is what the model keeps of this speaker's steady noise: the running median of
the ratio (``RESIDUAL_STEP_DB`` a frame towards each, 10 dB/s, never under
``RESIDUAL_FLOOR_DB``) over frames outside confirmed speech, and over any frame whose mean gain
is under ``NOISE_GAIN``. On steady noise the model removes well it stays at the floor and
the fixed ratios decide alone. The margins are small because soft word onsets in steady noise
are kept at the noise's own ratios: pink noise at −40 dBFS the shipped weights keep at a
median of about −15 dB, single frames up to 10 dB over it, and onsets at −15 to −7 dB. Of
eight 12 s streams of it (``tests/signals.pink_noise``, seeds 20–27) the fixed ratios count
73 % as speech after the first 2 s, these margins 67 % (at −50 dBFS 77 % and 72 %, at
−30 dBFS 11 % and 11 %); margins of 10 and 8 dB counted 5 % but clipped onsets: of twelve dev
utterances after 3 s of that noise they covered 96.4 % of speech frames where these cover
98.6 % (fixed ratios 98.8 %).

On 48 dev mixtures at 0–15 dB SNR and their noise alone (``python -m
loadtest.voice_activity_rates --per-snr 12 --seed 1``, the draw the fixed ratios were chosen
on; ``--seed 2`` in brackets) ``kept_snr`` covers 99.5 % (99.3 %) of speech frames and counts
a silent speaker's noise as speaking 16.2 % (17.9 %) of the time, as the fixed ratios alone do
(these noises are short, and mostly removed well), ``gain`` at 0.1 99.5 % (99.3 %) and 50 %
(50 %). What it leaves out costs 0.022 PESQ-WB at 0 dB (``gain`` 0.1: 0.014), 0.017 at 5 dB
(0.016). A frame below
``QUIET_DB`` is never speech: the model keeps (near-)digital silence with gains near 1, and a
muted microphone sends just that. Not enhanced (``None`` evidence), a frame is speech when
louder than ``PASS_THROUGH_SPEECH_DB``.
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
RESIDUAL_STEP_DB = 0.2  # the residual median moves this far towards each frame: 10 dB/s
START_MARGIN_DB = 5.0  # speech starts this far above the residual median (and above START_DB)...
STAY_MARGIN_DB = 2.0  # ...and stays this far above it (and above STAY_DB)
RESIDUAL_FLOOR_DB = -22.0  # where it starts and stops, far under where the margins matter
NOISE_GAIN = 0.1  # a frame whose mean gain is under this is noise to the residual, speech or not
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
        # the running median of the kept-to-noise ratio outside speech: what the model keeps of
        # this speaker's steady noise (RESIDUAL_FLOOR_DB until it climbs above it)
        self.residual_db = RESIDUAL_FLOOR_DB

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
        if (
            kept_rule
            and speech_probability is not None
            and kept_to_noise_db is not None
            and (speech_probability < NOISE_GAIN or not self._confirmed_speech())
        ):
            self._track_residual(kept_to_noise_db)
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
        keeps speech going, against this speaker's residual so far but whatever the frames
        before decided (``warming_up``: one of the stream's first ``WARM_UP_FRAMES``)."""
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
        start_db = max(START_DB, self.residual_db + START_MARGIN_DB)
        stay_db = max(STAY_DB, self.residual_db + STAY_MARGIN_DB)
        return kept_to_noise_db > start_db or speech_probability > start_gain, (
            kept_to_noise_db > stay_db or speech_probability > STAY_GAIN
        )

    def _kept_rule(self, speech_probability: float | None, kept_to_noise_db: float | None) -> bool:
        return (
            self.rule == "kept_snr"
            and speech_probability is not None
            and kept_to_noise_db is not None
        )

    def _track_residual(self, kept_to_noise_db: float) -> None:
        # a median by fixed steps: one frame moves it RESIDUAL_STEP_DB whatever its value, so a
        # burst (or a hop that kept nothing, FLOOR_DB) cannot drag it, and it settles where as
        # many frames lie above as below
        step = RESIDUAL_STEP_DB if kept_to_noise_db > self.residual_db else -RESIDUAL_STEP_DB
        self.residual_db = max(self.residual_db + step, RESIDUAL_FLOOR_DB)

    def _confirmed_speech(self) -> bool:
        return self.speaking and self._confirmed >= CONFIRM_FRAMES

    def _hold(self) -> int:
        return HOLD_FRAMES if self._confirmed >= CONFIRM_FRAMES else BRIEF_HOLD_FRAMES
