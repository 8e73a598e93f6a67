"""Enhance audio files with the trained model: the logic behind ``percepnet-relay denoise``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dsp.offline import enhance_signal
from model.runtime import ModelGainSource, ModelRuntime
from service.audio_files import AudioClip, AudioFileError, from_48k, to_48k


@dataclass(frozen=True)
class Job:
    """One input file and where its enhanced version goes."""

    source: Path
    target: Path


def _audio_files_in(folder: Path) -> list[Path]:
    extensions = {f".{ext.lower()}" for ext in sf.available_formats()} | {".mp3", ".oga"}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def plan_jobs(inputs: list[str], output: str) -> list[Job]:
    """Pair every input file with its output path.

    One input file and an output that is not an existing folder: write exactly there.
    Otherwise ``output`` is a folder (created if needed) and each file keeps its name, and its
    path below an input folder. Inputs are never outputs.
    """
    sources: list[tuple[Path, Path]] = []  # (file, base for the relative output path)
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = _audio_files_in(path)
            if not found:
                raise AudioFileError(f"{path}: no audio files in this folder")
            sources.extend((f, path) for f in found)
        elif path.exists():
            sources.append((path, path.parent))
        else:
            raise AudioFileError(f"{path}: no such file or folder")
    out = Path(output)
    single = len(sources) == 1 and not Path(inputs[0]).is_dir() and not out.is_dir()
    jobs = [
        Job(source, out if single else out / source.relative_to(base)) for source, base in sources
    ]
    inputs_resolved = {job.source.resolve() for job in jobs}
    for job in jobs:
        if job.target.resolve() in inputs_resolved:
            raise AudioFileError(f"{job.target}: output would overwrite an input file")
    return jobs


def denoise_clip(
    clip: AudioClip,
    runtime: ModelRuntime,
    postfilter: bool = True,
    attenuation_limit_db: float | None = None,
) -> np.ndarray:
    """Enhance every channel of ``clip``; float64 [frames, channels] at its own rate."""
    samples_48k = to_48k(clip)
    enhanced = np.empty_like(samples_48k)
    for channel in range(clip.channels):
        enhanced[:, channel] = enhance_signal(
            samples_48k[:, channel],
            ModelGainSource(runtime),
            postfilter=postfilter,
            attenuation_limit_db=attenuation_limit_db,
        )
    return from_48k(enhanced, clip.sample_rate_hz, clip.frames)
