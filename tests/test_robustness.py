"""Property tests: whatever comes in (NaN, Inf, DC, clipping, silence, denormals, absurd
gains), the enhancer's output and features stay finite and bounded."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dsp.constants import HOP_SAMPLES, NUM_BANDS
from dsp.enhancer import Enhancer

OUTPUT_BOUND = 8.0

special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 1e-38, 5e-324, 1e30])
samples = st.one_of(st.floats(-1.0, 1.0, width=32), special)
hops = arrays(np.float32, HOP_SAMPLES, elements=samples)
band_values = arrays(
    np.float32,
    NUM_BANDS,
    elements=st.one_of(st.floats(-2, 2, width=32), st.sampled_from([np.nan, np.inf, -np.inf])),
)

_enhancer = Enhancer()  # one instance: compiling per example would dominate


@settings(max_examples=60, deadline=None)
@given(st.lists(hops, min_size=1, max_size=8), band_values, band_values, st.booleans())
def test_output_and_features_are_finite_and_bounded(
    hop_list: list[np.ndarray], gains: np.ndarray, strengths: np.ndarray, postfilter: bool
) -> None:
    _enhancer.reset()
    _enhancer.postfilter = postfilter
    for hop in hop_list:
        features = _enhancer.analyze(hop)
        assert np.all(np.isfinite(features))
        out = _enhancer.synthesize(gains, strengths)
        assert np.all(np.isfinite(out))
        assert np.max(np.abs(out)) <= OUTPUT_BOUND


def _run(signal: np.ndarray) -> np.ndarray:
    enhancer = Enhancer()
    hops = signal.astype(np.float32).reshape(-1, HOP_SAMPLES)
    return np.concatenate([enhancer.process_hop(h).copy() for h in hops])


def test_dc_clipping_silence_and_denormals_stay_finite() -> None:
    n = 50 * HOP_SAMPLES
    t = np.arange(n) / 48_000
    cases = {
        "dc": np.full(n, 0.9),
        "clipped": np.clip(3 * np.sin(2 * np.pi * 220 * t), -1, 1),
        "silence": np.zeros(n),
        "denormal": np.full(n, 1e-40),
        "square_full_scale": np.sign(np.sin(2 * np.pi * 50 * t)),
    }
    for name, signal in cases.items():
        out = _run(signal)
        assert np.all(np.isfinite(out)), name
        assert np.max(np.abs(out)) <= OUTPUT_BOUND, name


def test_nan_samples_are_counted_and_replaced() -> None:
    enhancer = Enhancer()
    hop = np.zeros(HOP_SAMPLES, dtype=np.float32)
    hop[::10] = np.nan
    out = enhancer.process_hop(hop)
    assert np.all(np.isfinite(out))
    assert enhancer.nonfinite_samples == HOP_SAMPLES // 10
