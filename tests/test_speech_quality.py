"""The speech-recording filter that keeps noisy "clean" recordings out of the training targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import model.speech_quality as speech_quality
from model.mixtures import MixtureRecipe
from model.speech_quality import clean_recordings, read_scores, score_recordings
from model.splits import AudioFile

RATE = 48_000


def _recording(path: Path, signal: np.ndarray) -> AudioFile:
    sf.write(path, signal.astype(np.float32), RATE)
    return AudioFile(path=path, relative_path=path.name, kind="clean", speaker_id="s",
                     sample_rate=RATE, seconds=signal.shape[0] / RATE, license="test", label="")


def _scores(files: list[AudioFile], values: list[float]) -> dict[str, float]:
    return {speech_quality._score_key(f): v for f, v in zip(files, values, strict=True)}


def test_recordings_below_the_threshold_are_dropped_and_none_keeps_all(tmp_path: Path) -> None:
    files = [_recording(tmp_path / f"{i}.flac", np.zeros(RATE)) for i in range(3)]
    scores = _scores(files, [3.1, 3.9, 4.2])
    assert clean_recordings(files, None, {}) == files
    assert clean_recordings(files, 3.8, scores) == files[1:]
    with pytest.raises(ValueError, match="no speech recording"):
        clean_recordings(files, 4.5, scores)
    with pytest.raises(ValueError, match="have no score"):
        clean_recordings(files, 3.8, {})


def test_a_changed_recording_is_not_taken_for_the_one_scored(tmp_path: Path) -> None:
    file = _recording(tmp_path / "a.flac", np.zeros(RATE))
    scores = _scores([file], [4.0])
    _recording(tmp_path / "a.flac", np.zeros(2 * RATE))  # rewritten: another size
    with pytest.raises(ValueError, match="have no score"):
        clean_recordings([file], 3.8, scores)


@pytest.mark.slow
def test_dnsmos_scores_a_noisy_recording_below_the_same_speech_clean_and_keeps_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("speechmos")
    from shared_data import find_shared_data, mix_at_snr, speech_and_noise

    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    clean, noise = speech_and_noise(data_dir, num_utterances=2)
    files = [_recording(tmp_path / "clean.flac", clean),
             _recording(tmp_path / "noisy.flac", mix_at_snr(clean, noise, 10.0))]
    cache = tmp_path / "cache"
    table = score_recordings(files, cache, workers=1)
    assert read_scores(cache) == table
    assert clean_recordings(files, 3.7, table) == files[:1]

    def no_rescoring(path: Path) -> float:
        raise AssertionError(f"{path} was scored again")

    monkeypatch.setattr(speech_quality, "recording_bak", no_rescoring)
    assert score_recordings(files, cache) == table


def test_a_recipe_without_the_filter_keys_the_cache_as_before() -> None:
    assert "min_speech_bak" not in MixtureRecipe().as_dict()
    assert MixtureRecipe(min_speech_bak=3.8).as_dict()["min_speech_bak"] == 3.8


def test_the_model_card_names_the_speech_filter_only_when_it_was_used() -> None:
    pytest.importorskip("torch")
    from model.model_card import _init_note, _speech_note

    assert _speech_note(MixtureRecipe().as_dict(), None, 1827) == ""
    note = _speech_note(MixtureRecipe(min_speech_bak=3.8).as_dict(),
                        {"utterances": 1188, "speakers": 136}, 1827)
    assert "1188 of the 1827 utterances" in note and "BAK 3.8" in note
    assert "`--min-speech-bak`" in note
    assert _init_note(None) == ""
    note = _init_note({"path": "model/weights/percepnet-fp32.onnx", "sha256": "ab" * 32})
    assert "`model/weights/percepnet-fp32.onnx`" in note and "abababababababab…" in note


@pytest.mark.slow
def test_the_cache_mixes_only_the_speech_its_recipe_keeps(tmp_path: Path, shared_data_dir) -> None:
    from model.feature_cache import CacheSpec, recipe_files
    from model.splits import split_named

    speech = list(split_named(shared_data_dir, "train").speech)
    table = _scores(speech, [3.0 if i % 3 == 0 else 4.0 for i in range(len(speech))])
    (tmp_path / speech_quality.SCORES_FILE).write_text(json.dumps(table))

    def spec(recipe: MixtureRecipe) -> CacheSpec:
        return CacheSpec(str(shared_data_dir), "train", 1, 1, 0, recipe)

    assert list(recipe_files(spec(MixtureRecipe()), tmp_path).speech) == speech
    kept = recipe_files(spec(MixtureRecipe(min_speech_bak=3.8)), tmp_path)  # nothing to score
    assert list(kept.speech) == [f for i, f in enumerate(speech) if i % 3]


@pytest.mark.slow
def test_a_filtered_recipe_builds_its_shards_in_worker_processes(
    tmp_path: Path, shared_data_dir
) -> None:
    from model.feature_cache import CacheSpec, build_cache, load_all
    from model.splits import split_named

    speech = list(split_named(shared_data_dir, "train").speech)
    table = _scores(speech, [4.0] * len(speech))
    (tmp_path / speech_quality.SCORES_FILE).write_text(json.dumps(table))
    spec = CacheSpec(str(shared_data_dir), "train", 2, 1, 0, MixtureRecipe(min_speech_bak=3.8))
    data = load_all(build_cache(spec, tmp_path, workers=2), 2)
    assert data.features.shape[0] == 2 and np.all(np.isfinite(data.features))
