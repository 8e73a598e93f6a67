"""The command line and its file handling: oracle enhancement of real files at any rate and
channel count, one-line errors on bad input, and the DSP benchmark. Fixture audio is generated
in tmp_path, never stored."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from model.runtime import DEFAULT_MODEL, sha256_of
from service.audio_files import AudioClip, AudioFileError, from_48k, read_audio, to_48k
from service.cli import main

SECONDS = 1.0


def harmonic_pair(
    rate_hz: int, channels: int, seconds: float = SECONDS, snr_db: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) ``[frames, channels]``: a voiced tone per channel plus white noise."""
    frames = int(seconds * rate_hz)
    t = np.arange(frames) / rate_hz
    rng = np.random.default_rng(7)
    clean = np.zeros((frames, channels))
    for channel in range(channels):
        f0_hz = 130.0 + 40.0 * channel + 20.0 * np.sin(2 * np.pi * 1.5 * t)
        phase = 2 * np.pi * np.cumsum(f0_hz) / rate_hz
        for harmonic in range(1, 25):
            audible = harmonic * f0_hz < min(6_000.0, 0.45 * rate_hz)
            clean[:, channel] += audible * np.sin(harmonic * phase) / harmonic
    clean *= 0.3 / np.max(np.abs(clean))
    noise = rng.standard_normal(clean.shape)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return clean + noise, clean


def write_pair(
    folder: Path, rate_hz: int, channels: int, ext: str = "wav", subtype: str = "PCM_16"
) -> tuple[Path, Path]:
    noisy, clean = harmonic_pair(rate_hz, channels)
    noisy_path, clean_path = folder / f"noisy.{ext}", folder / f"clean.{ext}"
    sf.write(noisy_path, noisy, rate_hz, subtype=subtype)
    sf.write(clean_path, clean, rate_hz, subtype=subtype)
    return noisy_path, clean_path


def mse_per_channel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.mean((a - b) ** 2, axis=0))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- oracle on good input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_hz", "channels", "ext", "subtype"),
    [(44_100, 2, "wav", "PCM_16"), (16_000, 1, "wav", "FLOAT"), (22_050, 1, "flac", "PCM_24")],
)
def test_oracle_keeps_the_file_shape_and_reduces_the_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rate_hz: int,
    channels: int,
    ext: str,
    subtype: str,
) -> None:
    noisy_path, clean_path = write_pair(tmp_path, rate_hz, channels, ext, subtype)
    out_path = tmp_path / f"enhanced.{ext}"
    code, out, err = run_cli(
        capsys, "oracle", str(noisy_path), str(clean_path), "-o", str(out_path)
    )
    assert code == 0, err
    assert "real-time factor" in out and str(noisy_path) in out and str(out_path) in out

    info_in, info_out = sf.info(noisy_path), sf.info(out_path)
    assert (info_out.frames, info_out.samplerate, info_out.channels) == (
        info_in.frames,
        info_in.samplerate,
        info_in.channels,
    )
    assert (info_out.format, info_out.subtype) == (info_in.format, info_in.subtype)
    noisy, _ = sf.read(noisy_path, always_2d=True)
    clean, _ = sf.read(clean_path, always_2d=True)
    enhanced, _ = sf.read(out_path, always_2d=True)
    noisy_mse, enhanced_mse = mse_per_channel(noisy, clean), mse_per_channel(enhanced, clean)
    assert np.all(enhanced_mse < 0.5 * noisy_mse), (noisy_mse, enhanced_mse)


def test_mono_clean_serves_every_channel_and_ablations_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noisy, clean = harmonic_pair(48_000, 2)
    noise = noisy - clean
    clean[:, 1] = clean[:, 0]  # one source heard by two microphones with different noise
    noisy = clean + noise
    sf.write(tmp_path / "noisy.wav", noisy, 48_000, subtype="FLOAT")
    sf.write(tmp_path / "clean.wav", clean[:, 0], 48_000, subtype="FLOAT")
    out_path = tmp_path / "out.flac"  # another format by extension: FLAC, subtype kept if it can
    code, _, err = run_cli(
        capsys,
        "oracle",
        str(tmp_path / "noisy.wav"),
        str(tmp_path / "clean.wav"),
        "-o",
        str(out_path),
        "--no-postfilter",
        "--no-comb",
    )
    assert code == 0, err
    info = sf.info(out_path)
    assert (info.format, info.channels, info.frames) == ("FLAC", 2, noisy.shape[0])
    enhanced, _ = sf.read(out_path, always_2d=True)
    assert np.all(mse_per_channel(enhanced, clean) < mse_per_channel(noisy, clean))


