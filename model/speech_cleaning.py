"""Cleaned copies of the training speech recordings, to use as training targets.

Many "clean" recordings carry their own background (microphone hiss, room tone), and the oracle
targets keep whatever the reference holds, so the network learns to keep it too, while DNSMOS
marks it down and RNNoise removes it. Instead of leaving those recordings out
(``model.speech_quality``), each one can be passed once through a trained enhancer (with no noise
added) and the result used as the target, while the network's input is still built from the
recording as it is: the network then learns to remove the recording's background along with the
added noise. On clean recordings the enhancer changes little, so every recording stays in use.

The copies are float32 ``.npy`` files at 48 kHz, delay-compensated (sample n lines up with
sample n of the recording), under ``<cache>/cleaned-speech/<cleaner key>/``, where the key is
the first 16 hex digits of the cleaning model's SHA-256: another model makes another folder,
and a recipe that names a key keys its own feature cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dsp.offline import enhance_signal
from model.mixtures import load_audio_48k
from model.runtime import ModelGainSource, ModelRuntime, sha256_of
from model.splits import AudioFile

CLEANED_FOLDER = "cleaned-speech"


def cleaner_key(model_path: Path) -> str:
    """The key that names a cleaning model's copies: its SHA-256, first 16 hex digits."""
    return sha256_of(model_path)[:16]


def cleaned_folder(cache_dir: Path, key: str) -> Path:
    """Where the copies made by the model with ``key`` live."""
    return cache_dir / CLEANED_FOLDER / key


def cleaned_path(folder: Path, file: AudioFile) -> Path:
    """The cleaned copy of ``file`` in ``folder``, named by a hash of its relative path and size
    (a rewritten recording is not taken for the one cleaned)."""
    identity = f"{file.relative_path}:{file.path.stat().st_size}"
    name = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return folder / f"{name}.npy"


@lru_cache(maxsize=1)
def _runtime(model_path: Path) -> ModelRuntime:
    """One session per cleaning process."""
    return ModelRuntime(model_path)


def clean_one(model_path: Path, source: Path, out_path: Path) -> None:
    """Enhance one recording (mono, 48 kHz, as the mixtures read it) and save it atomically."""
    audio = load_audio_48k(source).astype(np.float64)
    cleaned = enhance_signal(audio, ModelGainSource(_runtime(model_path)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_suffix(".partial.npy")
    np.save(partial, cleaned.astype(np.float32))
    partial.replace(out_path)


def clean_recordings_with(
    model_path: Path, files: Iterable[AudioFile], cache_dir: Path, workers: int = 2
) -> str:
    """Make the cleaned copy of every file that lacks one (in parallel, with a progress bar);
    returns the cleaner key."""
    key = cleaner_key(model_path)
    folder = cleaned_folder(cache_dir, key)
    missing = missing_copies(folder, files)
    if missing:
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            jobs = [
                pool.submit(clean_one, Path(model_path), f.path, cleaned_path(folder, f))
                for f in missing
            ]
            for job in tqdm(jobs, desc="cleaning speech", unit="file"):
                job.result()
    return key


def missing_copies(folder: Path, files: Iterable[AudioFile]) -> list[AudioFile]:
    """The files of ``files`` that have no cleaned copy in ``folder``."""
    return [f for f in files if not cleaned_path(folder, f).exists()]


class CleanedSpeech:
    """Reads the cleaned copy of a recording (picklable, for the shard workers)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, file: AudioFile) -> np.ndarray:
        """The cleaned copy of ``file`` as float32 at 48 kHz."""
        return _load(cleaned_path(self.folder, file))


@lru_cache(maxsize=4096)
def _load(path: Path) -> np.ndarray:
    return np.load(path)
