"""The committed dev split: train and dev never share a speaker or a file, the list is what
``model.splits`` returns and what ``model.pin_dev_split`` rebuilds, and data added later lands
in train without moving dev."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.devset import MixtureSpec, build_dev_mixtures, pinned_specs
from model.pin_dev_split import build_dev_list, dev_list_text
from model.splits import (
    DEV_SPLIT_FILE,
    AudioFile,
    DevList,
    load_dev_list,
    split_by_list,
    split_files,
)


def _row(path: str, kind: str, speaker: str = "") -> AudioFile:
    return AudioFile(Path("/data") / path, path, kind, speaker, 48_000, 1.0, "CC0", "")


DEV_LIST = DevList(
    speakers=frozenset({"s_dev"}),
    speech=("clean/s_dev/1.flac",),
    noise=("noise/n_dev.flac",),
    rooms=("rir/r_dev.flac",),
    mixtures=(),
)
ROWS = [
    _row("clean/s_dev/1.flac", "clean", "s_dev"),
    _row("clean/s_train/1.flac", "clean", "s_train"),
    _row("noise/n_dev.flac", "noise"),
    _row("noise/n_train.flac", "noise"),
    _row("rir/r_dev.flac", "rir"),
    _row("rir/r_train.flac", "rir"),
]


def _paths(files: tuple[AudioFile, ...]) -> list[str]:
    return [f.relative_path for f in files]


def test_added_files_land_in_train_and_never_move_dev() -> None:
    before_train, before_dev = split_by_list(ROWS, DEV_LIST)
    added = [
        _row("clean/s_new/1.flac", "clean", "s_new"),
        _row("clean/s_dev/2.flac", "clean", "s_dev"),  # a dev speaker's new file: never train
        _row("noise/n_new.flac", "noise"),
        _row("rir/r_new.flac", "rir"),
    ]
    train, dev = split_by_list(ROWS + added, DEV_LIST)
    assert dev == before_dev
    assert _paths(dev.speech) == ["clean/s_dev/1.flac"]
    assert _paths(train.speech) == ["clean/s_train/1.flac", "clean/s_new/1.flac"]
    assert _paths(train.noise) == [*_paths(before_train.noise), "noise/n_new.flac"]
    assert _paths(train.rooms) == [*_paths(before_train.rooms), "rir/r_new.flac"]


def test_a_listed_file_missing_from_the_manifest_is_an_error() -> None:
    with pytest.raises(ValueError, match="1 file.*n_dev.flac"):
        split_by_list([r for r in ROWS if r.kind != "noise"], DEV_LIST)


def test_pinned_mixtures_are_per_snr_prefixes_and_refuse_more_than_pinned() -> None:
    pinned = [MixtureSpec(**m) for m in load_dev_list().mixtures]
    at_5_db = [m for m in pinned if m.snr_db == 5.0]
    assert pinned_specs(2, (5.0,)) == at_5_db[:2]
    assert pinned_specs(None, (5.0,)) == at_5_db
    with pytest.raises(ValueError, match="pins 12 mixtures at 5 dB, not 13"):
        pinned_specs(13, (5.0,))
    with pytest.raises(ValueError, match="no mixtures at 20 dB"):
        pinned_specs(1, (20.0,))


@pytest.mark.slow
def test_train_and_dev_share_no_speaker_and_no_file(shared_data_dir: Path) -> None:
    train, dev = split_files(shared_data_dir)
    listed = load_dev_list()
    assert {f.speaker_id for f in train.speech}.isdisjoint({f.speaker_id for f in dev.speech})
    assert {f.speaker_id for f in dev.speech} <= listed.speakers
    for side in ("speech", "noise", "rooms"):
        train_paths, dev_paths = _paths(getattr(train, side)), _paths(getattr(dev, side))
        assert set(train_paths).isdisjoint(dev_paths)
        assert sorted(dev_paths) == sorted(getattr(listed, side))
    dev_files = {f.relative_path for f in (*dev.speech, *dev.noise)}
    for mixture in listed.mixtures:
        assert {mixture["speech"], mixture["noise"]} <= dev_files


@pytest.mark.slow
def test_the_committed_list_is_what_pinning_rebuilds(shared_data_dir: Path) -> None:
    assert dev_list_text(build_dev_list(shared_data_dir)) == DEV_SPLIT_FILE.read_text()
    assert json.loads(DEV_SPLIT_FILE.read_text())["speakers"] == sorted(load_dev_list().speakers)


@pytest.mark.slow
def test_pinned_mixtures_are_built_as_listed(shared_data_dir: Path) -> None:
    (mixture,) = build_dev_mixtures(shared_data_dir, per_snr=1, snrs_db=(0.0,))
    (spec,) = pinned_specs(1, (0.0,))
    assert mixture.name == spec.name and mixture.speech_path == shared_data_dir / spec.speech
    level_dbfs = 10 * np.log10(np.mean(mixture.noisy**2))
    assert level_dbfs == pytest.approx(spec.level_dbfs, abs=1e-6) or level_dbfs < spec.level_dbfs
    noise = mixture.noisy - mixture.clean
    assert 10 * np.log10(np.sum(mixture.clean**2) / np.sum(noise**2)) == pytest.approx(0.0)


@pytest.mark.slow
def test_drawn_mixtures_keep_to_the_named_speech_corpora(shared_data_dir: Path) -> None:
    corpora = ("vctk_p239", "speechocean762")
    mixtures = build_dev_mixtures(
        shared_data_dir, 3, (0.0, 5.0), seed=3, split="train", speech_sources=corpora
    )
    folders = {m.speech_path.relative_to(shared_data_dir).parts[1] for m in mixtures}
    assert folders == set(corpora)
    with pytest.raises(ValueError, match="no train speech from ljspeech_subset"):
        build_dev_mixtures(shared_data_dir, 1, (0.0,), 3, "train", ("ljspeech_subset",))
    with pytest.raises(ValueError, match="pinned dev mixtures cannot be narrowed"):
        build_dev_mixtures(shared_data_dir, 1, (0.0,), speech_sources=("ravdess",))
