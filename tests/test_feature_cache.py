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
