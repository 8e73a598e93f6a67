"""Cleaned copies of the speech as training targets: the input keeps each recording as it is,
the target is built from its copy through exactly the same processing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.feature_cache import CacheSpec, recipe_targets
from model.mixtures import Mixture, MixtureRecipe, TargetSpeech, load_audio_48k, make_mixture
from model.speech_cleaning import (
    CleanedSpeech,
    clean_recordings_with,
    cleaned_folder,
    cleaned_path,
    cleaner_key,
)
from model.splits import AudioFile, Split

RATE = 48_000

# Every step that shapes the speech, always taken: speed change, EQ, room, low-pass.
EVERY_STEP = MixtureRecipe(
    segment_seconds=1.5, noise_free_share=0.0, room_share=1.0, simulated_room_share=1.0,
    eq_share=1.0, lowpass_share=1.0, speed_range=(0.9, 1.1),
)


def _recording(path: Path, signal: np.ndarray, kind: str = "clean") -> AudioFile:
    sf.write(path, signal.astype(np.float32), RATE)
    return AudioFile(path=path, relative_path=path.name, kind=kind, speaker_id="s",
                     sample_rate=RATE, seconds=signal.shape[0] / RATE, license="test", label="")


def _voiced(seconds: float, hz: float, seed: int) -> np.ndarray:
    """A harmonic stand-in for an utterance, with a little hiss of its own."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 8))
    hiss = 0.01 * np.random.default_rng(seed).standard_normal(t.shape[0])
    return 0.1 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) + hiss


def _speech(tmp_path: Path) -> list[AudioFile]:
    return [_recording(tmp_path / f"u{i}.flac", _voiced(0.8, 120.0 + 40 * i, i)) for i in range(3)]


def test_the_target_comes_from_the_copies_through_the_same_steps_and_the_input_does_not(
    tmp_path: Path,
) -> None:
    speech = _speech(tmp_path)
    noise = [_recording(tmp_path / "n.flac", _voiced(2.0, 310.0, 9), kind="noise")]
    def draw(index: int, target_speech: TargetSpeech | None = None) -> Mixture:
        rng = np.random.default_rng([3, index])
        return make_mixture(rng, speech, noise, [], EVERY_STEP, target_speech)

    for index in range(4):
        plain = draw(index)
        same = draw(index, lambda f: load_audio_48k(f.path))
        halved = draw(index, lambda f: 0.5 * load_audio_48k(f.path))
        assert np.array_equal(same.noisy, plain.noisy) and np.array_equal(same.target, plain.target)
        # every step is linear, so a copy at half the level makes a target at half the level
        assert np.array_equal(halved.noisy, plain.noisy)
        np.testing.assert_allclose(halved.target, 0.5 * plain.target, atol=1e-9)
        assert np.max(np.abs(plain.target)) > 0.01


def test_a_copy_that_does_not_line_up_with_its_recording_is_refused(tmp_path: Path) -> None:
    speech = _speech(tmp_path)
    with pytest.raises(ValueError, match="target copy has"):
        make_mixture(np.random.default_rng(0), speech, [], [], EVERY_STEP,
                     lambda f: load_audio_48k(f.path)[:-10])


def test_a_rewritten_recording_is_not_taken_for_the_one_cleaned(tmp_path: Path) -> None:
    file = _recording(tmp_path / "a.flac", _voiced(0.5, 150.0, 0))
    before = cleaned_path(tmp_path, file)
    _recording(tmp_path / "a.flac", _voiced(0.7, 150.0, 0))  # rewritten: another size
    assert cleaned_path(tmp_path, file) != before


def test_a_recipe_without_cleaned_targets_keys_the_cache_as_before() -> None:
    assert "cleaned_speech_targets" not in MixtureRecipe().as_dict()
    keyed = dataclasses.replace(MixtureRecipe(), cleaned_speech_targets="ab12").as_dict()
    assert keyed["cleaned_speech_targets"] == "ab12"


def test_a_recipe_naming_copies_that_were_never_made_says_how_to_make_them(
    tmp_path: Path,
) -> None:
    files = Split(speech=tuple(_speech(tmp_path)), noise=(), rooms=())
    plain = CacheSpec(str(tmp_path), "train", 1, 1, 0, MixtureRecipe())
    assert recipe_targets(plain, tmp_path, files) is None
    keyed = dataclasses.replace(
        plain, recipe=MixtureRecipe(cleaned_speech_targets="0123456789abcdef")
    )
    with pytest.raises(ValueError, match=r"3 of 3 speech recordings have no cleaned copy.*"
                                         r"--clean-speech-targets"):
        recipe_targets(keyed, tmp_path, files)


@pytest.mark.slow
def test_the_shipped_model_makes_aligned_copies_with_less_background_once(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from model.runtime import DEFAULT_MODEL

    t = np.arange(2 * RATE) / RATE
    harmonics = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    voiced = 0.1 * harmonics * (t > 1.0)  # "speech" only in the second second
    noisy = voiced + 0.003 * np.random.default_rng(1).standard_normal(t.shape[0])
    files = [_recording(tmp_path / "hissy.flac", noisy)]
    cache = tmp_path / "cache"
    key = clean_recordings_with(DEFAULT_MODEL, files, cache, workers=1)
    assert key == cleaner_key(DEFAULT_MODEL) and len(key) == 16
    copy_path = cleaned_path(cleaned_folder(cache, key), files[0])
    copy = CleanedSpeech(cleaned_folder(cache, key))(files[0])
    source = load_audio_48k(files[0].path)
    assert copy.dtype == np.float32 and copy.shape == source.shape
    hiss = slice(int(0.5 * RATE), RATE)
    assert np.mean(copy[hiss] ** 2) < 0.25 * np.mean(source[hiss] ** 2)
    # the voiced second stays, in place (delay-compensated)
    voiced_part = slice(int(1.2 * RATE), int(1.9 * RATE))
    assert np.corrcoef(copy[voiced_part], voiced[voiced_part])[0, 1] > 0.95
    stamp = copy_path.stat().st_mtime_ns
    clean_recordings_with(DEFAULT_MODEL, files, cache, workers=1)
    assert copy_path.stat().st_mtime_ns == stamp  # made once


def test_the_model_card_names_the_cleaned_targets_only_when_they_were_used() -> None:
    pytest.importorskip("torch")
    from model.model_card import _cleaned_targets_note

    assert _cleaned_targets_note(MixtureRecipe().as_dict()) == ""
    note = _cleaned_targets_note(
        MixtureRecipe(cleaned_speech_targets="c86197f16abff6ea").as_dict()
    )
    assert "`c86197f16abff6ea`" in note and "`--clean-speech-targets`" in note
