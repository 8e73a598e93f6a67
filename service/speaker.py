"""One speaker's enhancement: the streaming enhancer and its runtime settings.

:meth:`SpeakerPipeline.process` runs in a worker thread (the numba kernels release the GIL and
onnxruntime does too); one speaker's frames are processed strictly one after another.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from dsp.constants import HOP_SAMPLES
from dsp.enhancer import Enhancer
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


class SpeakerPipeline:
    """Turns one speaker's decoded frames into enhanced frames of the same length."""

    def __init__(self, runtime: ModelRuntime, settings: EnhancementSettings) -> None:
        self.enhancer = Enhancer(ModelGainSource(runtime))
        self.settings = settings
        self._applied: EnhancementSettings | None = None
        self._pending = np.zeros(0, dtype=np.float32)  # input not yet a whole hop
        self._ready = np.zeros(0, dtype=np.float32)  # output not yet handed out
        self._hop_out = np.zeros(HOP_SAMPLES, dtype=np.float32)

    def _apply_settings(self) -> EnhancementSettings:
        settings = self.settings  # one read: a concurrent update applies from the next frame
        if settings != self._applied:
            if self._applied is not None and settings.enhance and not self._applied.enhance:
                self.enhancer.reset()  # resumed after pass-through: no stale history
            self.enhancer.postfilter = settings.postfilter
            self.enhancer.attenuation_limit_db = settings.attenuation_limit_db
            self._applied = settings
        return settings

    def process(self, samples: np.ndarray) -> ProcessResult:
        """Enhance one frame (any length; 960 samples gives exactly two hops)."""
        settings = self._apply_settings()
        if not settings.enhance:
            return ProcessResult(samples=samples, enhanced=False, seconds_per_hop=0.0)
        start = time.perf_counter()
        data = np.concatenate((self._pending, samples)) if self._pending.size else samples
        hops = data.shape[0] // HOP_SAMPLES
        produced = np.empty(hops * HOP_SAMPLES, dtype=np.float32)
        for index in range(hops):
            part = slice(index * HOP_SAMPLES, (index + 1) * HOP_SAMPLES)
            self.enhancer.process_hop(data[part], produced[part])
        self._pending = data[hops * HOP_SAMPLES :].copy()
        ready = np.concatenate((self._ready, produced)) if self._ready.size else produced
        wanted = samples.shape[0]
        if ready.shape[0] < wanted:  # only while the first partial hop fills
            ready = np.concatenate((np.zeros(wanted - ready.shape[0], np.float32), ready))
        self._ready = ready[wanted:].copy()
        elapsed = time.perf_counter() - start
        return ProcessResult(
            samples=ready[:wanted], enhanced=True, seconds_per_hop=elapsed / max(hops, 1)
        )
