"""A seeded, endless stream of fresh training batches: every batch is mixed (``model.mixtures``)
and analysed (``dsp.offline``) anew, in DataLoader worker processes that overlap the training
step, so a network never sees the same mixture twice.

Batch ``k`` of a stream depends only on the stream's seed and ``k`` (``numpy`` generator
``[seed, k]``), so a resumed run continues the same stream from its next batch. Part of the
inputs go through Opus at relay bitrates (PyAV's libopus, 20 ms frames), since the relay
enhances Opus-decoded audio; the target stays the uncoded speech.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from model.clean_speech import CleanSpeechSpec, cleaned_split
from model.feature_cache import Example, make_example
from model.mixtures import SAMPLE_RATE, MixtureRecipe, load_audio_48k
from model.splits import Split, split_named
from model.teacher import (
    TeacherSpec,
    blend_targets,
    describe_pool,
    load_pool_batch,
    pool_batch_files,
    pool_folder,
    save_pool_batch,
    teacher_targets,
)

OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, as WebRTC sends
OPUS_LOOKAHEAD_SAMPLES = 312  # libopus's encoder delay at 48 kHz (6.5 ms), trimmed after decoding
INT16_SCALE = 32_768.0  # the libopus decoder returns signed 16-bit samples

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class OpusCoding:
    """Which share of the inputs is Opus-coded, at which bitrates (drawn uniformly)."""

    share: float = 0.5
    bitrates_kbps: tuple[int, ...] = (16, 24, 32, 48, 64)

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"the Opus share must be in [0, 1], got {self.share}")
        if not self.bitrates_kbps or min(self.bitrates_kbps) < 6 or max(self.bitrates_kbps) > 510:
            raise ValueError(f"Opus bitrates must lie in 6-510 kb/s, got {self.bitrates_kbps}")


def opus_frames(signal: np.ndarray) -> np.ndarray:
    """``signal`` as float32, zero-padded to whole 20 ms frames that also cover the encoder's
    lookahead, so that decoding returns all of it once the lookahead is trimmed."""
    frames = -(-(signal.shape[0] + OPUS_LOOKAHEAD_SAMPLES) // OPUS_FRAME_SAMPLES)
    padded = np.zeros(frames * OPUS_FRAME_SAMPLES, np.float32)
    padded[: signal.shape[0]] = signal
    return padded


def opus_round_trip(signal: np.ndarray, bitrate_kbps: int) -> np.ndarray:
    """``signal`` (48 kHz mono) encoded by libopus (VoIP mode, 20 ms frames) at
    ``bitrate_kbps`` and decoded again, aligned with the input and of the same length."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "mono"
    encoder.format = "flt"
    encoder.bit_rate = bitrate_kbps * 1000
    encoder.options = {"frame_duration": "20", "application": "voip"}
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = SAMPLE_RATE
    decoder.layout = "mono"
    padded = opus_frames(signal)
    decoded = []
    for start in range(0, padded.shape[0] + 1, OPUS_FRAME_SAMPLES):
        frame = None
        if start < padded.shape[0]:
            chunk = padded[None, start : start + OPUS_FRAME_SAMPLES]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
        for packet in encoder.encode(frame):  # None, after the last frame, flushes
            decoded += [d.to_ndarray().reshape(-1) for d in decoder.decode(packet)]
    audio = np.concatenate(decoded).astype(np.float64) / INT16_SCALE
    return audio[OPUS_LOOKAHEAD_SAMPLES : OPUS_LOOKAHEAD_SAMPLES + signal.shape[0]]


@dataclass(frozen=True)
class StreamSpec:
    """Everything that shapes a stream's batches."""

    data_dir: str
    seed: int
    batch: int  # mixtures per batch
    recipe: MixtureRecipe
    opus: OpusCoding | None
    teacher: TeacherSpec | None = None  # distillation from a fixed pool (``model.teacher``)
    clean_speech: CleanSpeechSpec | None = None  # DFN3-cleaned recordings (``model.clean_speech``)

    def as_dict(self) -> dict[str, object]:
        """Plain dict for checkpoints and the model card (the data folder left out; the teacher
        and the cleaned speech only when there are)."""
        plain: dict[str, object] = {
            "seed": self.seed,
            "batch": self.batch,
            "recipe": self.recipe.as_dict(),
            "opus": asdict(self.opus) if self.opus is not None else None,
        }
        if self.teacher is not None:
            plain["teacher"] = self.teacher.as_dict()
        if self.clean_speech is not None:
            plain["clean_speech"] = self.clean_speech.as_dict()
        return plain


