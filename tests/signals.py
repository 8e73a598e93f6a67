"""Synthetic test signals (generated, never stored)."""

from __future__ import annotations

import numpy as np

from loadtest.speech import add_white_noise, speech_like

__all__ = ["add_white_noise", "harmonic_tone", "pink_noise", "speech_like"]

SAMPLE_RATE = 48_000


def harmonic_tone(
    f0_hz: float | np.ndarray,
    seconds: float,
    num_harmonics: int = 20,
    seed: int = 0,
    rolloff_db_per_octave: float = -6.0,
    max_hz: float = 8_000.0,
) -> np.ndarray:
    """Sum of harmonics with a vowel-like spectral tilt; ``f0_hz`` may vary per sample."""
    n = int(seconds * SAMPLE_RATE)
    f0 = np.broadcast_to(np.asarray(f0_hz, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    for h in range(1, num_harmonics + 1):
        amplitude = 10 ** (rolloff_db_per_octave * np.log2(h) / 20)
        audible = (h * f0) < max_hz
        out += audible * amplitude * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    return 0.3 * out / np.max(np.abs(out))


def pink_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a 1/f power spectrum, unit RMS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0))
    noise = np.fft.irfft(spectrum, n=n)
    return noise / np.sqrt(np.mean(noise**2))
