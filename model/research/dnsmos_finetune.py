"""Fine-tune the network on what DNSMOS hears, with its training loss kept as an anchor.

    python -m model.research.dnsmos_finetune --init-from model/weights/percepnet-fp32.onnx \
        --out runs/dnsmos --minutes 45

Each step draws mixtures of whole training-split utterances with training-split noises (never
the dev split's), runs the network over them, synthesises the enhanced audio with
:class:`model.research.differentiable_synthesis.TorchSynthesis`, and minimises

    target_weight · (PercepNet loss against the oracle targets, or their blend with
                     DeepFilterNet3's band gains at --teacher-blend)
        − dnsmos_weight · mean DNSMOS OVRL − stoi_weight · mean STOI
        + spectral_weight · (compressed-spectrum loss against the clean speech, or
                             DeepFilterNet3's output with --spectral-reference teacher)

through the differentiable DNSMOS P.835 network of :mod:`model.research.dnsmos_loss` and the torch
STOI of :mod:`model.research.stoi_loss`. The PercepNet loss keeps the gains near the oracle's and
STOI keeps the speech intelligible; DNSMOS says which way to err where the network cannot be sure.
PESQ and SI-SDR are not optimised. With ``--dnsmos-weight 0`` DNSMOS is never loaded and the
loss holds targets only (``model.research.spectral_loss``). Checkpoints (the ``model.train``
format, so ``model.export --checkpoint`` takes them) are written every few minutes and the run
resumes from the last one. Progress lines give the batch means of each term.

A research tool only: acceptance metrics are never training objectives of shipped weights, so
``--export`` refuses the shipped weights' folder and nothing on the shipped path imports this.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from dsp.constants import NUM_BANDS, SAMPLE_RATE_HZ
from dsp.offline import compute_oracle_targets
from model.devset import DevMixture, SilentSignalError, build_dev_mixtures, default_data_dir
from model.export import export_all
from model.feature_cache import band_mask
from model.mixtures import speech_max_hz
from model.network import NetworkConfig, PercepNet
from model.research.differentiable_synthesis import (
    TorchSynthesis,
    resample_ideal,
    stack_inputs,
    synthesis_inputs,
)
from model.research.dnsmos_loss import WINDOW_SAMPLES_16K, DnsmosP835, dnsmos_window
from model.research.spectral_loss import multi_resolution_loss
from model.research.stoi_loss import Stoi
from model.runtime import WEIGHTS_DIR, sha256_of
from model.teacher import blend_targets, deepfilternet_enhance
from model.train import percepnet_loss, saved_weights

DNSMOS_RATE = 16_000
SNR_RANGE_DB = (-5.0, 20.0)
CHECKPOINT_EVERY_SECONDS = 300.0
PROGRESS_EVERY_STEPS = 10
REDRAWS = 10


def draw_batch(data_dir: Path, rng: np.random.Generator, size: int) -> list[DevMixture]:
    """``size`` training-split mixtures at SNRs drawn from ``SNR_RANGE_DB``; a draw that lands
    on a silent stretch of noise (no SNR can be set) is drawn again."""
    for _ in range(REDRAWS):
        snrs = [round(float(s), 1) for s in rng.uniform(*SNR_RANGE_DB, size=size)]
        seed = int(rng.integers(0, 2**31))
        try:
            return build_dev_mixtures(data_dir, per_snr=1, snrs_db=snrs, seed=seed, split="train")
        except SilentSignalError:
            continue
    raise RuntimeError(f"{REDRAWS} draws in a row met silent speech or noise")


def speech_band_mask(mixture: DevMixture) -> np.ndarray:
    """The bands the speech source can fill (as the training cache masks them)."""
    return band_mask(speech_max_hz(mixture.source_rate))


class BatchTensors:
    """Network inputs, synthesis inputs and oracle targets of one batch of mixtures."""

    def __init__(
        self, mixtures: list[DevMixture], teacher_blend: float = 0.0, teacher_audio: bool = False
    ) -> None:
        """``teacher_blend`` blends DeepFilterNet3's band gains and strengths into the oracle
        targets as ``model.train`` does; ``teacher_audio`` makes DeepFilterNet3's output the
        reference of the spectral loss in place of the clean speech."""
        inputs = [synthesis_inputs(m.noisy) for m in mixtures]
        self.synthesis = stack_inputs(inputs)
        self.features = self.synthesis.pop("features")
        frames = self.features.shape[1]
        self.target_gains = torch.ones(len(mixtures), frames, NUM_BANDS)
        self.target_strengths = torch.zeros(len(mixtures), frames, NUM_BANDS)
        self.frames = []  # each clip's own frames, before the padding
        references = [m.clean for m in mixtures]
        for i, mixture in enumerate(mixtures):
            targets = compute_oracle_targets(mixture.noisy, mixture.clean)
            gains, strengths = targets.gains, targets.strengths
            if teacher_blend > 0 or teacher_audio:
                taught = deepfilternet_enhance(mixture.noisy)  # one teacher run serves both
                if teacher_audio:
                    references[i] = taught
                if teacher_blend > 0:
                    # model.teacher.teacher_targets, on the output already made
                    teacher = compute_oracle_targets(mixture.noisy, taught)
                    gains = blend_targets(gains, teacher.gains, teacher_blend)
                    strengths = blend_targets(
                        strengths, teacher.strengths, teacher_blend, complement=True
                    )
            count = gains.shape[0]
            self.frames.append(count)
            self.target_gains[i, :count] = torch.from_numpy(gains)
            self.target_strengths[i, :count] = torch.from_numpy(strengths)
        self.band_mask = torch.from_numpy(np.stack([speech_band_mask(m) for m in mixtures]))
        self.lengths = [m.noisy.shape[0] for m in mixtures]
        self.clean = [torch.from_numpy(m.clean) for m in mixtures]
        self.references = [torch.from_numpy(np.asarray(r, dtype=np.float64)) for r in references]

    def anchor_loss(self, gains: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
        """The PercepNet loss against the batch's targets over each clip's own frames, not the
        zero padding after a shorter clip (whose targets are 1 and inputs silence)."""
        losses = [
            percepnet_loss(
                gains[i : i + 1, :frames],
                strengths[i : i + 1, :frames],
                self.target_gains[i : i + 1, :frames],
                self.target_strengths[i : i + 1, :frames],
                self.band_mask[i : i + 1],
            )
            for i, frames in enumerate(self.frames)
        ]
        return torch.stack(losses).mean()

    def reference_batch(self, num_samples: int) -> torch.Tensor:
        """The spectral loss's references zero-padded to [B, ``num_samples``]."""
        out = torch.zeros(len(self.references), num_samples)
        for i, reference in enumerate(self.references):
            count = min(num_samples, reference.shape[0])
            out[i, :count] = reference[:count]
        return out

    def cut_to_lengths(self, enhanced: torch.Tensor) -> torch.Tensor:
        """``enhanced`` [B, n] with every clip zeroed past its own length."""
        positions = torch.arange(enhanced.shape[1])
        lengths = torch.tensor(self.lengths)[:, None]
        return enhanced * (positions[None, :] < lengths).to(enhanced.dtype)


