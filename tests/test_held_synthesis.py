"""Analysing a packet's two hops before synthesising either (``process_pair``) gives, bit for
bit, the output of the alternating ``process_hop`` order."""

from __future__ import annotations

import numpy as np
import pytest
from signals import add_white_noise, harmonic_tone, pink_noise, speech_like

from dsp.constants import DELAY_SAMPLES, HOP_SAMPLES, NUM_BANDS, NUM_FEATURES
from dsp.enhancer import Enhancer, GainSource, PairGainSource, ReplayGains, UnityGains
from dsp.offline import enhance_signal, hops_for

NUM_PAIRS = 24


class HopOnlyGains:
    """A gain source without ``gains_for_pair``: ``process_pair`` must fall back."""

    def __init__(self, inner: GainSource) -> None:
        self.inner = inner

    def reset(self) -> None:
        self.inner.reset()

    def gains_for(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.gains_for(features)


class CountingPairGains(ReplayGains):
    """ReplayGains that counts its pair calls (to see which path ``process_pair`` took)."""

    pair_calls = 0

    def gains_for_pair(
        self, features_a: np.ndarray, features_b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        self.pair_calls += 1
        return super().gains_for_pair(features_a, features_b)


def _signal(kind: str, num_samples: int) -> np.ndarray:
    seconds = num_samples / 48_000 + 0.01  # a little long: int() rounding never falls short
    if kind == "speech":
        signal = add_white_noise(speech_like(seconds, seed=4), snr_db=5.0, seed=5)
    elif kind == "voiced":
        glide_hz = np.linspace(110.0, 240.0, int(seconds * 48_000))
        signal = harmonic_tone(glide_hz, seconds) + 0.1 * pink_noise(seconds, seed=6)
    else:
        signal = 0.3 * np.random.default_rng(7).standard_normal(num_samples)
    return signal[:num_samples]


def _targets(num_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gains = rng.uniform(0, 1, (num_frames, NUM_BANDS)).astype(np.float32)
    strengths = rng.uniform(0, 1, (num_frames, NUM_BANDS)).astype(np.float32)
    return gains, strengths


def _by_hops(enhancer: Enhancer, signal: np.ndarray) -> np.ndarray:
    out = np.empty(signal.shape[0], dtype=np.float32)
    for start in range(0, signal.shape[0], HOP_SAMPLES):
        enhancer.process_hop(signal[start : start + HOP_SAMPLES], out[start : start + HOP_SAMPLES])
    return out


def _by_pairs(enhancer: Enhancer, signal: np.ndarray) -> np.ndarray:
    out = np.empty(signal.shape[0], dtype=np.float32)
    for start in range(0, signal.shape[0], 2 * HOP_SAMPLES):
        enhancer.process_pair(
            signal[start : start + HOP_SAMPLES],
            signal[start + HOP_SAMPLES : start + 2 * HOP_SAMPLES],
            out[start : start + 2 * HOP_SAMPLES],
        )
    return out


@pytest.mark.parametrize("kind", ["speech", "voiced", "white"])
@pytest.mark.parametrize("postfilter", [False, True])
@pytest.mark.parametrize("limit_db", [None, 12.0])
def test_pairs_equal_hops_bit_for_bit(kind: str, postfilter: bool, limit_db: float | None) -> None:
    signal = _signal(kind, 2 * NUM_PAIRS * HOP_SAMPLES)
    gains, strengths = _targets(2 * NUM_PAIRS, seed=len(kind))
    expected = _by_hops(
        Enhancer(ReplayGains(gains, strengths), postfilter, limit_db),
        signal,
    )
    source = CountingPairGains(gains, strengths)
    got = _by_pairs(Enhancer(source, postfilter, limit_db), signal)
    assert source.pair_calls == NUM_PAIRS
    assert np.array_equal(got, expected)
    assert np.max(np.abs(got)) > 0.01  # not trivially equal


@pytest.mark.parametrize("postfilter", [False, True])
def test_pairs_without_gains_for_pair_fall_back_to_hops(postfilter: bool) -> None:
    signal = _signal("speech", 2 * NUM_PAIRS * HOP_SAMPLES)
    gains, strengths = _targets(2 * NUM_PAIRS, seed=11)
    expected = _by_hops(Enhancer(ReplayGains(gains, strengths), postfilter, 20.0), signal)
    fallback = HopOnlyGains(ReplayGains(gains, strengths))
    assert not isinstance(fallback, PairGainSource)
    got = _by_pairs(Enhancer(fallback, postfilter, 20.0), signal)
    assert np.array_equal(got, expected)


def test_pairs_and_single_hops_interleave() -> None:
    """A stream may switch between packets and single hops at any hop."""
    signal = _signal("voiced", 2 * NUM_PAIRS * HOP_SAMPLES)
    gains, strengths = _targets(2 * NUM_PAIRS, seed=12)
    expected = _by_hops(Enhancer(ReplayGains(gains, strengths)), signal)
    enhancer = Enhancer(ReplayGains(gains, strengths))
    got = np.empty_like(expected)
    sizes = [1, 2, 2, 1, 1, 2] * 5 + [2, 1]  # hops per call
    assert sum(sizes) * HOP_SAMPLES == signal.shape[0]
    start = 0
    for size in sizes:
        span = slice(start, start + size * HOP_SAMPLES)
        if size == 1:
            enhancer.process_hop(signal[span], got[span])
        else:
            enhancer.process_pair(
                signal[start : start + HOP_SAMPLES],
                signal[start + HOP_SAMPLES : start + 2 * HOP_SAMPLES],
                got[span],
            )
        start += size * HOP_SAMPLES
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("extra_samples", [0, HOP_SAMPLES, 123])
@pytest.mark.parametrize("postfilter", [False, True])
def test_enhance_signal_matches_hop_by_hop(extra_samples: int, postfilter: bool) -> None:
    num_samples = 2 * NUM_PAIRS * HOP_SAMPLES + extra_samples
    signal = _signal("speech", num_samples)
    num_hops = hops_for(num_samples)
    gains, strengths = _targets(num_hops, seed=13)
    padded = np.zeros(num_hops * HOP_SAMPLES)
    padded[:num_samples] = signal
    hops = _by_hops(Enhancer(ReplayGains(gains, strengths), postfilter, 15.0), padded)
    expected = hops[DELAY_SAMPLES : DELAY_SAMPLES + num_samples]
    got = enhance_signal(signal, ReplayGains(gains, strengths), postfilter, 15.0)
    assert np.array_equal(got, expected)
    fallback = enhance_signal(signal, HopOnlyGains(ReplayGains(gains, strengths)), postfilter, 15.0)
    assert np.array_equal(fallback, expected)


def test_enhance_signal_covers_odd_and_even_hop_counts() -> None:
    counts = {hops_for(2 * NUM_PAIRS * HOP_SAMPLES + extra) % 2 for extra in (0, HOP_SAMPLES)}
    assert counts == {0, 1}


def test_held_band_energy_is_the_analysed_synthesis_frame() -> None:
    signal = _signal("voiced", 8 * HOP_SAMPLES)
    enhancer = Enhancer()
    held = enhancer.held_band_energy
    out = np.empty(HOP_SAMPLES, dtype=np.float32)
    unity, zero = np.ones(NUM_BANDS), np.zeros(NUM_BANDS)
    for start in range(0, signal.shape[0], 2 * HOP_SAMPLES):
        enhancer.analyze(signal[start : start + HOP_SAMPLES])
        before = enhancer.synthesis_band_energy.copy()
        enhancer.hold()
        assert np.array_equal(held, before)
        enhancer.analyze(signal[start + HOP_SAMPLES : start + 2 * HOP_SAMPLES])
        assert np.array_equal(held, before)  # the next analysis leaves the held frame alone
        if start >= 2 * HOP_SAMPLES:  # once the synthesis frames hold signal, they differ
            assert not np.array_equal(enhancer.synthesis_band_energy, before)
        enhancer.synthesize_held(unity, zero, out)
        enhancer.synthesize(unity, zero, out)
    assert enhancer.held_band_energy is held  # a live view, like synthesis_band_energy


def test_reset_clears_the_held_frame() -> None:
    signal = _signal("voiced", 2 * NUM_PAIRS * HOP_SAMPLES)
    gains, strengths = _targets(2 * NUM_PAIRS, seed=14)
    fresh = _by_pairs(Enhancer(ReplayGains(gains, strengths)), signal)
    enhancer = Enhancer(ReplayGains(gains, strengths))
    _by_pairs(enhancer, signal[::-1].copy())
    assert np.any(enhancer.held_band_energy != 0)
    enhancer.reset()
    for name in ("held_spectrum", "held_comb_spectrum", "held_energy_x", "held_energy_p"):
        assert not np.any(enhancer.arrays[name]), name
    assert np.array_equal(_by_pairs(enhancer, signal), fresh)


def test_replay_gains_for_pair_steps_like_two_calls() -> None:
    gains, strengths = _targets(5, seed=15)
    hop_source = ReplayGains(gains, strengths)
    pair_source = ReplayGains(gains, strengths)
    features = np.zeros(NUM_FEATURES, dtype=np.float32)
    for _ in range(5):  # runs past both ends of the targets: unity there
        pair_gains, pair_strengths = pair_source.gains_for_pair(features, features)
        assert pair_gains.shape == pair_strengths.shape == (2, NUM_BANDS)
        for row in range(2):
            g, r = hop_source.gains_for(features)
            assert np.array_equal(pair_gains[row], g)
            assert np.array_equal(pair_strengths[row], r)


def test_unity_gains_for_pair() -> None:
    features = np.zeros(NUM_FEATURES, dtype=np.float32)
    gains, strengths = UnityGains().gains_for_pair(features, features)
    assert np.array_equal(gains, np.ones((2, NUM_BANDS)))
    assert np.array_equal(strengths, np.zeros((2, NUM_BANDS)))
    assert isinstance(UnityGains(), PairGainSource)


def test_pair_output_of_wrong_size_is_rejected() -> None:
    hop = np.zeros(HOP_SAMPLES, dtype=np.float32)
    with pytest.raises(ValueError, match="960"):
        Enhancer().process_pair(hop, hop, np.zeros(HOP_SAMPLES, dtype=np.float32))
