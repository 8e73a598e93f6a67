"""Inputs of the fine-tune tests (``test_audio_finetune``, ``test_dnsmos_finetune``): short
synthetic clips, generated, never stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.devset import DevMixture

RATE = 48_000


def voiced_noisy(seconds: float, seed: int = 0) -> np.ndarray:
    """A pitched, amplitude-modulated tone in white noise (exercises pitch and comb)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = 0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return voiced + 0.02 * rng.standard_normal(t.size)


def synthetic_mixture(seconds: float, seed: int) -> DevMixture:
    """A voiced tone in white noise as a 48 kHz dev mixture (full-band source)."""
    noisy = voiced_noisy(seconds, seed)
    t = np.arange(noisy.size) / RATE
    clean = 0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return DevMixture(
        name=f"synthetic-{seed}",
        clean=clean,
        noisy=noisy,
        snr_db=5.0,
        speech_path=Path("speech.wav"),
        noise_path=Path("noise.wav"),
        source_rate=RATE,
    )


def one_step_argv(out: Path, data_dir: Path) -> list[str]:
    """A fine-tune of the shipped fp32 weights for one step of one mixture, on one thread."""
    weights = Path(__file__).resolve().parents[1] / "model" / "weights" / "percepnet-fp32.onnx"
    options = {"--init-from": weights, "--out": out, "--minutes": 0.001, "--batch": 1}
    options |= {"--data-dir": data_dir, "--threads": 1}
    return [str(item) for pair in options.items() for item in pair]


def one_step_runs(out: Path, data_dir: Path, variants: dict[str, list[str]]) -> dict[str, Any]:
    """One step of ``one_step_argv``'s fine-tune per variant (its extra options), each run in
    its own folder under ``out``: {variant: the run's loaded checkpoint}. The same seed draws the
    same mixture for every variant."""
    import torch

    from model.audio_finetune import finetune, parse_args

    return {
        name: torch.load(
            finetune(parse_args(one_step_argv(out / name, data_dir) + extra)), weights_only=False
        )
        for name, extra in variants.items()
    }


def weights_differ(run: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two checkpoints' network weights differ anywhere."""
    import torch

    return any(not torch.equal(run["model"][key], other["model"][key]) for key in run["model"])
