"""How a model's band gains sit against the oracle targets, by target range and SNR.

A diagnostic of the estimator, not a quality score: for every frame and band of the dev
mixtures (bands above the speech source's bandwidth left out), the oracle gain that
``dsp/`` computes from the clean reference puts the band in a target range, and the table gives
the model's mean gain there and its median ratio to the target in dB. A well-calibrated model
sits near 0 dB in every row; residual noise shows as positive ratios in the low ranges, lost
speech as negative ratios in the high ones.

    python -m model.research.gain_calibration --per-snr 8 --seed 1 [--model PATH.onnx]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp.constants import LOOKAHEAD_HOPS
from dsp.offline import compute_oracle_targets
from model.devset import DEV_SNRS_DB, DevMixture, build_dev_mixtures, require_data_dir
from model.feature_cache import band_mask

TARGET_EDGES = (0.0, 0.03, 0.1, 0.3, 0.5, 0.8, 1.0 + 1e-6)
RATIO_FLOOR = 1e-3  # gains and targets are floored here (−60 dB) before their ratio is taken

# features [frames, NUM_FEATURES] -> gains [frames, NUM_BANDS]
GainsOf = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CalibrationRow:
    """The model's gains where the oracle target lies in [low, high) at one SNR."""

    snr_db: float
    low: float
    high: float
    count: int  # frame-bands
    mean_target: float
    mean_gain: float
    median_ratio_db: float


def streaming_gains(model_path: Path) -> GainsOf:
    """The gains a model's streaming runtime gives each frame of a feature sequence, aligned to
    the frames (the runtime answers for the frame ``LOOKAHEAD_HOPS`` before its input; the last
    frames, which would need features past the end, repeat the last answer)."""
    from model.runtime import ModelGainSource, ModelRuntime

    runtime = ModelRuntime(model_path)

    def gains_of(features: np.ndarray) -> np.ndarray:
        source = ModelGainSource(runtime)
        answers = np.array([source.gains_for(row)[0] for row in features])
        aligned = answers[LOOKAHEAD_HOPS:]
        tail = np.repeat(aligned[-1:], LOOKAHEAD_HOPS, axis=0)
        return np.concatenate([aligned, tail])

    return gains_of


def calibration(mixtures: Sequence[DevMixture], gains_of: GainsOf) -> list[CalibrationRow]:
    """Rows for every SNR and target range that holds any frame-band, SNR first."""
    pairs: dict[tuple[float, int], tuple[list[np.ndarray], list[np.ndarray]]] = {}
    ranges = list(zip(TARGET_EDGES[:-1], TARGET_EDGES[1:], strict=True))
    for mixture in mixtures:
        oracle = compute_oracle_targets(mixture.noisy, mixture.clean)
        gains = gains_of(oracle.features)
        if gains.shape != oracle.gains.shape:
            raise ValueError(f"gains of shape {gains.shape}, expected {oracle.gains.shape}")
        kept = band_mask(mixture.source_rate / 2).astype(bool)
        targets, predicted = oracle.gains[:, kept], gains[:, kept]
        for index, (low, high) in enumerate(ranges):
            where = (targets >= low) & (targets < high)
            bucket = pairs.setdefault((mixture.snr_db, index), ([], []))
            bucket[0].append(targets[where])
            bucket[1].append(predicted[where])
    rows = []
    for (snr_db, index), (target_parts, gain_parts) in sorted(pairs.items()):
        target, gain = np.concatenate(target_parts), np.concatenate(gain_parts)
        if target.size == 0:
            continue
        ratio_db = 20 * np.log10(np.maximum(gain, RATIO_FLOOR) / np.maximum(target, RATIO_FLOOR))
        low, high = ranges[index]
        rows.append(
            CalibrationRow(
                snr_db=snr_db,
                low=low,
                high=min(high, 1.0),
                count=int(target.size),
                mean_target=float(target.mean()),
                mean_gain=float(gain.mean()),
                median_ratio_db=float(np.median(ratio_db)),
            )
        )
    return rows


def to_markdown(rows: Sequence[CalibrationRow]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| SNR (dB) | oracle target | frame-bands | mean target | mean model gain "
        "| median gain / target (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.snr_db:+g} | {row.low:g}–{row.high:g} | {row.count} | "
            f"{row.mean_target:.3f} | {row.mean_gain:.3f} | {row.median_ratio_db:+.1f} |"
        )
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from model.runtime import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="python -m model.research.gain_calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model")
    parser.add_argument("--per-snr", type=int, default=8, help="mixtures per SNR (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("dev", "train"), default="dev")
    parser.add_argument("--data-dir", type=Path, help="default: $PNR_DATA_DIR or ../shared/data")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the calibration table of a model on the dev mixtures."""
    args = _parse_args(argv)
    try:
        data_dir = require_data_dir(args.data_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        gains_of = streaming_gains(args.model)
    except (OSError, ValueError) as exc:  # a missing or altered model file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mixtures = build_dev_mixtures(
        data_dir, per_snr=args.per_snr, snrs_db=DEV_SNRS_DB, seed=args.seed, split=args.split
    )
    print(to_markdown(calibration(mixtures, gains_of)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