def _maybe_opus(opus: OpusCoding | None, noisy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``noisy`` through Opus at a drawn bitrate for ``opus.share`` of the calls, else as is."""
    if opus is None or rng.random() >= opus.share:
        return noisy
    return opus_round_trip(noisy, opus.bitrates_kbps[int(rng.integers(len(opus.bitrates_kbps)))])


def _examples(spec: StreamSpec, files: Split, index: int, teacher: bool) -> list[Example]:
    """The ``spec.batch`` mixtures of batch ``index`` (with the teacher's targets if asked)."""
    rng = np.random.default_rng([spec.seed, index])
    alter = partial(_maybe_opus, spec.opus)
    taught = teacher_targets if teacher else None
    return [
        make_example(rng, files, spec.recipe, alter=alter, teacher=taught)
        for _ in range(spec.batch)
    ]


def _tensors(*arrays: np.ndarray) -> Batch:
    features, gains, strengths, masks = (torch.from_numpy(a.astype(np.float32)) for a in arrays)
    return features, gains, strengths, masks


def _taught(example: Example) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's gains and strengths of an example made with a teacher."""
    if example.teacher_gains is None or example.teacher_strengths is None:
        raise ValueError("the example was made without a teacher")
    return example.teacher_gains, example.teacher_strengths


@cache
def _pool_folder(plain: StreamSpec, files: Split, cache_dir: str) -> Path:
    """The pool's folder, described (once per process: the key reads every file of the split)."""
    folder = pool_folder(Path(cache_dir), plain.as_dict(), files)
    describe_pool(folder, plain.as_dict())
    return folder


@cache
def _cycle(seed: int, teacher: TeacherSpec) -> tuple[int | Path, ...]:
    """One cycle of a pool stream with extra pools: the stream's own positions and the extra
    pools' batch files, shuffled by ``seed`` (just the own positions, in order, without)."""
    own: list[int | Path] = list(range(teacher.pool_batches))
    if not teacher.extra_pools:
        return tuple(own)
    extra = [path for folder in teacher.extra_pools for path in pool_batch_files(folder)]
    order = np.random.default_rng([seed, len(own), len(extra)]).permutation(len(own) + len(extra))
    both = own + extra
    return tuple(both[i] for i in order)


def _pool_batch(spec: StreamSpec, teacher: TeacherSpec, files: Split, index: int) -> Batch:
    """Batch ``index mod cycle`` of the teacher's pool (made and cached on first use) or of an
    extra pool, its targets blended."""
    cycle = _cycle(spec.seed, teacher)
    entry = cycle[index % len(cycle)]
    if isinstance(entry, Path):
        loaded = load_pool_batch(entry)
        if loaded is None:
            raise FileNotFoundError(f"the extra pool batch {entry} is gone")
        arrays = loaded
    else:
        arrays = _own_pool_batch(spec, teacher, files, entry)
    gains = blend_targets(
        arrays["gains"].astype(np.float32),
        arrays["teacher_gains"].astype(np.float32),
        teacher.blend,
    )
    strengths = blend_targets(
        arrays["strengths"].astype(np.float32),
        arrays["teacher_strengths"].astype(np.float32),
        teacher.blend,
        complement=True,
    )
    return _tensors(arrays["features"], gains, strengths, arrays["mask"])


def _own_pool_path(spec: StreamSpec, teacher: TeacherSpec, files: Split, position: int) -> Path:
    """Where batch ``position`` of the stream's own pool is cached."""
    plain = dataclasses.replace(spec, teacher=None)
    return _pool_folder(plain, files, teacher.cache_dir) / f"batch_{position:06d}.npz"


def _own_pool_batch(
    spec: StreamSpec, teacher: TeacherSpec, files: Split, position: int
) -> dict[str, np.ndarray]:
    """Batch ``position`` of the stream's own pool (made with the teacher, cached on first use)."""
    plain = dataclasses.replace(spec, teacher=None)
    path = _own_pool_path(spec, teacher, files, position)
    arrays = load_pool_batch(path)
    if arrays is None:
        examples = _examples(plain, files, position, teacher=True)
        arrays = {
            "features": np.stack([e.features for e in examples]).astype(np.float32),
            "gains": np.stack([e.gains for e in examples]).astype(np.float16),
            "strengths": np.stack([e.strengths for e in examples]).astype(np.float16),
            "teacher_gains": np.stack([_taught(e)[0] for e in examples]).astype(np.float16),
            "teacher_strengths": np.stack([_taught(e)[1] for e in examples]).astype(np.float16),
            "mask": np.stack([e.band_mask for e in examples]).astype(np.float32),
        }
        save_pool_batch(path, arrays)
    return arrays


def make_batch(spec: StreamSpec, files: Split, index: int) -> Batch:
    """Batch ``index`` of the stream: features [B, T, NUM_FEATURES], target gains and strengths
    [B, T, NUM_BANDS] and the band mask [B, NUM_BANDS] of ``spec.batch`` fresh mixtures from
    ``files``; with a teacher, batch ``index mod pool`` of its pool (the same mixtures as the
    plain stream's batch of that index), the targets blended with the teacher's."""
    if spec.teacher is not None:
        return _pool_batch(spec, spec.teacher, files, index)
    examples = _examples(spec, files, index, teacher=False)
    return _tensors(
        np.stack([e.features for e in examples]),
        np.stack([e.gains for e in examples]),
        np.stack([e.strengths for e in examples]),
        np.stack([e.band_mask for e in examples]),
    )


class MixtureStream(IterableDataset[Batch]):
    """Batches ``start``, ``start + 1``, … of a stream, endlessly; with ``n`` DataLoader workers
    worker ``w`` makes batches ``start + w``, ``start + w + n``, …, which the loader hands out
    in turn, so the order is the same with any number of workers."""

    def __init__(self, spec: StreamSpec, files: Split, start: int = 0) -> None:
        super().__init__()
        self.spec, self.files, self.start = spec, files, start

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        offset, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        index = self.start + offset
        while True:
            yield make_batch(self.spec, self.files, index)
            index += stride


def preload(files: Split) -> float:
    """Decode every file of ``files`` into ``load_audio_48k``'s cache before the workers fork,
    so that they share one copy of the audio; returns the audio's minutes."""
    total = 0
    for file in (*files.speech, *files.noise, *files.rooms):
        total += load_audio_48k(file.path).shape[0]
    return total / SAMPLE_RATE / 60


def stream_files(spec: StreamSpec) -> Split:
    """The training split a stream mixes from: with ``spec.clean_speech``, its recordings with
    an audible background replaced by their DeepFilterNet3-cleaned copies."""
    files = split_named(Path(spec.data_dir), "train")
    if spec.clean_speech is None:
        return files
    files, summary = cleaned_split(files, spec.clean_speech)
    print(f"cleaned speech: {json.dumps(summary)}", flush=True)
    return files


class _PoolFiller(Dataset[int]):
    """Makes (and caches) batch ``i`` of a stream's own teacher pool; yields ``i``."""

    def __init__(self, spec: StreamSpec, teacher: TeacherSpec, files: Split) -> None:
        super().__init__()
        self.spec, self.teacher, self.files = spec, teacher, files

    def __len__(self) -> int:
        return self.teacher.pool_batches

    def __getitem__(self, index: int) -> int:
        if not _own_pool_path(self.spec, self.teacher, self.files, index).exists():
            _own_pool_batch(self.spec, self.teacher, self.files, index)
        return index


def _one_thread(worker_id: int) -> None:
    """A data worker's torch uses one thread: the workers share the cores with the step."""
    torch.set_num_threads(1)


def fill_pool(spec: StreamSpec, files: Split, workers: int) -> Path:
    """Make every batch of the stream's own teacher pool not cached yet, mixed from ``files``
    with ``workers`` processes (none: in this process), printing progress; returns the pool's
    folder."""
    if spec.teacher is None:
        raise ValueError("the stream has no teacher, so no pool")
    preload(files)
    loader = DataLoader(
        _PoolFiller(spec, spec.teacher, files),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_one_thread,
    )
    total = spec.teacher.pool_batches
    for done, _ in enumerate(loader, start=1):
        if done % max(1, total // 20) == 0 or done == total:
            print(f"teacher pool: {done}/{total} batches", flush=True)
    return _own_pool_path(spec, spec.teacher, files, 0).parent


def train_stream(spec: StreamSpec, start: int, workers: int) -> Iterator[Batch]:
    """The training split's stream from batch ``start``, made by ``workers`` processes (none:
    in this process)."""
    files = stream_files(spec)
    preload(files)
    loader = DataLoader(
        MixtureStream(spec, files, start),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        worker_init_fn=_one_thread,
    )
    return iter(loader)
