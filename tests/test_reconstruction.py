"""The enhancer with unity gains reconstructs its input, delayed by exactly 30 ms."""

import numpy as np
import pytest

from dsp.constants import DELAY_SAMPLES, HOP_SAMPLES, NUM_BANDS
from dsp.enhancer import Enhancer, ReplayGains
from dsp.offline import enhance_signal, enhance_with_oracle


def _stream(enhancer: Enhancer, signal: np.ndarray) -> np.ndarray:
    hops = signal.reshape(-1, HOP_SAMPLES)
    return np.concatenate([enhancer.process_hop(h).copy() for h in hops])


@pytest.mark.parametrize("postfilter", [False, True])
def test_unity_gains_reconstruct_input_delayed_by_1440_samples(postfilter: bool) -> None:
    rng = np.random.default_rng(0)
    signal = (0.3 * rng.standard_normal(100 * HOP_SAMPLES)).astype(np.float32)
    out = _stream(Enhancer(postfilter=postfilter), signal)
    assert DELAY_SAMPLES == 1440
    np.testing.assert_allclose(out[DELAY_SAMPLES:], signal[:-DELAY_SAMPLES], atol=1e-4, rtol=0)
    assert np.max(np.abs(out[:DELAY_SAMPLES])) < 1e-6  # nothing comes out before the delay


def test_delay_is_exposed() -> None:
    enhancer = Enhancer()
    assert enhancer.delay_samples == 1440
    assert enhancer.delay_seconds == pytest.approx(0.030)


def test_offline_enhancement_is_aligned_and_same_length() -> None:
    rng = np.random.default_rng(2)
    signal = 0.2 * rng.standard_normal(12_345)
    out = enhance_signal(signal, postfilter=False)
    assert out.shape == signal.shape
    np.testing.assert_allclose(out, signal, atol=1e-4)


def test_reset_restarts_the_stream_exactly() -> None:
    rng = np.random.default_rng(3)
    signal = (0.3 * rng.standard_normal(30 * HOP_SAMPLES)).astype(np.float32)
    gains = rng.uniform(0, 1, (30, NUM_BANDS))
    strengths = rng.uniform(0, 1, (30, NUM_BANDS))
    enhancer = Enhancer(ReplayGains(gains, strengths))
    first = _stream(enhancer, signal)
    enhancer.reset()
    second = _stream(enhancer, signal)
    np.testing.assert_array_equal(first, second)


def test_hop_of_wrong_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="480"):
        Enhancer().process_hop(np.zeros(960, dtype=np.float32))


def test_replay_gains_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        ReplayGains(np.ones((3, NUM_BANDS)), np.zeros((4, NUM_BANDS)))


def test_oracle_covers_the_last_hop_of_a_whole_number_of_hops() -> None:
    """The last input hop also lives in the frame after it; that frame needs targets too."""
    rng = np.random.default_rng(5)
    clean = np.zeros(20 * HOP_SAMPLES)
    noisy = 0.1 * rng.standard_normal(clean.shape[0])
    out = enhance_with_oracle(noisy, clean)
    tail = out[-HOP_SAMPLES:]
    assert np.sqrt(np.mean(tail**2)) < 1e-3 * 0.1  # silence target: noise removed to the end


def test_comb_strength_is_scaled_by_the_squared_band_gain() -> None:
    """Strength r under gain g acts as r·g²: full where the gains keep a band, none where they
    remove it (the comb must not give attenuated noise a pitch)."""
    from signals import add_white_noise, harmonic_tone

    noisy = add_white_noise(harmonic_tone(160.0, 0.6), 0.0).astype(np.float32)
    frames = noisy.shape[0] // HOP_SAMPLES + 3

    def run(gain: float, strength: float) -> np.ndarray:
        gains = np.full((frames, NUM_BANDS), gain)
        strengths = np.full((frames, NUM_BANDS), strength)
        return enhance_signal(noisy, ReplayGains(gains, strengths), postfilter=False)

    # Gains scale the mixed spectrum linearly, so g = 0.5, r = 1 is half of g = 1, r = 0.25.
    np.testing.assert_allclose(run(0.5, 1.0), 0.5 * run(1.0, 0.25), atol=1e-6)
    assert np.max(np.abs(run(1.0, 1.0) - run(1.0, 0.0))) > 1e-2  # kept bands: the comb acts
