"""On-the-fly training data: Opus coding keeps the input aligned, the stream of batches is a
function of its seed and position (with any number of workers), and a training run on it takes
steps, keeps its best checkpoint and resumes where it stopped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from dsp.constants import NUM_BANDS, NUM_FEATURES  # noqa: E402
from model import splits, train  # noqa: E402
from model.mixtures import SAMPLE_RATE, MixtureRecipe  # noqa: E402
from model.onthefly import (  # noqa: E402
    MixtureStream,
    OpusCoding,
    StreamSpec,
    make_batch,
    opus_round_trip,
)
from model.runtime import sha256_of  # noqa: E402
from model.splits import AudioFile, Split  # noqa: E402
from model.training_record import lineage, read_record  # noqa: E402

ONE_SECOND = MixtureRecipe(segment_seconds=1.0)


def _write(folder: Path, name: str, signal: np.ndarray, kind: str, speaker: str) -> AudioFile:
    path = folder / name
    sf.write(path, signal.astype(np.float32), SAMPLE_RATE)
    return AudioFile(
        path=path,
        relative_path=name,
        kind=kind,
        speaker_id=speaker,
        sample_rate=SAMPLE_RATE,
        seconds=signal.shape[0] / SAMPLE_RATE,
        license="test",
        label="",
    )


def _files(folder: Path, seed: int) -> Split:
    """Two voiced "speakers" (pulse trains), two noises and a room, all synthetic."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    speech = tuple(
        _write(
            folder,
            f"speech{seed}_{i}.flac",
            0.3 * np.sign(np.sin(2 * np.pi * f0 * t)) * np.hanning(t.shape[0]),
            "clean",
            f"s{i}",
        )
        for i, f0 in enumerate((120.0, 210.0))
    )
    noise = tuple(
        _write(
            folder, f"noise{seed}_{i}.flac", 0.1 * rng.standard_normal(2 * SAMPLE_RATE), "noise", ""
        )
        for i in range(2)
    )
    room = np.zeros(SAMPLE_RATE // 4)
    room[0] = 1.0
    room[1:] = (
        0.2 * rng.standard_normal(room.shape[0] - 1) * np.exp(-np.arange(1, room.shape[0]) / 2_000)
    )
    return Split(speech, noise, (_write(folder, f"room{seed}.flac", room, "rir", ""),))


@pytest.mark.parametrize("bitrate_kbps", [16, 64])
def test_opus_coding_keeps_the_input_aligned_and_its_length(bitrate_kbps: int) -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    signal = 0.2 * np.sin(2 * np.pi * (200 + 1_900 * t) * t)  # a 200 Hz → 4 kHz chirp
    coded = opus_round_trip(signal, bitrate_kbps)
    assert coded.shape == signal.shape
    lags = range(-20, 21)
    middle = slice(2_000, SAMPLE_RATE - 2_000)
    fit = [float(np.dot(np.roll(coded, -lag)[middle], signal[middle])) for lag in lags]
    assert abs(list(lags)[int(np.argmax(fit))]) <= 2
    # a perceptual coder keeps the level, and at a high bitrate the waveform too
    level_db = 10 * np.log10(np.mean(coded[middle] ** 2) / np.mean(signal[middle] ** 2))
    assert abs(level_db) < 1.0
    if bitrate_kbps >= 64:
        assert np.corrcoef(coded[middle], signal[middle])[0, 1] > 0.95


def test_opus_coding_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="share"):
        OpusCoding(share=1.5)
    with pytest.raises(ValueError, match="bitrates"):
        OpusCoding(bitrates_kbps=(4,))


def test_a_batch_depends_only_on_the_seed_and_its_position(tmp_path: Path) -> None:
    files = _files(tmp_path, 0)
    spec = StreamSpec(str(tmp_path), seed=5, batch=3, recipe=ONE_SECOND, opus=OpusCoding(share=0.5))
    first, again = make_batch(spec, files, 2), make_batch(spec, files, 2)
    features, gains, strengths, mask = first
    assert features.shape == (3, 100, NUM_FEATURES)
    assert gains.shape == strengths.shape == (3, 100, NUM_BANDS)
    assert mask.shape == (3, NUM_BANDS)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(features, make_batch(spec, files, 3)[0])
    other_seed = dataclasses.replace(spec, seed=6)
    assert not torch.equal(features, make_batch(other_seed, files, 2)[0])


