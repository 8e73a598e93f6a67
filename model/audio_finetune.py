"""Fine-tune the network on the audio it makes: a loss on the enhancer's output, with the
PercepNet loss on band targets kept as an anchor.

    python -m model.audio_finetune --init-from model/weights/percepnet-fp32.onnx --out runs/audio
    python -m model.export --checkpoint runs/audio/checkpoint.pt --out model/weights

Each step draws mixtures of whole training-split utterances with training-split noises (never
the dev split's), runs the network over them, synthesises the enhanced audio with
:class:`model.differentiable_synthesis.TorchSynthesis` (the enhancer's synthesis in torch), and
minimises

    target_weight · (PercepNet loss against the oracle band targets, blended with
                     DeepFilterNet3's at --teacher-blend)
        + spectral_weight · (multi-resolution compressed-spectrum loss against DeepFilterNet3's
                             output, or the clean speech with --spectral-reference clean)
        + mel_weight · (log-mel loss against DeepFilterNet3's output on the clean speech
                        alone, or with --mel-reference the spectral loss's reference or the
                        clean speech, over every frame or with --mel-active-db only where that
                        reference is active)

The band targets say what each band's gain should be; the spectral loss judges what the gains,
comb filter and postfilter make of the audio together. Both are targets: no quality-predictor
network (DNSMOS or similar) is in this loss, and nothing here imports one. The checkpoint is
``model.train``'s format with the run's training record (data, loss, hardware), so
``model.export --checkpoint`` takes it; one is written every few minutes and the same command
resumes from it. Progress lines give the batch means of each term.

``model.research.dnsmos_finetune`` runs this loop with research terms added (``OutputTerms``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsp.constants import NUM_BANDS, SAMPLE_RATE_HZ
from dsp.offline import compute_oracle_targets
from model.augment_mixture import MixtureAugmentation, augment_mixture
from model.devset import (
    DevMixture,
    SilentSignalError,
    build_dev_mixtures,
    default_data_dir,
    speech_from_corpora,
)
from model.differentiable_synthesis import TorchSynthesis, stack_inputs, synthesis_inputs
from model.feature_cache import band_mask
from model.mixtures import FORMANT_SHIFT_BOUNDS, check_factor_range, speech_max_hz
from model.network import NetworkConfig, PercepNet
from model.runtime import sha256_of
from model.spectral_loss import (
    COMPRESSION,
    FFT_SIZES,
    MEL_BANDS,
    MEL_FLOOR_DB,
    MEL_MAX_HZ,
    log_mel_loss,
    multi_resolution_loss,
)
from model.splits import AudioFile, Split, split_named
from model.teacher import Enhance, blend_targets, deepfilternet_enhance, teacher_targets
from model.train import changed_options, percepnet_loss, portable_path, saved_weights
from model.train import loss_record as band_loss_record
from model.train import parse_args as train_options
from model.training_record import data_record, find_record, hardware_record

TRAINER = "model.audio_finetune"
SNR_RANGE_DB = (-5.0, 20.0)
CHECKPOINT_EVERY_SECONDS = 300.0
PROGRESS_EVERY_STEPS = 10
REDRAWS = 10
# what --spectral-reference may name, and how the training record describes it
REFERENCES = {
    "clean": "the clean speech",
    "teacher": "DeepFilterNet3's output on the same mixture",
    "cleaned": "DeepFilterNet3's output on the clean speech alone",
}
# what --mel-reference may name: the spectral loss's reference, or one of REFERENCES by name
MEL_REFERENCES = ("spectral", "clean", "cleaned")
CROSSOVER_WIDTH_HZ = 200.0  # --teacher-below-hz: the raised cosine joining the two references
# What a checkpoint carries of the run itself (beside the weights, optimiser and options).
RUN_KEYS = ("step", "elapsed", "history", "resumes", "init_from", "data")

# A research term added to the loss: (enhanced audio [B, n], the batch, the run's random
# generator) → (its weighted share of the loss, its values to log by name).
OutputTerms = Callable[
    [torch.Tensor, "BatchTensors", np.random.Generator], tuple[torch.Tensor, dict[str, float]]
]


def draw_batch(
    data_dir: Path,
    rng: np.random.Generator,
    size: int,
    snr_range_db: tuple[float, float] = SNR_RANGE_DB,
    speech_sources: Sequence[str] | None = None,
) -> list[DevMixture]:
    """``size`` training-split mixtures at SNRs drawn uniformly from ``snr_range_db`` (with
    ``speech_sources``, speech from those corpora only); a draw that lands on a silent stretch
    of noise (no SNR can be set) is drawn again."""
    for _ in range(REDRAWS):
        snrs = [round(float(s), 1) for s in rng.uniform(*snr_range_db, size=size)]
        seed = int(rng.integers(0, 2**31))
        try:
            return build_dev_mixtures(
                data_dir, 1, snrs, seed, "train", speech_sources=speech_sources
            )
        except SilentSignalError:
            continue
    raise RuntimeError(f"{REDRAWS} draws in a row met silent speech or noise")


def already_made(output: np.ndarray) -> Enhance:
    """An enhancer that hands back ``output``, a teacher's output already made, whatever it is
    given (so one teacher run serves both the targets and the spectral reference)."""
    return lambda _noisy: output


def crossover(low: np.ndarray, high: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """``low`` below ``cutoff_hz`` and ``high`` above it, joined in the spectrum of the whole
    clip by a raised cosine ``CROSSOVER_WIDTH_HZ`` wide (zero phase, so the two stay aligned;
    the two halves sum to either signal when both are the same)."""
    count = max(low.shape[0], high.shape[0])
    freqs = np.fft.rfftfreq(count, 1.0 / SAMPLE_RATE_HZ)
    ramp = np.clip((freqs - cutoff_hz) / CROSSOVER_WIDTH_HZ + 0.5, 0.0, 1.0)
    low_share = 0.5 * (1.0 + np.cos(np.pi * ramp))
    joined = low_share * np.fft.rfft(low, count) + (1.0 - low_share) * np.fft.rfft(high, count)
    return np.fft.irfft(joined, count)


def speech_band_mask(mixture: DevMixture) -> np.ndarray:
    """The bands the speech source can fill (as the training cache masks them)."""
    return band_mask(speech_max_hz(mixture.source_rate))


def padded(signals: Sequence[torch.Tensor], num_samples: int) -> torch.Tensor:
    """``signals`` cut or zero-padded to [len(signals), ``num_samples``]."""
    out = torch.zeros(len(signals), num_samples)
    for i, signal in enumerate(signals):
        count = min(num_samples, signal.shape[0])
        out[i, :count] = signal[:count]
    return out


class BatchTensors:
    """Network inputs, synthesis inputs, band targets and audio references of one batch."""

    def __init__(
        self,
        mixtures: list[DevMixture],
        teacher_blend: float = 0.0,
        reference: str = "clean",
        teacher_below_hz: float = 0.0,
        mel_reference: str = "spectral",
    ) -> None:
        """``teacher_blend`` blends DeepFilterNet3's band gains and strengths into the oracle
        targets as ``model.train`` does. ``reference`` is what the spectral loss compares with
        (``REFERENCES``): the clean speech, DeepFilterNet3's output on the mixture
        (``teacher``), or on the clean speech alone (``cleaned``: the speech without the
        recording's own background). A ``teacher_below_hz`` above 0 keeps DeepFilterNet3 to the
        bands and frequencies below it: the targets above are the oracle's alone and the
        reference there is the clean speech. ``mel_reference`` (``MEL_REFERENCES``) is what
        the log-mel loss compares with: the spectral loss's reference, the clean speech, or
        DeepFilterNet3's output on it (``cleaned``)."""
        if reference not in REFERENCES:
            raise ValueError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES)}")
        if mel_reference not in MEL_REFERENCES:
            known = ", ".join(MEL_REFERENCES)
            raise ValueError(f"unknown log-mel reference {mel_reference!r}; known: {known}")
        # DeepFilterNet3's share: in every band, or in those centred at or below the crossover
        share = band_mask(teacher_below_hz) if teacher_below_hz > 0 else 1.0
        blend = teacher_blend * share
        inputs = [synthesis_inputs(m.noisy) for m in mixtures]
        self.synthesis = stack_inputs(inputs)
        self.features = self.synthesis.pop("features")
        frames = self.features.shape[1]
        self.target_gains = torch.ones(len(mixtures), frames, NUM_BANDS)
        self.target_strengths = torch.zeros(len(mixtures), frames, NUM_BANDS)
        self.frames = []  # each clip's own frames, before the padding
        references = [m.clean for m in mixtures]
        cleaned: list[np.ndarray] = []
        for i, mixture in enumerate(mixtures):
            targets = compute_oracle_targets(mixture.noisy, mixture.clean)
            gains, strengths = targets.gains, targets.strengths
            if teacher_blend > 0 or reference == "teacher":
                taught = deepfilternet_enhance(mixture.noisy)  # one teacher run serves both
                if reference == "teacher":
                    references[i] = taught
                if teacher_blend > 0:  # the targets that make the output already made
                    teacher_gains, teacher_strengths = teacher_targets(
                        mixture.noisy, already_made(taught)
                    )
                    gains = blend_targets(gains, teacher_gains, blend)
                    strengths = blend_targets(strengths, teacher_strengths, blend, complement=True)
            if reference == "cleaned" or mel_reference == "cleaned":
                cleaned.append(deepfilternet_enhance(mixture.clean))
                if reference == "cleaned":
                    references[i] = cleaned[-1]
            if teacher_below_hz > 0 and reference != "clean":
                references[i] = crossover(references[i], mixture.clean, teacher_below_hz)
            count = gains.shape[0]
            self.frames.append(count)
            self.target_gains[i, :count] = torch.from_numpy(gains)
            self.target_strengths[i, :count] = torch.from_numpy(strengths)
        self.band_mask = torch.from_numpy(np.stack([speech_band_mask(m) for m in mixtures]))
        self.lengths = [m.noisy.shape[0] for m in mixtures]
        self.clean = [torch.from_numpy(m.clean) for m in mixtures]
        self.references = [torch.from_numpy(np.asarray(r, dtype=np.float64)) for r in references]
        self.mel_references = {
            "spectral": self.references,
            "clean": self.clean,
            "cleaned": [torch.from_numpy(np.asarray(c)) for c in cleaned],
        }[mel_reference]

    def anchor_loss(
        self, gains: torch.Tensor, strengths: torch.Tensor, lost_weight: float = 0.0
    ) -> torch.Tensor:
        """The PercepNet loss against the batch's targets over each clip's own frames, not the
        zero padding after a shorter clip (whose targets are 1 and inputs silence); a gain under
        its target costs ``1 + lost_weight`` times more."""
        losses = [
            percepnet_loss(
                gains[i : i + 1, :frames],
                strengths[i : i + 1, :frames],
                self.target_gains[i : i + 1, :frames],
                self.target_strengths[i : i + 1, :frames],
                self.band_mask[i : i + 1],
                lost_weight=lost_weight,
            )
            for i, frames in enumerate(self.frames)
        ]
        return torch.stack(losses).mean()

    def reference_batch(self, num_samples: int) -> torch.Tensor:
        """The spectral loss's references zero-padded to [B, ``num_samples``]."""
        return padded(self.references, num_samples)

    def mel_reference_batch(self, num_samples: int) -> torch.Tensor:
        """The log-mel loss's references zero-padded to [B, ``num_samples``]."""
        return padded(self.mel_references, num_samples)

    def cut_to_lengths(self, enhanced: torch.Tensor) -> torch.Tensor:
        """``enhanced`` [B, n] with every clip zeroed past its own length."""
        positions = torch.arange(enhanced.shape[1])
        lengths = torch.tensor(self.lengths)[:, None]
        return enhanced * (positions[None, :] < lengths).to(enhanced.dtype)


