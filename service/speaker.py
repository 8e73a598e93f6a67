"""One speaker's enhancement: the streaming enhancer and its runtime settings.

:meth:`SpeakerPipeline.process` runs on an enhancement shard (the event loop or a worker thread:
the numba kernels release the GIL and onnxruntime does too); one speaker's frames are
processed strictly one after another.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from dsp.constants import HOP_SAMPLES, NUM_FEATURES
from dsp.enhancer import Enhancer
from dsp.speech_presence import FLOOR_DB, kept_to_noise_db, new_tracker
from model.runtime import ModelGainSource, ModelRuntime


@dataclass(frozen=True)
class EnhancementSettings:
    """What a participant can change while talking; applied from the next frame on."""

    enhance: bool = True
    attenuation_limit_db: float | None = None
    postfilter: bool = True

    def __post_init__(self) -> None:
        limit = self.attenuation_limit_db
        if limit is not None and (not math.isfinite(limit) or limit < 0):
            raise ValueError(f"attenuation limit must be a finite number of dB >= 0, got {limit}")

    def updated(self, **changes: object) -> EnhancementSettings:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class ProcessResult:
    """One frame's output and what it cost."""

    samples: np.ndarray
    enhanced: bool
    seconds_per_hop: float
    speech_probability: float | None = None  # the model's mean band gain; None: not enhanced
    kept_to_noise_db: float | None = None  # loudest hop's kept energy re the removed noise


