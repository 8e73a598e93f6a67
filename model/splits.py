"""The fixed train/dev split of ../shared/data, read from the committed list
``model/dev_split.json``: dev is the files that list names, train everything else (speech by
speaker, never by file: a speaker of any dev file never trains; noises and rooms by file). Data
added to the folder later therefore lands in train and never moves dev. The list also pins the
evaluation's dev mixtures (``model.devset``); ``model.pin_dev_split`` wrote it. Changing the list
invalidates reported dev scores."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DEV_SPLIT_FILE = Path(__file__).with_name("dev_split.json")


@dataclass(frozen=True)
class AudioFile:
    """One manifest row."""

    path: Path  # absolute
    relative_path: str
    kind: str  # clean / noise / rir
    speaker_id: str
    sample_rate: int
    seconds: float
    license: str
    label: str


MANIFEST_FILE = "manifest.csv"  # one row per audio file, at the top of the data folder


def has_manifest(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds the data manifest."""
    return (data_dir / MANIFEST_FILE).exists()


SPLIT_NAMES = ("train", "dev")  # in the order ``split_files`` returns them


@dataclass(frozen=True)
class Split:
    """Files of one side of the split."""

    speech: tuple[AudioFile, ...]
    noise: tuple[AudioFile, ...]
    rooms: tuple[AudioFile, ...]


@dataclass(frozen=True)
class DevList:
    """The committed dev split: speakers, files by manifest path, and the pinned mixtures."""

    speakers: frozenset[str]
    speech: tuple[str, ...]
    noise: tuple[str, ...]
    rooms: tuple[str, ...]
    mixtures: tuple[dict[str, Any], ...]  # ``model.devset.MixtureSpec`` fields

    def to_json(self) -> dict[str, Any]:
        """The file's content (sorted lists; mixtures in their order)."""
        return {
            "speakers": sorted(self.speakers),
            "speech": sorted(self.speech),
            "noise": sorted(self.noise),
            "rooms": sorted(self.rooms),
            "mixtures": list(self.mixtures),
        }


@cache
def load_dev_list(path: Path = DEV_SPLIT_FILE) -> DevList:
    """The committed dev list."""
    content = json.loads(path.read_text())
    return DevList(
        speakers=frozenset(content["speakers"]),
        speech=tuple(content["speech"]),
        noise=tuple(content["noise"]),
        rooms=tuple(content["rooms"]),
        mixtures=tuple(content["mixtures"]),
    )


def read_manifest(data_dir: Path) -> list[AudioFile]:
    """All rows of the manifest in ``data_dir``."""
    with open(data_dir / MANIFEST_FILE, newline="") as f:
        return [
            AudioFile(
                path=data_dir / row["path"],
                relative_path=row["path"],
                kind=row["kind"],
                speaker_id=row["speaker_id"],
                sample_rate=int(row["sample_rate"]),
                seconds=float(row["seconds"]),
                license=row["license"],
                label=row["label"],
            )
            for row in csv.DictReader(f)
        ]


def split_by_list(files: list[AudioFile], dev_list: DevList) -> tuple[Split, Split]:
    """(train, dev) of manifest rows: dev is what ``dev_list`` names; train is every other
    noise and room, and the speech of speakers outside ``dev_list.speakers``. ValueError when
    the list names a file the manifest lacks (the data folder is not the one it was made on)."""
    by_path = {f.relative_path: f for f in files}
    named = {*dev_list.speech, *dev_list.noise, *dev_list.rooms}
    missing = sorted(named - by_path.keys())
    if missing:
        raise ValueError(
            f"the dev list names {len(missing)} file(s) the manifest lacks, e.g. {missing[0]}"
        )
    dev = Split(
        speech=tuple(by_path[p] for p in sorted(dev_list.speech)),
        noise=tuple(by_path[p] for p in sorted(dev_list.noise)),
        rooms=tuple(by_path[p] for p in sorted(dev_list.rooms)),
    )
    held_out = {*dev_list.noise, *dev_list.rooms}
    train = Split(
        speech=tuple(
            f for f in files if f.kind == "clean" and f.speaker_id not in dev_list.speakers
        ),
        noise=tuple(f for f in files if f.kind == "noise" and f.relative_path not in held_out),
        rooms=tuple(f for f in files if f.kind == "rir" and f.relative_path not in held_out),
    )
    return train, dev


def split_files(data_dir: Path) -> tuple[Split, Split]:
    """(train, dev) splits of the shared data, dev as the committed list pins it."""
    return split_by_list(read_manifest(data_dir), load_dev_list())


def split_named(data_dir: Path, name: str) -> Split:
    """One side of ``split_files`` by name: ``"train"`` or ``"dev"``."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {name!r}")
    return split_files(data_dir)[SPLIT_NAMES.index(name)]
