"""The evaluation harness: metrics on synthetic signals, baseline systems' alignment, dev-set
determinism, and a small end-to-end run on the shared data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.devset import LEVEL_DBFS_RANGE, PEAK_LIMIT, build_dev_mixtures, measured_snr_db
from model.evaluate import (
    HOP_SAMPLES,
    SAMPLE_RATE,
    System,
    evaluate,
    identity,
    main,
    make_systems,
    measure_delay_samples,
    model_system,
    pesq_wb,
    rnnoise_enhance,
    si_sdr,
    stoi_score,
    webrtc_ns_enhance,
    write_results,
)
from model.splits import split_files

ONE_MS = SAMPLE_RATE // 1000


def voiced_bursts(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: 250 ms harmonic bursts (f0 gliding 130–170 Hz, 1/k harmonics)
    every 500 ms over a faint noise floor. RNNoise removes clicks and white noise (to < 1 % in
    amplitude) but passes these at ~98 %, so they can show where its output lands."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0_hz = 150.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0_hz) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    gate = (np.sin(2 * np.pi * 2.0 * t) > 0).astype(np.float64)
    floor = 0.002 * np.random.default_rng(seed).standard_normal(t.shape[0])
    return 0.05 * voiced * gate + floor


# --- metrics ---------------------------------------------------------------------------------


def test_si_sdr_of_identical_signals_is_huge_and_scale_invariant() -> None:
    rng = np.random.default_rng(1)
    clean = rng.standard_normal(SAMPLE_RATE)
    noisy = clean + 0.1 * rng.standard_normal(SAMPLE_RATE)
    assert si_sdr(clean, clean) > 100.0
    assert si_sdr(clean, noisy) == pytest.approx(20.0, abs=0.5)
    assert si_sdr(clean, 3.7 * noisy) == pytest.approx(si_sdr(clean, noisy), abs=1e-9)
    assert si_sdr(clean, -0.2 * noisy) == pytest.approx(si_sdr(clean, noisy), abs=1e-9)
    assert si_sdr(clean, np.zeros_like(clean)) == -100.0


def test_pesq_and_stoi_of_clean_against_itself() -> None:
    clean = voiced_bursts(2.0)
    assert pesq_wb(clean, clean) > 4.0
    assert stoi_score(clean, clean) > 0.99
    noisy = clean + 0.02 * np.random.default_rng(2).standard_normal(clean.shape[0])
    assert pesq_wb(clean, noisy) < 2.5


# --- systems ---------------------------------------------------------------------------------


@pytest.mark.parametrize("process", [identity, rnnoise_enhance, webrtc_ns_enhance])
def test_systems_return_aligned_finite_output_of_input_length(process) -> None:
    signal = voiced_bursts(1.0)[: SAMPLE_RATE - 123]  # not a whole number of frames
    out = process(signal)
    assert out.shape == signal.shape
    assert out.dtype == np.float64
    assert np.all(np.isfinite(out))
    assert np.sqrt(np.mean(out**2)) > 0.3 * np.sqrt(np.mean(signal**2))  # speech kept
    assert abs(measure_delay_samples(process, signal)) <= ONE_MS


@pytest.mark.parametrize("process", [rnnoise_enhance, webrtc_ns_enhance])
def test_bursts_come_out_where_they_went_in(process) -> None:
    """Delay compensation within ±1 ms, by cross-correlation and by 10 ms energy envelope."""
    signal = voiced_bursts(3.0)
    out = process(signal)
    assert abs(measure_delay_samples(process, signal)) <= ONE_MS
    hops = signal.shape[0] // HOP_SAMPLES

    def envelope(x: np.ndarray) -> np.ndarray:
        return np.log10(np.mean(x[: hops * HOP_SAMPLES].reshape(hops, -1) ** 2, axis=1) + 1e-12)

    ein, eout = envelope(signal), envelope(out)
    shifts = range(-3, 4)
    scores = [np.corrcoef(ein[3:-3], np.roll(eout, -s)[3:-3])[0, 1] for s in shifts]
    assert list(shifts)[int(np.argmax(scores))] == 0


def test_rnnoise_matches_the_raw_library_delay() -> None:
    """The compensation constant is what the library really does: undoing it leaves 960."""
    signal = voiced_bursts(1.5)

    def uncompensated(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros(960), rnnoise_enhance(x)])[: x.shape[0]]

    assert abs(measure_delay_samples(uncompensated, signal) - 960) <= 2


def test_registry_and_a_missing_model(capsys) -> None:
    systems = make_systems(["noisy", "oracle"])
    assert list(systems) == ["noisy", "oracle"] and systems["oracle"].needs_clean
    with pytest.raises(ValueError, match="unknown system"):
        make_systems(["nope"])
    with pytest.raises(ValueError, match="not found"):
        model_system(Path("model.onnx"))
    assert main(["--model", "model.onnx", "--out", "/nonexistent"]) == 2
    assert "not found" in capsys.readouterr().err


def test_oracle_system_needs_clean() -> None:
    signal = voiced_bursts(0.5)
    oracle = make_systems(["oracle"])["oracle"]
    with pytest.raises(ValueError, match="clean"):
        oracle(signal)
    out = oracle(signal + 0.01, signal)
    assert out.shape == signal.shape and np.all(np.isfinite(out))


def test_the_cleaned_oracle_aims_at_the_reference_without_its_own_background() -> None:
    pytest.importorskip("onnxruntime")
    reference = voiced_bursts(2.0)  # bursts over a hiss of their own, like a hissy take
    noisy = reference + 0.01 * np.random.default_rng(2).standard_normal(reference.shape[0])
    systems = make_systems(["oracle", "oracle_cleaned"])
    assert systems["oracle_cleaned"].needs_clean
    with pytest.raises(ValueError, match="clean"):
        systems["oracle_cleaned"](noisy)
    plain = systems["oracle"](noisy, reference)
    cleaned = systems["oracle_cleaned"](noisy, reference)
    assert cleaned.shape == noisy.shape and np.all(np.isfinite(cleaned))
    t = np.arange(reference.shape[0]) / SAMPLE_RATE
    pauses = (np.sin(2 * np.pi * 2.0 * t) < -0.5) & (t > 0.5)  # well inside the gaps
    assert np.mean(cleaned[pauses] ** 2) < 0.5 * np.mean(plain[pauses] ** 2)


def test_the_teacher_oracle_aims_at_deepfilternet3s_output(monkeypatch) -> None:
    """Toward a teacher that halves its input the chain's oracle halves it too, with no clean
    reference given."""
    from model import deepfilternet_baseline

    class HalvingTeacher:
        def prepare(self) -> None:
            pass

        def enhance(self, noisy: np.ndarray) -> np.ndarray:
            return 0.5 * noisy

    monkeypatch.setattr(deepfilternet_baseline, "DeepFilterNet3", HalvingTeacher)
    system = make_systems(["oracle_teacher"])["oracle_teacher"]
    assert not system.needs_clean
    noisy = voiced_bursts(2.0) + 0.01 * np.random.default_rng(3).standard_normal(96_000)
    out = system(noisy)
    middle = slice(SAMPLE_RATE // 2, -SAMPLE_RATE // 2)
    ratio = np.sqrt(np.mean(out[middle] ** 2) / np.mean(noisy[middle] ** 2))
    assert out.shape == noisy.shape and ratio == pytest.approx(0.5, abs=0.05)


# --- dev set and end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_mixtures(shared_data_dir):
    return build_dev_mixtures(shared_data_dir, per_snr=1, seed=0)


@pytest.mark.slow
def test_devset_is_deterministic_and_at_the_asked_snr(shared_data_dir, dev_mixtures) -> None:
    again = build_dev_mixtures(shared_data_dir, per_snr=1, seed=0)
    assert [m.name for m in again] == [m.name for m in dev_mixtures]
    for a, b in zip(again, dev_mixtures, strict=True):
        assert np.array_equal(a.noisy, b.noisy) and np.array_equal(a.clean, b.clean)
    other = build_dev_mixtures(shared_data_dir, per_snr=1, seed=1)
    assert [m.name for m in other] != [m.name for m in dev_mixtures]
    assert [m.snr_db for m in dev_mixtures] == [-5.0, 0.0, 5.0, 10.0, 15.0]
    assert {m.source_rate for m in dev_mixtures} == {16_000, 48_000}
    for m in dev_mixtures:
        assert m.noisy.dtype == np.float64 and m.noisy.shape == m.clean.shape
        assert measured_snr_db(m) == pytest.approx(m.snr_db, abs=0.1)
        assert np.max(np.abs(m.noisy)) <= PEAK_LIMIT + 1e-9
        level_dbfs = 10 * np.log10(np.mean(m.noisy**2))
        assert level_dbfs <= LEVEL_DBFS_RANGE[1] + 1e-6  # lower only when turned down for peaks
    # The first mixtures of an SNR do not depend on how many are asked for.
    two = build_dev_mixtures(shared_data_dir, per_snr=2, snrs_db=(5.0,), seed=0)
    assert two[0].name == dev_mixtures[2].name
    assert np.array_equal(two[0].noisy, dev_mixtures[2].noisy)


@pytest.mark.slow
def test_train_split_draw_never_touches_dev_files(shared_data_dir, dev_mixtures) -> None:
    train, dev = split_files(shared_data_dir)
    drawn = build_dev_mixtures(shared_data_dir, per_snr=2, seed=0, split="train")
    assert len(drawn) == 10
    assert {m.speech_path for m in drawn} <= {f.path for f in train.speech}
    assert {m.noise_path for m in drawn} <= {f.path for f in train.noise}
    assert {m.speech_path for m in dev_mixtures} <= {f.path for f in dev.speech}
    assert {m.noise_path for m in dev_mixtures} <= {f.path for f in dev.noise}
    with pytest.raises(ValueError, match="split must be one of train, dev"):
        build_dev_mixtures(shared_data_dir, per_snr=1, split="test")


@pytest.mark.slow
def test_evaluate_end_to_end(dev_mixtures, tmp_path: Path) -> None:
    systems: dict[str, System] = make_systems(["noisy", "rnnoise"])
    results = evaluate(systems, dev_mixtures, dnsmos=False, spectrogram_dir=tmp_path)
    table = results.to_markdown()
    assert "| all | noisy | 5 |" in table and "| all | rnnoise | 5 |" in table
    assert "n/a" in table  # DNSMOS off
    by_source = {
        (source, rate, row.system): row.files for source, rate, row in results.summary_by_source()
    }
    assert by_source == {
        (source, rate, system): n
        for source, rate, n in (("ravdess", 48_000, 3), ("speechocean762", 16_000, 2))
        for system in ("noisy", "rnnoise")
    }
    assert "| ravdess (48 kHz) | noisy | 3 |" in table
    assert "| speechocean762 (16 kHz) | rnnoise | 2 |" in table
    json_path, md_path = write_results(results, tmp_path)
    data = json.loads(json_path.read_text())
    assert md_path.read_text() == table
    assert len(data["files"]) == 10 and len(data["summary"]) == 12
    assert len(data["summary_by_source"]) == 4
    assert data["files"][0]["dnsmos_ovrl"] is None and data["files"][0]["dnsmos_p808"] is None
    for f in results.files:
        assert np.isfinite(f.pesq_wb) and 0.0 <= f.stoi <= 1.0 and f.cpu_seconds >= 0.0
        if f.system == "noisy":  # the noise is independent of the speech: SI-SDR ≈ SNR
            assert f.si_sdr_db == pytest.approx(f.snr_db, abs=1.5)
    assert len(list(tmp_path.glob("spectrogram_*.png"))) == 3


def test_systems_are_timed_with_one_blas_thread(dev_mixtures) -> None:
    """BLAS workers the scoring wakes must not spin through a timed call (they count in the
    process's CPU time): every call runs, and every score is made, with BLAS at one thread."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    seen: list[list[int]] = []

    def recording(noisy: np.ndarray) -> np.ndarray:
        seen.append(blas_threads())
        return noisy

    evaluate({"noisy": recording}, dev_mixtures[:2], dnsmos=False)
    assert len(seen) == 3  # the warm-up and two mixtures
    assert all(threads and set(threads) == {1} for threads in seen)


@pytest.mark.slow
def test_dnsmos_runs_offline_and_hears_the_noise(dev_mixtures) -> None:
    pytest.importorskip("speechmos")
    from model.evaluate import load_dnsmos, to_metric_rate

    scorer, status = load_dnsmos()
    assert scorer is not None, status
    mixture = dev_mixtures[0]  # −5 dB
    clean = scorer(to_metric_rate(mixture.clean))
    noisy = scorer(to_metric_rate(mixture.noisy))
    assert all(1.0 <= s <= 5.0 for s in (*clean, *noisy))
    assert clean[1] > noisy[1]  # BAK
    clean_p808 = scorer.with_p808(to_metric_rate(mixture.clean))
    noisy_p808 = scorer.with_p808(to_metric_rate(mixture.noisy))
    assert clean_p808[:3] == clean and clean_p808[3] > noisy_p808[3]  # P.808 MOS too


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--per-snr", "13"], "pins 12 mixtures at -5 dB, not 13"),
        (["--snrs", "20"], "no mixtures at 20 dB"),
        (["--snrs", "loud"], "could not convert"),
        (["--speech-sources", "ravdess"], "pinned dev mixtures cannot be narrowed"),
        (["--seed", "4", "--speech-sources", "vctk_p239"], "no dev speech from vctk_p239"),
    ],
)
def test_mixtures_it_cannot_build_are_one_error_line(
    shared_data_dir, tmp_path: Path, capsys, options: list[str], message: str
) -> None:
    argv = ["--systems", "noisy", "--data-dir", str(shared_data_dir), "--out", str(tmp_path)]
    assert main([*argv, *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.slow
def test_a_draw_narrowed_to_one_corpus_scores_only_its_speech(shared_data_dir, tmp_path) -> None:
    argv = ["--systems", "noisy", "--data-dir", str(shared_data_dir), "--out", str(tmp_path)]
    drawn = ["--seed", "4", "--per-snr", "2", "--snrs", "0", "--no-dnsmos", "--spectrograms", "0"]
    assert main([*argv, *drawn, "--speech-sources", "ljspeech_subset"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["speech_sources"] == ["ljspeech_subset"]
    assert len(results["files"]) == 2
    assert {f["source"] for f in results["files"]} == {"ljspeech_subset"}
