"""Train the PercepNet network from scratch, resumably, within a wall-clock budget.

    python -m model.train --out runs/default --train-shards 160 --budget-minutes 73 \
        --full-sequence-minutes 95 --pause-stage-minutes 10 --pause-stage-weight 10 \
        --export model/weights

builds (or reuses) the feature cache, then trains (1-s crops, then whole 3-s sequences, then
whole sequences with residual noise in pauses weighted) with
checkpoints every epoch and every few minutes; rerunning the same command resumes from the
last checkpoint. Each epoch prints the training and dev losses and the dev-set PESQ-WB of the
enhancer driven by the network, and redraws ``training_curve.png``; the epoch with the best dev
PESQ-WB is kept as ``best.pt``. With ``--export`` that best network is exported to streaming
ONNX, quantised to int8 and hashed (``model.export``).

With ``--on-the-fly`` there is no cache: every step trains on a batch of fresh whole mixtures
(``model.onthefly``, part of them Opus-coded) made by ``--data-workers`` processes while the
step runs, an epoch is ``--epoch-steps`` steps, and the progress lines report the hours of audio
trained per hour and the share of the wall time spent waiting for data.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import random
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from dsp.constants import HOP_SAMPLES, SAMPLE_RATE_HZ
from dsp.enhancer import ReplayGains
from dsp.offline import compute_oracle_targets, enhance_signal
from model.clean_speech import (
    DEFAULT_FLOOR_DB,
    CleanSpeechSpec,
    corpus_list,
    refuse_unknown_corpora,
)
from model.devset import default_data_dir
from model.export import load_onnx_network
from model.feature_cache import (
    CacheSpec,
    Shard,
    build_cache,
    default_cache_dir,
    load_all,
)
from model.mixtures import (
    MixtureRecipe,
    NoiseAugmentation,
    NoiseEvents,
    check_factor_range,
    make_mixture,
)
from model.network import NetworkConfig, PercepNet, count_parameters
from model.onthefly import OpusCoding, StreamSpec, fill_pool, stream_files, train_stream
from model.runtime import sha256_of
from model.splits import AudioFile, Split, split_named
from model.teacher import TeacherSpec, blend_targets, pool_batch_files
from model.training_record import best_epoch, data_record, find_record, hardware_record
from model.widen import widen_grus

GAMMA = 0.5  # power compression of gains in the loss
QUARTIC_WEIGHT = 10.0  # weight of the 4th-power term: punishes large errors harder
STRENGTH_WEIGHT = 0.5
NOISE_BAND_TARGET = 0.1  # a frame whose every target gain is below this has no speech
CHECKPOINT_EVERY_SECONDS = 300.0
FULL_SEQUENCE_LR_FACTOR = 0.25  # second stage's peak learning rate, relative to --lr
PAUSE_STAGE_LR_FACTOR = 0.15  # third stage's peak learning rate, relative to --lr
SEQUENCES_PER_SHARD = 125  # 3-s training mixtures in each feature-cache shard
DEV_CACHE_SHAPE = (2, 100)  # shards and 3-s mixtures per shard of the dev loss's cache
ONSET_WINDOW = 30  # frames (300 ms) before a speech frame that decide whether it opens speech
ONSET_PAUSE_SHARE = 0.5  # share of those frames that must be pause
BEST_CHECKPOINT = "best.pt"  # the epoch with the best dev PESQ-WB, beside checkpoint.pt


def portable_path(path: str | Path | None) -> str | None:
    """A folder as a training record may name it: relative to the working directory when
    inside it, else ``<elsewhere>/NAME`` (no machine's absolute paths in committed records)."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"<elsewhere>/{resolved.name}"


def onset_frames(pause: torch.Tensor) -> torch.Tensor:
    """Which frames of ``pause`` [B, T, 1] (True: no speech) open speech: a speech frame at
    least ``ONSET_PAUSE_SHARE`` of whose ``ONSET_WINDOW`` frames before lie in a pause, frames
    before the sequence's start counting as pause (a stream opens on an empty state)."""
    before = torch.ones_like(pause[:, :ONSET_WINDOW], dtype=torch.float32)
    paused = torch.cat([before, pause.to(torch.float32)], dim=1).cumsum(dim=1)
    # pause frames among the ONSET_WINDOW frames before each frame
    window = paused[:, ONSET_WINDOW - 1 : -1] - torch.cat(
        [torch.zeros_like(paused[:, :1]), paused[:, : -ONSET_WINDOW - 1]], dim=1
    )
    return ~pause & (window >= ONSET_PAUSE_SHARE * ONSET_WINDOW)


def percepnet_loss(
    gains: torch.Tensor,
    strengths: torch.Tensor,
    target_gains: torch.Tensor,
    target_strengths: torch.Tensor,
    band_mask: torch.Tensor,
    pause_weight: float = 0.0,
    onset_weight: float = 0.0,
    lost_weight: float = 0.0,
) -> torch.Tensor:
    """Power-compressed gain error (γ = 0.5) plus a 4th-power term, and the same on 1 − r.

    ``band_mask`` [B, NUM_BANDS] removes bands above the speech source's bandwidth. ``pause_weight``
    makes residual noise (a gain above its target) cost ``1 + pause_weight`` times more in frames
    without speech (every unmasked target below ``NOISE_BAND_TARGET``): the third stage's weight.
    ``onset_weight`` makes lost speech (a gain below its target) cost ``1 + onset_weight`` times
    more in the frames that open speech after a pause (``onset_frames``), ``lost_weight``
    ``1 + lost_weight`` times more in every frame (the two add).
    """
    mask = band_mask[:, None, :]
    d_gain = gains.clamp_min(1e-6) ** GAMMA - target_gains.clamp_min(1e-6) ** GAMMA
    if pause_weight > 0 or onset_weight > 0 or lost_weight > 0:
        pause = ((target_gains < NOISE_BAND_TARGET) | (mask == 0)).all(dim=2, keepdim=True)
        overshoot = d_gain > 0  # residual noise, as opposed to speech distortion
        weight = 1 + pause_weight * (overshoot & pause).to(d_gain.dtype)
        lost = d_gain < 0  # speech distortion
        if onset_weight > 0:
            weight = weight + onset_weight * (lost & onset_frames(pause)).to(d_gain.dtype)
        weight = weight + lost_weight * lost.to(d_gain.dtype)
        # the squared error costs the weight times more where it applies
        d_gain = d_gain * weight**0.5
    d_strength = (1 - strengths).clamp_min(1e-6) ** GAMMA - (1 - target_strengths).clamp_min(
        1e-6
    ) ** GAMMA
    gain_term = d_gain**2 + QUARTIC_WEIGHT * d_gain**4
    strength_term = d_strength**2 + QUARTIC_WEIGHT * d_strength**4
    per_band = gain_term + STRENGTH_WEIGHT * strength_term
    return (per_band * mask).sum() / (mask.sum() * gains.shape[1]).clamp_min(1.0)


def loss_record(args: argparse.Namespace) -> dict[str, Any]:
    """What this run's loss compares, for the training record and the model card. Whatever
    changes what ``percepnet_loss`` is given or adds to it must be stated here."""
    terms = [
        f"power-compressed (γ = {GAMMA:g}) band-gain error plus {QUARTIC_WEIGHT:g}× its 4th power",
        f"the same on 1 − comb strength, weighted {STRENGTH_WEIGHT:g}",
        "bands above each example's speech bandwidth masked out",
    ]
    if args.onset_weight:
        terms.append(
            f"a gain below its target in frames that open speech after a pause (at least "
            f"{ONSET_PAUSE_SHARE:.0%} of the {ONSET_WINDOW} frames before in pause) costs "
            f"{1 + args.onset_weight:g}×"
        )
    if args.pause_stage_minutes:
        terms.append(
            f"pause stage: a gain above its target in frames without speech costs "
            f"{1 + args.pause_stage_weight:g}×"
        )
    targets = (
        "the oracle band gains and comb strengths of each mixture "
        "(dsp.offline.compute_oracle_targets against its clean target)"
    )
    if args.teacher_blend:
        targets = (
            f"a blend, in the loss's power-compressed domain, of {1 - args.teacher_blend:g} × "
            f"{targets} and {args.teacher_blend:g} × those that turn the mixture into "
            "DeepFilterNet3's output (distillation, model.teacher)"
        )
    if args.distil_from:
        targets = (
            "the band gains and comb strengths that a trained network of this project "
            f"({Path(args.distil_from).name}; its digest and its own training under "
            "distil_from in the training record) gives the same mixture (distillation)"
        )
        if args.distil_oracle_share:
            targets += (
                f", blended in the loss's power-compressed domain with {args.distil_oracle_share:g}"
                " × the oracle band gains and comb strengths of the mixture"
            )
    return {
        "targets": targets,
        "terms": terms,
        "quality_predictors": [],  # never a DNSMOS-like network (issue 25)
    }


@dataclass
class DevAudio:
    """A few dev mixtures with audio, for PESQ during training."""

    noisy: list[np.ndarray]
    clean: list[np.ndarray]
    features: list[np.ndarray]


def make_dev_audio(data_dir: Path, count: int, seed: int) -> DevAudio:
    """Fixed dev mixtures (held-out speakers, noises and rooms)."""
    dev = split_named(data_dir, "dev")
    rng = np.random.default_rng(seed)
    recipe = MixtureRecipe(
        segment_seconds=4.0,
        snr_db_range=(-5.0, 15.0),
        noise_free_share=0.0,
        lowpass_share=0.0,
        room_share=0.2,
    )
    noisy, clean, features = [], [], []
    for _ in range(count):
        m = make_mixture(rng, list(dev.speech), list(dev.noise), list(dev.rooms), recipe)
        noisy.append(m.noisy)
        clean.append(m.target)
        features.append(compute_oracle_targets(m.noisy, m.target).features)
    return DevAudio(noisy=noisy, clean=clean, features=features)


def dev_pesq(model: PercepNet, dev: DevAudio) -> float:
    """Mean PESQ-WB of the enhancer driven by the model on the dev audio."""
    from model.evaluate import pesq_wb

    model.eval()
    scores = []
    with torch.no_grad():
        for noisy, clean, features in zip(dev.noisy, dev.clean, dev.features, strict=True):
            gains, strengths = model(torch.from_numpy(features)[None].to(model_device(model)))
            source = ReplayGains(gains[0].cpu().numpy(), strengths[0].cpu().numpy())
            enhanced = enhance_signal(noisy, source).astype(np.float64)
            scores.append(pesq_wb(clean, enhanced))
    model.train()
    return float(np.mean(scores))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device the model's weights are on."""
    return next(model.parameters()).device


def predict(
    model: PercepNet, features: torch.Tensor, bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's gains and strengths in fp32; with ``bf16`` its forward pass runs under
    bfloat16 autocast (matrix products in bf16 on AMX / AVX-512 BF16 CPUs or a GPU, weights in
    fp32)."""
    with torch.autocast(model_device(model).type, dtype=torch.bfloat16, enabled=bf16):
        gains, strengths = model(features)
    return gains.float(), strengths.float()


def batches_per_epoch(data: Shard, batch_size: int) -> int:
    """Full batches in one epoch (the last, partial one is dropped)."""
    return data.features.shape[0] // batch_size


def batches(
    data: Shard, batch_size: int, frames: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches of random ``frames``-long crops, each copied out only when
    it is wanted (an epoch of whole sequences copied at once would double the memory)."""
    order = rng.permutation(data.features.shape[0])
    total = data.features.shape[1]
    for step in range(batches_per_epoch(data, batch_size)):
        index = order[step * batch_size : (step + 1) * batch_size]
        offset = int(rng.integers(0, total - frames + 1))
        crop = slice(offset, offset + frames)
        yield (
            torch.from_numpy(data.features[index, crop]),
            torch.from_numpy(data.gains[index, crop]),
            torch.from_numpy(data.strengths[index, crop]),
            torch.from_numpy(data.band_mask[index]),
        )


def evaluate_loss(model: PercepNet, data: Shard, batch_size: int = 64) -> float:
    """Mean loss over a cached split, whole sequences."""
    model.eval()
    losses = []
    device = model_device(model)
    with torch.no_grad():
        for start in range(0, data.features.shape[0], batch_size):
            part = slice(start, start + batch_size)
            g, r = model(torch.from_numpy(data.features[part]).to(device))
            losses.append(
                float(
                    percepnet_loss(
                        g,
                        r,
                        torch.from_numpy(data.gains[part]).to(device),
                        torch.from_numpy(data.strengths[part]).to(device),
                        torch.from_numpy(data.band_mask[part]).to(device),
                    )
                )
            )
    model.train()
    return float(np.mean(losses))


def start_record(pesq: float, dev_loss: float) -> dict[str, Any]:
    """History entry of a fine-tune's starting weights (epoch 0: no training loss)."""
    return {"epoch": 0.0, "stage": "start", "dev_loss": dev_loss, "dev_pesq": pesq, "minutes": 0.0}


def plot_curve(history: list[dict[str, float]], path: Path) -> None:
    """Training/dev loss and dev PESQ against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [h.get("train_loss", math.nan) for h in history], label="train loss")
    loss_axis.plot(epochs, [h.get("dev_loss", math.nan) for h in history], label="dev loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    pesq_axis = loss_axis.twinx()
    pesq_axis.plot(
        epochs, [h.get("dev_pesq", math.nan) for h in history], "g--", label="dev PESQ-WB"
    )
    pesq_axis.set_ylabel("PESQ-WB")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def set_seeds(seed: int) -> None:
    """Seed every generator training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class TrainingStage:
    """What one epoch trains on, and with which learning rate."""

    name: str  # "crops", then "full-sequence", then "pause"
    lr: float
    batch: int
    frames: int
    ends_at_s: float  # elapsed training seconds at which this stage ends
    pause_weight: float  # the loss's extra weight on residual noise in speech-free frames


def training_device(name: str) -> torch.device:
    """The torch device ``--device`` names; SystemExit with an ``error:`` line when it is not
    one or is not there."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"error: --device: not a torch device: {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: this machine has no CUDA GPU that torch can use")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device must be cpu or cuda, got {name!r}")
    return device


def cosine(peak: float, progress: float) -> float:
    """Cosine decay from ``peak`` to 5 % of it as ``progress`` goes from 0 to 1."""
    progress = min(1.0, max(0.0, progress))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class StagePlan(NamedTuple):
    """One stage as a run's options define it."""

    name: str
    minutes: float
    peak_lr: float
    batch: int
    frames: int
    pause_weight: float


def stage_plan(options: Mapping[str, Any], sequence_frames: int) -> list[StagePlan]:
    """The three stages in order, from a run's options (one a checkpoint's older options lack
    takes its default): ``--budget-minutes`` on random ``--frames``-long crops from ``--lr``;
    ``--full-sequence-minutes`` on whole cached sequences, so that the GRUs learn to carry their
    state (the noise they have heard) over as long a stretch as the cache holds, from
    ``FULL_SEQUENCE_LR_FACTOR`` × ``--lr``; ``--pause-stage-minutes`` more on whole sequences
    with residual noise in speech-free frames weighted by ``--pause-stage-weight``, from
    ``PAUSE_STAGE_LR_FACTOR`` × ``--lr``. The first two stages weight no error more."""
    o = vars(parse_args([])) | {k: v for k, v in options.items() if v is not None}
    return [
        StagePlan("crops", o["budget_minutes"], o["lr"], o["batch"], o["frames"], 0.0),
        StagePlan(
            "full-sequence",
            o["full_sequence_minutes"],
            o["lr"] * FULL_SEQUENCE_LR_FACTOR,
            o["full_sequence_batch"],
            sequence_frames,
            0.0,
        ),
        StagePlan(
            "pause",
            o["pause_stage_minutes"],
            o["lr"] * PAUSE_STAGE_LR_FACTOR,
            o["full_sequence_batch"],
            sequence_frames,
            o["pause_stage_weight"],
        ),
    ]


def schedule_minutes(options: Mapping[str, Any]) -> float:
    """Wall-clock minutes of every stage together."""
    return sum(float(stage.minutes) for stage in stage_plan(options, sequence_frames=0))


def training_stage(
    elapsed_s: float, args: argparse.Namespace, sequence_frames: int
) -> TrainingStage:
    """The stage at ``elapsed_s`` seconds of training (see :func:`stage_plan`), each with its own
    cosine decay. A stage given no minutes is skipped; past the end, the last stage holds at its
    final learning rate."""
    plan = stage_plan(vars(args), sequence_frames)
    active = [stage for stage in plan if stage.minutes > 0] or plan[:1]
    starts_at_s = 0.0
    current = active[-1]
    for stage in active[:-1]:
        if elapsed_s < starts_at_s + stage.minutes * 60.0:
            current = stage
            break
        starts_at_s += stage.minutes * 60.0
    stage_s = max(current.minutes * 60.0, 1e-9)
    progress = (elapsed_s - starts_at_s) / stage_s
    return TrainingStage(
        current.name,
        cosine(current.peak_lr, progress),
        current.batch,
        current.frames,
        starts_at_s + stage_s,
        current.pause_weight,
    )


def saved_weights(path: Path) -> tuple[NetworkConfig, dict[str, torch.Tensor]]:
    """The network and weights of a training checkpoint or a fp32 streaming ONNX graph;
    SystemExit with an ``error:`` line when the file is missing or cannot be read as either."""
    if not path.is_file():
        raise SystemExit(f"error: --init-from: no such file: {path}")
    try:
        if path.suffix == ".onnx":
            network = load_onnx_network(path)
            return network.config, network.state_dict()
        initial = torch.load(path, weights_only=False, map_location="cpu")
        return NetworkConfig.from_dict(initial["config"]), initial["model"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: --init-from: {exc}") from None


def inherited_strength_scale(
    resumed: dict[str, Any] | None, init: tuple[NetworkConfig, dict[str, torch.Tensor]] | None
) -> float:
    """The calibration of the strength head a run goes on with (``NetworkConfig``'s
    ``strength_scale``, set by ``model.export --strength-scale``): that of the checkpoint it
    resumes (``resumed``, its loaded state), else of the weights it starts from (``init``, as
    :func:`saved_weights` gives them), else 1."""
    if resumed is not None:
        return NetworkConfig.from_dict(resumed["config"]).strength_scale
    return init[0].strength_scale if init is not None else 1.0


def initial_weights(
    path: Path,
    config: NetworkConfig,
    seed: int = 0,
    saved: tuple[NetworkConfig, dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """The weights ``--init-from`` names: a training checkpoint, or a fp32 streaming ONNX graph
    such as the shipped ``percepnet-fp32.onnx``; its network must be ``config``'s, or the same
    with narrower GRUs, which are then widened without changing the outputs
    (:func:`model.widen.widen_grus`; the new units' random weights drawn from ``seed``).
    ``saved``: what :func:`saved_weights` already read from ``path``."""
    found, weights = saved if saved is not None else saved_weights(path)
    # the clip is a training bound, not part of the weights (a graph cannot say it): this run's
    if dataclasses.replace(found, weight_clip=config.weight_clip) == config:
        return weights
    try:  # a wider network, grown from these weights so that it starts computing what they do
        return widen_grus(weights, found, config, torch.Generator().manual_seed(seed))
    except ValueError as exc:
        raise SystemExit(
            f"error: --init-from network {found.as_dict()} is not {config.as_dict()} ({exc})"
        ) from None


# Options that do not change what is trained: left out of a resumed run's provenance.
NON_TRAINING_OPTIONS = frozenset(
    {
        "out",
        "data_dir",
        "cache_dir",
        "export",
        "threads",
        "dev_files",
        "data_workers",
        "device",
        "keep_epochs",
    }
)


class Throughput:
    """Wall time spent waiting for batches and in training steps, and the audio trained."""

    def __init__(self) -> None:
        self.wait_s = self.step_s = self.audio_s = 0.0

    def add(self, wait_s: float, step_s: float, audio_s: float) -> None:
        """Count one step."""
        self.wait_s += wait_s
        self.step_s += step_s
        self.audio_s += audio_s

    def summary(self) -> str:
        """Hours of audio per hour of wall time, and the share of that time spent waiting."""
        wall_s = max(self.wait_s + self.step_s, 1e-9)
        return (
            f"{self.audio_s / wall_s:.1f} h audio/h, "
            f"waiting for data {100 * self.wait_s / wall_s:.0f}% of the time"
        )


def timed(source: Iterable[Any], waits: list[float]) -> Iterator[Any]:
    """``source``'s items, the seconds spent waiting for each appended to ``waits``."""
    iterator = iter(source)
    while True:
        start = time.monotonic()
        try:
            item = next(iterator)
        except StopIteration:
            return
        waits.append(time.monotonic() - start)
        yield item


def changed_options(
    before: dict[str, object], after: dict[str, object], defaults: dict[str, object]
) -> dict[str, dict[str, object]]:
    """Training options a resumed run changes, as {option: {"before": …, "after": …}}.

    ``before`` comes from the checkpoint; an option it lacks (a checkpoint older than the
    option) counts as having had its default.
    """
    return {
        key: {"before": before.get(key, defaults.get(key)), "after": value}
        for key, value in after.items()
        if key not in NON_TRAINING_OPTIONS and before.get(key, defaults.get(key)) != value
    }


def teacher_spec(args: argparse.Namespace, cache_dir: Path) -> TeacherSpec | None:
    """The stream's teacher (``--teacher-blend`` above 0), its pool cached under ``cache_dir``;
    SystemExit with an ``error:`` line for options that cannot work together."""
    if args.teacher_blend == 0:
        if args.teacher_extra_pools:
            raise SystemExit("error: --teacher-extra-pools needs --teacher-blend")
        return None
    if not args.on_the_fly:
        raise SystemExit("error: --teacher-blend needs --on-the-fly (the teacher fills a pool)")
    try:
        extra = tuple(str(Path(folder).resolve()) for folder in args.teacher_extra_pools)
        for folder in extra:  # a folder that is no pool fails here, not in a data worker
            pool_batch_files(folder)
        return TeacherSpec(args.teacher_blend, args.teacher_pool_batches, str(cache_dir), extra)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def clean_speech_spec(
    args: argparse.Namespace, cache_dir: Path, speech: tuple[AudioFile, ...] = ()
) -> CleanSpeechSpec | None:
    """The stream's cleaned speech (``--dfn3-clean-speech``), its copies cached under
    ``cache_dir``; SystemExit with an ``error:`` line without ``--on-the-fly``, or for a corpus
    of ``--dfn3-clean-corpora`` that ``speech`` (the training split's) lacks."""
    if not args.dfn3_clean_speech:
        if args.dfn3_clean_corpora is not None:
            raise SystemExit("error: --dfn3-clean-corpora needs --dfn3-clean-speech")
        return None
    if not args.on_the_fly:
        raise SystemExit(
            "error: --dfn3-clean-speech needs --on-the-fly (it changes the mixer's speech)"
        )
    try:
        refuse_unknown_corpora(speech, args.dfn3_clean_corpora)
    except ValueError as exc:
        raise SystemExit(f"error: --dfn3-clean-corpora: {exc}") from None
    return CleanSpeechSpec(args.clean_speech_floor_db, str(cache_dir), args.dfn3_clean_corpora)


def training_recipe(args: argparse.Namespace) -> MixtureRecipe:
    """How the run's mixtures are drawn (``--speech-speed``, ``--augment-noise``,
    ``--noise-events``, ``--mid-speech-starts``)."""
    return MixtureRecipe(
        speed_range=tuple(args.speech_speed),
        noise_augmentation=NoiseAugmentation() if args.augment_noise else None,
        noise_events=NoiseEvents() if args.noise_events else None,
        mid_speech_start_share=args.mid_speech_starts,
    )


def run_cache_dir(args: argparse.Namespace) -> Path:
    """The folder of the run's caches (features, teacher pools, cleaned speech)."""
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def training_stream(args: argparse.Namespace, train_files: Split) -> StreamSpec:
    """The on-the-fly stream the options describe (its teacher and cleaned speech included)."""
    cache_dir = run_cache_dir(args)
    return StreamSpec(
        str(args.data_dir),
        args.seed,
        args.batch,
        training_recipe(args),
        OpusCoding(share=args.opus_share) if args.opus_share > 0 else None,
        teacher_spec(args, cache_dir),
        clean_speech_spec(args, cache_dir, train_files.speech),
    )


def fill_teacher_pool(args: argparse.Namespace) -> Path:
    """``--fill-teacher-pool``: make every batch of the stream's teacher pool that is not
    cached yet, with ``--data-workers`` processes, and train nothing; returns the pool's
    folder."""
    if args.teacher_blend == 0 or not args.on_the_fly:
        raise SystemExit("error: --fill-teacher-pool needs --on-the-fly and --teacher-blend")
    stream = training_stream(args, split_named(Path(args.data_dir), "train"))
    return fill_pool(stream, stream_files(stream), args.data_workers)


def distillation_teacher(
    path: str | None, device: torch.device
) -> tuple[PercepNet | None, dict[str, Any] | None]:
    """``--distil-from``: the trained network whose outputs are the targets (frozen, in eval
    mode), and what the checkpoint records of it (its file, digest and training record)."""
    if not path:
        return None, None
    try:
        teacher = load_onnx_network(Path(path)).to(device)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: --distil-from: {exc}") from None
    teacher.requires_grad_(False)
    source = {
        "path": portable_path(path),
        "sha256": sha256_of(Path(path)),
        "record": find_record(Path(path)),
    }
    parameters = sum(p.numel() for p in teacher.parameters())
    print(f"distilling from {path} ({parameters:,} parameters)", flush=True)
    return teacher, source


def distillation_targets(
    taught: tuple[torch.Tensor, torch.Tensor],
    oracle: tuple[torch.Tensor, torch.Tensor],
    oracle_share: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's gains and strengths, or with ``--distil-oracle-share`` above 0 their blend
    with the oracle's (``model.teacher.blend_targets``: the loss's compressed domain, strengths
    as ``1 − s``)."""
    if oracle_share == 0.0:
        return taught
    weight = 1.0 - oracle_share
    gains, strengths = (
        torch.from_numpy(
            blend_targets(
                mine.cpu().float().numpy(),  # no gradient: the stream's and the frozen teacher's
                theirs.cpu().float().numpy(),
                weight,
                complement=complement,
            )
        ).to(mine.device)
        for mine, theirs, complement in zip(oracle, taught, (False, True), strict=True)
    )
    return gains, strengths


def train(args: argparse.Namespace) -> Path:
    """Train (or resume) and return the path of the checkpoint with the best dev PESQ-WB
    (the last one when no epoch has ended)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    config = (
        NetworkConfig.paper()
        if args.size == "paper"
        else NetworkConfig(gru_size=args.gru_size, gru_layers=args.gru_layers)
    )
    resumed = (
        torch.load(checkpoint_path, weights_only=False, map_location="cpu")
        if checkpoint_path.exists()
        else None
    )
    init = saved_weights(Path(args.init_from)) if args.init_from and resumed is None else None
    config = dataclasses.replace(config, strength_scale=inherited_strength_scale(resumed, init))
    set_seeds(args.seed)
    torch.set_num_threads(args.threads)
    device = training_device(args.device)

    train_files = split_named(Path(args.data_dir), "train")
    stream_spec = training_stream(args, train_files)
    recipe = stream_spec.recipe
    train_spec = CacheSpec(
        train_files, "train", args.train_shards, SEQUENCES_PER_SHARD, args.seed, recipe
    )
    cache_dir = run_cache_dir(args)
    print(f"feature cache: {cache_dir}", flush=True)
    speech = train_files.speech
    train_data = None
    if not args.on_the_fly:
        train_data = load_all(
            build_cache(train_spec, cache_dir, workers=args.threads), train_spec.num_shards
        )
    # --dev-files 0: no dev evaluation, for a machine without the dev split's audio
    dev_data, dev_audio = None, None
    if args.dev_files > 0:
        # The dev loss is always taken on plain-recipe mixtures, so runs with and without
        # --augment-noise or --noise-events report comparable dev losses.
        dev_spec = CacheSpec(
            split_named(Path(args.data_dir), "dev"),
            "dev",
            *DEV_CACHE_SHAPE,
            args.seed + 1,
            MixtureRecipe(),
        )
        dev_data = load_all(
            build_cache(dev_spec, cache_dir, workers=args.threads), dev_spec.num_shards
        )
        dev_audio = make_dev_audio(Path(args.data_dir), args.dev_files, args.seed + 2)
    speech_used = {"utterances": len(speech), "speakers": len({f.speaker_id for f in speech})}
    print(
        "train "
        + (
            f"on the fly: {json.dumps(stream_spec.as_dict())}"
            if train_data is None
            else f"{train_data.features.shape[0]} sequences"
        )
        + (f", dev {dev_data.features.shape[0]}" if dev_data is not None else ", no dev"),
        flush=True,
    )
    sequence_frames = (
        train_data.features.shape[1]
        if train_data is not None
        else round(recipe.segment_seconds * SAMPLE_RATE_HZ / HOP_SAMPLES)
    )

    model = PercepNet(config).to(device)
    teacher, distil_source = distillation_teacher(args.distil_from, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    history: list[dict[str, Any]] = []
    # the record names no machine's folders: the data as <data>, folders inside the working
    # directory relative to it, any other as <elsewhere>/NAME
    run_args = vars(args) | {
        "data_dir": "<data>",
        "out": portable_path(args.out),
        "cache_dir": portable_path(args.cache_dir),
        "teacher_extra_pools": [portable_path(folder) for folder in args.teacher_extra_pools],
        "init_from": portable_path(args.init_from),
        "distil_from": portable_path(args.distil_from),
    }
    resumes: list[dict[str, object]] = []  # where a resumed run changed its options
    epoch, elapsed = 0, 0.0
    stream_batches = 0  # on the fly: batches of the stream trained on so far
    best_pesq = -math.inf
    rng = np.random.default_rng(args.seed)
    init_source: dict[str, Any] | None = None  # the weights a fine-tune started from
    start_pesq: float | None = None  # their dev PESQ-WB
    if init is not None:
        model.load_state_dict(initial_weights(Path(args.init_from), config, args.seed, init))
        init_source = {
            "path": portable_path(args.init_from),
            "sha256": sha256_of(Path(args.init_from)),
            "record": find_record(Path(args.init_from)),  # before an export overwrites it
        }
        print(f"initialised from {args.init_from} (fine-tuning)", flush=True)
        if dev_audio is not None:
            start_pesq = dev_pesq(model, dev_audio)
            print(f"its dev PESQ-WB {start_pesq:.3f}", flush=True)
    if resumed is not None:
        state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, epoch, elapsed = state["history"], state["epoch"], state["elapsed"]
        stream_batches = state.get("stream_batches", 0)
        best_pesq = (best_epoch(history) or {"dev_pesq": -math.inf})["dev_pesq"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at epoch {epoch} after {elapsed / 60:.1f} min", flush=True)
        resumes = list(state.get("resumes", []))
        init_source = state.get("init_from")
        changes = changed_options(state["args"], run_args, vars(parse_args([])))
        if changes:
            resumes.append({"epoch": epoch, "minutes": elapsed / 60, "changed": changes})
            print(f"options changed on resuming: {json.dumps(changes)}", flush=True)
    print(f"parameters: {count_parameters(model):,} ({config.as_dict()})", flush=True)

    def save(tag: str = "") -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": config.as_dict(),
                "history": history,
                "epoch": epoch,
                "elapsed": elapsed,
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "recipe": recipe.as_dict(),
                "train_cache": train_spec.key(),
                "args": run_args,
                "resumes": resumes,
                "init_from": init_source,
                "distil_from": distil_source,
                "speech_used": speech_used,
                "stream_batches": stream_batches,
                "stream": stream_spec.as_dict() if args.on_the_fly else None,
                "data": data_record(train_files),
                "loss": loss_record(args),
                "hardware": hardware_record(args.threads),
            },
            checkpoint_path.with_suffix(".tmp"),
        )
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)
        if tag:
            print(f"checkpoint saved ({tag})", flush=True)

    if start_pesq is not None and dev_data is not None and not history:
        # epoch 0, the weights fine-tuned from: best.pt is never worse than the start
        history.append(start_record(start_pesq, evaluate_loss(model, dev_data)))
        save("epoch 0, the weights fine-tuned from")
        best_pesq = start_pesq
        shutil.copyfile(checkpoint_path, out / BEST_CHECKPOINT)
    total_budget = schedule_minutes(vars(args)) * 60.0
    stream = (
        train_stream(stream_spec, stream_batches, args.data_workers)
        if train_data is None and epoch < args.epochs and elapsed < total_budget
        else None
    )
    throughput = Throughput()
    session_start = time.monotonic() - elapsed
    last_save = time.monotonic()
    while epoch < args.epochs and elapsed < total_budget:
        stage = training_stage(elapsed, args, sequence_frames)
        for group in optimizer.param_groups:
            group["lr"] = stage.lr
        losses = []
        waits: list[float] = []
        if stream is not None:
            steps = args.epoch_steps
            epoch_batches = timed(itertools.islice(stream, steps), waits)
        else:
            assert train_data is not None
            steps = batches_per_epoch(train_data, stage.batch)
            epoch_batches = timed(batches(train_data, stage.batch, stage.frames, rng), waits)
        for step, batch in enumerate(epoch_batches):
            step_start = time.monotonic()
            features, gains, strengths, mask = (t.to(device, non_blocking=True) for t in batch)
            if teacher is not None:
                with torch.no_grad():
                    taught = predict(teacher, features, bf16=args.bf16)
                gains, strengths = distillation_targets(
                    taught, (gains, strengths), args.distil_oracle_share
                )
            predicted_gains, predicted_strengths = predict(model, features, bf16=args.bf16)
            loss = percepnet_loss(
                predicted_gains,
                predicted_strengths,
                gains,
                strengths,
                mask,
                pause_weight=stage.pause_weight,
                onset_weight=args.onset_weight,
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            model.clip_weights()
            losses.append(float(loss.detach()))
            stream_batches += stream is not None
            audio_s = features.shape[0] * features.shape[1] * HOP_SAMPLES / SAMPLE_RATE_HZ
            throughput.add(waits[-1], time.monotonic() - step_start, audio_s)
            elapsed = time.monotonic() - session_start
            if step % 20 == 0:
                print(
                    f"epoch {epoch + 1} step {step}/{steps} "
                    f"loss {np.mean(losses[-20:]):.4f} {elapsed / 60:.1f} min; "
                    f"{throughput.summary()}",
                    flush=True,
                )
            if time.monotonic() - last_save > CHECKPOINT_EVERY_SECONDS:
                save("periodic")
                last_save = time.monotonic()
            if elapsed >= stage.ends_at_s:
                break
        epoch += 1
        record: dict[str, Any] = {
            "epoch": float(epoch),
            "stage": stage.name,
            "train_loss": float(np.mean(losses)),
        }
        pesq = -math.inf
        if dev_data is not None and dev_audio is not None:
            pesq = dev_pesq(model, dev_audio)
            record |= {"dev_loss": evaluate_loss(model, dev_data), "dev_pesq": pesq}
        record["minutes"] = elapsed / 60
        history.append(record)
        print(json.dumps(record), flush=True)
        save(f"epoch {epoch}")
        last_save = time.monotonic()
        if args.keep_epochs:
            shutil.copyfile(checkpoint_path, out / f"epoch_{epoch:03d}.pt")
        if pesq > best_pesq:
            best_pesq = pesq
            shutil.copyfile(checkpoint_path, out / BEST_CHECKPOINT)
            print(f"best dev PESQ-WB so far ({best_pesq:.3f}): {BEST_CHECKPOINT}", flush=True)
        plot_curve(history, out / "training_curve.png")
    (out / "history.json").write_text(json.dumps(history, indent=2))
    print(f"done: {epoch} epochs, {elapsed / 60:.1f} min; {throughput.summary()}", flush=True)
    best = out / BEST_CHECKPOINT
    return best if best.exists() else checkpoint_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the shipped configuration)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/default", help="run folder (checkpoints, plots)")
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--size",
        choices=["default", "paper"],
        default="default",
        help="'paper' is PercepNet's ~8M-parameter network (for a GPU)",
    )
    parser.add_argument("--gru-size", type=int, default=256)
    parser.add_argument("--gru-layers", type=int, default=3)
    parser.add_argument(
        "--train-shards",
        type=int,
        default=80,
        help=f"feature-cache shards of {SEQUENCES_PER_SHARD} 3-s mixtures each",
    )
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=60.0,
        help="wall-clock minutes of the first stage (random crops)",
    )
    parser.add_argument(
        "--full-sequence-minutes",
        type=float,
        default=0.0,
        help="then train this long on whole cached sequences (second stage)",
    )
    parser.add_argument(
        "--full-sequence-batch",
        type=int,
        default=64,
        help="batch of the second stage (3-s sequences)",
    )
    parser.add_argument(
        "--pause-stage-minutes",
        type=float,
        default=0.0,
        help="then this long on whole sequences with --pause-stage-weight",
    )
    parser.add_argument(
        "--pause-stage-weight", type=float, default=20.0, help="the third stage's --pause-weight"
    )
    parser.add_argument(
        "--onset-weight",
        type=float,
        default=0.0,
        help="a gain below its target costs 1 + this times more in the frames that open "
        "speech after a pause or at a sequence's start (0: off)",
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=100, help="crop length in 10 ms frames")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--dev-files",
        type=int,
        default=8,
        help="dev mixtures scored by PESQ-WB after each epoch (0: no dev evaluation at all, "
        "for a machine without the dev split's audio; the last epoch is then the result)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the training steps run: cpu, or cuda on a machine with an NVIDIA GPU "
        "(the data workers, and the enhancer of the dev evaluation, stay on the CPU)",
    )
    parser.add_argument(
        "--keep-epochs",
        action="store_true",
        help="keep every epoch's checkpoint as epoch_NNN.pt beside checkpoint.pt",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast for the training steps (about 2× faster on CPUs "
        "with AMX or AVX-512 BF16); weights, optimiser and loss stay fp32",
    )
    parser.add_argument(
        "--augment-noise",
        action="store_true",
        help="make new noises from the recorded ones (speed, EQ, reversal, "
        "blends of two); a recipe change, so it builds its own cache",
    )
    parser.add_argument(
        "--speech-speed",
        type=float,
        nargs=2,
        default=list(MixtureRecipe().speed_range),
        metavar=("LOW", "HIGH"),
        help="play each example's speech this much faster, drawn uniformly (pitch, formants "
        "and tempo together: other talkers); a recipe change outside the default",
    )
    parser.add_argument(
        "--noise-events",
        action="store_true",
        help="add synthetic bursts, harmonic sounds and babble of "
        "training talkers to 40%% of noisy examples; builds its own cache",
    )
    parser.add_argument(
        "--mid-speech-starts",
        type=float,
        default=None,
        metavar="SHARE",
        help="open this share of the training examples inside an utterance, so that speech "
        "is there from the first frame (a recipe change; builds its own cache and pool)",
    )
    parser.add_argument(
        "--on-the-fly",
        action="store_true",
        help="train on fresh whole mixtures every step (no feature cache): "
        "--batch mixtures of 3 s per step, the first stage's schedule only",
    )
    parser.add_argument(
        "--opus-share",
        type=float,
        default=0.5,
        help="on the fly: share of inputs coded by Opus at 16-64 kb/s",
    )
    parser.add_argument(
        "--data-workers",
        type=int,
        default=1,
        help="on the fly: processes mixing and analysing the next batches",
    )
    parser.add_argument(
        "--epoch-steps",
        type=int,
        default=100,
        help="on the fly: steps between dev evaluations and checkpoints",
    )
    parser.add_argument(
        "--teacher-blend",
        type=float,
        default=0.0,
        help="on the fly: weight of DeepFilterNet3's band gains and strengths in the targets "
        "(distillation, blended with the oracle's; 0: oracle only)",
    )
    parser.add_argument(
        "--distil-from",
        default=None,
        metavar="FP32_ONNX",
        help="a trained network's fp32 streaming graph (e.g. the shipped "
        "percepnet-fp32.onnx) whose gains and strengths on each batch are the targets, in place "
        "of the oracle's (distillation into this run's network, e.g. a smaller one)",
    )
    parser.add_argument(
        "--distil-oracle-share",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="with --distil-from: blend this share of the oracle's targets into the teacher's "
        "(in the loss's compressed domain; 0: the teacher's alone)",
    )
    parser.add_argument(
        "--teacher-pool-batches",
        type=int,
        default=200,
        help="with --teacher-blend: the stream cycles over this many batches, each made "
        "once and cached beside the feature cache",
    )
    parser.add_argument(
        "--fill-teacher-pool",
        action="store_true",
        help="make the --teacher-pool-batches batches of this stream's teacher pool that are "
        "not cached yet (with --data-workers processes) and train nothing",
    )
    parser.add_argument(
        "--teacher-extra-pools",
        nargs="+",
        default=[],
        metavar="FOLDER",
        help="with --teacher-blend: also cycle over the batches cached in these earlier pool "
        "folders (made by the same features and teacher), shuffled in with the stream's own",
    )
    parser.add_argument(
        "--dfn3-clean-speech",
        action="store_true",
        help="on the fly: mix from DeepFilterNet3-cleaned copies of the training recordings "
        "that carry an audible background (made once, cached beside the feature cache)",
    )
    parser.add_argument(
        "--clean-speech-floor-db",
        type=float,
        default=DEFAULT_FLOOR_DB,
        help="with --dfn3-clean-speech: clean a recording whose noise floor (10th percentile "
        "of its 10 ms frame energies) lies above this, in dB against its speech (95th)",
    )
    parser.add_argument(
        "--dfn3-clean-corpora",
        type=corpus_list,
        default=None,
        metavar="NAMES",
        help="with --dfn3-clean-speech: clean only these comma-separated corpora "
        "(e.g. speechocean762,ktuberling; default: every corpus)",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="CHECKPOINT",
        help="start from these weights (fine-tuning): a checkpoint, or a fp32 "
        "ONNX graph such as model/weights/percepnet-fp32.onnx",
    )
    parser.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="export the trained network to DIR (fp32 + int8 ONNX, SHA-256)",
    )
    args = parser.parse_args(argv)
    if args.onset_weight < 0:
        raise SystemExit(f"error: --onset-weight must be 0 or more, got {args.onset_weight:g}")
    if args.dev_files < 0:
        raise SystemExit(f"error: --dev-files must be 0 or more, got {args.dev_files}")
    if args.distil_from and args.teacher_blend:
        raise SystemExit(
            "error: --distil-from replaces the targets: --teacher-blend would be made and unused"
        )
    if not 0.0 <= args.distil_oracle_share < 1.0:
        raise SystemExit(
            f"error: --distil-oracle-share must be in [0, 1), got {args.distil_oracle_share:g}"
        )
    if args.distil_oracle_share and not args.distil_from:
        raise SystemExit("error: --distil-oracle-share needs --distil-from")
    share = args.mid_speech_starts
    if share is not None and not 0.0 < share <= 1.0:
        raise SystemExit(f"error: --mid-speech-starts must be in (0, 1], got {share:g}")
    try:
        check_factor_range("--speech-speed", *args.speech_speed)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m model.train``."""
    args = parse_args(argv)
    if args.fill_teacher_pool:
        print(f"teacher pool: {fill_teacher_pool(args)}")
        return
    checkpoint = train(args)
    if args.export:
        from model.export import export_all, load_checkpoint
        from model.training_record import record_from_run, write_record

        summary = export_all(load_checkpoint(checkpoint), Path(args.export))
        print(json.dumps(summary, indent=2))
        record = record_from_run(checkpoint, Path(args.export), Path(args.data_dir))
        print(f"training record: {write_record(record, Path(args.export))}")


if __name__ == "__main__":
    main()
