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