@pytest.mark.parametrize(("rate_hz", "frames"), [(44_100, 4_801), (8_000, 3), (96_000, 1_001)])
def test_resampling_round_trip_keeps_length_and_alignment(rate_hz: int, frames: int) -> None:
    t = np.arange(frames) / rate_hz
    tone = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 300 * t)], axis=1)
    clip = AudioClip(Path("tone.wav"), tone, rate_hz, "WAV", "FLOAT", "FILE")
    at_48k = to_48k(clip)
    assert abs(at_48k.shape[0] - frames * 48_000 / rate_hz) <= 1
    back = from_48k(at_48k, rate_hz, frames)
    assert back.shape == (frames, 2)
    if frames > 200:  # band-limited content comes back in place (away from the edges)
        inner = slice(100, frames - 100)
        assert np.max(np.abs(back[inner] - tone[inner])) < 1e-3


# --- bad input: one line on stderr, exit status 2 ---------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return write_pair(tmp_path, 16_000, 1)


def test_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    missing = tmp_path / "nope.wav"
    code, _, err = run_cli(capsys, "oracle", str(missing), str(pair[1]), "-o", "x.wav")
    assert_one_line_error(code, err, "no such file", "nope.wav")


def test_truncated_wav(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    # libsndfile reads such a file without complaint, just shorter: the header check catches it.
    data = pair[0].read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(data[: len(data) - 1001])
    assert sf.info(truncated).frames > 0
    out_path = tmp_path / "out.wav"
    code, _, err = run_cli(capsys, "oracle", str(truncated), str(pair[1]), "-o", str(out_path))
    assert_one_line_error(code, err, "truncated")
    assert not out_path.exists()


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [
        ("WAV", "PCM_24", "wav"),
        ("WAVEX", "FLOAT", "wav"),
        ("RF64", "PCM_16", "rf64"),
        ("W64", "PCM_16", "w64"),
        ("AIFF", "PCM_16", "aiff"),
        ("CAF", "PCM_16", "caf"),
        ("AU", "PCM_16", "au"),
        ("FLAC", "PCM_16", "flac"),
        ("MP3", "MPEG_LAYER_III", "mp3"),
    ],
)
def test_truncation_is_detected_in_other_containers(
    tmp_path: Path, fmt: str, subtype: str, ext: str
) -> None:
    if not sf.check_format(fmt, subtype):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    noisy, _ = harmonic_pair(44_100, 2)
    whole = tmp_path / f"whole.{ext}"
    sf.write(whole, noisy, 44_100, format=fmt, subtype=subtype)
    assert read_audio(whole).frames == noisy.shape[0]
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(AudioFileError, match="truncated|cannot read"):
        read_audio(cut)


def test_non_audio_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio at all\n" * 20)
    code, _, err = run_cli(capsys, "oracle", str(notes), str(pair[1]), "-o", "x.wav")
    assert_one_line_error(code, err, "cannot read", "notes.wav")


def test_directory_instead_of_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    code, _, err = run_cli(capsys, "oracle", str(tmp_path), str(pair[1]), "-o", "x.wav")
    assert_one_line_error(code, err, "directory")


def test_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1)), 16_000)
    code, _, err = run_cli(capsys, "oracle", str(empty), str(pair[1]), "-o", "x.wav")
    assert_one_line_error(code, err, "empty")


def test_non_finite_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    noisy, rate = sf.read(pair[0])
    noisy[10] = np.nan
    with_nan = tmp_path / "nan.wav"
    sf.write(with_nan, noisy, rate, subtype="FLOAT")
    code, _, err = run_cli(capsys, "oracle", str(with_nan), str(pair[1]), "-o", "x.wav")
    assert_one_line_error(code, err, "NaN")


def test_mismatched_lengths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    clean, rate = sf.read(pair[1])
    short = tmp_path / "short.wav"
    sf.write(short, clean[:-100], rate)
    out_path = tmp_path / "out.wav"
    code, _, err = run_cli(capsys, "oracle", str(pair[0]), str(short), "-o", str(out_path))
    assert_one_line_error(code, err, "lengths differ")
    assert not out_path.exists()


def test_mismatched_rates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    clean, _ = sf.read(pair[1])
    other_rate = tmp_path / "other_rate.wav"
    sf.write(other_rate, clean, 22_050)
    code, _, err = run_cli(capsys, "oracle", str(pair[0]), str(other_rate), "-o", "x.wav")
    assert_one_line_error(code, err, "sample rates differ")


def test_mismatched_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    noisy_path, _ = write_pair(tmp_path, 16_000, 1)
    _, clean = harmonic_pair(16_000, 2)
    stereo_clean = tmp_path / "stereo_clean.wav"
    sf.write(stereo_clean, clean, 16_000)
    code, _, err = run_cli(capsys, "oracle", str(noisy_path), str(stereo_clean), "-o", "x.wav")
    assert_one_line_error(code, err, "channel counts differ")


