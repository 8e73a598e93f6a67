"""The voice-activity rates tool: frame labels from the clean reference, rates per threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from signals import add_white_noise, speech_like

from loadtest.voice_activity_rates import (
    FRAME_SAMPLES,
    Detector,
    cost_us_per_frame,
    enhance_frames,
    frame_labels,
    main,
    pesq_cost,
    rates,
    to_markdown,
)
from model.devset import DevMixture
from model.runtime import DEFAULT_MODEL, ModelRuntime


def test_labels_follow_the_clean_reference_one_frame_late() -> None:
    clean = np.zeros(20 * FRAME_SAMPLES)
    clean[5 * FRAME_SAMPLES : 15 * FRAME_SAMPLES] = 0.1 * np.sin(np.arange(10 * FRAME_SAMPLES))
    clean[15 * FRAME_SAMPLES : 16 * FRAME_SAMPLES] = 3e-3  # 27 dB under: left out
    labels = frame_labels(clean)
    assert list(labels[6:16]) == [1] * 10
    assert labels[16] == -1
    assert set(labels[1:6]) == {0} and set(labels[17:]) == {0}
    assert labels[0] == -1  # answers for the frame before the signal


def test_rates_fall_as_the_threshold_rises_and_threshold_0_takes_every_frame() -> None:
    runtime = ModelRuntime(DEFAULT_MODEL)
    clean = speech_like(2.0, seed=3)
    noise = add_white_noise(clean, snr_db=5.0, seed=4) - clean
    stream = (enhance_frames(runtime, clean + noise), frame_labels(clean))
    gains = [Detector("gain", t) for t in (0.0, 0.2, 0.5, 1.0)]
    rows = rates([stream], [enhance_frames(runtime, noise)], [*gains, Detector("kept_snr")])
    assert rows[0].hit == rows[0].false_alarm == rows[0].noise_speaking == 1.0
    for column in ("hit", "false_alarm", "speech_covered", "audible_covered", "noise_speaking"):
        values = [getattr(row, column) for row in rows[:4]]
        assert values == sorted(values, reverse=True)
    assert rows[3].hit == rows[3].false_alarm == 0.0  # a probability is never above 1
    assert rows[1].hit > rows[1].false_alarm
    kept = rows[4]
    assert kept.hit > 0.5 > kept.false_alarm and kept.speech_covered > kept.noise_speaking
    assert "| gain 0.2 |" in to_markdown(rows) and "| kept_snr |" in to_markdown(rows)
    assert 0.0 < cost_us_per_frame(stream[0], Detector("kept_snr")) < 1e4


def test_leaving_nothing_out_costs_no_pesq() -> None:
    clean = speech_like(3.0, seed=5)
    noisy = add_white_noise(clean, snr_db=5.0, seed=6)
    sample = DevMixture("synthetic", clean, noisy, 5.0, Path("s.wav"), Path("n.wav"), 48_000)
    runtime = ModelRuntime(DEFAULT_MODEL)
    none_left_out, all_left_out = pesq_cost(
        runtime, sample, (Detector("gain", 0.0), Detector("gain", 1.0))
    )
    assert none_left_out == 0.0
    assert all_left_out > 0.5 or np.isnan(all_left_out)


def test_the_command_refuses_a_folder_without_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path)]) == 2
    assert "no manifest.csv" in capsys.readouterr().err


def test_the_command_refuses_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.csv").write_text("")
    assert main(["--model", str(tmp_path / "none.onnx"), "--data-dir", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err
