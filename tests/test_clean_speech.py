"""DeepFilterNet3-cleaned training speech: a cleaned copy is cached by the recording's bytes and
the cleaner's version, only recordings with an audible background (by their noise floor) are
cleaned and replaced, dev speech is never cleaned, and ``train --dfn3-clean-speech`` mixes from
the copies."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from test_onthefly import ONE_SECOND, _files, _write  # noqa: E402

from model import clean_speech, onthefly, train  # noqa: E402
from model.clean_speech import (  # noqa: E402
    CleanSpeechSpec,
    clean_key,
    cleaned_split,
    floor_db,
)
from model.devset import speech_source  # noqa: E402
from model.mixtures import SAMPLE_RATE  # noqa: E402
from model.onthefly import StreamSpec, make_batch  # noqa: E402
from model.splits import AudioFile, DevList, Split  # noqa: E402

NO_DEV = DevList(frozenset(), (), (), (), ())


def _recording(background: float, seed: int) -> np.ndarray:
    """1 s of a voiced "talker" between 0.25 s pauses, over a white background of that RMS."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    voiced = 0.3 * np.sign(np.sin(2 * np.pi * 150.0 * t)) * np.hanning(t.shape[0]) ** 0.1
    pause = np.zeros(PAUSE)
    return np.concatenate([pause, voiced, pause]) + background * rng.standard_normal(
        SAMPLE_RATE * 3 // 2
    )


def _speech(folder: Path) -> Split:
    """``_files``'s noises and room, with two recordings: one in a studio (no background),
    one with a background 40 dB below its speech."""
    files = _files(folder, 0)
    studio = _write(folder, "studio.flac", _recording(0.0, 1), "clean", "s0")
    room = _write(folder, "room.flac", _recording(0.003, 2), "clean", "s1")
    return dataclasses.replace(files, speech=(studio, room))


PAUSE = SAMPLE_RATE // 4


def _silencing(calls: list[str]) -> clean_speech.Enhance:
    """A stand-in cleaner that silences the pauses, where the background is alone, and halves
    the rest (counts its calls)."""

    def enhance(recording: np.ndarray) -> np.ndarray:
        calls.append("x")
        out = 0.5 * recording
        out[:PAUSE] = out[-PAUSE:] = 0.0
        return out

    return enhance


def test_the_noise_floor_is_measured_in_the_pauses() -> None:
    assert floor_db(_recording(0.0, 1)) == clean_speech.SILENT_DB
    assert -45.0 < floor_db(_recording(0.003, 2)) < -35.0
    assert -25.0 < floor_db(_recording(0.03, 2)) < -15.0


def test_the_cleaned_copy_is_keyed_by_the_recording_and_the_cleaner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _files(tmp_path, 0)
    first, second = files.speech
    assert clean_key(first) != clean_key(second)
    # the same bytes under another name share a copy; other bytes do not
    copy = dataclasses.replace(first, path=tmp_path / "renamed.flac", relative_path="x.flac")
    copy.path.write_bytes(first.path.read_bytes())
    assert clean_key(copy) == clean_key(first)
    sf.write(copy.path, 0.5 * sf.read(first.path)[0], 48_000)
    assert clean_key(copy) != clean_key(first)
    # a new cleaner version is a new copy
    before = clean_key(first)
    monkeypatch.setattr(clean_speech, "teacher_name", lambda: "deepfilternet3 (other)")
    assert clean_key(first) != before


