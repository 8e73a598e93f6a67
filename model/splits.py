"""The fixed train/dev split of ../shared/data: speech by speaker (never by file), noises and
room impulse responses by file. Changing anything here invalidates reported dev scores."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# Fullband dev speakers: RAVDESS actor 19 (male) and 20 (female).
DEV_FULLBAND_SPEAKERS = frozenset({"ravdess_A19", "ravdess_A20"})
DEV_SPEAKER_STRIDE = 10  # every 10th other speaker (sorted by id) is held out
DEV_NOISE_STRIDE = 5  # every 5th noise file (sorted by path) is held out
DEV_ROOMS = frozenset(
    {
        "rir/openair_ir_council_s1r1_ch1.flac",
        "rir/pymixconsole_medium_room.flac",
        "rir/auralizr_s1.flac",
    }
)


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


def dev_speakers(files: list[AudioFile]) -> frozenset[str]:
    """Held-out speakers: the fixed fullband pair plus every 10th other speaker."""
    others = sorted({f.speaker_id for f in files if f.kind == "clean"} - DEV_FULLBAND_SPEAKERS)
    return DEV_FULLBAND_SPEAKERS | frozenset(others[::DEV_SPEAKER_STRIDE])


def split_files(data_dir: Path) -> tuple[Split, Split]:
    """(train, dev) splits of the shared data."""
    files = read_manifest(data_dir)
    held_out = dev_speakers(files)
    speech = [f for f in files if f.kind == "clean"]
    noises = sorted((f for f in files if f.kind == "noise"), key=lambda f: f.relative_path)
    rooms = [f for f in files if f.kind == "rir"]
    dev_noise = set(noises[::DEV_NOISE_STRIDE])
    train = Split(
        speech=tuple(f for f in speech if f.speaker_id not in held_out),
        noise=tuple(f for f in noises if f not in dev_noise),
        rooms=tuple(f for f in rooms if f.relative_path not in DEV_ROOMS),
    )
    dev = Split(
        speech=tuple(f for f in speech if f.speaker_id in held_out),
        noise=tuple(f for f in noises if f in dev_noise),
        rooms=tuple(f for f in rooms if f.relative_path in DEV_ROOMS),
    )
    return train, dev


def split_named(data_dir: Path, name: str) -> Split:
    """One side of ``split_files`` by name: ``"train"`` or ``"dev"``."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {name!r}")
    return split_files(data_dir)[SPLIT_NAMES.index(name)]
