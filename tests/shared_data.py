"""Deterministic speech + noise mixtures from ../shared/data for quality tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from model.devset import default_data_dir
from model.splits import has_manifest

SAMPLE_RATE = 48_000


def find_shared_data() -> Path | None:
    """``$PNR_DATA_DIR``, else ``../shared/data`` beside the checkout, if it holds a manifest
    (``PNR_DATA_DIR=/nonexistent`` runs the suite as a checkout without the data would)."""
    candidate = default_data_dir()
    return candidate if has_manifest(candidate) else None


def _read_mono_48k(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    return mono if rate == SAMPLE_RATE else soxr.resample(mono, rate, SAMPLE_RATE)


def speech_and_noise(data_dir: Path, num_utterances: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Fullband speech from three RAVDESS actors, and a blend of three real 48 kHz noises
    (restaurant babble, train interior, waterfall) at equal energy, or the first noise files
    when those are missing."""
    with open(data_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    speech = sorted(
        r["path"]
        for r in rows
        if r["kind"] == "clean" and r["sample_rate"] == "48000" and "ravdess" in r["path"]
    )
    speakers_seen: set[str] = set()
    chosen = []
    for path in speech:
        speaker = Path(path).parent.name
        if speaker not in speakers_seen:
            speakers_seen.add(speaker)
            chosen.append(path)
        if len(chosen) == num_utterances:
            break
    clean = np.concatenate([_read_mono_48k(data_dir / p) for p in chosen])
    noises = sorted(
        r["path"]
        for r in rows
        if r["kind"] == "noise" and r["sample_rate"] == "48000" and float(r["seconds"]) >= 3.0
    )
    wanted = ("restaurant", "inside-a-train", "waterfall")
    picked = [p for p in noises if any(w in p for w in wanted)][:3] or noises[:3]
    noise = np.zeros_like(clean)
    for path in picked:
        one = _read_mono_48k(data_dir / path)
        one = np.tile(one, int(np.ceil(clean.shape[0] / one.shape[0])))[: clean.shape[0]]
        noise += one / np.sqrt(np.mean(one**2))
    return clean, noise


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + noise scaled to the given SNR (by total energy)."""
    scale = np.sqrt(np.sum(clean**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    return clean + scale * noise


def fullband_noises(data_dir: Path, min_seconds: float = 3.0) -> list[tuple[str, np.ndarray]]:
    """Every 48 kHz noise recording of at least ``min_seconds``: (name, audio)."""
    with open(data_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    paths = sorted(
        r["path"]
        for r in rows
        if r["kind"] == "noise"
        and r["sample_rate"] == "48000"
        and float(r["seconds"]) >= min_seconds
    )
    return [(Path(p).stem, _read_mono_48k(data_dir / p)) for p in paths]


def looped(noise: np.ndarray, length: int) -> np.ndarray:
    """``noise`` repeated to ``length`` samples."""
    return np.tile(noise, int(np.ceil(length / noise.shape[0])))[:length]