def test_only_recordings_with_an_audible_background_are_cleaned_and_cached(
    tmp_path: Path,
) -> None:
    files = _speech(tmp_path)
    calls: list[str] = []
    spec = CleanSpeechSpec(floor_db=-45.0, cache_dir=str(tmp_path / "cache"))
    cleaned, summary = cleaned_split(files, spec, NO_DEV, enhance=_silencing(calls))
    assert len(calls) == 1 and summary["replaced"] == 1 and summary["of"] == 2
    kept, replaced = cleaned.speech
    assert kept == files.speech[0]  # the studio recording is not even cleaned
    assert replaced.path != files.speech[1].path and replaced.path.is_relative_to(tmp_path)
    assert dataclasses.replace(replaced, path=files.speech[1].path) == files.speech[1]
    audio, rate = sf.read(replaced.path)
    original, _ = sf.read(files.speech[1].path)
    assert rate == files.speech[1].sample_rate
    np.testing.assert_allclose(audio, _silencing([])(original), atol=1e-5)
    assert cleaned.noise == files.noise and cleaned.rooms == files.rooms
    # the second time the copy comes from the cache
    again, _ = cleaned_split(files, spec, NO_DEV, enhance=_silencing(calls))
    assert len(calls) == 1 and again == cleaned
    # a floor threshold above the background's replaces nothing
    strict = dataclasses.replace(spec, floor_db=-30.0)
    assert cleaned_split(files, strict, NO_DEV, enhance=_silencing(calls))[0] == files


@pytest.mark.parametrize("by", ["speaker", "path"])
def test_dev_speech_is_never_cleaned(tmp_path: Path, by: str) -> None:
    files = _speech(tmp_path)
    dev_file = files.speech[1]
    dev = (
        DevList(frozenset({dev_file.speaker_id}), (), (), (), ())
        if by == "speaker"
        else DevList(frozenset(), (dev_file.relative_path,), (), (), ())
    )
    calls: list[str] = []
    spec = CleanSpeechSpec(floor_db=-45.0, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="dev recording"):
        cleaned_split(files, spec, dev, enhance=_silencing(calls))
    assert calls == [] and not (tmp_path / "cache").exists()


def test_the_shipped_split_cleans_no_dev_file(tmp_path: Path) -> None:
    """The committed dev list's speech, as a split, is refused."""
    from model.splits import AudioFile, load_dev_list

    dev_list = load_dev_list()
    speech = tuple(
        AudioFile(tmp_path / "x.flac", path, "clean", "", 48_000, 1.0, "", "")
        for path in dev_list.speech[:3]
    )
    with pytest.raises(ValueError, match="dev recording"):
        clean_speech.refuse_dev_files(Split(speech, (), ()).speech, dev_list)