@pytest.mark.parametrize("which", ["noisy", "clean", "noisy via another spelling", "hard link"])
def test_output_never_overwrites_an_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path], which: str
) -> None:
    noisy_path, clean_path = pair
    before = {p: digest(p) for p in pair}
    out = {
        "noisy": noisy_path,
        "clean": clean_path,
        "noisy via another spelling": tmp_path / "sub" / ".." / noisy_path.name,
        "hard link": tmp_path / "link.wav",
    }[which]
    (tmp_path / "sub").mkdir()
    if which == "hard link":
        out.hardlink_to(noisy_path)
    code, _, err = run_cli(capsys, "oracle", str(noisy_path), str(clean_path), "-o", str(out))
    assert_one_line_error(code, err, "refusing to overwrite")
    assert {p: digest(p) for p in pair} == before


def test_missing_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    out = tmp_path / "no" / "such" / "out.wav"
    code, _, err = run_cli(capsys, "oracle", str(pair[0]), str(pair[1]), "-o", str(out))
    assert_one_line_error(code, err, "does not exist")


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "oracle", "a.wav", "b.wav")
    assert_one_line_error(code, err, "-o/--output")
    code, _, err = run_cli(capsys, "bench", "dsp", "--seconds", "0")
    assert_one_line_error(code, err, "--seconds")


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "oracle", "missing.wav", "b.wav", "-o", "c.wav"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "error: no such file: missing.wav\n"


def test_oracle_refuses_an_output_extension_no_format_goes_by(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]
) -> None:
    out = tmp_path / "out.xyz"
    code, _, err = run_cli(capsys, "oracle", str(pair[0]), str(pair[1]), "-o", str(out))
    assert_one_line_error(code, err, "'.xyz'")
    assert not out.exists()


