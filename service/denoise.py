"""Enhance audio files with the trained model: the logic behind ``percepnet-relay denoise``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dsp.offline import enhance_signal
from model.runtime import ModelRuntime, primed_gain_source
from service.audio_files import (
    AudioClip,
    AudioFileError,
    check_output_extension,
    from_48k,
    to_48k,
)


@dataclass(frozen=True)
class Job:
    """One input file and where its enhanced version goes."""

    source: Path
    target: Path


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _audio_files_in(folder: Path, skipped: Path) -> list[Path]:
    """Audio files below ``folder`` (by extension), leaving out those below ``skipped``."""
    extensions = {f".{ext.lower()}" for ext in sf.available_formats()} | {".mp3", ".oga"}
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and not _is_within(p.resolve(), skipped)
    )


def _find_sources(inputs: list[str], output: Path) -> list[tuple[Path, Path]]:
    """Every input file once, with the folder its output path is mirrored from: an input
    folder for the files found in it, a file's own folder otherwise. Files under ``output``
    (an earlier run's results) are not inputs."""
    sources: dict[Path, tuple[Path, Path]] = {}  # by resolved path: a file named twice is one
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = _audio_files_in(path, output.resolve())
            if not found:
                raise AudioFileError(
                    f"{path}: no audio files in this folder (outside the output folder)"
                )
            for file in found:
                sources.setdefault(file.resolve(), (file, path))
        elif path.exists():
            sources.setdefault(path.resolve(), (path, path.parent))
        else:
            raise AudioFileError(f"{path}: no such file or folder")
    return list(sources.values())


def plan_jobs(inputs: list[str], output: str) -> list[Job]:
    """Pair every input file with its output path, refusing a bad plan before any work.

    One input file and an output that is not a folder (an existing one, or a name ending in
    ``/``): write exactly there, in the format its extension names. Otherwise ``output`` is a
    folder (created if needed) where each file keeps its path relative to the common parent
    of the inputs (an input folder's own files land directly in it), so same-named files from
    different folders stay apart. Inputs are never outputs.
    """
    out = Path(output)
    sources = _find_sources(inputs, out)
    wants_folder = out.is_dir() or output.endswith(("/", os.sep))
    if len(sources) == 1 and not Path(inputs[0]).is_dir() and not wants_folder:
        check_output_extension(out)
        jobs = [Job(sources[0][0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise AudioFileError(
                f"output {out} is a file, but {len(sources)} inputs need an output folder"
            )
        bases = {Path(os.path.abspath(base)) for _, base in sources}
        root = Path(os.path.commonpath(bases))
        jobs = [
            Job(source, out / Path(os.path.abspath(source)).relative_to(root))
            for source, _ in sources
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
    prime_seconds: float = 0.0,
) -> np.ndarray:
    """Enhance every channel of ``clip``; float64 [frames, channels] at its own rate. With
    ``prime_seconds``, the network's state first hears each channel's opening
    (``model.runtime.primed_gain_source``); 0 starts from an empty state, as the relay does."""
    samples_48k = to_48k(clip)
    enhanced = np.empty_like(samples_48k)
    for channel in range(clip.channels):
        enhanced[:, channel] = enhance_signal(
            samples_48k[:, channel],
            primed_gain_source(runtime, samples_48k[:, channel], prime_seconds),
            postfilter=postfilter,
            attenuation_limit_db=attenuation_limit_db,
        )
    return from_48k(enhanced, clip.sample_rate_hz, clip.frames)
