"""The gain-calibration diagnostic: model gains against oracle targets by target range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from signals import add_white_noise, harmonic_tone

from dsp.constants import NUM_BANDS
from dsp.offline import compute_oracle_targets
from model.devset import DevMixture
from model.feature_cache import band_mask
from model.research.gain_calibration import calibration, main, streaming_gains, to_markdown
from model.runtime import DEFAULT_MODEL


def mixture(source_rate: int = 48_000, snr_db: float = 5.0) -> DevMixture:
    clean = harmonic_tone(180.0, 1.0)
    clean[20_000:30_000] = 0.0  # a pause, so low targets occur too
    noisy = add_white_noise(clean, snr_db)
    return DevMixture(
        name="synthetic",
        clean=clean,
        noisy=noisy,
        snr_db=snr_db,
        speech_path=Path("speech.wav"),
        noise_path=Path("noise.wav"),
        source_rate=source_rate,
    )


def test_oracle_gains_are_perfectly_calibrated() -> None:
    sample = mixture()
    oracle = compute_oracle_targets(sample.noisy, sample.clean).gains
    rows = calibration([sample], lambda features: oracle)
    assert {row.low for row in rows} >= {0.0, 0.8}
    for row in rows:
        assert row.mean_gain == pytest.approx(row.mean_target, rel=1e-6)
        assert row.median_ratio_db == pytest.approx(0.0, abs=1e-6)
        assert row.low <= row.mean_target < max(row.high, 1.0 + 1e-6)


def test_a_constant_gain_shows_as_lost_speech_and_residual_noise() -> None:
    sample = mixture()
    rows = calibration([sample], lambda features: np.full((features.shape[0], NUM_BANDS), 0.3))
    speech = next(row for row in rows if row.low == 0.8)
    noise = next(row for row in rows if row.low == 0.0)
    assert speech.mean_gain == pytest.approx(0.3)
    assert speech.median_ratio_db < -8.0
    assert noise.median_ratio_db > 10.0


def test_bands_above_the_speech_bandwidth_are_left_out() -> None:
    sample = mixture(source_rate=16_000)
    frames = compute_oracle_targets(sample.noisy, sample.clean).gains.shape[0]
    rows = calibration([sample], lambda features: np.ones((features.shape[0], NUM_BANDS)))
    assert sum(row.count for row in rows) == frames * int(band_mask(8_000).sum())
    assert "| +5 | 0.8–1 |" in to_markdown(rows)


def test_gains_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        calibration([mixture()], lambda features: np.ones((3, NUM_BANDS)))


def test_streaming_gains_line_up_with_the_frames() -> None:
    sample = mixture()
    features = compute_oracle_targets(sample.noisy, sample.clean).features
    gains = streaming_gains(DEFAULT_MODEL)(features)
    assert gains.shape == (features.shape[0], NUM_BANDS)
    assert np.all((gains >= 0) & (gains <= 1))


def test_the_command_refuses_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.csv").write_text("")
    assert main(["--model", str(tmp_path / "none.onnx"), "--data-dir", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err


def test_the_command_refuses_a_folder_without_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path)]) == 2
    assert "no manifest.csv" in capsys.readouterr().err