def test_workers_hand_out_the_stream_in_order(tmp_path: Path) -> None:
    files = _files(tmp_path, 0)
    spec = StreamSpec(str(tmp_path), seed=1, batch=1, recipe=ONE_SECOND, opus=None)
    loader = torch.utils.data.DataLoader(
        MixtureStream(spec, files, start=4), batch_size=None, num_workers=2
    )
    made = [batch[0] for _, batch in zip(range(3), loader, strict=False)]
    for index, features in zip(range(4, 7), made, strict=True):
        assert torch.equal(features, make_batch(spec, files, index)[0])


def _tiny_training_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Split:
    """Two synthetic splits under ``tmp_path`` as the training and dev data, a tiny dev cache;
    the training split."""
    split = (_files(tmp_path, 0), _files(tmp_path, 1))
    monkeypatch.setattr(splits, "split_files", lambda data_dir: split)
    monkeypatch.setattr(train, "DEV_CACHE_SHAPE", (1, 2))
    (tmp_path / splits.MANIFEST_FILE).write_text("")
    return split[0]


def test_training_on_the_fly_keeps_the_best_checkpoint_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    training = _tiny_training_data(tmp_path, monkeypatch)
    args = [
        "--out",
        str(tmp_path / "run"),
        "--data-dir",
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--on-the-fly",
        "--batch",
        "2",
        "--epoch-steps",
        "2",
        "--dev-files",
        "1",
        "--gru-size",
        "16",
        "--gru-layers",
        "1",
        "--threads",
        "1",
        "--data-workers",
        "1",
    ]
    best = train.train(train.parse_args([*args, "--epochs", "1"]))
    assert best.name == train.BEST_CHECKPOINT
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert (state["epoch"], state["stream_batches"]) == (1, 2)
    weights = tmp_path / "weights"
    train.main([*args, "--epochs", "2", "--export", str(weights)])
    resumed = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert (resumed["epoch"], resumed["stream_batches"]) == (2, 4)
    assert len(resumed["history"]) == 2
    # the exported weights carry the record of what they were trained on, and with what loss
    record = read_record(weights)
    assert record["data"]["files"]["speech"] == sorted(f.relative_path for f in training.speech)
    assert record["data"]["files"]["noise"] == sorted(f.relative_path for f in training.noise)
    assert record["data"]["licenses"][0]["license"] == "test"
    assert record["loss"]["quality_predictors"] == []
    assert (record["epochs"], record["hardware"]["threads"], record["init_from"]) == (2, 1, None)
    # a fine-tune of those weights keeps their record as its parent's
    train.main(
        [
            *args[:1],
            str(tmp_path / "finetune"),
            *args[2:],
            "--epochs",
            "1",
            "--init-from",
            str(weights / "percepnet-fp32.onnx"),
            "--export",
            str(weights),
        ]
    )
    child = read_record(weights)
    assert child["init_from"]["record"] == record
    assert lineage(child) == [child, record]
    finetune = torch.load(tmp_path / "finetune" / "checkpoint.pt", weights_only=False)
    assert [h["stage"] for h in finetune["history"]] == ["start", "crops"]
    assert [h["epoch"] for h in finetune["history"]] == [0.0, 1.0]
    assert [s["stage"] for s in child["stages"]] == ["crops"]  # epoch 0 trained nothing


