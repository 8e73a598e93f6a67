"""Training speech cleaned by DeepFilterNet3: recordings that carry their own background (most
speechocean762 files, the isolated words) make the oracle targets keep that background, so a
network trained on them learns to keep it. The cleaned copy of such a recording replaces it as
the clean speech of every training mixture (the noisy input is then the cleaned speech plus the
added noise, so the target stays reachable).

Which recordings: those whose own background is audible, measured on the recording alone as its
noise floor (the 10th percentile of its 10 ms frame energies, in its pauses: every file keeps
0.25 s of silence at each end) against its speech (the 95th percentile). Studio recordings
(RAVDESS) sit near −54 dB; speechocean762 near −40 dB, VCTK p239 near −32 dB, the isolated
words near −26 dB. Each chosen recording is cleaned once (delay-compensated DeepFilterNet3 at
48 kHz, stored at the manifest's rate, whose Nyquist bounds its content) and cached beside the
feature cache, named by the recording's bytes and the DeepFilterNet3 version, with what the
cleaning removed (dB against the recording's energy) beside it. ``corpora`` restricts the
cleaning to the named corpora (VCTK's floor is room and breath more than background: DFN3 barely
lowers it but changes the speech). Dev files are never cleaned: the evaluation's references stay
the recordings.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
from tqdm import tqdm

from model.deepfilternet_baseline import DEEPFILTERNET_DELAY_SAMPLES
from model.devset import default_data_dir, speech_source
from model.mixtures import SAMPLE_RATE, frame_powers, load_audio_48k
from model.splits import AudioFile, DevList, Split, load_dev_list
from model.teacher import deepfilternet_enhance, teacher_name

CLEAN_FORMAT_VERSION = 1
CLEAN_FOLDER = "clean-speech"
# Clean a recording whose noise floor is less than 45 dB below its speech: about 90 % of the
# studio recordings lie below that, and most of speechocean762's above it.
DEFAULT_FLOOR_DB = -45.0
FLOOR_PERCENTILE = 10  # the pauses: at least 0.5 s of every file
SPEECH_PERCENTILE = 95
SILENT_DB = -200.0  # a floor of digital silence; nothing removed

Enhance = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CleanSpeechSpec:
    """Which training recordings a stream replaces by their cleaned copies: those whose noise
    floor (``floor_db``) lies above ``floor_db`` dB, of the ``corpora`` named (every corpus when
    None)."""

    floor_db: float
    cache_dir: str
    corpora: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain dict for checkpoints and the model card (the cache folder left out)."""
        plain: dict[str, object] = {"cleaner": teacher_name(), "floor_db_above": self.floor_db}
        if self.corpora is not None:
            plain["corpora"] = list(self.corpora)
        return plain

    def covers(self, file: AudioFile) -> bool:
        """Whether ``file``'s corpus is one this spec may clean."""
        return self.corpora is None or speech_source(file.relative_path) in self.corpora