def loss_record(args: argparse.Namespace, extra_terms: Sequence[str] = ()) -> dict[str, Any]:
    """What this run's loss compares, for the training record and the model card."""
    # model.train's description of its loss, for a run of its defaults with this blend
    band = band_loss_record(
        argparse.Namespace(**vars(train_options([])) | {"teacher_blend": args.teacher_blend})
    )
    below = args.teacher_below_hz
    reference = REFERENCES[args.spectral_reference]
    if below and args.spectral_reference != "clean":
        reference += f" below {below:g} Hz, the clean speech above"
    band_terms = list(band["terms"])
    if args.band_lost_weight:
        band_terms.append(f"a gain below its target costs {1 + args.band_lost_weight:g}×")
    terms = [
        f"{args.target_weight:g} × the band loss on gains and strengths ("
        + "; ".join(band_terms)
        + ")"
    ]
    if args.spectral_weight:
        sizes = "/".join(str(size) for size in FFT_SIZES)
        terms.append(
            f"{args.spectral_weight:g} × a multi-resolution (STFT {sizes}) loss on magnitudes "
            f"compressed to the power {COMPRESSION:g}, and on the complex spectra with those "
            f"magnitudes, between the enhanced audio (the enhancer's synthesis, in torch) and "
            f"{reference}"
        )
    if args.mel_weight:
        mel_reference = REFERENCES.get(args.mel_reference, reference)
        frames = (
            f", in the frames where it is within {args.mel_active_db:g} dB of its loudest"
            if args.mel_active_db
            else ""
        )
        terms.append(
            f"{args.mel_weight:g} × the mean absolute difference of log mel power spectrograms "
            f"({MEL_BANDS} bands below {MEL_MAX_HZ / 1000:g} kHz, each clip's floor "
            f"{-args.mel_floor_db:g} dB under its reference's mean) between the enhanced audio and "
            f"{mel_reference}{frames}"
        )
        if args.mel_lost_weight:
            terms[-1] += f", a band under the reference costing {1 + args.mel_lost_weight:g}×"
    targets = band["targets"]
    if below and args.teacher_blend:
        targets += f" (DeepFilterNet3's share in the bands centred at or below {below:g} Hz only)"
    return {
        "targets": f"{targets}, and (audio) {reference}",
        "terms": terms + list(extra_terms),
        "quality_predictors": [],  # never a DNSMOS-like network (issue 25)
    }


