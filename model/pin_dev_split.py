"""Write ``model/dev_split.json``, the committed dev split (``python -m model.pin_dev_split``).

The list is the split earlier dev scores were reported on, extended with held-out parts of the
second round of data, and the mixtures the evaluation scores (seed 0):

- First round (the manifest less the second-round folders), the rule those scores used: speech
  of RAVDESS actors 19 and 20 and of every 10th other speaker (sorted by id), every 5th noise
  file (sorted by path), three fixed rooms; 8 mixtures per SNR drawn as they were drawn then.
- Second round: LJ Speech's one reader wholly in dev (a corpus, a reader and a recording chain
  that training never hears; VCTK p239, the only new fullband speech, with 503 distinct
  sentences where RAVDESS has two, is worth more to training); of ESC-50 and UrbanSound8K,
  every 5th Freesound recording (ids sorted) with all the clips cut from it, so no recording
  is on both sides (the datasets' own folds would not do: this copy holds ESC-50's fold 4
  almost only); 4 more mixtures per SNR, LJ Speech and first-round dev speech in turn, each
  with a held-out second-round noise.

The list never changes when data is added; rerunning this on the same manifest rewrites the
same file (a test checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from model.devset import (
    DEV_SNRS_DB,
    PINNED_SEED,
    AudioCache,
    MixtureSpec,
    draw_spec,
    require_data_dir,
    snr_key,
    speech_pools,
)
from model.splits import DEV_SPLIT_FILE, AudioFile, DevList, read_manifest

SECOND_ROUND_FOLDERS = (
    "clean/vctk_p239/",
    "clean/ljspeech_subset/",
    "noise/esc50_round2/",
    "noise/urbansound8k/",
)
# First-round rule
FIRST_DEV_FULLBAND_SPEAKERS = frozenset({"ravdess_A19", "ravdess_A20"})  # male, female
FIRST_DEV_SPEAKER_STRIDE = 10
FIRST_DEV_NOISE_STRIDE = 5
DEV_ROOMS = (
    "rir/auralizr_s1.flac",
    "rir/openair_ir_council_s1r1_ch1.flac",
    "rir/pymixconsole_medium_room.flac",
)
FIRST_PER_SNR = 8
# Second-round rule
SECOND_DEV_SPEAKERS = frozenset({"ljspeech_LJ"})
# Freesound recording id in a clip's name: ESC-50 "{fold}-{id}-{take}-{class}", UrbanSound8K
# "{id}-{class}-{occurrence}-{slice}"
SECOND_NOISE_ID_FIELD = {"noise/esc50_round2/": 1, "noise/urbansound8k/": 0}
SECOND_DEV_RECORDING_STRIDE = 5  # every 5th recording (ids sorted), with all its clips
SECOND_PER_SNR = 4


def first_round(files: Sequence[AudioFile]) -> list[AudioFile]:
    """The manifest rows that predate the second round."""
    return [f for f in files if not f.relative_path.startswith(SECOND_ROUND_FOLDERS)]


def first_dev_speakers(files: Sequence[AudioFile]) -> frozenset[str]:
    """The fixed fullband pair plus every 10th other first-round speaker."""
    speakers = {f.speaker_id for f in files if f.kind == "clean"}
    others = sorted(speakers - FIRST_DEV_FULLBAND_SPEAKERS)
    return FIRST_DEV_FULLBAND_SPEAKERS | frozenset(others[::FIRST_DEV_SPEAKER_STRIDE])


def second_dev_noise(files: Sequence[AudioFile]) -> list[AudioFile]:
    """Second-round noises held out: per dataset, every 5th Freesound recording (ids sorted)
    with every clip cut from it, so that no recording is on both sides."""
    held_out = []
    for folder, field in SECOND_NOISE_ID_FIELD.items():
        clips = [f for f in files if f.relative_path.startswith(folder)]

        def recording(f: AudioFile, field: int = field) -> str:
            return f.path.stem.split("-")[field]

        ids = sorted({recording(f) for f in clips})
        dev_ids = set(ids[::SECOND_DEV_RECORDING_STRIDE])
        held_out += [f for f in clips if recording(f) in dev_ids]
    return sorted(held_out, key=lambda f: f.relative_path)


def build_dev_list(data_dir: Path) -> DevList:
    """The dev list of the module docstring, from the manifest and audio under ``data_dir``."""
    files = read_manifest(data_dir)
    old = first_round(files)
    old_speakers = first_dev_speakers(old)
    old_speech = [f for f in old if f.kind == "clean" and f.speaker_id in old_speakers]
    old_noise = sorted((f for f in old if f.kind == "noise"), key=lambda f: f.relative_path)
    old_noise = old_noise[::FIRST_DEV_NOISE_STRIDE]
    new_speech = [f for f in files if f.kind == "clean" and f.speaker_id in SECOND_DEV_SPEAKERS]
    new_noise = second_dev_noise(files)

    load = AudioCache()
    fullband, narrow, _ = speech_pools(old_speech)
    mixtures: list[MixtureSpec] = []
    for position, snr_db in enumerate(DEV_SNRS_DB):
        for index in range(FIRST_PER_SNR + SECOND_PER_SNR):
            rng = np.random.default_rng([PINNED_SEED, snr_key(snr_db), index])
            old_pool = (fullband, narrow)[(position + index) % 2]
            if index < FIRST_PER_SNR:
                spec = draw_spec(rng, old_pool, old_noise, snr_db, index, load)
            else:
                pool = new_speech if index % 2 == 0 else old_pool
                spec = draw_spec(rng, pool, new_noise, snr_db, index, load)
            mixtures.append(spec)
    return DevList(
        speakers=old_speakers | SECOND_DEV_SPEAKERS,
        speech=tuple(f.relative_path for f in [*old_speech, *new_speech]),
        noise=tuple(f.relative_path for f in [*old_noise, *new_noise]),
        rooms=DEV_ROOMS,
        mixtures=tuple(asdict(m) for m in mixtures),
    )


def dev_list_text(dev_list: DevList) -> str:
    """The file's text: one JSON value per line inside each list, so diffs stay readable."""
    return json.dumps(dev_list.to_json(), indent=1) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dev list."""
    parser = argparse.ArgumentParser(prog="python -m model.pin_dev_split", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help="default: $PNR_DATA_DIR or ../shared/data")
    parser.add_argument("--out", type=Path, default=DEV_SPLIT_FILE)
    args = parser.parse_args(argv)
    try:
        data_dir = require_data_dir(args.data_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(dev_list_text(build_dev_list(data_dir)))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
