"""Features and oracle targets of the training mixtures, computed by ``dsp/`` and cached on
disk in shards.

The cache folder is named by a hash of everything that shapes its content (the files of the
split, by name, role, sample rate and bytes; the mixture recipe; the seed; the shard size; the
source of the code that mixes and analyses them and the versions of the decoders that read the
audio), so a change of any of them builds a new cache and an unchanged one reuses the old one.
Shards are written atomically and skipped when present, so an interrupted build resumes where it
stopped.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile
import soxr
from tqdm import tqdm

import dsp
from dsp.bands import BIN_HZ, make_band_layout
from dsp.constants import DSP_VERSION, HOP_SAMPLES, SAMPLE_RATE_HZ
from dsp.offline import compute_oracle_targets
from model import mixtures
from model.mixtures import MixtureRecipe, make_mixture
from model.splits import Split

CACHE_FORMAT_VERSION = 2  # 2: the key covers the split's files, the code and the decoders


def default_cache_dir() -> Path:
    """``$PNR_CACHE_DIR`` or ``~/.cache/percepnet-relay``."""
    return Path(os.environ.get("PNR_CACHE_DIR", Path.home() / ".cache" / "percepnet-relay"))


def band_mask(speech_max_hz: float) -> np.ndarray:
    """1 for bands whose centre lies below the highest frequency the speech contains."""
    centres_hz = make_band_layout().centres * BIN_HZ
    return (centres_hz <= speech_max_hz).astype(np.float32)


def files_digest(files: Split) -> str:
    """SHA-256 over every file of ``files``: its role, manifest path, speaker, sample rate (the
    mixer reads all four) and bytes. Where the data folder lies does not count."""
    digest = hashlib.sha256()
    for role, group in (("speech", files.speech), ("noise", files.noise), ("rooms", files.rooms)):
        for file in sorted(group, key=lambda f: f.relative_path):
            row = (role, file.relative_path, file.kind, file.speaker_id, file.sample_rate)
            digest.update(json.dumps(row).encode())
            with open(file.path, "rb") as audio:
                digest.update(hashlib.file_digest(audio, "sha256").digest())
    return digest.hexdigest()


@cache
def code_digest() -> str:
    """SHA-256 of what turns files into examples: the source of ``dsp/`` and of the mixer, this
    module's example code, and the versions of the libraries that decode and resample audio."""
    digest = hashlib.sha256()
    for path in sorted(Path(dsp.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(inspect.getsource(mixtures).encode())
    for function in (band_mask, make_example, build_shard):
        digest.update(inspect.getsource(function).encode())
    digest.update(f"libsndfile {soundfile.__libsndfile_version__} soxr {soxr.__version__}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheSpec:
    """What a cache holds; its hash names the folder."""

    files: Split  # the side of the split the mixtures are drawn from
    split: str  # "train" or "dev"
    num_shards: int
    examples_per_shard: int
    seed: int
    recipe: MixtureRecipe

    @cached_property
    def _files_digest(self) -> str:
        return files_digest(self.files)  # reads every file once per spec

    def key(self) -> str:
        """Content hash of the spec. The shard count is not in it: shard i depends only on the
        seed and i, so a run that asks for more shards extends the same cache."""
        payload = {
            "format": CACHE_FORMAT_VERSION,
            "dsp": DSP_VERSION,
            "code": code_digest(),
            "files": self._files_digest,
            "split": self.split,
            "examples_per_shard": self.examples_per_shard,
            "seed": self.seed,
            "recipe": self.recipe.as_dict(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def shard_path(cache_dir: Path, spec: CacheSpec, index: int) -> Path:
    """Where shard ``index`` of ``spec`` lives."""
    return cache_dir / f"{spec.split}-{spec.key()}" / f"shard_{index:05d}.npz"


class Example(NamedTuple):
    """Analysed mixture: features [T, NUM_FEATURES], target gains and strengths [T, NUM_BANDS],
    band mask [NUM_BANDS], and a teacher's gains and strengths [T, NUM_BANDS] when one was asked
    for."""

    features: np.ndarray
    gains: np.ndarray
    strengths: np.ndarray
    band_mask: np.ndarray
    teacher_gains: np.ndarray | None = None
    teacher_strengths: np.ndarray | None = None


def make_example(
    rng: np.random.Generator,
    files: Split,
    recipe: MixtureRecipe,
    alter: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    teacher: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> Example:
    """A fresh mixture from ``files`` (its noisy input passed through ``alter`` if given, e.g. a
    codec), analysed against its oracle targets (and ``teacher``'s gains and strengths for that
    input, if given) and cut to the recipe's segment length."""
    frames = round(recipe.segment_seconds * SAMPLE_RATE_HZ / HOP_SAMPLES)
    mixture = make_mixture(rng, list(files.speech), list(files.noise), list(files.rooms), recipe)
    noisy = mixture.noisy if alter is None else alter(mixture.noisy, rng)
    targets = compute_oracle_targets(noisy, mixture.target)
    example = Example(
        targets.features[:frames],
        targets.gains[:frames],
        targets.strengths[:frames],
        band_mask(mixture.speech_max_hz),
    )
    if teacher is None:
        return example
    teacher_gains, teacher_strengths = teacher(noisy)
    return example._replace(
        teacher_gains=teacher_gains[:frames], teacher_strengths=teacher_strengths[:frames]
    )


def build_shard(spec: CacheSpec, index: int, out_path: Path) -> int:
    """Synthesise and analyse one shard's examples from the spec's files; returns the number of
    frames written."""
    rng = np.random.default_rng([spec.seed, index])
    features, gains, strengths, masks = [], [], [], []
    for _ in range(spec.examples_per_shard):
        example = make_example(rng, spec.files, spec.recipe)  # one length for every shard
        features.append(example.features)
        gains.append(example.gains.astype(np.float16))
        strengths.append(example.strengths.astype(np.float16))
        masks.append(example.band_mask)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_suffix(".partial.npz")
    np.savez(
        partial,
        features=np.stack(features),
        gains=np.stack(gains),
        strengths=np.stack(strengths),
        band_mask=np.stack(masks),
    )
    partial.replace(out_path)
    return int(sum(f.shape[0] for f in features))


def build_cache(spec: CacheSpec, cache_dir: Path | None = None, workers: int = 2) -> Path:
    """Build missing shards (in parallel) and return the cache folder."""
    root = cache_dir or default_cache_dir()
    folder = shard_path(root, spec, 0).parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(
        json.dumps(
            {
                "key": spec.key(),
                "split": spec.split,
                "num_shards": spec.num_shards,
                "examples_per_shard": spec.examples_per_shard,
                "seed": spec.seed,
                "dsp_version": DSP_VERSION,
                "code": code_digest(),
                "files": spec._files_digest,
                "recipe": spec.recipe.as_dict(),
            },
            indent=2,
        )
    )
    missing = [i for i in range(spec.num_shards) if not shard_path(root, spec, i).exists()]
    if not missing:
        return folder
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(build_shard, spec, i, shard_path(root, spec, i)) for i in missing]
        with tqdm(total=len(missing), desc=f"features[{spec.split}]", unit="shard") as bar:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
    return folder


@dataclass(frozen=True)
class Shard:
    """One loaded shard: [examples, frames, ...] arrays."""

    features: np.ndarray  # float32 [n, T, NUM_FEATURES]
    gains: np.ndarray  # float32 [n, T, NUM_BANDS]
    strengths: np.ndarray  # float32 [n, T, NUM_BANDS]
    band_mask: np.ndarray  # float32 [n, NUM_BANDS]


def shard_files(folder: Path) -> list[Path]:
    """The finished shards of a cache folder, in order."""
    return [p for p in sorted(folder.glob("shard_*.npz")) if not p.name.endswith(".partial.npz")]


def load_shard(path: Path) -> Shard:
    """One shard, every array as float32."""
    with np.load(path) as data:
        return Shard(
            features=data["features"].astype(np.float32),
            gains=data["gains"].astype(np.float32),
            strengths=data["strengths"].astype(np.float32),
            band_mask=data["band_mask"].astype(np.float32),
        )


def load_all(folder: Path, count: int | None = None) -> Shard:
    """The first ``count`` shards of a cache folder (all by default; a folder may hold more than
    a run asks for) in one set of arrays, filled shard by shard so that loading needs no more
    memory than the result."""
    paths = shard_files(folder)[:count]
    if not paths:
        raise FileNotFoundError(f"no feature shards in {folder}")
    counts = []
    for path in paths:
        with np.load(path) as data:
            counts.append(data["band_mask"].shape[0])  # small: the count without the features
    arrays: list[np.ndarray] = []
    start = 0
    for path, examples in zip(paths, counts, strict=True):
        shard = load_shard(path)
        parts = (shard.features, shard.gains, shard.strengths, shard.band_mask)
        if not arrays:
            arrays = [np.empty((sum(counts), *part.shape[1:]), np.float32) for part in parts]
        for target, part in zip(arrays, parts, strict=True):
            target[start : start + examples] = part
        start += examples
    return Shard(*arrays)