def finetune(
    args: argparse.Namespace,
    extra_terms: OutputTerms | None = None,
    loss: dict[str, Any] | None = None,
    trainer: str = TRAINER,
) -> Path:
    """Run (or resume) the fine-tune; returns the checkpoint path. ``extra_terms`` adds a
    research term to the loss, which ``loss`` (its record) and ``trainer`` then describe."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    init_path = Path(args.init_from)
    state = torch.load(checkpoint_path, weights_only=False) if checkpoint_path.exists() else None
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    train = split_named(data_dir, "train")
    # checked before anything loads; the draws narrow the same way (build_dev_mixtures)
    drawn_speech = speech_from_corpora(train.speech, args.speech_sources, "training")
    # the record names no machine's folders (as model.train's): the data as <data>, others
    # relative to the working directory or as <elsewhere>/NAME
    options = vars(args) | {
        "data_dir": "<data>",
        "out": portable_path(args.out),
        "init_from": portable_path(args.init_from),
    }
    if state is not None:
        config = NetworkConfig.from_dict(state["config"])
    else:  # the network the weights have, whatever its size (saved_weights refuses a missing file)
        config, initial = saved_weights(init_path)
    model = PercepNet(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        run = {key: state[key] for key in RUN_KEYS}
        changed = changed_options(state["args"], options, defaults={})
        if changed:
            run["resumes"].append(
                {"minutes": run["elapsed"] / 60, "step": run["step"], "changed": changed}
            )
        print(f"resumed at step {run['step']} ({run['elapsed'] / 60:.1f} min)", flush=True)
    else:
        model.load_state_dict(initial)
        run = {
            "step": 0,
            "elapsed": 0.0,
            "history": [],
            "resumes": [],
            # the file may later be overwritten (a fine-tune exported over its start)
            "init_from": {
                "path": options["init_from"],
                "sha256": sha256_of(init_path),
                "record": find_record(init_path),
            },
            # no rooms are used, and with --speech-sources only those corpora's speech
            "data": data_record(Split(drawn_speech, train.noise, ())),
        }
    run["loss"] = loss if loss is not None else loss_record(args)
    augmentation = (
        MixtureAugmentation(
            speech_speed_range=tuple(args.speech_speed),
            formant_shift_range=tuple(args.formant_shift),
        )
        if args.augment
        else None
    )
    babble_speech: tuple[AudioFile, ...] = ()  # what the remade mixtures' babble is made of
    if augmentation is not None:  # in the data's record, which the export and card keep
        run["data"]["augmentation"] = augmentation.as_dict()
        babble_speech = train.speech
    synthesis = TorchSynthesis()

    def save() -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": config.as_dict(),
                "rng": rng.bit_generator.state,
                "args": options,
                "trainer": trainer,
                "hardware": hardware_record(args.threads),
                **run,
            },
            checkpoint_path.with_suffix(".tmp"),
        )
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)

    budget_s = args.minutes * 60.0
    last_save = time.monotonic()
    window: list[dict[str, float]] = []
    skipped = 0
    model.train()
    while run["elapsed"] < budget_s:
        started = time.monotonic()
        lr = args.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, run["elapsed"] / budget_s)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        mixtures = draw_batch(data_dir, rng, args.batch, tuple(args.snr_db), args.speech_sources)
        if augmentation is not None:
            mixtures = [augment_mixture(m, rng, babble_speech, augmentation) for m in mixtures]
        batch = BatchTensors(
            mixtures,
            args.teacher_blend,
            args.spectral_reference,
            args.teacher_below_hz,
            args.mel_reference if args.mel_weight else "spectral",
        )
        gains, strengths = model(batch.features)
        anchor = batch.anchor_loss(gains, strengths, args.band_lost_weight)
        enhanced = synthesis(gains, strengths, **batch.synthesis)
        output = batch.cut_to_lengths(enhanced)
        reference = batch.reference_batch(enhanced.shape[1])
        unused = enhanced.new_zeros(())
        spectral = multi_resolution_loss(output, reference) if args.spectral_weight else unused
        mel = (
            log_mel_loss(
                output,
                batch.mel_reference_batch(output.shape[1]),
                floor_db=args.mel_floor_db,
                active_db=args.mel_active_db or None,
                lost_weight=args.mel_lost_weight,
            )
            if args.mel_weight
            else unused
        )
        total = (
            args.target_weight * anchor + args.spectral_weight * spectral + args.mel_weight * mel
        )
        logged = {"anchor": anchor.item(), "spectral": spectral.item(), "mel": mel.item()}
        if extra_terms is not None:
            extra, extra_logged = extra_terms(enhanced, batch, rng)
            total = total + extra
            logged |= extra_logged
        optimizer.zero_grad()
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if torch.isfinite(grad_norm):
            optimizer.step()
            model.clip_weights()
        else:  # a rare non-finite gradient (a silent spectrogram bin in a research term)
            skipped += 1
        run["step"] += 1
        run["elapsed"] += time.monotonic() - started
        window.append(logged)
        if run["step"] % PROGRESS_EVERY_STEPS == 0:
            means = {key: float(np.mean([w[key] for w in window])) for key in window[0]}
            minutes = run["elapsed"] / 60
            progress = {"step": run["step"], "minutes": minutes, "lr": lr, "skipped": skipped}
            run["history"].append(progress | means)
            print(json.dumps(run["history"][-1]), flush=True)
            window = []
        if time.monotonic() - last_save > CHECKPOINT_EVERY_SECONDS:
            save()
            # a snapshot every few minutes, so a point along the way can be scored and kept
            shutil.copyfile(checkpoint_path, out / f"checkpoint-{run['step']:05d}.pt")
            last_save = time.monotonic()
    save()
    return checkpoint_path


def option_parser(description: str) -> argparse.ArgumentParser:
    """The fine-tune's options; their defaults are the shipped weights' recipe."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--init-from", required=True, help="fp32 ONNX graph or checkpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-clock budget")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument(
        "--target-weight", type=float, default=1.0, help="weight of the band (PercepNet) loss"
    )
    parser.add_argument(
        "--spectral-weight",
        type=float,
        default=16.0,
        help="weight of the multi-resolution compressed-spectrum loss (see --spectral-reference)",
    )
    parser.add_argument(
        "--mel-weight",
        type=float,
        default=1.5,
        help="weight of the log-mel loss (below 8 kHz), against --mel-reference",
    )
    parser.add_argument(
        "--mel-reference",
        choices=MEL_REFERENCES,
        default="cleaned",
        help="what the log-mel loss compares with: the spectral loss's reference, the clean "
        "speech, or DeepFilterNet3's output on it (cleaned)",
    )
    parser.add_argument(
        "--mel-active-db",
        type=float,
        default=0.0,
        help="count the log-mel loss only in frames whose reference is within this many dB of "
        "its loudest frame (0: every frame)",
    )
    parser.add_argument(
        "--mel-floor-db",
        type=float,
        default=MEL_FLOOR_DB,
        help="the log-mel loss's floor in dB relative to each clip's mean mel power: the quieter "
        "parts of the reference (the speech above 3 kHz, much of it) count only above it",
    )
    parser.add_argument(
        "--mel-lost-weight",
        type=float,
        default=0.0,
        help="make a mel band under its reference (speech taken away, not noise left in) cost "
        "1 + this times more in the log-mel loss",
    )
    parser.add_argument(
        "--band-lost-weight",
        type=float,
        default=0.0,
        help="make a band gain under its target cost 1 + this times more in the band loss",
    )
    parser.add_argument(
        "--spectral-reference",
        choices=tuple(REFERENCES),
        default="teacher",
        help="what the spectral loss compares with: the clean speech, DeepFilterNet3's output on "
        "the mixture (teacher) or on the clean speech alone (cleaned)",
    )
    parser.add_argument(
        "--teacher-blend",
        type=float,
        default=0.5,
        help="DeepFilterNet3's share of the band loss's targets (as model.train's)",
    )
    parser.add_argument(
        "--teacher-below-hz",
        type=float,
        default=0.0,
        help="keep DeepFilterNet3 (band targets and reference) below this frequency, the clean "
        "speech's above it (0: the whole spectrum)",
    )
    parser.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        default=list(SNR_RANGE_DB),
        metavar=("LOW", "HIGH"),
        help="the range the mixtures' SNRs are drawn from, uniformly",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="remake each mixture (model.augment_mixture): the speech's speed and colour, the "
        "noise's speed, colour and direction, a synthetic noise event",
    )
    parser.add_argument(
        "--speech-speed",
        type=float,
        nargs=2,
        default=list(MixtureAugmentation().speech_speed_range),
        metavar=("LOW", "HIGH"),
        help="with --augment: the range the speech's speed (pitch and formants with it) is drawn "
        "from, log-uniformly",
    )
    parser.add_argument(
        "--formant-shift",
        type=float,
        nargs=2,
        default=list(MixtureAugmentation().formant_shift_range),
        metavar=("LOW", "HIGH"),
        help="with --augment: the range the speech's formants are moved by on their own, "
        "log-uniformly, pitch and tempo kept (another vocal tract; default 1 1: not moved)",
    )
    parser.add_argument(
        "--speech-sources",
        nargs="+",
        default=None,
        metavar="CORPUS",
        help="draw speech only from these corpora (folders under clean/, e.g. vctk_p239 "
        "speechocean762); default: every training corpus",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    return parser


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options that cannot train (``parser.error``: one line, exit status 2)."""
    if not (args.minutes > 0 and args.batch >= 1 and args.lr > 0 and args.threads >= 1):
        parser.error("--minutes and --lr must be positive, --batch and --threads at least 1")
    weights = [value for key, value in vars(args).items() if key.endswith("_weight")]
    if min(weights) < 0:
        parser.error("the loss weights must not be negative")
    if not 0.0 <= args.teacher_blend <= 1.0:
        parser.error("--teacher-blend must lie in [0, 1]")
    if args.mel_floor_db >= 0:
        parser.error("--mel-floor-db must be negative (dB under the reference's mean)")
    if args.mel_active_db < 0:
        parser.error("--mel-active-db must not be negative (0: every frame)")
    try:
        check_factor_range("--speech-speed", *args.speech_speed)
        low, high = args.formant_shift
        check_factor_range("--formant-shift", low, high, FORMANT_SHIFT_BOUNDS)
    except ValueError as error:
        parser.error(str(error))
    if not args.snr_db[0] <= args.snr_db[1]:
        parser.error("--snr-db: LOW must not be above HIGH")
    if not 0.0 <= args.teacher_below_hz <= SAMPLE_RATE_HZ / 2:
        parser.error("--teacher-below-hz must lie in [0, 24000]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = option_parser(__doc__.split("\n")[0])
    args = parser.parse_args(argv)
    check_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m model.audio_finetune``."""
    args = parse_args(argv)
    try:
        print(finetune(args), flush=True)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