def test_a_fine_tune_scores_its_start_so_best_is_never_worse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_training_data(tmp_path, monkeypatch)
    args = [
        *("--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--on-the-fly"),
        *("--batch", "2", "--epoch-steps", "2", "--dev-files", "1", "--lr", "0.05"),
        *("--gru-size", "16", "--gru-layers", "1", "--threads", "1", "--data-workers", "0"),
    ]
    train.main([*args, "--out", str(tmp_path / "run"), "--epochs", "1"])
    start = torch.load(tmp_path / "run" / "best.pt", weights_only=False)["model"]
    (tmp_path / "start.pt").write_bytes((tmp_path / "run" / "best.pt").read_bytes())
    # every trained epoch scores below the start: best.pt stays the starting weights
    scores = iter([2.0, 1.5, 1.9])
    monkeypatch.setattr(train, "dev_pesq", lambda model, dev: next(scores))
    out = tmp_path / "finetune"
    finetune = [*args, "--out", str(out), "--init-from", str(tmp_path / "start.pt")]
    assert train.train(train.parse_args([*finetune, "--epochs", "2"])) == out / "best.pt"
    best = torch.load(out / "best.pt", weights_only=False)
    assert [h["dev_pesq"] for h in best["history"]] == [2.0] and best["epoch"] == 0
    for name, tensor in start.items():
        assert torch.equal(best["model"][name], tensor), name
    last = torch.load(out / "checkpoint.pt", weights_only=False)
    assert [h["dev_pesq"] for h in last["history"]] == [2.0, 1.5, 1.9]
    assert any(not torch.equal(last["model"][n], t) for n, t in start.items())
    # a resume neither rescores the start nor adds a second epoch 0
    scores = iter([1.95])
    assert train.train(train.parse_args([*finetune, "--epochs", "3"])) == out / "best.pt"
    last = torch.load(out / "checkpoint.pt", weights_only=False)
    assert [h["epoch"] for h in last["history"]] == [0.0, 1.0, 2.0, 3.0]
    assert torch.load(out / "best.pt", weights_only=False)["epoch"] == 0


def test_the_model_card_says_what_an_on_the_fly_run_heard() -> None:
    from model.model_card import _stream_note

    spec = StreamSpec("data", seed=1, batch=16, recipe=MixtureRecipe(), opus=OpusCoding(0.5))
    note = _stream_note({"stream": spec.as_dict(), "stream_batches": 750})
    assert note.startswith("12,000 mixtures of 3 s (10.0 h of audio)")
    assert "50% of the inputs coded by Opus" in note and "16/24/32/48/64 kb/s" in note
    without = dataclasses.replace(spec, opus=None)
    assert "Opus" not in _stream_note({"stream": without.as_dict(), "stream_batches": 1})
    assert "none seen twice" in note
    from model.teacher import TeacherSpec

    taught = dataclasses.replace(spec, teacher=TeacherSpec(0.5, 200, "cache"))
    note = _stream_note({"stream": taught.as_dict(), "stream_batches": 750})
    assert "none seen twice" not in note
    assert "cycling over a pool of 200 batches made once (3,200 distinct mixtures" in note
    with_earlier = taught.as_dict()
    earlier_stream = dataclasses.replace(
        spec, seed=7, recipe=MixtureRecipe(mid_speech_start_share=0.5)
    ).as_dict()
    with_earlier["teacher"]["extra_pools"] = {  # type: ignore[index]
        "teacher-a": {"batches": 300, "stream": earlier_stream},
        "teacher-b": {"batches": 100, "stream": None},
    }
    note = _stream_note({"stream": with_earlier, "stream_batches": 750})
    assert (
        "a pool of 200 batches made once and 2 earlier runs' pools (400 batches: seed 7, 300 "
        "batches, unlike this stream's: mid_speech_start_share 0.5; 100 batches of an "
        "undescribed stream) (9,600 distinct mixtures" in note
    )


def test_the_training_record_states_a_teacher_blend_in_the_targets() -> None:
    plain = train.loss_record(train.parse_args([]))
    assert plain["targets"].startswith("the oracle band gains")
    assert plain["quality_predictors"] == []
    taught = train.loss_record(train.parse_args(["--on-the-fly", "--teacher-blend", "0.3"]))
    assert taught["targets"].startswith("a blend, in the loss's power-compressed domain, of 0.7 ×")
    assert "0.3 × those that turn the mixture into DeepFilterNet3's output" in taught["targets"]
    paused = train.loss_record(train.parse_args(["--pause-stage-minutes", "10"]))
    assert paused["terms"][-1].endswith("costs 21×")  # the default stage weight, 20