class SpeakerPipeline:
    """Turns one speaker's decoded frames into enhanced frames of the same length.

    A frame goes through :meth:`begin` (settings, whole hops cut out), then for each pair of
    hops (a 20 ms packet's two) :meth:`analyze_two_hops`, one model call for both (alone or
    batched with other speakers) and :meth:`synthesize_two_hops`, for a hop left over
    :meth:`analyze_hop`, the model and :meth:`synthesize_hop`, then :meth:`finish`. Either
    order gives the same audio, sample for sample. :meth:`process` does all of it for one
    frame.
    """

    def __init__(self, runtime: ModelRuntime, settings: EnhancementSettings) -> None:
        self.gain_source = ModelGainSource(runtime)
        self.enhancer = Enhancer(self.gain_source)
        self.settings = settings
        self._applied: EnhancementSettings | None = None
        self._pending = np.zeros(0, dtype=np.float32)  # input not yet a whole hop
        self._ready = np.zeros(0, dtype=np.float32)  # output not yet handed out
        self._hops: list[np.ndarray] = []
        self._produced = np.zeros(0, dtype=np.float32)
        self._frame_length = 0
        self._started = 0.0
        self._gain_sum = 0.0  # mean band gains of the current frame's hops, summed
        self._noise_tracker = new_tracker()  # the removed energy's running mean
        self._band_energy = self.enhancer.synthesis_band_energy
        self._kept_db = FLOOR_DB  # the current frame's loudest kept-to-noise ratio
        self._two_hop_features = np.zeros((2, NUM_FEATURES), dtype=np.float32)

    def _apply_settings(self) -> EnhancementSettings:
        settings = self.settings  # one read: a concurrent update applies from the next frame
        if settings != self._applied:
            if self._applied is not None and settings.enhance and not self._applied.enhance:
                self.enhancer.reset()  # resumed after pass-through: no stale history
                self._noise_tracker[:] = new_tracker()
            self.enhancer.postfilter = settings.postfilter
            self.enhancer.attenuation_limit_db = settings.attenuation_limit_db
            self._applied = settings
        return settings

    def begin(self, samples: np.ndarray) -> int:
        """Start a frame; returns how many hops it needs enhanced (0: pass it through)."""
        if samples.ndim != 1:
            raise ValueError(f"a frame is one channel of samples, got shape {samples.shape}")
        self._frame_length = samples.shape[0]
        self._started = time.perf_counter()
        self._gain_sum = 0.0
        self._kept_db = FLOOR_DB
        if not self._apply_settings().enhance:
            self._hops = []
            self._produced = samples
            return 0
        data = np.concatenate((self._pending, samples)) if self._pending.size else samples
        count = data.shape[0] // HOP_SAMPLES
        self._hops = [data[i * HOP_SAMPLES : (i + 1) * HOP_SAMPLES] for i in range(count)]
        self._pending = data[count * HOP_SAMPLES :].copy()
        self._produced = np.empty(count * HOP_SAMPLES, dtype=np.float32)
        return count

    def analyze_hop(self, index: int) -> np.ndarray:
        """Features of hop ``index`` of the current frame (reused buffer: copy to keep)."""
        return self.enhancer.analyze(self._hops[index])

    def synthesize_hop(self, index: int, gains: np.ndarray, strengths: np.ndarray) -> None:
        """Apply the model's output for hop ``index``."""
        part = slice(index * HOP_SAMPLES, (index + 1) * HOP_SAMPLES)
        self.enhancer.synthesize(gains, strengths, self._produced[part])
        self._account(gains, self._band_energy)

    def analyze_two_hops(self, index: int, features: np.ndarray) -> None:
        """Features of hops ``index`` and ``index + 1`` into ``features[0]`` and ``[1]``, the
        first hop's synthesis frame held so that both can be synthesised after one model call
        (:meth:`synthesize_two_hops`)."""
        features[0] = self.enhancer.analyze(self._hops[index])
        self.enhancer.hold()
        features[1] = self.enhancer.analyze(self._hops[index + 1])

    def synthesize_two_hops(self, index: int, gains: np.ndarray, strengths: np.ndarray) -> None:
        """Apply the model's output for hops ``index`` and ``index + 1`` (rows 0 and 1)."""
        first = slice(index * HOP_SAMPLES, (index + 1) * HOP_SAMPLES)
        self.enhancer.synthesize_held(gains[0], strengths[0], self._produced[first])
        self._account(gains[0], self.enhancer.held_band_energy)
        self.synthesize_hop(index + 1, gains[1], strengths[1])

    def _account(self, gains: np.ndarray, band_energy: np.ndarray) -> None:
        self._gain_sum += float(gains.mean())
        kept_db = kept_to_noise_db(gains, band_energy, self._noise_tracker)
        self._kept_db = max(self._kept_db, kept_db)

    def finish(self) -> ProcessResult:
        """The current frame's output, as long as its input."""
        if not self._hops and self._applied is not None and not self._applied.enhance:
            return ProcessResult(samples=self._produced, enhanced=False, seconds_per_hop=0.0)
        produced = self._produced
        ready = np.concatenate((self._ready, produced)) if self._ready.size else produced
        wanted = self._frame_length
        if ready.shape[0] < wanted:  # only while the first partial hop fills
            ready = np.concatenate((np.zeros(wanted - ready.shape[0], np.float32), ready))
        self._ready = ready[wanted:].copy()
        elapsed = time.perf_counter() - self._started
        return ProcessResult(
            samples=ready[:wanted],
            enhanced=True,
            seconds_per_hop=elapsed / max(len(self._hops), 1),
            speech_probability=self._gain_sum / len(self._hops) if self._hops else 0.0,
            kept_to_noise_db=self._kept_db,
        )

    def process(self, samples: np.ndarray) -> ProcessResult:
        """Enhance one frame on its own (batch of one), two hops a model call."""
        hops = self.begin(samples)
        for index in range(0, hops - 1, 2):
            self.analyze_two_hops(index, self._two_hop_features)
            gains, strengths = self.gain_source.gains_for_pair(*self._two_hop_features)
            self.synthesize_two_hops(index, gains, strengths)
        if hops % 2:
            features = self.analyze_hop(hops - 1)
            gains, strengths = self.gain_source.gains_for(features)
            self.synthesize_hop(hops - 1, gains, strengths)
        return self.finish()
