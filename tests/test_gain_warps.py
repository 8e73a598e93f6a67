"""The gain-warp probe: its curves, its parsing and the errors of its command line."""

from __future__ import annotations

import numpy as np
import pytest
from signals import add_white_noise, harmonic_tone

from dsp.constants import NUM_BANDS, NUM_FEATURES
from dsp.enhancer import ReplayGains
from dsp.offline import enhance_signal
from model.research.gain_warps import WarpedGainSource, main, parse_warp, warped_system
from model.runtime import DEFAULT_MODEL, ModelGainSource, ModelRuntime

GAINS = np.linspace(0.0, 1.0, NUM_BANDS, dtype=np.float32)


def warped(spec: str) -> np.ndarray:
    curve = parse_warp(spec).gain_curve
    assert curve is not None
    return np.asarray(curve(GAINS.astype(np.float64)))


def test_a_power_lowers_every_gain_but_unity() -> None:
    out = warped("pow:1.5")
    assert out[-1] == pytest.approx(1.0)
    assert np.all(out[1:-1] < GAINS[1:-1])


def test_an_expansion_leaves_gains_above_its_knee_alone() -> None:
    out = warped("expand:0.3:2")
    above = GAINS >= 0.3
    np.testing.assert_allclose(out[above], GAINS[above])
    assert np.all(out[~above][1:] < GAINS[~above][1:])


def test_a_contrast_raises_gains_above_its_pivot_and_caps_them_at_one() -> None:
    out = warped("contrast:1.5:-6")
    pivot = 10 ** (-6 / 20)
    assert np.all(out <= 1.0)
    assert np.all(out[GAINS > pivot] >= GAINS[GAINS > pivot])
    assert np.all(out[(GAINS > 0) & (GAINS < pivot)] < GAINS[(GAINS > 0) & (GAINS < pivot)])
    assert np.all(np.diff(out) >= 0)


def test_the_strength_scale_is_capped_and_the_gains_pass_unchanged() -> None:
    strengths = np.full((3, NUM_BANDS), 0.8, dtype=np.float32)
    gains = np.tile(GAINS, (3, 1))
    source = WarpedGainSource(ReplayGains(gains, strengths), parse_warp("strength:1.5"))
    for _ in range(3):  # the replay answers frame τ − 2: its first row comes third
        out_gains, out_strengths = source.gains_for(np.zeros(NUM_FEATURES, dtype=np.float32))
    np.testing.assert_array_equal(out_gains, GAINS)
    np.testing.assert_array_equal(out_strengths, np.ones(NUM_BANDS, dtype=np.float32))


def test_a_decay_lets_gains_fall_no_faster_than_its_factor_and_starts_afresh() -> None:
    rows = np.array([1.0, 0.1, 0.9, 0.0, 0.5], dtype=np.float32)
    gains = np.tile(rows[:, None], (1, NUM_BANDS))
    strengths = np.zeros_like(gains)
    source = WarpedGainSource(ReplayGains(gains, strengths), parse_warp("decay:0.6"))
    source.gains_for(np.zeros(NUM_FEATURES, dtype=np.float32))  # the replay answers frame τ − 2
    source.gains_for(np.zeros(NUM_FEATURES, dtype=np.float32))
    out = [source.gains_for(np.zeros(NUM_FEATURES, dtype=np.float32))[0][0] for _ in rows]
    np.testing.assert_allclose(out, [1.0, 0.6, 0.9, 0.54, 0.5], rtol=1e-6)
    source.reset()
    assert source.last_gains is None


def test_no_postfilter_changes_the_output_and_keeps_the_gains() -> None:
    warp = parse_warp("no-postfilter")
    assert warp.gain_curve is None and not warp.postfilter
    noisy = add_white_noise(harmonic_tone(200.0, 0.3), 5.0)
    system = warped_system(DEFAULT_MODEL, warp)
    plain = warped_system(DEFAULT_MODEL, parse_warp("strength:1"))
    out, reference = system(noisy), plain(noisy)
    assert out.shape == noisy.shape
    assert not np.allclose(out, reference)
    shipped = ModelGainSource(ModelRuntime(DEFAULT_MODEL))
    np.testing.assert_allclose(reference, enhance_signal(noisy, shipped), atol=1e-6)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gamma:2", "unknown warp 'gamma'"),
        ("pow", "takes 1 number"),
        ("expand:0.3", "takes 2 number"),
        ("pow:x", "must be numbers"),
        ("strength:-1", "must be positive"),
        ("decay:1.2", "between 0 and 1"),
    ],
)
def test_bad_warps_are_refused_with_one_error_line(
    spec: str, message: str, tmp_path, capsys
) -> None:
    assert main(["--warp", spec, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_missing_model_is_refused_with_one_error_line(tmp_path, capsys) -> None:
    args = ["--warp", "pow:1.2", "--out", str(tmp_path), "--model", str(tmp_path / "no.onnx")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
