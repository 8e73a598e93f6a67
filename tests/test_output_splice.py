"""The output-splice probe: its scaling, speech activity, splices and command-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.constants import SAMPLE_RATE_HZ
from model.research.output_splice import (
    ACTIVE_HANG_FRAMES,
    OutputCache,
    main,
    parse_splice,
    scaled_to,
    speech_activity,
    splice_system,
)

FRAME = SAMPLE_RATE_HZ // 100


def tone(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def level_at(signal: np.ndarray, freq_hz: float) -> float:
    """The amplitude of ``signal``'s component at ``freq_hz`` (a whole number of cycles)."""
    spectrum = np.fft.rfft(signal) / (signal.shape[0] / 2)
    return float(np.abs(spectrum[int(round(freq_hz * signal.shape[0] / SAMPLE_RATE_HZ))]))


def test_scaling_matches_the_reference_energy_and_leaves_silence_silent() -> None:
    reference = tone(440.0, amplitude=0.3)
    out = scaled_to(reference, tone(440.0, amplitude=0.01))
    assert np.sum(out**2) == pytest.approx(np.sum(reference**2))
    assert not np.any(scaled_to(reference, np.zeros(100)))


def test_speech_activity_covers_the_burst_and_its_hang_and_not_the_pauses() -> None:
    clean = np.zeros(SAMPLE_RATE_HZ)
    clean[40 * FRAME : 60 * FRAME] = tone(300.0, 0.2)
    clean[10 * FRAME : 11 * FRAME] = 1e-4 * tone(300.0, 0.01)  # 60 dB under: a pause
    activity = speech_activity(clean)
    assert np.all(activity[40 * FRAME : 60 * FRAME] == 1.0)
    hang = ACTIVE_HANG_FRAMES * FRAME
    assert activity[40 * FRAME - hang + FRAME // 2] == 1.0
    assert np.all(activity[: 30 * FRAME] == 0.0)
    assert np.all(activity[70 * FRAME :] == 0.0)


@pytest.mark.parametrize(
    ("spec", "first", "second"),
    [
        ("model", "model", "model"),
        ("speech:rnnoise/model", "rnnoise", "model"),
        ("below:1000:model/rnnoise", "model", "rnnoise"),
    ],
)
def test_splices_parse_to_their_two_outputs(spec: str, first: str, second: str) -> None:
    assert parse_splice(spec)[:2] == (first, second)


def fake_cache(calls: list[str]) -> OutputCache:
    def low_only(noisy: np.ndarray) -> np.ndarray:
        calls.append("model")
        return tone(300.0)

    def high_only(noisy: np.ndarray) -> np.ndarray:
        calls.append("rnnoise")
        return tone(5000.0)

    return OutputCache({"model": low_only, "rnnoise": high_only})


def test_a_frequency_splice_takes_each_output_on_its_side_of_the_crossover() -> None:
    noisy = tone(300.0) + tone(5000.0)
    clean = tone(300.0)
    calls: list[str] = []
    cache = fake_cache(calls)
    kept = splice_system("below:1000:model/rnnoise", cache)(noisy, clean)
    assert level_at(kept, 300.0) == pytest.approx(0.1, rel=1e-6)
    assert level_at(kept, 5000.0) == pytest.approx(0.1, rel=1e-6)
    dropped = splice_system("below:1000:rnnoise/model", cache)(noisy, clean)
    assert np.max(np.abs(dropped)) < 1e-9
    assert sorted(calls) == ["model", "rnnoise"]  # each output made once, read twice


def test_a_time_splice_takes_the_first_output_where_the_speech_is() -> None:
    clean = np.zeros(SAMPLE_RATE_HZ)
    clean[40 * FRAME : 60 * FRAME] = tone(300.0, 0.2)
    spliced = splice_system("speech:model/rnnoise", fake_cache([]))(clean, clean)
    inside = slice(45 * FRAME, 55 * FRAME)
    outside = slice(0, 30 * FRAME)
    scale = np.sqrt(np.sum(clean**2) / np.sum(tone(300.0) ** 2))
    np.testing.assert_allclose(spliced[inside], scale * tone(300.0)[inside])
    np.testing.assert_allclose(spliced[outside], scale * tone(5000.0)[outside])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("middle:model/rnnoise", "unknown splice"),
        ("speech:model", "A/B must name two"),
        ("below:1000:model/dfn3", "A/B must name two"),
        ("below:x:model/rnnoise", "must be a number"),
        ("below:-5:model/rnnoise", "above 0 Hz"),
    ],
)
def test_bad_splices_are_refused_with_one_error_line(
    spec: str, message: str, tmp_path, capsys
) -> None:
    assert main(["--splices", spec, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_missing_model_is_refused_with_one_error_line(tmp_path, capsys) -> None:
    args = ["--out", str(tmp_path), "--model", str(tmp_path / "no.onnx")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_an_output_alone_is_only_scaled() -> None:
    clean = tone(300.0, amplitude=0.5)
    alone = splice_system("rnnoise", fake_cache([]))(tone(300.0), clean)
    np.testing.assert_allclose(alone, 5.0 * tone(5000.0))
