"""Fine-tune the network on what DNSMOS hears, with its training loss kept as an anchor.

    python -m model.research.dnsmos_finetune --init-from model/weights/percepnet-fp32.onnx \
        --out runs/dnsmos --minutes 45

Each step draws mixtures of whole training-split utterances with training-split noises (never
the dev split's), runs the network over them, synthesises the enhanced audio with
:class:`model.differentiable_synthesis.TorchSynthesis`, and minimises

    target_weight · (PercepNet loss against the oracle targets, or their blend with
                     DeepFilterNet3's band gains at --teacher-blend)
        − dnsmos_weight · mean DNSMOS OVRL − stoi_weight · mean STOI
        + spectral_weight · (compressed-spectrum loss against the clean speech, or
                             DeepFilterNet3's output with --spectral-reference teacher)

through the differentiable DNSMOS P.835 network of :mod:`model.research.dnsmos_loss` and the torch
STOI of :mod:`model.research.stoi_loss`. The PercepNet loss keeps the gains near the oracle's and
STOI keeps the speech intelligible; DNSMOS says which way to err where the network cannot be sure.
PESQ and SI-SDR are not optimised. With ``--dnsmos-weight 0`` DNSMOS is never loaded and the
loss holds targets only: it is ``model.audio_finetune``'s, whose loop this runs with the DNSMOS
and STOI terms added (checkpoints, resuming and progress lines are that loop's).

A research tool only: acceptance metrics are never training objectives of shipped weights, so
``--export`` refuses the shipped weights' folder and nothing on the shipped path imports this.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dsp.constants import SAMPLE_RATE_HZ
from model.audio_finetune import (
    BatchTensors,
    check_options,
    finetune,
    loss_record,
    option_parser,
)
from model.differentiable_synthesis import resample_ideal
from model.export import export_all, load_checkpoint
from model.research.dnsmos_loss import WINDOW_SAMPLES_16K, DnsmosP835, dnsmos_window
from model.research.stoi_loss import Stoi
from model.runtime import WEIGHTS_DIR

DNSMOS_RATE = 16_000


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


class ResearchTerms:
    """− dnsmos_weight · mean DNSMOS OVRL − stoi_weight · mean STOI, on the enhanced audio
    (``model.audio_finetune.OutputTerms``); DNSMOS is loaded only with a weight above 0."""

    def __init__(self, dnsmos_weight: float, stoi_weight: float) -> None:
        self.dnsmos_weight, self.stoi_weight = dnsmos_weight, stoi_weight
        self.dnsmos = DnsmosP835() if dnsmos_weight > 0 else None
        self.stoi = Stoi()

    def __call__(
        self, enhanced: torch.Tensor, batch: BatchTensors, rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        zero = enhanced.new_zeros(())  # a term left out
        sig, bak, ovrl = (
            self.dnsmos(scoring_windows(enhanced, batch.lengths, rng))
            if self.dnsmos is not None
            else (zero, zero, zero)
        )
        intelligibility = (
            batch_stoi(self.stoi, batch.clean, enhanced) if self.stoi_weight > 0 else zero
        )
        loss = -self.dnsmos_weight * ovrl.mean() - self.stoi_weight * intelligibility
        logged = {"sig": sig.mean().item(), "bak": bak.mean().item(), "ovrl": ovrl.mean().item()}
        return loss, logged | {"stoi": intelligibility.item()}

    def loss_terms(self) -> tuple[list[str], list[str]]:
        """(the terms this adds to the loss's record, the quality predictors among them)."""
        terms, predictors = [], []
        if self.dnsmos_weight:
            terms.append(f"− {self.dnsmos_weight:g} × mean DNSMOS P.835 OVRL of the output")
            predictors.append("DNSMOS P.835")
        if self.stoi_weight:
            terms.append(f"− {self.stoi_weight:g} × mean STOI of the output")
        return terms, predictors


def research_finetune(args: argparse.Namespace) -> Path:
    """Run (or resume) the fine-tune with the research terms; returns the checkpoint path."""
    terms = ResearchTerms(args.dnsmos_weight, args.stoi_weight)
    added, predictors = terms.loss_terms()
    loss = loss_record(args, added) | {"quality_predictors": predictors}
    return finetune(args, terms, loss, trainer="model.research.dnsmos_finetune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options: ``model.audio_finetune``'s, with its loss off by default, and the
    research terms."""
    parser = option_parser(__doc__.split("\n")[0])
    parser.set_defaults(
        minutes=45.0, spectral_weight=0.0, spectral_reference="clean", teacher_blend=0.0, threads=2
    )
    parser.add_argument(
        "--stoi-weight", type=float, default=0.0, help="weight of the STOI term (subtracted)"
    )
    parser.add_argument(
        "--dnsmos-weight", type=float, default=1.0, help="weight of DNSMOS OVRL (subtracted)"
    )
    parser.add_argument("--export", default=None, help="export the result here (fp32 + int8)")
    args = parser.parse_args(argv)
    check_options(parser, args)
    if args.export and Path(args.export).resolve() == WEIGHTS_DIR.resolve():
        parser.error(
            "--export: weights fine-tuned against DNSMOS are never shipped; export elsewhere"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m model.research.dnsmos_finetune``."""
    args = parse_args(argv)
    checkpoint = research_finetune(args)
    print(checkpoint, flush=True)
    if args.export:
        print(json.dumps(export_all(load_checkpoint(checkpoint), Path(args.export))), flush=True)


if __name__ == "__main__":
    main()
