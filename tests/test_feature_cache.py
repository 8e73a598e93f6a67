"""Loading the sharded feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.feature_cache import load_all, load_shard, shard_files


def _write_shard(path: Path, examples: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        features=rng.standard_normal((examples, 6, 70)).astype(np.float32),
        gains=rng.random((examples, 6, 34)).astype(np.float16),
        strengths=rng.random((examples, 6, 34)).astype(np.float16),
        band_mask=(rng.random((examples, 34)) > 0.2).astype(np.float32),
    )


def test_load_all_puts_every_finished_shard_in_order_into_one_set_of_arrays(
    tmp_path: Path,
) -> None:
    for index, examples in enumerate((3, 5, 2)):
        _write_shard(tmp_path / f"shard_{index:05d}.npz", examples, seed=index)
    _write_shard(tmp_path / "shard_00003.partial.npz", 4, seed=9)  # an interrupted build
    shards = [load_shard(path) for path in shard_files(tmp_path)]
    everything = load_all(tmp_path)
    assert everything.features.shape == (10, 6, 70)
    for name in ("features", "gains", "strengths", "band_mask"):
        joined = np.concatenate([getattr(s, name) for s in shards])
        loaded = getattr(everything, name)
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, joined)


def test_load_all_names_the_folder_when_it_holds_no_shards(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_all(tmp_path)


def test_load_all_takes_only_the_shards_a_run_asks_for(tmp_path: Path) -> None:
    for index, examples in enumerate((3, 5, 2)):
        _write_shard(tmp_path / f"shard_{index:05d}.npz", examples, seed=index)
    first_two = load_all(tmp_path, count=2)
    assert first_two.features.shape[0] == 8
    np.testing.assert_array_equal(first_two.features, load_all(tmp_path).features[:8])


def _audio_file(folder: Path, name: str, kind: str, seed: int, sample_rate: int = 48_000):
    import soundfile as sf

    from model.splits import AudioFile

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, sample_rate // 10)
    sf.write(path, samples, sample_rate, subtype="PCM_16")
    speaker = "s1" if kind == "clean" else ""
    return AudioFile(path, name, kind, speaker, sample_rate, 0.1, "CC0", "")


def _spec(files):
    from model.feature_cache import CacheSpec
    from model.mixtures import MixtureRecipe

    return CacheSpec(files, "train", 4, 125, 1234, MixtureRecipe())


def test_the_cache_key_changes_with_the_files_of_the_split_and_not_with_their_folder(
    tmp_path: Path,
) -> None:
    from model.splits import Split

    speech = _audio_file(tmp_path / "a", "clean/one.wav", "clean", seed=1)
    noise = _audio_file(tmp_path / "a", "noise/one.wav", "noise", seed=2)
    other_noise = _audio_file(tmp_path / "a", "noise/two.wav", "noise", seed=3)
    base = Split(speech=(speech,), noise=(noise,), rooms=())
    key = _spec(base).key()
    # the same files, by name and bytes, in another folder: the same cache
    moved = [
        _audio_file(tmp_path / "b", f.relative_path, f.kind, seed=s)
        for f, s in ((speech, 1), (noise, 2))
    ]
    assert _spec(Split(speech=(moved[0],), noise=(moved[1],), rooms=())).key() == key
    # a file more, a file less, a file in another role, another sample rate: another cache
    assert _spec(Split(speech=(speech,), noise=(noise, other_noise), rooms=())).key() != key
    assert _spec(Split(speech=(speech,), noise=(), rooms=())).key() != key
    assert _spec(Split(speech=(speech,), noise=(), rooms=(noise,))).key() != key
    resampled = _audio_file(tmp_path / "c", "clean/one.wav", "clean", seed=1, sample_rate=16_000)
    assert _spec(Split(speech=(resampled,), noise=(noise,), rooms=())).key() != key
    # the same name with other bytes (a file re-encoded in place): another cache
    _audio_file(tmp_path / "a", "noise/one.wav", "noise", seed=4)
    assert _spec(Split(speech=(speech,), noise=(noise,), rooms=())).key() != key


def test_the_cache_key_covers_the_mixers_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inspect
    import types
    from collections.abc import Callable

    from model import feature_cache, mixtures
    from model.splits import Split

    speech = _audio_file(tmp_path, "clean/one.wav", "clean", seed=1)
    files = Split(speech=(speech,), noise=(), rooms=())
    key = _spec(files).key()
    real_source = inspect.getsource

    def edited(target: types.ModuleType | Callable[..., object]) -> str:
        return real_source(target) + ("\n# edited\n" if target is mixtures else "")

    monkeypatch.setattr(feature_cache.inspect, "getsource", edited)
    feature_cache.code_digest.cache_clear()
    try:
        assert _spec(files).key() != key
    finally:
        monkeypatch.undo()
        feature_cache.code_digest.cache_clear()
    assert _spec(files).key() == key
