"""The feature probe's pieces: frame spectra, band flatness, context rows, the ridge and its
scoring, the model pass's alignment and the refit gain source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from signals import harmonic_tone

from dsp.bands import BIN_HZ
from dsp.constants import HOP_SAMPLES, LOOKAHEAD_HOPS, NUM_BANDS, NUM_BINS
from dsp.offline import compute_oracle_targets
from model.research.feature_probe import (
    CONTEXT_FRAMES,
    RefitGainSource,
    band_flatness_db,
    explained_by_region,
    frame_powers,
    main,
    model_pass,
    ridge_fit,
    ridge_predict,
    with_context,
)
from model.runtime import DEFAULT_MODEL, ModelGainSource, ModelRuntime


def test_frame_i_is_the_window_ending_with_hop_i() -> None:
    signal = np.zeros(10 * HOP_SAMPLES)
    signal[3 * HOP_SAMPLES + 100] = 1.0  # a click in hop 3
    energy = frame_powers(signal, 10).sum(axis=1)
    assert np.flatnonzero(energy > 1e-12).tolist() == [3, 4]  # the two frames holding hop 3


def test_a_tone_peaks_at_its_bin() -> None:
    tone = np.sin(2 * np.pi * 20 * BIN_HZ * np.arange(20 * HOP_SAMPLES) / 48_000)
    powers = frame_powers(tone, 20)
    assert powers.shape == (20, NUM_BINS)
    assert np.all(np.argmax(powers[2:], axis=1) == 20)


def test_flatness_is_zero_db_for_a_flat_spectrum_and_low_for_a_peak() -> None:
    flat = np.ones((1, NUM_BINS))
    np.testing.assert_allclose(band_flatness_db(flat), 0.0, atol=1e-9)
    peaked = flat * 1e-6
    peaked[0, 300] = 1.0
    assert band_flatness_db(peaked).min() < -10.0


def test_a_context_row_holds_its_frame_and_the_look_ahead() -> None:
    values = np.arange(5.0)[:, None]
    rows = with_context(values)
    assert rows.shape == (5, CONTEXT_FRAMES)
    assert rows[0].tolist() == [0.0, 1.0, 2.0]
    assert rows[-1].tolist() == [4.0, 4.0, 4.0]  # the end repeated


def test_the_ridge_explains_a_linear_error_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((4000, 6))
    weights = rng.standard_normal((6, NUM_BANDS))
    error = inputs @ weights
    kept = np.ones_like(error, dtype=bool)
    model = ridge_fit(inputs[:3000], error[:3000], kept[:3000], ridge=1e-6)
    shares = explained_by_region(error[3000:], ridge_predict(model, inputs[3000:]), kept[3000:])
    assert min(shares) > 0.999
    noise = rng.standard_normal(error.shape)
    model = ridge_fit(inputs[:3000], noise[:3000], kept[:3000], ridge=1e-6)
    shares = explained_by_region(noise[3000:], ridge_predict(model, inputs[3000:]), kept[3000:])
    assert max(shares) < 0.01


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model under model/weights")
def test_the_model_pass_lines_up_with_the_streaming_gains() -> None:
    clean = harmonic_tone(180.0, 0.3)
    noisy = clean + 0.01 * np.random.default_rng(1).standard_normal(clean.shape)
    features = compute_oracle_targets(noisy, clean).features
    runtime = ModelRuntime(DEFAULT_MODEL)
    gains, state = model_pass(runtime, features)
    source = ModelGainSource(runtime)
    streamed = np.array([source.gains_for(row)[0] for row in features])
    np.testing.assert_array_equal(gains[:-LOOKAHEAD_HOPS], streamed[LOOKAHEAD_HOPS:])
    assert state.shape == (features.shape[0], runtime.gru_width)
    width = NUM_BANDS + runtime.gru_width  # a refit that changes nothing: zero weights
    zero = (np.zeros(width), np.ones(width), np.zeros((width + 1, NUM_BANDS)))
    refit = RefitGainSource(runtime, zero)
    refit_gains = np.array([refit.gains_for(row)[0] for row in features])
    np.testing.assert_allclose(refit_gains, streamed, atol=1e-6)
    above = float(np.median(streamed))  # the model's own gains split in two, whatever the weights
    lift = (zero[0], zero[1], np.vstack([zero[2][:-1], np.ones((1, NUM_BANDS))]))
    lifted = RefitGainSource(runtime, lift, above=above)  # +1 in √g, where g ≥ above only
    lifted_gains = np.array([lifted.gains_for(row)[0] for row in features])
    high = streamed >= above
    assert high.any() and not high.all()
    np.testing.assert_allclose(lifted_gains[~high], streamed[~high], atol=1e-6)
    assert np.all(lifted_gains[high] == 1.0)


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model under model/weights")
def test_a_frame_set_counts_each_mixtures_frames() -> None:
    from model.devset import DevMixture
    from model.research.feature_probe import frame_set

    mixtures = []
    for seconds in (0.2, 0.35):
        clean = harmonic_tone(180.0, seconds)
        noisy = clean + 0.01 * np.random.default_rng(1).standard_normal(clean.shape)
        mixtures.append(DevMixture("m", clean, noisy, 5.0, Path("s.wav"), Path("n.wav"), 48_000))
    frames = frame_set(mixtures, ModelRuntime(DEFAULT_MODEL), "oracle")
    expected = [compute_oracle_targets(m.noisy, m.clean).gains.shape[0] for m in mixtures]
    assert list(frames.frames_per_mixture) == expected
    assert frames.error.shape[0] == sum(expected)
    assert all(block.shape[0] == sum(expected) for block in frames.blocks.values())


def test_the_command_refuses_missing_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
