"""Pitch tracking accuracy and the comb filter's harmonic/noise selectivity."""

import numpy as np
import pytest
from signals import SAMPLE_RATE, add_white_noise, harmonic_tone

from dsp.comb import comb_filter, comb_noise_gains, comb_side_taps, comb_weight_table
from dsp.constants import HOP_SAMPLES
from dsp.enhancer import Enhancer

WARMUP_HOPS = 5


def _track(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per hop: period of the newest frame, and of the synthesis frame (two hops back)."""
    enhancer = Enhancer(postfilter=False)
    newest, synth = [], []
    for i in range(0, signal.shape[0] - HOP_SAMPLES + 1, HOP_SAMPLES):
        enhancer.process_hop(signal[i : i + HOP_SAMPLES])
        period_now, _, period_synth, _ = enhancer.pitch
        newest.append(period_now)
        synth.append(period_synth)
    return np.array(newest[WARMUP_HOPS:]), np.array(synth[WARMUP_HOPS + 2 :])


@pytest.mark.parametrize("f0_hz", [80.0, 97.0, 123.4, 150.0, 200.0, 260.0, 317.0, 400.0])
def test_period_within_2_percent_on_noisy_harmonic_signals(f0_hz: float) -> None:
    signal = add_white_noise(harmonic_tone(f0_hz, 1.5, seed=int(f0_hz)), snr_db=10.0)
    newest, synth = _track(signal)
    true_period = SAMPLE_RATE / f0_hz
    for periods in (newest, synth):
        within = np.abs(periods / true_period - 1.0) <= 0.02
        assert within.mean() >= 0.95, (f0_hz, np.unique(periods))


def test_no_octave_jumps_on_a_steady_vowel() -> None:
    # Strong second harmonic and weak fundamental: the classic octave-error bait.
    n = int(2.0 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 110.0
    vowel = 0.3 * np.sin(2 * np.pi * f0 * t) + 1.0 * np.sin(2 * np.pi * 2 * f0 * t + 0.3)
    vowel += sum(0.5 / h * np.sin(2 * np.pi * h * f0 * t + h) for h in range(3, 25))
    signal = add_white_noise(0.2 * vowel / np.abs(vowel).max(), snr_db=10.0)
    _, synth = _track(signal)
    ratio = synth / (SAMPLE_RATE / f0)
    assert np.all(np.abs(ratio - 1.0) < 0.05), np.unique(synth)


def test_comb_passes_harmonics_and_removes_noise_between_them() -> None:
    f0_hz = 200.0  # period 240 samples
    period = int(SAMPLE_RATE / f0_hz)
    harmonic = harmonic_tone(
        f0_hz, 1.0, num_harmonics=30, rolloff_db_per_octave=0.0, max_hz=7_000.0
    )
    noise = add_white_noise(harmonic, snr_db=10.0, seed=4) - harmonic
    weights = comb_weight_table()
    side = comb_side_taps(period, weights.shape[0] - 1)
    margin = side * period
    length = harmonic.shape[0] - 2 * margin

    def filtered(x: np.ndarray) -> np.ndarray:
        out = np.zeros(length)
        comb_filter(x, margin, length, period, side, weights, 0, out)
        return out

    def spectrum(x: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.rfft(x * np.hanning(x.shape[0]))) ** 2

    freqs = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)
    mixture = harmonic + noise
    before = spectrum(mixture[margin : margin + length])
    after = spectrum(filtered(mixture))
    offset = np.abs(((freqs + f0_hz / 2) % f0_hz) - f0_hz / 2)  # distance to nearest harmonic
    in_band = (freqs > 100) & (freqs < 7_000)
    at_harmonics = in_band & (offset < 2.0)
    between = in_band & (offset > 0.3 * f0_hz)
    harmonic_change_db = 10 * np.log10(after[at_harmonics].sum() / before[at_harmonics].sum())
    noise_drop_db = 10 * np.log10(before[between].sum() / after[between].sum())
    assert abs(harmonic_change_db) < 1.0
    assert noise_drop_db >= 6.0


def test_comb_weights_sum_to_one_and_fit_in_the_lookahead() -> None:
    weights = comb_weight_table()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.all(comb_noise_gains(weights)[1:] < 1.0)
    for period in range(60, 769):
        side = comb_side_taps(period, weights.shape[0] - 1)
        assert side >= 1
        assert side * period <= 2 * HOP_SAMPLES  # future taps stay inside the 20 ms look-ahead