@pytest.mark.parametrize("ttl", ["nan", "inf", "-inf", "-5", "0", "soon"])
def test_token_ttl_must_be_a_finite_positive_number(
    capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    code, out, err = run_cli(capsys, "token", "room", "--secret", "s3cret", f"--ttl={ttl}")
    assert_one_line_error(code, err, "--ttl", repr(ttl))
    assert out == ""


# Runs the command line with the eval extra's packages made unimportable: a plain install.
_WITHOUT_EVAL_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

EXTRA = {"pesq", "pystoi", "pyrnnoise", "webrtc_noise_gain", "speechmos", "librosa",
         "matplotlib", "requests", "torch", "scipy", "onnx", "threadpoolctl"}

class Missing(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in EXTRA:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from service.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["eval", "--help"], ["eval"], ["eval", "--per-snr", "1"]])
def test_eval_on_a_plain_install_names_the_extra(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EVAL_EXTRA, *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "percepnet-relay[eval]" in result.stderr
    helped = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EVAL_EXTRA, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert helped.returncode == 0 and "eval" in helped.stdout, helped.stderr


# --- bench ------------------------------------------------------------------------------------


def test_bench_dsp_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_path = tmp_path / "bench.json"
    code, out, err = run_cli(
        capsys,
        "bench",
        "dsp",
        "--seconds",
        "1",
        "--iterations",
        "200",
        "--warmup",
        "20",
        "--json",
        str(json_path),
    )
    assert code == 0, err
    assert "DSP" in out and "RNNoise" in out and "median" in out and "p99" in out
    result = json.loads(json_path.read_text())
    assert result["dsp"]["iterations"] == 200 and result["dsp"]["median_us"] > 0
    assert result["rnnoise"]["median_us"] > 0
    assert result["ratio_median"] == pytest.approx(
        result["dsp"]["median_us"] / result["rnnoise"]["median_us"]
    )
    # the shipped model: the whole enhancer and the int8 step, checked against issue 25, one
    # hop a call and two (its two-hop graph, as the relay runs it)
    assert [t["measured"] for t in result["targets"]] == [
        result["enhancer"]["median_us"] / result["rnnoise"]["median_us"],
        result["model_int8"]["median_us"],
        result["enhancer_two_hop"]["median_us"] / result["rnnoise"]["median_us"],
        result["model_int8_two_hop"]["median_us"],
    ]
    assert "target (DSP + int8 model) / RNNoise ≤ 0.5, one hop a call: " in out
    assert "target int8 step at batch 1 ≤ 150 µs per hop, one hop a call: " in out
    assert "target (DSP + int8 model) / RNNoise ≤ 0.5, two hops a call: " in out
    assert "target int8 step at batch 1 ≤ 150 µs per hop, two hops a call: " in out
    assert result["model_sha256"] == sha256_of(DEFAULT_MODEL)  # which weights were timed
    # and on what: the instruction sets that decide the int8 matmuls' speed, listed as found
    from loadtest.bench_dsp import INT8_INSTRUCTION_FLAGS

    flags = result["platform"]["int8_instructions"]
    assert set(flags) <= set(INT8_INSTRUCTION_FLAGS)
    assert f"int8 instructions: {', '.join(flags) or 'none'}," in out


def test_bench_dsp_reads_the_l2_cache_size_where_linux_gives_it(tmp_path: Path) -> None:
    from loadtest.bench_dsp import l2_cache_kib

    for index, (level, size) in enumerate((("1", "48K"), ("2", "2048K"), ("3", "491520K"))):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(f"{level}\n")
        (tmp_path / f"index{index}" / "size").write_text(f"{size}\n")
    assert l2_cache_kib(tmp_path) == 2048
    (tmp_path / "index1" / "size").write_text("1M\n")
    assert l2_cache_kib(tmp_path) == 1024
    assert l2_cache_kib(tmp_path / "absent") is None


def test_bench_dsp_checks_the_cpu_targets_against_the_same_runs_medians() -> None:
    from loadtest.bench_dsp import cpu_targets, format_table

    row: dict[str, Any] = {"median_us": 0.0, "p99_us": 0.0, "mean_us": 0.0, "max_us": 0.0}
    row |= {"realtime_percent": 0.0, "call": "x", "first_call_s": 0.0}
    config = {"hop_samples": 480, "sample_rate_hz": 48000, "iterations": 1, "warmup": 0}
    result: dict[str, Any] = {
        "config": config | {"seconds": 1.0},
        "platform": {"cpu": "cpu", "cpu_count": 1, "numba": "0"},
        "dsp": row,
        "rnnoise": None,
        "rnnoise_error": "none here",
        "enhancer_ratio_median": 0.6,
        "model_int8": row | {"median_us": 120.0},
    }
    result["targets"] = cpu_targets(result)
    assert [(t["measured"], t["met"]) for t in result["targets"]] == [(0.6, False), (120.0, True)]
    table = format_table(result)
    assert "target (DSP + int8 model) / RNNoise ≤ 0.5, one hop a call: 0.6 (NOT met)" in table
    assert "target int8 step at batch 1 ≤ 150 µs per hop, one hop a call: 120 (met)" in table
    result["enhancer_two_hop_ratio_median"] = 0.45  # a model with its two-hop graph
    result["model_int8_two_hop"] = row | {"median_us": 160.0}
    result["targets"] = cpu_targets(result)
    assert [(t["row"], t["met"]) for t in result["targets"]] == [
        ("enhancer", False),
        ("model_int8", True),
        ("enhancer_two_hop", True),
        ("model_int8_two_hop", False),
    ]
    table = format_table(result)
    assert "target (DSP + int8 model) / RNNoise ≤ 0.5, two hops a call: 0.45 (met)" in table
    assert "target int8 step at batch 1 ≤ 150 µs per hop, two hops a call: 160 (NOT met)" in table
    assert cpu_targets({"dsp": row}) == []  # without a model there is nothing to check


@pytest.mark.slow
def test_bench_dsp_console_script_default_iterations() -> None:
    script = Path(sys.executable).with_name("percepnet-relay")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    result = subprocess.run(
        [*command, "bench", "dsp", "--seconds", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "RNNoise" in result.stdout and "3000 timed hops" in result.stdout


def test_bench_dsp_times_its_processors_in_turns_and_bills_a_call_to_its_hops() -> None:
    from loadtest.bench_dsp import Timed, time_interleaved

    calls: list[tuple[str, int]] = []
    audio = [(i,) for i in range(7)]
    timed = {
        "one": Timed("one hop a call", lambda i: calls.append(("one", i)), audio),
        "two": Timed("two hops a call", lambda i: calls.append(("two", i)), [(0,)], hops=2),
    }
    rows = time_interleaved(timed, iterations=40, warmup=4, rounds=4)
    assert [name for name, _ in calls[:6]] == ["one"] * 4 + ["two"] * 2  # warm-up, in hops
    timed_calls = [name for name, _ in calls[6:]]
    # in turns: a quarter of each per round, never all of one before the other
    assert timed_calls == (["one"] * 10 + ["two"] * 5) * 4
    # each round goes on through the audio where the one before stopped, warm-up included
    assert [i for name, i in calls if name == "one"] == [i % 7 for i in range(44)]
    assert rows["one"]["iterations"] == 40 and rows["two"]["iterations"] == 20
    assert rows["two"]["call"] == "two hops a call"