def test_a_stream_with_cleaned_speech_mixes_from_the_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _speech(tmp_path)
    calls: list[str] = []
    spec = CleanSpeechSpec(floor_db=-45.0, cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(clean_speech, "deepfilternet_enhance", _silencing(calls))
    monkeypatch.setattr(clean_speech, "load_dev_list", lambda: NO_DEV)
    monkeypatch.setattr(onthefly, "split_named", lambda data_dir, name: files)
    plain = StreamSpec(str(tmp_path), seed=3, batch=2, recipe=ONE_SECOND, opus=None)
    cleaned = dataclasses.replace(plain, clean_speech=spec)
    assert onthefly.stream_files(plain) == files
    mixed_from = onthefly.stream_files(cleaned)
    assert mixed_from == cleaned_split(files, spec, NO_DEV)[0] != files
    assert cleaned.as_dict()["clean_speech"] == spec.as_dict()
    assert "clean_speech" not in plain.as_dict()
    # the targets of mixtures with the background's speaker lose its pauses' background
    changes = [
        float(
            torch.mean(
                torch.abs(make_batch(plain, files, i)[1] - make_batch(cleaned, mixed_from, i)[1])
            )
        )
        for i in range(4)
    ]
    assert max(changes) > 0.002


def _in_corpus(file: AudioFile, corpus: str) -> AudioFile:
    return dataclasses.replace(file, relative_path=f"clean/{corpus}/{file.relative_path}")


def test_cleaning_can_be_restricted_to_named_corpora(tmp_path: Path) -> None:
    files = _speech(tmp_path)
    studio, room = files.speech
    noisy_room = _write(tmp_path, "room2.flac", _recording(0.003, 3), "clean", "s2")
    files = dataclasses.replace(
        files,
        speech=(
            _in_corpus(studio, "ravdess"),
            _in_corpus(room, "speechocean762"),
            _in_corpus(noisy_room, "vctk_p239"),
        ),
    )
    corpora = [speech_source(f.relative_path) for f in files.speech]
    assert corpora == ["ravdess", "speechocean762", "vctk_p239"]
    calls: list[str] = []
    every = CleanSpeechSpec(floor_db=-45.0, cache_dir=str(tmp_path / "cache"))
    _, summary = cleaned_split(files, every, NO_DEV, enhance=_silencing(calls))
    assert summary["by_corpus"] == {"speechocean762": 1, "vctk_p239": 1}
    only = dataclasses.replace(every, corpora=("ravdess", "speechocean762"))
    cleaned, summary = cleaned_split(files, only, NO_DEV, enhance=_silencing(calls))
    assert summary == {"replaced": 1, "of": 3, "by_corpus": {"speechocean762": 1}}
    assert cleaned.speech[2] == files.speech[2] and cleaned.speech[1] != files.speech[1]
    # the restriction is part of what the stream (and so its teacher pool) is named by
    assert only.as_dict()["corpora"] == ["ravdess", "speechocean762"]
    assert "corpora" not in every.as_dict()
    with pytest.raises(ValueError, match=r"no training speech in corpus vctk \(known: ravdess, "):
        cleaned_split(
            files, dataclasses.replace(every, corpora=("vctk",)), NO_DEV, _silencing(calls)
        )


def test_train_wires_the_option_and_refuses_it_without_on_the_fly(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = train.parse_args(["--on-the-fly", "--dfn3-clean-speech"])
    spec = train.clean_speech_spec(args, cache)
    assert spec == CleanSpeechSpec(clean_speech.DEFAULT_FLOOR_DB, str(cache))
    args = train.parse_args(
        ["--on-the-fly", "--dfn3-clean-speech", "--clean-speech-floor-db", "-20"]
    )
    assert train.clean_speech_spec(args, cache) == CleanSpeechSpec(-20.0, str(cache))
    assert train.clean_speech_spec(train.parse_args(["--on-the-fly"]), cache) is None
    args = train.parse_args(["--out", str(tmp_path / "run"), "--dfn3-clean-speech"])
    with pytest.raises(SystemExit, match="^error: --dfn3-clean-speech needs --on-the-fly"):
        train.train(args)
    # --dfn3-clean-corpora: a comma-separated list of corpora the training split has
    speech = (_in_corpus(_speech(tmp_path).speech[0], "speechocean762"),)
    args = train.parse_args(
        ["--on-the-fly", "--dfn3-clean-speech", "--dfn3-clean-corpora", "speechocean762,"]
    )
    assert train.clean_speech_spec(args, cache, speech) == CleanSpeechSpec(
        clean_speech.DEFAULT_FLOOR_DB, str(cache), ("speechocean762",)
    )
    args = train.parse_args(["--on-the-fly", "--dfn3-clean-speech", "--dfn3-clean-corpora", "x"])
    with pytest.raises(SystemExit, match="^error: --dfn3-clean-corpora: no training speech in"):
        train.clean_speech_spec(args, cache, speech)
    args = train.parse_args(["--on-the-fly", "--dfn3-clean-corpora", "speechocean762"])
    with pytest.raises(SystemExit, match="^error: --dfn3-clean-corpora needs --dfn3-clean-speech"):
        train.clean_speech_spec(args, cache, speech)


@pytest.mark.parametrize("value", ["", ","])
def test_an_empty_corpus_list_is_refused_on_the_command_line(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--dfn3-clean-corpora", value])
    assert exit_info.value.code == 2
    assert "--dfn3-clean-corpora: names no corpus" in capsys.readouterr().err


def test_the_cleaning_command_refuses_a_corpus_the_split_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from model import splits

    files = _speech(tmp_path)
    monkeypatch.setattr(splits, "split_named", lambda data_dir, name: files)
    monkeypatch.setattr(clean_speech, "load_dev_list", lambda: NO_DEV)
    argv = ["--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c"), "--corpora", "x"]
    with pytest.raises(SystemExit) as exit_info:
        clean_speech.main(argv)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: no training speech in corpus x (known: ")
    assert not (tmp_path / "c").exists()
