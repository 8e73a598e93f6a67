"""``percepnet-relay denoise``: files and folders at any rate and channel count, the model
options, and one-line errors. Uses the shipped model, or a small exported one when the shipped
weights are absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_cli import assert_one_line_error, digest, harmonic_pair, run_cli

from model.runtime import DEFAULT_MODEL


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if DEFAULT_MODEL.exists():
        return DEFAULT_MODEL
    torch = pytest.importorskip("torch")
    from model.export import export_all
    from model.network import NetworkConfig, PercepNet

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("weights")
    export_all(PercepNet(NetworkConfig(32, 48, 40, 2)).eval(), out)
    return out / "percepnet-int8.onnx"


def _write(path: Path, rate_hz: int, channels: int) -> np.ndarray:
    noisy, _ = harmonic_pair(rate_hz, channels)
    sf.write(path, noisy, rate_hz, subtype="PCM_16")
    return noisy


@pytest.mark.parametrize(("rate_hz", "channels"), [(48_000, 1), (44_100, 2), (16_000, 1)])
def test_denoise_keeps_length_rate_and_channels(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    rate_hz: int,
    channels: int,
) -> None:
    source = tmp_path / "in.wav"
    _write(source, rate_hz, channels)
    before = digest(source)
    code, out, err = run_cli(
        capsys, "denoise", str(source), "-o", str(tmp_path / "out.wav"), "--model", str(model_path)
    )
    assert code == 0, err
    assert "real-time factor" in out
    info_in, info_out = sf.info(source), sf.info(tmp_path / "out.wav")
    assert (info_out.frames, info_out.samplerate, info_out.channels) == (
        info_in.frames,
        info_in.samplerate,
        info_in.channels,
    )
    assert digest(source) == before  # the input is untouched


def test_denoise_folder_to_folder_with_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    _write(tmp_path / "in" / "a.wav", 48_000, 1)
    _write(tmp_path / "in" / "sub" / "b.flac", 16_000, 2)
    code, _, err = run_cli(
        capsys,
        "denoise",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(model_path),
        "--atten-lim-db",
        "12",
        "--no-postfilter",
    )
    assert code == 0, err
    assert (tmp_path / "out" / "a.wav").exists()
    assert sf.info(tmp_path / "out" / "sub" / "b.flac").channels == 2


def test_attenuation_limit_keeps_some_of_the_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "noise.wav", 0.1 * rng.standard_normal(48_000), 48_000, subtype="FLOAT")
    levels = {}
    for limit in ("3", "100"):
        out = tmp_path / f"out{limit}.wav"
        code, _, err = run_cli(
            capsys,
            "denoise",
            str(tmp_path / "noise.wav"),
            "-o",
            str(out),
            "--model",
            str(model_path),
            "--atten-lim-db",
            limit,
        )
        assert code == 0, err
        audio, _ = sf.read(out)
        levels[limit] = float(np.sqrt(np.mean(audio[4800:] ** 2)))
    assert levels["3"] >= 10 ** (-3.5 / 20) * 0.1 * 0.9  # at most ~3 dB of attenuation
    assert levels["3"] > levels["100"]


def test_denoise_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    source = tmp_path / "in.wav"
    _write(source, 48_000, 1)
    code, _, err = run_cli(
        capsys,
        "denoise",
        str(tmp_path / "absent.wav"),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(model_path),
    )
    assert_one_line_error(code, err, "absent.wav")
    code, _, err = run_cli(
        capsys, "denoise", str(source), "-o", str(source), "--model", str(model_path)
    )
    assert_one_line_error(code, err, "overwrite")
    code, _, err = run_cli(
        capsys,
        "denoise",
        str(source),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(tmp_path / "nope.onnx"),
    )
    assert_one_line_error(code, err, "not found")
    code, _, err = run_cli(
        capsys,
        "denoise",
        str(source),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(model_path),
        "--atten-lim-db",
        "-3",
    )
    assert_one_line_error(code, err, "atten-lim-db")
    for bad in ("-1", "nan"):
        code, _, err = run_cli(
            capsys,
            *("denoise", str(source), "-o", str(tmp_path / "o.wav"), "--model", str(model_path)),
            *("--prime-seconds", bad),
        )
        assert_one_line_error(code, err, "--prime-seconds")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        capsys,
        "denoise",
        str(tmp_path / "empty"),
        "-o",
        str(tmp_path / "o"),
        "--model",
        str(model_path),
    )
    assert_one_line_error(code, err, "no audio files")


def test_runtime_side_never_imports_torch() -> None:
    """The server and the denoise path run on onnxruntime alone; torch is for training."""
    import subprocess
    import sys

    code = (
        "import sys, dsp.enhancer, model.runtime, service.cli, service.denoise; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_same_named_inputs_in_different_folders_stay_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    (tmp_path / "dupA").mkdir()
    (tmp_path / "dupB").mkdir()
    _write(tmp_path / "dupA" / "x.wav", 48_000, 1)
    _write(tmp_path / "dupB" / "x.wav", 16_000, 2)
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        "denoise",
        str(tmp_path / "dupA" / "x.wav"),
        str(tmp_path / "dupB" / "x.wav"),
        str(tmp_path / "dupA" / ".." / "dupA" / "x.wav"),  # the same file again: done once
        "-o",
        f"{out}/",
        "--model",
        str(model_path),
    )
    assert code == 0, err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["dupA/x.wav", "dupB/x.wav"]
    shapes = {name: sf.info(out / name / "x.wav") for name in ("dupA", "dupB")}
    assert (shapes["dupA"].samplerate, shapes["dupA"].channels) == (48_000, 1)
    assert (shapes["dupB"].samplerate, shapes["dupB"].channels) == (16_000, 2)


def test_several_inputs_into_an_existing_file_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    _write(tmp_path / "a.wav", 48_000, 1)
    _write(tmp_path / "b.wav", 48_000, 1)
    target = tmp_path / "existing.wav"
    _write(target, 48_000, 1)
    before = sorted(tmp_path.iterdir()), digest(target)
    code, out, err = run_cli(
        capsys,
        "denoise",
        str(tmp_path / "a.wav"),
        str(tmp_path / "b.wav"),
        "-o",
        str(target),
        "--model",
        str(model_path),
    )
    assert_one_line_error(code, err, "existing.wav is a file", "output folder")
    assert out == ""  # no file was enhanced first
    assert (sorted(tmp_path.iterdir()), digest(target)) == before


@pytest.mark.parametrize("where", ["under /proc", "under a file"])
def test_an_unwritable_output_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path, where: str
) -> None:
    if where == "under /proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    source = tmp_path / "in.wav"
    _write(source, 48_000, 1)
    (tmp_path / "plain.txt").write_text("not a folder")
    output = {"under /proc": Path("/proc/nope/x.wav"), "under a file": tmp_path / "plain.txt/x.wav"}
    code, out, err = run_cli(
        capsys, "denoise", str(source), "-o", str(output[where]), "--model", str(model_path)
    )
    assert_one_line_error(code, err, "cannot write to the output folder", str(output[where].parent))
    assert out == ""


def test_an_output_extension_no_format_goes_by_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    source = tmp_path / "in.wav"
    _write(source, 48_000, 1)
    code, out, err = run_cli(
        capsys, "denoise", str(source), "-o", str(tmp_path / "out.xyz"), "--model", str(model_path)
    )
    assert_one_line_error(code, err, "'.xyz'", ".flac")
    assert out == "" and not (tmp_path / "out.xyz").exists()
    code, _, err = run_cli(
        capsys, "denoise", str(source), "-o", str(tmp_path / "out.flac"), "--model", str(model_path)
    )
    assert code == 0, err
    assert sf.info(tmp_path / "out.flac").format == "FLAC"


def test_a_folder_denoised_into_itself_twice_skips_its_own_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder / "a.wav", 48_000, 1)
    _write(folder / "b.wav", 16_000, 1)
    for run in range(2):
        code, _, err = run_cli(
            capsys,
            "denoise",
            str(folder),
            "-o",
            str(folder / "enhanced"),
            "--model",
            str(model_path),
        )
        assert code == 0, f"run {run + 1}: {err}"
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert written == ["a.wav", "b.wav", "enhanced/a.wav", "enhanced/b.wav"]


def test_the_state_is_primed_on_the_files_opening_and_the_pass_starts_afresh(
    model_path: Path,
) -> None:
    from dsp.offline import enhance_signal
    from model.runtime import ModelGainSource, ModelRuntime, primed_gain_source

    runtime = ModelRuntime(model_path)
    noisy, _ = harmonic_pair(48_000, 1)
    signal = np.asarray(noisy, dtype=np.float64).reshape(-1)
    fresh = primed_gain_source(runtime, signal, 0.0)
    assert not fresh._gru.any() and not fresh._conv1.any() and not fresh._conv2.any()
    primed = primed_gain_source(runtime, signal, 0.5)
    heard = ModelGainSource(runtime)
    enhance_signal(signal[:24_000], heard)  # what the source heard: the first half second
    np.testing.assert_array_equal(primed._gru, heard._gru)
    assert primed._gru.any()
    assert not primed._conv1.any() and not primed._conv2.any()  # the real pass starts afresh
    # priming changes the output, and 0 s is the stream's behaviour, sample for sample
    streamed = enhance_signal(signal, ModelGainSource(runtime))
    assert np.array_equal(enhance_signal(signal, primed_gain_source(runtime, signal, 0)), streamed)
    assert not np.array_equal(enhance_signal(signal, primed), streamed)


def test_prime_seconds_is_off_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_path: Path
) -> None:
    source = tmp_path / "in.wav"
    _write(source, 48_000, 1)
    outputs = {}
    for name, extra in (
        ("default", ()),
        ("zero", ("--prime-seconds", "0")),
        ("one", ("--prime-seconds", "1")),
    ):
        target = tmp_path / f"{name}.wav"
        code, _, _ = run_cli(
            capsys, "denoise", str(source), "-o", str(target), "--model", str(model_path), *extra
        )
        assert code == 0
        outputs[name], _ = sf.read(target)
    assert np.array_equal(outputs["default"], outputs["zero"])
    assert not np.array_equal(outputs["default"], outputs["one"])
    assert outputs["one"].shape == outputs["default"].shape
