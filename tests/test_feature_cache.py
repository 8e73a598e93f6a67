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


def test_blend_with_teacher_is_a_per_band_geometric_mean_weighted_by_the_share() -> None:
    from model.rnnoise_baseline import blend_with_teacher

    oracle = np.array([[0.81, 1.0, 0.0]], dtype=np.float32)
    teacher = np.array([[0.25, 0.04, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(blend_with_teacher(oracle, teacher, 0.5), [[0.45, 0.2, 0.0224]],
                               atol=1e-3)
    np.testing.assert_allclose(blend_with_teacher(oracle, teacher, 0.0), oracle, atol=1e-3)
    np.testing.assert_allclose(blend_with_teacher(oracle, teacher, 1.0), teacher, atol=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        blend_with_teacher(oracle, teacher[:, :2], 0.5)


def test_the_recipe_gains_blend_the_oracle_with_what_rnnoise_makes_of_the_input() -> None:
    pytest.importorskip("pyrnnoise")
    from dsp.offline import compute_oracle_targets
    from model.feature_cache import recipe_gains
    from model.mixtures import Mixture, MixtureRecipe
    from model.rnnoise_baseline import rnnoise_enhance

    rng = np.random.default_rng(3)
    t = np.arange(48_000) / 48_000
    speech = 0.1 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    noisy = speech + 0.02 * rng.standard_normal(t.shape[0])
    mixture = Mixture(noisy=noisy, target=speech, speech_max_hz=24_000.0)
    oracle = compute_oracle_targets(noisy, speech).gains
    teacher = compute_oracle_targets(noisy, rnnoise_enhance(noisy)).gains

    assert recipe_gains(MixtureRecipe(), mixture, oracle) is oracle
    half = recipe_gains(MixtureRecipe(rnnoise_teacher_share=0.5), mixture, oracle)
    expected = np.sqrt(np.maximum(oracle, 1e-3) * np.maximum(teacher, 1e-3))
    np.testing.assert_allclose(half, expected, atol=1e-5)
    assert not np.allclose(half, oracle, atol=0.05)  # RNNoise's gains do differ from the oracle's