def refuse_unknown_corpora(files: tuple[AudioFile, ...], corpora: tuple[str, ...] | None) -> None:
    """ValueError when ``corpora`` names a corpus none of ``files`` belongs to."""
    known = {speech_source(f.relative_path) for f in files}
    unknown = sorted(set(corpora or ()) - known)
    if unknown:
        raise ValueError(
            f"no training speech in corpus {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )


def clean_key(file: AudioFile) -> str:
    """Cache name of ``file``'s cleaned copy: its bytes, the rate it is stored at, the cleaner
    and its version, the delay compensation and this module's format."""
    digest = hashlib.sha256()
    with open(file.path, "rb") as audio:
        digest.update(hashlib.file_digest(audio, "sha256").digest())
    payload = {
        "audio": digest.hexdigest(),
        "rate": file.sample_rate,
        "cleaner": teacher_name(),
        "delay": DEEPFILTERNET_DELAY_SAMPLES,
        "format": CLEAN_FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def removed_db(recording: np.ndarray, cleaned: np.ndarray) -> float:
    """Energy of ``recording − cleaned`` against the recording's, in dB."""
    removed = float(np.sum((recording - cleaned) ** 2))
    total = float(np.sum(recording**2)) + 1e-20
    return SILENT_DB if removed <= 0.0 else max(SILENT_DB, 10.0 * np.log10(removed / total))


def floor_db(recording: np.ndarray) -> float:
    """The recording's noise floor against its speech: the 10th against the 95th percentile of
    its 10 ms frame energies, in dB (``SILENT_DB`` for digital silence in the pauses)."""
    floor, speech = np.percentile(frame_powers(recording), [FLOOR_PERCENTILE, SPEECH_PERCENTILE])
    if floor <= 0.0 or speech <= 0.0:
        return SILENT_DB
    return max(SILENT_DB, float(10.0 * np.log10(floor / speech)))


def refuse_dev_files(files: tuple[AudioFile, ...], dev_list: DevList) -> None:
    """ValueError when any of ``files`` is dev speech (by path or by speaker)."""
    dev = [
        f.relative_path
        for f in files
        if f.relative_path in dev_list.speech or f.speaker_id in dev_list.speakers
    ]
    if dev:
        raise ValueError(f"{len(dev)} dev recording(s) would be cleaned, e.g. {dev[0]}")


def clean_file(file: AudioFile, folder: Path, enhance: Enhance | None = None) -> dict[str, object]:
    """Make ``file``'s cleaned copy in ``folder`` unless it is there; returns its measurement
    (``{"path": copy, "removed_db": …}``)."""
    key = clean_key(file)
    audio_path, info_path = folder / f"{key}.flac", folder / f"{key}.json"
    if info_path.exists() and audio_path.exists():
        return json.loads(info_path.read_text()) | {"path": str(audio_path)}
    recording = load_audio_48k(file.path).astype(np.float64)
    cleaned = (enhance or deepfilternet_enhance)(recording)
    rate = min(file.sample_rate, SAMPLE_RATE)
    stored = cleaned if rate == SAMPLE_RATE else soxr.resample(cleaned, SAMPLE_RATE, rate)
    folder.mkdir(parents=True, exist_ok=True)
    partial = audio_path.with_name(f"{key}.{os.getpid()}.partial.flac")
    soundfile.write(partial, np.clip(stored, -1.0, 1.0), rate, subtype="PCM_24", format="FLAC")
    partial.replace(audio_path)
    info = {"source": file.relative_path, "removed_db": removed_db(recording, cleaned)}
    info_path.write_text(json.dumps(info))
    return info | {"path": str(audio_path)}


def cleaned_split(
    train: Split,
    spec: CleanSpeechSpec,
    dev_list: DevList | None = None,
    enhance: Enhance | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Split, dict[str, object]]:
    """``train`` with each speech recording whose noise floor lies above ``spec.floor_db``
    replaced by its DeepFilterNet3-cleaned copy (made and cached on first use; same
    manifest path, speaker and rate, so the mixer treats it as the recording), and a summary of
    what was replaced. Noises and rooms are left as they are. ValueError for dev speech or a
    corpus the split lacks."""
    refuse_dev_files(train.speech, dev_list or load_dev_list())
    refuse_unknown_corpora(train.speech, spec.corpora)
    folder = Path(spec.cache_dir) / CLEAN_FOLDER
    speech: list[AudioFile] = []
    replaced: dict[str, int] = {}
    for number, file in enumerate(train.speech, 1):
        if spec.covers(file) and floor_db(load_audio_48k(file.path)) > spec.floor_db:
            info = clean_file(file, folder, enhance)
            file = dataclasses.replace(file, path=Path(str(info["path"])))
            corpus = speech_source(file.relative_path)
            replaced[corpus] = replaced.get(corpus, 0) + 1
        speech.append(file)
        if log is not None and number % 200 == 0:
            log(f"cleaned speech: {number}/{len(train.speech)} recordings measured")
    summary: dict[str, object] = {
        "replaced": sum(replaced.values()),
        "of": len(train.speech),
        "by_corpus": dict(sorted(replaced.items())),
    }
    return dataclasses.replace(train, speech=tuple(speech)), summary


def corpus_list(text: str) -> tuple[str, ...]:
    """``a,b`` as ``("a", "b")`` (argparse type); ArgumentTypeError when it names none."""
    corpora = tuple(sorted({name.strip() for name in text.split(",") if name.strip()}))
    if not corpora:
        raise argparse.ArgumentTypeError("names no corpus")
    return corpora


def main(argv: list[str] | None = None) -> None:
    """``python -m model.clean_speech``: make (or check) the cleaned copies of the training
    split's speech and print how many recordings the threshold replaces, by corpus."""
    from model.feature_cache import default_cache_dir
    from model.splits import split_named

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--floor-db", type=float, default=DEFAULT_FLOOR_DB)
    parser.add_argument(
        "--corpora",
        type=corpus_list,
        default=None,
        help="comma-separated corpora to clean (e.g. speechocean762,ktuberling; default all)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes running DFN3")
    args = parser.parse_args(argv)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    try:
        train = split_named(Path(args.data_dir), "train")
        refuse_dev_files(train.speech, load_dev_list())
        refuse_unknown_corpora(train.speech, args.corpora)
        spec = CleanSpeechSpec(args.floor_db, str(cache_dir), args.corpora)
        folder = cache_dir / CLEAN_FOLDER
        chosen = [
            f
            for f in train.speech
            if spec.covers(f) and floor_db(load_audio_48k(f.path)) > args.floor_db
        ]
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            futures = [pool.submit(clean_file, f, folder) for f in chosen]
            for future in tqdm(as_completed(futures), total=len(futures), desc="clean speech"):
                future.result()
        _, summary = cleaned_split(train, spec, log=lambda line: print(line, flush=True))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
