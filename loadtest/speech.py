"""Generated speech-like test signals (never stored): for the benchmarks and the tests."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48_000


def add_white_noise(signal: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    """Signal plus white Gaussian noise at the given SNR."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(signal.shape[0])
    noise *= np.sqrt(np.mean(signal**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return signal + noise


VOWEL_FORMANTS_HZ = (
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (660, 1720, 2410),
    (570, 840, 2410),
)


def _resonator(signal: np.ndarray, centre_hz: float, bandwidth_hz: float) -> np.ndarray:
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bandwidth_hz / SAMPLE_RATE)
    theta = 2 * np.pi * centre_hz / SAMPLE_RATE
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], signal)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllables of voiced, formant-filtered glottal pulses with pitch glides, fricative bursts
    and pauses: enough like speech for PESQ and for a speech enhancer to treat it as speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    position = int(0.2 * SAMPLE_RATE)
    while position < n - SAMPLE_RATE // 5:
        length = int(rng.uniform(0.12, 0.3) * SAMPLE_RATE)
        f0 = rng.uniform(95, 230) * np.linspace(1.0, rng.uniform(0.8, 1.2), length)
        phase = np.cumsum(f0) / SAMPLE_RATE
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
        source = np.convolve(pulses, np.exp(-np.arange(48) / 6.0))[:length]
        voiced = sum(
            _resonator(source, f, 60 + 0.06 * f)
            for f in VOWEL_FORMANTS_HZ[int(rng.integers(len(VOWEL_FORMANTS_HZ)))]
        )
        voiced *= np.hanning(length)
        if rng.random() < 0.4:  # a fricative before the vowel
            fricative_length = int(rng.uniform(0.05, 0.12) * SAMPLE_RATE)
            hiss = _resonator(
                rng.standard_normal(fricative_length), rng.uniform(3000, 7000), 2000
            ) * np.hanning(fricative_length)
            end = min(n, position + fricative_length)
            out[position:end] += 0.3 * hiss[: end - position] * np.std(voiced) / np.std(hiss)
            position = end
        end = min(n, position + length)
        out[position:end] += voiced[: end - position]
        position = end + int(rng.uniform(0.03, 0.25) * SAMPLE_RATE)
    return 0.1 * out / np.sqrt(np.mean(out**2))


def speech_over_floor(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like sound (clean) and the same over a steady noise floor 30 dB down (sent)."""
    clean = speech_like(seconds, seed=seed).astype(np.float32)
    return clean, add_white_noise(clean, snr_db=30.0, seed=seed + 1).astype(np.float32)
