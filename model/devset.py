"""Deterministic dev mixtures for evaluation, drawn from the fixed dev split only.

Every mixture is seeded by ``(seed, snr_db, index)``, so the first N mixtures of an SNR are the
same whatever ``per_snr`` is, and a run is reproducible from its arguments alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from model.splits import MANIFEST_FILE, AudioFile, has_manifest, split_named

SAMPLE_RATE = 48_000
DEV_SNRS_DB: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0)
LEVEL_DBFS_RANGE = (-35.0, -15.0)  # RMS of the noisy mixture, re a full-scale ±1 amplitude
PEAK_LIMIT = 0.99  # mixtures above this peak are turned down, never clipped
DATA_DIR_ENV = "PNR_DATA_DIR"


@dataclass(frozen=True)
class DevMixture:
    """One dev example at 48 kHz: ``noisy == clean + noise`` exactly (float64)."""

    name: str
    clean: np.ndarray
    noisy: np.ndarray
    snr_db: float
    speech_path: Path
    noise_path: Path
    source_rate: int  # native rate of the speech: 16 kHz speech has nothing above 8 kHz


def default_data_dir() -> Path:
    """``$PNR_DATA_DIR``, else ``../shared/data`` beside the checkout."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def require_data_dir(option: Path | None) -> Path:
    """``option``, else the default data folder; FileNotFoundError if it holds no manifest."""
    data_dir = option if option is not None else default_data_dir()
    if not has_manifest(data_dir):
        raise FileNotFoundError(f"no {MANIFEST_FILE} under {data_dir}")
    return data_dir


def read_mono_48k(path: Path) -> np.ndarray:
    """A file as mono float64 at 48 kHz (channels averaged, resampled with soxr)."""
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float64)


def noise_segment(noise: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``num_samples`` stretch of ``noise``, looped when the recording is shorter."""
    if noise.shape[0] == 0:
        raise ValueError("empty noise recording")
    if noise.shape[0] >= num_samples:
        start = int(rng.integers(0, noise.shape[0] - num_samples + 1))
        return noise[start : start + num_samples].copy()
    start = int(rng.integers(0, noise.shape[0]))
    repeats = -(-(start + num_samples) // noise.shape[0])
    return np.tile(noise, repeats)[start : start + num_samples]


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, level_dbfs: float
) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) with the noise scaled to ``snr_db`` by total energy, the mixture at
    ``level_dbfs`` RMS, and both turned down together if the mixture would peak above 0.99."""
    clean_energy = float(np.sum(clean**2))
    noise_energy = float(np.sum(noise**2))
    if clean_energy <= 0.0 or noise_energy <= 0.0:
        raise ValueError("speech and noise must both carry energy")
    noise_gain = np.sqrt(clean_energy / noise_energy / 10.0 ** (snr_db / 10.0))
    noisy = clean + noise_gain * noise
    gain = 10.0 ** (level_dbfs / 20.0) / np.sqrt(np.mean(noisy**2))
    peak = gain * max(float(np.max(np.abs(noisy))), float(np.max(np.abs(clean))))
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return gain * clean, gain * noisy


def _speech_pools(speech: Sequence[AudioFile]) -> tuple[list[AudioFile], list[AudioFile]]:
    """(48 kHz fullband RAVDESS, 16 kHz) speech, sorted so draws are reproducible."""
    fullband = sorted(
        (f for f in speech if f.sample_rate == SAMPLE_RATE and f.speaker_id.startswith("ravdess")),
        key=lambda f: f.relative_path,
    )
    narrow = sorted((f for f in speech if f.sample_rate == 16_000), key=lambda f: f.relative_path)
    return fullband, narrow


def _pick_by_speaker(pool: Sequence[AudioFile], rng: np.random.Generator) -> AudioFile:
    """Speaker first, then one of their files, so prolific speakers do not dominate."""
    speakers = sorted({f.speaker_id for f in pool})
    speaker = speakers[int(rng.integers(0, len(speakers)))]
    files = [f for f in pool if f.speaker_id == speaker]
    return files[int(rng.integers(0, len(files)))]


def _snr_key(snr_db: float) -> int:
    """A non-negative integer for seeding (SNRs to 0.1 dB, down to −100 dB)."""
    return int(round((snr_db + 100.0) * 10.0))


def build_dev_mixtures(
    data_dir: Path | None = None,
    per_snr: int = 8,
    snrs_db: Sequence[float] = DEV_SNRS_DB,
    seed: int = 0,
    split: str = "dev",
) -> list[DevMixture]:
    """``per_snr`` mixtures at each SNR from the dev split, alternating between 48 kHz fullband
    RAVDESS speech and 16 kHz speech (falling back to whichever pool is non-empty).

    ``split="train"`` draws the same way from the training split's speakers and noises: a
    diagnostic that tells a generalisation gap from a fitting gap, never a reported score."""
    if per_snr < 1:
        raise ValueError(f"per_snr must be at least 1, got {per_snr}")
    root = data_dir if data_dir is not None else default_data_dir()
    chosen = split_named(root, split)
    fullband, narrow = _speech_pools(chosen.speech)
    noises = sorted(chosen.noise, key=lambda f: f.relative_path)
    if not (fullband or narrow) or not noises:
        raise ValueError(f"no {split} speech or noise under {root}")
    cache: dict[Path, np.ndarray] = {}

    def load(path: Path) -> np.ndarray:
        if path not in cache:
            cache[path] = read_mono_48k(path)
        return cache[path]

    mixtures = []
    for position, snr_db in enumerate(snrs_db):
        for index in range(per_snr):
            rng = np.random.default_rng([seed, _snr_key(snr_db), index])
            wants_fullband = (position + index) % 2 == 0
            pool = (fullband if wants_fullband else narrow) or fullband or narrow
            speech_file = _pick_by_speaker(pool, rng)
            noise_file = noises[int(rng.integers(0, len(noises)))]
            speech = load(speech_file.path)
            noise = noise_segment(load(noise_file.path), speech.shape[0], rng)
            level_dbfs = float(rng.uniform(*LEVEL_DBFS_RANGE))
            clean, noisy = mix_at_snr(speech, noise, snr_db, level_dbfs)
            name = f"snr{snr_db:+05.1f}_{index:02d}_{speech_file.speaker_id}_{noise_file.path.stem}"
            mixtures.append(
                DevMixture(
                    name=name,
                    clean=clean,
                    noisy=noisy,
                    snr_db=float(snr_db),
                    speech_path=speech_file.path,
                    noise_path=noise_file.path,
                    source_rate=speech_file.sample_rate,
                )
            )
    return mixtures


def measured_snr_db(mixture: DevMixture) -> float:
    """SNR of a mixture by total energy, from its clean and noisy signals."""
    noise = mixture.noisy - mixture.clean
    return float(10.0 * np.log10(np.sum(mixture.clean**2) / np.sum(noise**2)))
