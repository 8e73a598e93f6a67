"""Training on a lent GPU machine (``model.research.lent_gpu``): the packed data keeps the split
and each file's bandwidth, libopus called directly codes as PyAV does, and a run without dev
audio keeps its epochs and writes them out small."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

import model.onthefly  # noqa: E402
from model import splits, train  # noqa: E402
from model.export import load_checkpoint  # noqa: E402
from model.research import lent_gpu  # noqa: E402

RATE = 48_000
FIELDS = [
    "path",
    "source",
    "license",
    "speaker_id",
    "seconds",
    "sample_rate",
    "kind",
    "label",
    "bytes",
]


def _noise_like(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def _bitrate_kbps(content: bytes, seconds: float) -> float:
    return len(content) * 8 / 1000 / seconds


@pytest.mark.parametrize("bitrate_kbps", [16, 32, 64])
def test_packing_codes_opus_at_about_the_asked_bitrate(bitrate_kbps: int) -> None:
    content = lent_gpu.opus_bytes(_noise_like(3.0), RATE, bitrate_kbps)
    assert 0.75 * bitrate_kbps < _bitrate_kbps(content, 3.0) < 1.25 * bitrate_kbps


def bundled_libopus() -> str:
    """The libopus that PyAV's wheel bundles (what a lent machine's run is given)."""
    import av

    found = sorted((Path(av.__file__).parent.parent / "av.libs").glob("libopus*.so*"))
    if not found:
        pytest.skip("this PyAV bundles no libopus of its own")
    return str(found[0])


@pytest.mark.parametrize("bitrate_kbps", [16, 64])
def test_libopus_called_directly_codes_as_pyav_does(bitrate_kbps: int) -> None:
    t = np.arange(RATE) / RATE
    chirp = 0.2 * np.sin(2 * np.pi * (200 + 1_900 * t) * t)  # a 200 Hz → 4 kHz chirp
    bursts = np.repeat(np.random.default_rng(1).random(10) > 0.4, RATE // 10) * _noise_like(1.0)
    coder = lent_gpu.LibOpus(bundled_libopus())
    for signal in (chirp, bursts):
        direct = coder.round_trip(signal, bitrate_kbps)
        pyav = model.onthefly.opus_round_trip(signal, bitrate_kbps)
        assert direct.shape == signal.shape
        # the same library with the same settings: the same output, but for PyAV's 16-bit
        # samples, while each differs from the input by the coding itself
        difference_db = 10 * np.log10(np.mean((direct - pyav) ** 2) / np.mean(pyav**2))
        coding_db = 10 * np.log10(np.mean((pyav - signal) ** 2) / np.mean(signal**2))
        assert difference_db < -60.0 and coding_db > -25.0


def test_without_pyav_the_stream_calls_libopus(monkeypatch: pytest.MonkeyPatch) -> None:
    path = bundled_libopus()
    assert not lent_gpu.use_libopus_without_pyav(path)  # PyAV is here: nothing changes
    monkeypatch.delitem(sys.modules, "av")
    monkeypatch.setattr(lent_gpu.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(model.onthefly, "opus_round_trip", model.onthefly.opus_round_trip)
    with pytest.raises(SystemExit, match="^error: --libopus: "):
        lent_gpu.use_libopus_without_pyav(str(Path(path).with_name("no-such-libopus.so")))
    assert lent_gpu.use_libopus_without_pyav(path)
    assert "av" in sys.modules
    coded = model.onthefly.opus_round_trip(_noise_like(0.5).astype(np.float64), 32)
    assert coded.shape == (RATE // 2,)


def _row(path: str, kind: str, speaker: str, seconds: float, bandwidth: int) -> dict[str, str]:
    return {
        "path": path,
        "source": "test",
        "license": "test",
        "speaker_id": speaker,
        "seconds": str(seconds),
        "sample_rate": str(bandwidth),
        "kind": kind,
        "label": "",
        "bytes": "0",
    }


def _data_dir(folder: Path) -> tuple[Path, splits.DevList]:
    """A manifest with fullband and 16 kHz speech, a 44.1 kHz noise, a low- and a high-rate
    Opus file, a room and a dev speaker's file; and a dev list naming the last."""
    data = folder / "data"
    files = {
        "clean/a/one.flac": (_noise_like(1.0, RATE, 1), RATE, "clean", "a", RATE),
        "clean/b/two.flac": (_noise_like(1.0, 16_000, 2), 16_000, "clean", "b", 16_000),
        "clean/c/three.opus": (_noise_like(2.0, RATE, 3), RATE, "clean", "c", RATE),
        "noise/n/hum.flac": (_noise_like(1.0, 44_100, 4), 44_100, "noise", "", 44_100),
        "noise/m/low.opus": (_noise_like(2.0, RATE, 5), RATE, "noise", "", RATE),
        "rir/hall.flac": (_noise_like(0.2, RATE, 6), RATE, "rir", "", RATE),
        "clean/d/dev.flac": (_noise_like(1.0, RATE, 7), RATE, "clean", "d", RATE),
    }
    rows = []
    for path, (audio, rate, kind, speaker, bandwidth) in files.items():
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".opus"):
            kbps = 64 if "three" in path else 16
            (data / path).write_bytes(lent_gpu.opus_bytes(audio, rate, kbps))
        else:
            sf.write(data / path, audio, rate)
        rows.append(_row(path, kind, speaker, audio.shape[0] / rate, bandwidth))
    with open(data / splits.MANIFEST_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    dev = splits.DevList(frozenset({"d"}), ("clean/d/dev.flac",), (), (), ())
    return data, dev


def test_packing_keeps_the_split_and_each_files_bandwidth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, dev = _data_dir(tmp_path)
    monkeypatch.setattr(splits, "load_dev_list", lambda path=None: dev)
    out = tmp_path / "packed"
    summary = lent_gpu.pack(data, out, speech_kbps=20, noise_kbps=20)
    assert summary["files"] == 6
    with open(out / splits.MANIFEST_FILE, newline="") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    assert set(rows) == {
        "clean/a/one.opus",
        "clean/b/two.opus",
        "clean/c/three.opus",
        "noise/n/hum.opus",
        "noise/m/low.opus",
        "rir/hall.flac",
        "clean/d/dev.flac",
    }
    # the dev row stays so that the dev list resolves; its audio stays behind
    assert not (out / "clean/d/dev.flac").exists()
    train_split, dev_split = splits.split_files(out)
    assert {f.speaker_id for f in train_split.speech} == {"a", "b", "c"}
    assert [f.relative_path for f in dev_split.speech] == ["clean/d/dev.flac"]
    # bandwidths as they were; rooms and a low-rate Opus file copied, a high-rate one recoded
    assert rows["clean/b/two.opus"]["sample_rate"] == "16000"
    assert (out / "rir/hall.flac").read_bytes() == (data / "rir/hall.flac").read_bytes()
    assert (out / "noise/m/low.opus").read_bytes() == (data / "noise/m/low.opus").read_bytes()
    recoded = (out / "clean/c/three.opus").read_bytes()
    assert _bitrate_kbps(recoded, 2.0) < 30
    assert int(rows["clean/c/three.opus"]["bytes"]) == len(recoded)
    for path in ("clean/a/one.opus", "noise/n/hum.opus"):
        decoded, _ = sf.read(out / path)
        assert decoded.shape[0] / 48_000 == pytest.approx(float(rows[path]["seconds"]), abs=0.03)
    # a share of a corpus: none of it
    assert lent_gpu.pack(data, tmp_path / "less", keep={"a": 0.0})["files"] == 5


def test_a_keep_share_is_fixed_by_the_path() -> None:
    paths = [f"clean/x/{i}.flac" for i in range(400)]
    chosen = [p for p in paths if lent_gpu.kept(p, 0.4)]
    assert chosen == [p for p in paths if lent_gpu.kept(p, 0.4)]
    assert 120 < len(chosen) < 200
    assert set(chosen) <= {p for p in paths if lent_gpu.kept(p, 0.6)}


def test_pack_refuses_a_folder_without_a_manifest_and_a_bad_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="^error: no data manifest"):
        lent_gpu.main(["pack", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_info:
        lent_gpu.main(["pack", "--out", str(tmp_path / "o"), "--keep", "ravdess=2"])
    assert exit_info.value.code == 2
    assert "SHARE in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^error: give model.train's arguments"):
        lent_gpu.main(["train", "--weights-out", str(tmp_path / "w")])


def test_train_refuses_a_device_that_is_not_there() -> None:
    with pytest.raises(SystemExit, match="^error: --device: not a torch device"):
        train.training_device("gpu0")
    with pytest.raises(SystemExit, match="^error: --device must be cpu or cuda"):
        train.training_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="^error: --device cuda: this machine has no CUDA"):
            train.training_device("cuda")
    with pytest.raises(SystemExit, match="^error: --dev-files must be 0 or more"):
        train.parse_args(["--dev-files", "-1"])