def scoring_windows(
    enhanced: torch.Tensor, lengths: list[int], rng: np.random.Generator
) -> torch.Tensor:
    """Each clip cut to its length, at 16 kHz, looped to one random 9.01-s DNSMOS window."""
    windows = []
    for i, length in enumerate(lengths):
        clip = resample_ideal(enhanced[i : i + 1, :length], SAMPLE_RATE_HZ, DNSMOS_RATE)
        spare = max(0, clip.shape[-1] - WINDOW_SAMPLES_16K)
        windows.append(dnsmos_window(clip, int(rng.integers(0, spare + 1))))
    return torch.cat(windows)


def batch_stoi(stoi: Stoi, clean: list[torch.Tensor], enhanced: torch.Tensor) -> torch.Tensor:
    """Mean STOI over the clips long enough to have one (30 speech frames); 0 if none is."""
    scores = []
    for i, reference in enumerate(clean):
        try:
            scores.append(stoi(reference, enhanced[i, : reference.shape[0]], SAMPLE_RATE_HZ))
        except ValueError:  # too little speech for STOI: the clip still counts for DNSMOS
            continue
    return torch.stack(scores).mean() if scores else enhanced.new_zeros(())


def finetune(args: argparse.Namespace) -> Path:
    """Run (or resume) the fine-tune; returns the checkpoint path."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    init_path = Path(args.init_from)
    state = torch.load(checkpoint_path, weights_only=False) if checkpoint_path.exists() else None
    if state is not None:
        config = NetworkConfig.from_dict(state["config"])
    else:  # the network the weights have, whatever its size (saved_weights refuses a missing file)
        config, initial = saved_weights(init_path)
    model = PercepNet(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    step, elapsed, history = 0, 0.0, []
    init_from = {"path": str(args.init_from), "sha256": ""}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        init_from = state["init_from"]  # the file may since have been overwritten (--export)
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)", flush=True)
    else:
        model.load_state_dict(initial)
        init_from["sha256"] = sha256_of(init_path)
    synthesis = TorchSynthesis()
    dnsmos = DnsmosP835() if args.dnsmos_weight > 0 else None
    stoi = Stoi()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()

    def save() -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": config.as_dict(),
                "rng": rng.bit_generator.state,
                "step": step,
                "elapsed": elapsed,
                "history": history,
                "args": vars(args),
                "init_from": init_from,
            },
            checkpoint_path.with_suffix(".tmp"),
        )
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)

    budget_s = args.minutes * 60.0
    last_save = time.monotonic()
    window: list[dict[str, float]] = []
    skipped = 0
    model.train()
    while elapsed < budget_s:
        started = time.monotonic()
        lr = args.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed / budget_s)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = BatchTensors(
            draw_batch(data_dir, rng, args.batch),
            args.teacher_blend,
            args.spectral_reference == "teacher",
        )
        gains, strengths = model(batch.features)
        anchor = batch.anchor_loss(gains, strengths)
        enhanced = synthesis(gains, strengths, **batch.synthesis)
        zero = enhanced.new_zeros(())  # a term left out
        sig, bak, ovrl = (
            dnsmos(scoring_windows(enhanced, batch.lengths, rng))
            if dnsmos is not None
            else (zero, zero, zero)
        )
        intelligibility = batch_stoi(stoi, batch.clean, enhanced) if args.stoi_weight > 0 else zero
        spectral = (
            multi_resolution_loss(
                batch.cut_to_lengths(enhanced), batch.reference_batch(enhanced.shape[1])
            )
            if args.spectral_weight > 0
            else zero
        )
        loss = (
            args.target_weight * anchor
            - args.dnsmos_weight * ovrl.mean()
            - args.stoi_weight * intelligibility
            + args.spectral_weight * spectral
        )
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if torch.isfinite(grad_norm):
            optimizer.step()
            model.clip_weights()
        else:  # a rare non-finite gradient (a silent spectrogram bin in DNSMOS): skip the batch
            skipped += 1
        step += 1
        elapsed += time.monotonic() - started
        window.append(
            {
                "anchor": anchor.item(),
                "sig": sig.mean().item(),
                "bak": bak.mean().item(),
                "ovrl": ovrl.mean().item(),
                "stoi": intelligibility.item(),
                "spectral": spectral.item(),
            }
        )
        if step % PROGRESS_EVERY_STEPS == 0:
            means = {key: float(np.mean([w[key] for w in window])) for key in window[0]}
            history.append(
                {"step": step, "minutes": elapsed / 60, "lr": lr, "skipped": skipped, **means}
            )
            print(json.dumps(history[-1]), flush=True)
            window = []
        if time.monotonic() - last_save > CHECKPOINT_EVERY_SECONDS:
            save()
            # a snapshot every few minutes: the objective is a trade, so keep the way along
            shutil.copyfile(checkpoint_path, out / f"checkpoint-{step:05d}.pt")
            last_save = time.monotonic()
    save()
    if args.export:
        summary = export_all(model.eval(), Path(args.export))
        print(json.dumps(summary), flush=True)
    return checkpoint_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init-from", required=True, help="fp32 ONNX graph or checkpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument(
        "--target-weight", type=float, default=1.0, help="weight of the PercepNet loss"
    )
    parser.add_argument(
        "--stoi-weight", type=float, default=0.0, help="weight of the STOI term (subtracted)"
    )
    parser.add_argument(
        "--dnsmos-weight", type=float, default=1.0, help="weight of DNSMOS OVRL (subtracted)"
    )
    parser.add_argument(
        "--spectral-weight",
        type=float,
        default=0.0,
        help="weight of the multi-resolution compressed-spectrum loss (see --spectral-reference)",
    )
    parser.add_argument(
        "--spectral-reference",
        choices=("clean", "teacher"),
        default="clean",
        help="what the spectral loss compares with: the clean speech, or DeepFilterNet3's output",
    )
    parser.add_argument(
        "--teacher-blend",
        type=float,
        default=0.0,
        help="DeepFilterNet3's share of the PercepNet loss's targets (as model.train's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--export", default=None, help="export the result here (fp32 + int8)")
    args = parser.parse_args(argv)
    if not (args.minutes > 0 and args.batch >= 1 and args.lr > 0):
        parser.error("--minutes and --lr must be positive and --batch at least 1")
    if min(args.target_weight, args.dnsmos_weight, args.stoi_weight, args.spectral_weight) < 0:
        parser.error("the loss weights must not be negative")
    if not 0.0 <= args.teacher_blend <= 1.0:
        parser.error("--teacher-blend must lie in [0, 1]")
    if args.export and Path(args.export).resolve() == WEIGHTS_DIR.resolve():
        parser.error(
            "--export: weights fine-tuned against DNSMOS are never shipped; export elsewhere"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m model.research.dnsmos_finetune``."""
    print(finetune(parse_args(argv)), flush=True)


if __name__ == "__main__":
    main()
