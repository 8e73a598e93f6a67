"""Inference-time warps of a model's band gains or comb strengths, scored on the dev mixtures.

A probe of how far post-processing the estimator's output can move the metrics, not a shipped
option: each warp drives the enhancer through ``model.evaluate`` as the system ``percepnet``, so
``python -m model.paired_eval --base-system percepnet_int8 --candidate-system percepnet`` pairs it
with a card run on the same mixtures.

    python -m model.research.gain_warps --warp pow:1.3 --out runs/warp-pow1.3

Warps: ``pow:P`` (every gain to the power P), ``expand:K:P`` (gains below the knee K mapped to
K·(g/K)^P), ``contrast:S:D`` (gains in dB stretched by S about D dB, capped at 1),
``strength:S`` (comb strengths scaled by S, capped at 1), ``decay:A`` (no band's gain falls
faster than the factor A a hop: g_t = max(g_t, A·g_{t-1}), RNNoise's release) and
``no-postfilter``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp.enhancer import GainSource
from dsp.offline import enhance_signal
from model.devset import build_dev_mixtures, require_data_dir
from model.evaluate import MODEL_SYSTEM_NAME, System
from model.research.dev_probe import add_dev_options, score_and_write
from model.runtime import ModelGainSource, ModelRuntime

GAIN_FLOOR = 1e-6
ARITY = {"pow": 1, "expand": 2, "contrast": 2, "strength": 1, "decay": 1, "no-postfilter": 0}

Curve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Warp:
    """What one ``--warp`` changes: a curve on the gains, a scale on the strengths, and
    whether the envelope postfilter runs."""

    spec: str
    gain_curve: Curve | None = None
    strength_scale: float = 1.0
    postfilter: bool = True
    release: float = 0.0  # the most a gain may fall in one hop, as a factor (0: any)


def power_curve(power: float) -> Curve:
    """g → g^power."""
    return lambda g: np.power(np.maximum(g, GAIN_FLOOR), power)


def expansion_curve(knee: float, power: float) -> Curve:
    """Gains below ``knee`` pushed down as knee·(g/knee)^power; the rest left as they are."""
    return lambda g: np.where(g < knee, knee * (np.maximum(g, GAIN_FLOOR) / knee) ** power, g)


def contrast_curve(slope: float, pivot_db: float) -> Curve:
    """Gains in dB stretched by ``slope`` about ``pivot_db``, capped at 1."""

    def curve(g: np.ndarray) -> np.ndarray:
        db = 20.0 * np.log10(np.maximum(g, GAIN_FLOOR))
        return np.minimum(1.0, 10.0 ** ((pivot_db + slope * (db - pivot_db)) / 20.0))

    return curve


def parse_warp(spec: str) -> Warp:
    """A :class:`Warp` from ``kind[:arg…]``; ValueError names what is wrong."""
    kind, *fields = spec.split(":")
    if kind not in ARITY:
        raise ValueError(f"unknown warp {kind!r}; known: {', '.join(ARITY)}")
    if len(fields) != ARITY[kind]:
        raise ValueError(f"warp {kind!r} takes {ARITY[kind]} number(s), got {spec!r}")
    try:
        args = [float(field) for field in fields]
    except ValueError:
        raise ValueError(f"warp {spec!r}: its arguments must be numbers") from None
    if kind in ("pow", "expand", "strength") and not all(a > 0 for a in args):
        raise ValueError(f"warp {spec!r}: its arguments must be positive")
    if kind == "decay" and not 0 < args[0] < 1:
        raise ValueError(f"warp {spec!r}: the factor must lie between 0 and 1")
    if kind == "pow":
        return Warp(spec, gain_curve=power_curve(args[0]))
    if kind == "expand":
        return Warp(spec, gain_curve=expansion_curve(args[0], args[1]))
    if kind == "contrast":
        return Warp(spec, gain_curve=contrast_curve(args[0], args[1]))
    if kind == "strength":
        return Warp(spec, strength_scale=args[0])
    if kind == "decay":
        return Warp(spec, release=args[0])
    return Warp(spec, postfilter=False)


class WarpedGainSource:
    """A ``GainSource`` that passes another's gains and strengths through a :class:`Warp`."""

    def __init__(self, inner: GainSource, warp: Warp) -> None:
        self.inner = inner
        self.warp = warp
        self.last_gains: np.ndarray | None = None

    def reset(self) -> None:
        """Start a new stream."""
        self.inner.reset()
        self.last_gains = None

    def gains_for(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The inner source's gains and strengths, warped."""
        gains, strengths = self.inner.gains_for(features)
        if self.warp.gain_curve is not None:
            gains = self.warp.gain_curve(gains.astype(np.float64)).astype(np.float32)
        if self.warp.strength_scale != 1.0:
            strengths = np.minimum(1.0, strengths * self.warp.strength_scale).astype(np.float32)
        if self.warp.release > 0:
            if self.last_gains is not None:
                gains = np.maximum(gains, self.warp.release * self.last_gains).astype(np.float32)
            self.last_gains = gains
        return gains, strengths


def warped_system(model_path: Path, warp: Warp) -> System:
    """The model driving the enhancer through ``warp``, as the system ``percepnet``."""
    runtime = ModelRuntime(model_path)

    def process(noisy: np.ndarray) -> np.ndarray:
        source = WarpedGainSource(ModelGainSource(runtime), warp)
        signal = np.asarray(noisy, dtype=np.float64)
        return enhance_signal(signal, source, postfilter=warp.postfilter).astype(np.float64)

    return System(
        MODEL_SYSTEM_NAME, process, description=f"PercepNet, {model_path.name}, {warp.spec}"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model.research.gain_warps", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--warp", required=True, help="pow:P, expand:K:P, contrast:S:D, …")
    add_dev_options(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Score one warp on the dev mixtures; write ``results.json`` and the Markdown table."""
    args = _parse_args(argv)
    try:
        warp = parse_warp(args.warp)
        system = warped_system(args.model, warp)
        mixtures = build_dev_mixtures(require_data_dir(args.data_dir), seed=args.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = {"seed": args.seed, "warp": warp.spec}
    score_and_write({MODEL_SYSTEM_NAME: system}, mixtures, args.out, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