def test_distillation_trains_on_the_teacher_network_s_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_training_data(tmp_path, monkeypatch)
    args = [
        *("--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--on-the-fly"),
        *("--batch", "2", "--epoch-steps", "2", "--dev-files", "1", "--epochs", "1"),
        *("--gru-size", "16", "--gru-layers", "1", "--threads", "1", "--data-workers", "0"),
    ]
    teacher_dir = tmp_path / "teacher"
    train.main([*args, "--out", str(tmp_path / "run"), "--export", str(teacher_dir)])
    teacher = teacher_dir / "percepnet-fp32.onnx"
    # a student that starts as the teacher, barely moving: its loss against the teacher's
    # outputs is nil, against the oracle's targets it is not
    still = [*args, "--init-from", str(teacher), "--lr", "1e-12"]
    train.main([*still, "--out", str(tmp_path / "oracle")])
    oracle = torch.load(tmp_path / "oracle" / "checkpoint.pt", weights_only=False)
    assert oracle["history"][-1]["train_loss"] > 1e-4
    student_dir = tmp_path / "student"
    taught = [*still, "--out", str(tmp_path / "taught"), "--distil-from", str(teacher)]
    train.main([*taught, "--export", str(student_dir)])
    state = torch.load(tmp_path / "taught" / "checkpoint.pt", weights_only=False)
    assert state["history"][-1]["train_loss"] < 1e-9
    # half the oracle's targets blended in: a loss between the two
    train.main(
        [*still, "--out", str(tmp_path / "half"), *("--distil-from", str(teacher))]
        + ["--distil-oracle-share", "0.5"]
    )
    half = torch.load(tmp_path / "half" / "checkpoint.pt", weights_only=False)
    assert 1e-9 < half["history"][-1]["train_loss"] < oracle["history"][-1]["train_loss"]
    teacher_record = read_record(teacher_dir)
    assert state["distil_from"]["sha256"] == sha256_of(teacher)
    assert state["distil_from"]["record"] == teacher_record
    # the exported student's record names its teacher, its targets and no machine's folders
    record = read_record(student_dir)
    assert record["distil_from"]["record"] == teacher_record
    assert record["loss"]["targets"].startswith("the band gains and comb strengths that a trained")
    assert record["loss"]["quality_predictors"] == []
    assert not str(record["options"]["distil_from"]).startswith("/")
    assert not str(record["init_from"]["path"]).startswith("/")


def test_distillation_refuses_a_teacher_blend_and_a_missing_network(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--distil-from replaces the targets"):
        train.parse_args(["--on-the-fly", "--teacher-blend", "0.5", "--distil-from", "x.onnx"])
    with pytest.raises(SystemExit, match="error: --distil-from: .*not an ONNX file"):
        (tmp_path / "x.onnx").write_bytes(b"not a graph")
        train.distillation_teacher(str(tmp_path / "x.onnx"), torch.device("cpu"))


def test_distillation_s_oracle_share_blends_the_targets_in_the_compressed_domain() -> None:
    generator = torch.Generator().manual_seed(3)
    taught = tuple(torch.rand(2, 5, NUM_BANDS, generator=generator) for _ in range(2))
    oracle = tuple(torch.rand(2, 5, NUM_BANDS, generator=generator) for _ in range(2))
    assert train.distillation_targets(taught, oracle, 0.0) is taught
    gains, strengths = train.distillation_targets(taught, oracle, 0.25)
    expected_gains = (0.25 * oracle[0].sqrt() + 0.75 * taught[0].sqrt()) ** 2
    expected_strengths = 1 - (0.25 * (1 - oracle[1]).sqrt() + 0.75 * (1 - taught[1]).sqrt()) ** 2
    torch.testing.assert_close(gains, expected_gains)
    torch.testing.assert_close(strengths, expected_strengths)
    record = train.loss_record(
        train.parse_args(["--distil-from", "x.onnx", "--distil-oracle-share", "0.25"])
    )
    assert record["targets"].endswith(
        "with 0.25 × the oracle band gains and comb strengths of the mixture"
    )


def test_distillation_s_oracle_share_is_checked() -> None:
    with pytest.raises(SystemExit, match="--distil-oracle-share needs --distil-from"):
        train.parse_args(["--distil-oracle-share", "0.3"])
    with pytest.raises(SystemExit, match=r"--distil-oracle-share must be in \[0, 1\), got 1"):
        train.parse_args(["--distil-from", "x.onnx", "--distil-oracle-share", "1"])