def test_a_run_without_dev_audio_keeps_its_epochs_and_writes_them_out_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_onthefly import _files

    split = (_files(tmp_path, 0), _files(tmp_path, 1))
    monkeypatch.setattr(splits, "split_files", lambda data_dir: split)
    # no dev audio is touched: any dev mixture or dev cache would fail the run
    monkeypatch.setattr(train, "make_dev_audio", None)
    monkeypatch.setattr(train, "DEV_CACHE_SHAPE", None)
    (tmp_path / splits.MANIFEST_FILE).write_text("")
    run = tmp_path / "run"
    args = [
        *("--out", str(run), "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c")),
        *("--on-the-fly", "--batch", "2", "--epoch-steps", "2", "--dev-files", "0"),
        *("--gru-size", "16", "--gru-layers", "1", "--threads", "1", "--data-workers", "0"),
        *("--epochs", "3", "--keep-epochs", "--device", "cpu"),
    ]
    weights = tmp_path / "weights"
    lent_gpu.main(["train", "--weights-out", str(weights), "--last", "2", "--", *args])
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == [
        "epoch_001.pt",
        "epoch_002.pt",
        "epoch_003.pt",
    ]
    assert not (run / train.BEST_CHECKPOINT).exists()  # nothing scored: the last is the result
    written = sorted(weights.glob("epoch_*.pt"))
    assert [p.name for p in written] == ["epoch_002.pt", "epoch_003.pt"]
    last = torch.load(written[-1], weights_only=False)
    assert "optimizer" not in last and last["epoch"] == 3
    assert all("dev_pesq" not in h for h in last["history"])
    full = torch.load(run / "checkpoint.pt", weights_only=False)
    stripped = load_checkpoint(written[-1]).state_dict()
    for name, tensor in full["model"].items():
        assert torch.equal(stripped[name], tensor), name
    assert (weights / "history.json").exists()
    # weights too large to come back in float32 come back in float16, and still load
    (halved,) = lent_gpu.strip_checkpoints(run, tmp_path / "half", last=1, max_bytes=1_000)
    assert all(t.dtype == torch.float16 for t in torch.load(halved)["model"].values())
    for name, tensor in load_checkpoint(halved).state_dict().items():
        assert torch.allclose(tensor, full["model"][name], atol=1e-3), name
