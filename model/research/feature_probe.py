"""Does the noisy spectrum hold what the network's gains lack? A linear probe of its error.

The shipped network reads 70 features per hop (34 band energies, 34 pitch coherences, the pitch
period and correlation) and its gains stand about one PESQ-WB point under the oracle's. Is
that the estimator not using what it reads (capacity, data), or the features not carrying what
the gains need? For every frame of two sets of mixtures this probe takes the model's error
against a target, r = √g_target − √g_model per band (the oracle's gains, or with ``--target
blend`` the training targets' mix of the oracle's and DeepFilterNet3's), and fits ridge
regressions from

- ``state``: the network's recurrent state after the frame's look-ahead (every GRU layer) and
  its own gains: what a refit of its output layer could do with what it already computed;
- ``state+lowbins``: that and the log power of each 50-Hz bin up to 1 kHz, for the frame and
  its two look-ahead frames (60 values): the harmonics the two-bin bands average away;
- ``state+flatness``: that and each band's spectral flatness (geometric over arithmetic mean of
  its bins' power, in dB) for the same three frames (102 values);
- ``state+spectrum``: that and the log power of every bin below 8 kHz for the same three frames
  (483 values): all the frame-resolution spectrum the features summarise;

on mixtures drawn from one side of the split (``--fit-split``, training by default) and scores
them on the pinned 60 dev mixtures: the share of the error's mean square each explains there,
by frequency region. Bands above a speech source's bandwidth are left out. ``--score-refit OUT``
also enhances the pinned 60 with the ``state`` readout added to the gains (``--refit-above G``:
only in bands where the model's gain is at least G) and scores it. A research probe (linear, so
a lower bound on what a network could draw from the same inputs), not a quality score.

    python -m model.research.feature_probe --fit-split train --fit-seed 3 --per-snr 16
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp.bands import BIN_HZ, make_band_layout
from dsp.constants import HOP_SAMPLES, LOOKAHEAD_HOPS, NUM_BANDS, WINDOW_SAMPLES
from dsp.offline import compute_oracle_targets, enhance_signal
from dsp.window import vorbis_window
from model.devset import DevMixture, build_dev_mixtures, require_data_dir
from model.evaluate import MODEL_SYSTEM_NAME, System
from model.feature_cache import band_mask
from model.research.dev_probe import score_and_write
from model.runtime import ModelRuntime
from model.teacher import blend_targets, teacher_targets

FP32_MODEL = Path(__file__).resolve().parents[1] / "weights" / "percepnet-fp32.onnx"
LOW_BINS = 20  # 50 Hz … 1 kHz
SPECTRUM_BINS = 160  # below 8 kHz: every source's band
CONTEXT_FRAMES = LOOKAHEAD_HOPS + 1  # the frame and its look-ahead frames
POWER_FLOOR = 1e-10
REGIONS_HZ = ((0.0, 1_000.0), (1_000.0, 3_000.0), (3_000.0, 8_000.0), (8_000.0, 20_001.0))
TEACHER_BLEND = 0.5  # the shipped recipe's --teacher-blend
RIDGES = (3e-3, 3e-2, 3e-1, 1.0, 3.0)  # each row reports its best on the held-out set


@dataclass(frozen=True)
class FrameSet:
    """Per-frame inputs of the probe's regressions and the error they predict."""

    blocks: dict[str, np.ndarray]  # name -> float64[frames, dims]
    error: np.ndarray  # float64[frames, NUM_BANDS]
    kept: np.ndarray  # bool[frames, NUM_BANDS]: the band lies within the source's bandwidth
    frames_per_mixture: tuple[int, ...]  # the mixtures' frames, in order


def frame_powers(noisy: np.ndarray, frames: int) -> np.ndarray:
    """|X|² of every analysis frame (frame i: the window ending with hop i), [frames, bins]."""
    padded = np.concatenate([np.zeros(WINDOW_SAMPLES - HOP_SAMPLES), noisy])
    padded = np.pad(padded, (0, max(0, (frames + 1) * HOP_SAMPLES - padded.shape[0])))
    starts = np.arange(frames) * HOP_SAMPLES
    windows = padded[starts[:, None] + np.arange(WINDOW_SAMPLES)] * vorbis_window()
    return np.abs(np.fft.rfft(windows, axis=1)) ** 2


def band_flatness_db(powers: np.ndarray) -> np.ndarray:
    """Each band's spectral flatness in dB over the bins between its neighbours' centres."""
    centres = make_band_layout().centres
    out = np.zeros((powers.shape[0], NUM_BANDS))
    for band in range(NUM_BANDS):
        lo = centres[max(band - 1, 0)]
        hi = centres[min(band + 1, NUM_BANDS - 1)] + 1
        bins = powers[:, lo:hi] + POWER_FLOOR
        out[:, band] = 10 * (np.mean(np.log10(bins), axis=1) - np.log10(np.mean(bins, axis=1)))
    return out


def with_context(values: np.ndarray) -> np.ndarray:
    """Row i: the values of frames i … i + LOOKAHEAD_HOPS side by side (the end repeated)."""
    padded = np.concatenate([values, np.repeat(values[-1:], LOOKAHEAD_HOPS, axis=0)])
    return np.concatenate([padded[k : k + values.shape[0]] for k in range(CONTEXT_FRAMES)], 1)


def model_pass(runtime: ModelRuntime, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gains and recurrent state for every frame, aligned to the frame the gains are for."""
    conv1, conv2, gru = runtime.zero_state(1)
    gains, states = [], []
    for row in features:
        out = runtime.step_batch(row[None].astype(np.float32), conv1, conv2, gru)
        conv1, conv2, gru = out[2], out[3], out[4]
        gains.append(out[0][0])
        states.append(gru[0].copy())
    gains_arr = np.array(gains)[LOOKAHEAD_HOPS:]
    states_arr = np.array(states)[LOOKAHEAD_HOPS:]
    tail = LOOKAHEAD_HOPS
    return (
        np.concatenate([gains_arr, np.repeat(gains_arr[-1:], tail, 0)]),
        np.concatenate([states_arr, np.repeat(states_arr[-1:], tail, 0)]),
    )


def target_root_gains(mixture: DevMixture, oracle_gains: np.ndarray, target: str) -> np.ndarray:
    """√ of the gains the probe measures the model against: the oracle's (``oracle``), or the
    shipped recipe's blend of the oracle's and DeepFilterNet3's (``blend``, half each in the
    √ domain, as ``model.teacher.blend_targets`` mixes them for training)."""
    if target == "oracle":
        return np.sqrt(oracle_gains)
    teacher_gains, _ = teacher_targets(mixture.noisy)
    return np.sqrt(blend_targets(oracle_gains, teacher_gains, TEACHER_BLEND))


def frame_set(mixtures: Sequence[DevMixture], runtime: ModelRuntime, target: str) -> FrameSet:
    """The probe's inputs and target for every frame of ``mixtures``."""
    parts: dict[str, list[np.ndarray]] = {
        "gains_state": [],
        "lowbins": [],
        "flatness": [],
        "spectrum": [],
    }
    errors, kept = [], []
    for mixture in mixtures:
        oracle = compute_oracle_targets(mixture.noisy, mixture.clean)
        gains, state = model_pass(runtime, oracle.features)
        log_powers = np.log10(frame_powers(mixture.noisy, gains.shape[0]) + POWER_FLOOR)
        parts["gains_state"].append(np.concatenate([gains, state], 1))
        parts["lowbins"].append(with_context(log_powers[:, 1 : LOW_BINS + 1]))
        parts["flatness"].append(with_context(band_flatness_db(10**log_powers)))
        parts["spectrum"].append(with_context(log_powers[:, :SPECTRUM_BINS]))
        goal = target_root_gains(mixture, oracle.gains, target)
        errors.append(goal - np.sqrt(np.clip(gains, 0, 1)))
        mask = band_mask(mixture.source_rate / 2).astype(bool)
        kept.append(np.repeat(mask[None], gains.shape[0], 0))
    stacked = {name: np.concatenate(rows).astype(np.float64) for name, rows in parts.items()}
    base = stacked.pop("gains_state")
    blocks = {"state": base}
    for name, extra in stacked.items():
        blocks[f"state+{name}"] = np.concatenate([base, extra], 1)
    return FrameSet(
        blocks=blocks,
        error=np.concatenate(errors),
        kept=np.concatenate(kept),
        frames_per_mixture=tuple(e.shape[0] for e in errors),
    )


def ridge_fit(
    inputs: np.ndarray, target: np.ndarray, mask: np.ndarray, ridge: float
) -> tuple[np.ndarray, ...]:
    """Per-band ridge weights on standardised inputs, each band fit on its kept frames (bands
    that keep the same frames share one solve)."""
    mean, std = inputs.mean(0), inputs.std(0) + 1e-6
    x = np.concatenate([(inputs - mean) / std, np.ones((inputs.shape[0], 1))], 1)
    weights = np.zeros((x.shape[1], target.shape[1]))
    groups: dict[bytes, list[int]] = {}
    for band in range(target.shape[1]):
        groups.setdefault(np.packbits(mask[:, band]).tobytes(), []).append(band)
    for bands in groups.values():
        rows = mask[:, bands[0]]
        if rows.sum() < x.shape[1]:
            continue
        xb = x[rows]
        gram = xb.T @ xb + ridge * xb.shape[0] * np.eye(x.shape[1])
        weights[:, bands] = np.linalg.solve(gram, xb.T @ target[rows][:, bands])
    return mean, std, weights


def ridge_predict(model: tuple[np.ndarray, ...], inputs: np.ndarray) -> np.ndarray:
    mean, std, weights = model
    x = np.concatenate([(inputs - mean) / std, np.ones((inputs.shape[0], 1))], 1)
    return x @ weights


class RefitGainSource:
    """The model's gains corrected by a linear map of its own gains and recurrent state (the
    ``state`` regression): √g + [g, state]·W, clipped to [0, 1], squared; with ``above``, only
    in the bands where the model's own gain is at least that (where it hears speech). A
    ``GainSource``."""

    def __init__(
        self, runtime: ModelRuntime, refit: tuple[np.ndarray, ...], above: float = 0.0
    ) -> None:
        self.runtime = runtime
        self.refit = refit
        self.above = above
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self.state = list(self.runtime.zero_state(1))

    def gains_for(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corrected gains and the model's strengths for the frame two hops back."""
        row = np.asarray(features, dtype=np.float32)[None]
        gains, strengths, *self.state = self.runtime.step_batch(row, *self.state)
        inputs = np.concatenate([gains[0], self.state[2][0]])[None].astype(np.float64)
        correction = ridge_predict(self.refit, inputs)[0] * (gains[0] >= self.above)
        root = np.sqrt(np.clip(gains[0], 0, 1)) + correction
        return (np.clip(root, 0, 1) ** 2).astype(np.float32), strengths[0]


def refit_system(
    runtime: ModelRuntime,
    refit: tuple[np.ndarray, ...],
    ridge: float,
    target: str,
    above: float = 0.0,
) -> System:
    """The refit model driving the enhancer, as the system ``percepnet``."""

    def process(noisy: np.ndarray) -> np.ndarray:
        source = RefitGainSource(runtime, refit, above)
        return enhance_signal(np.asarray(noisy, dtype=np.float64), source).astype(np.float64)

    description = (
        f"PercepNet, {runtime.path.name}, gains refit on its state toward the {target} targets"
        f" (ridge {ridge:g}{f', bands with gain ≥ {above:g} only' if above else ''})"
    )
    return System(MODEL_SYSTEM_NAME, process, description=description)


def explained_by_region(error: np.ndarray, predicted: np.ndarray, kept: np.ndarray) -> list[float]:
    """Share of the error's mean square removed by subtracting ``predicted``, per region."""
    centres_hz = make_band_layout().centres * BIN_HZ
    shares = []
    for lo, hi in REGIONS_HZ:
        bands = (centres_hz >= lo) & (centres_hz < hi)
        where = kept & bands[None]
        before = float(np.mean(error[where] ** 2))
        after = float(np.mean((error - predicted)[where] ** 2))
        shares.append(1 - after / before)
    return shares


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model.research.feature_probe")
    parser.add_argument("--model", type=Path, default=FP32_MODEL)
    parser.add_argument("--fit-split", choices=("train", "dev"), default="train")
    parser.add_argument("--fit-seed", type=int, default=3)
    parser.add_argument("--per-snr", type=int, default=16, help="fitting mixtures per SNR")
    parser.add_argument(
        "--target",
        choices=("oracle", "blend"),
        default="oracle",
        help="the gains the model's error is taken against (blend: the training targets' mix "
        "of the oracle's and DeepFilterNet3's)",
    )
    parser.add_argument("--data-dir", type=Path, help="default: $PNR_DATA_DIR or ../shared/data")
    parser.add_argument(
        "--score-refit",
        type=Path,
        metavar="OUT",
        help="also score the model with the `state` refit on the pinned 60 (results in OUT); "
        "its ridge is chosen on the last fifth of the fitting mixtures, never on the pinned 60",
    )
    parser.add_argument(
        "--refit-above",
        type=float,
        default=0.0,
        metavar="G",
        help="apply the scored refit only in bands where the model's own gain is at least G",
    )
    return parser.parse_args(argv)


def chosen_refit(fit: FrameSet) -> tuple[float, tuple[np.ndarray, ...]]:
    """The ``state`` regression with the ridge that does best on the fitting set's last fifth
    of mixtures when fit on the rest, refit on all of them."""
    counts = fit.frames_per_mixture
    split = int(np.sum(counts[: len(counts) * 4 // 5]))
    inputs = fit.blocks["state"]
    scores = []
    for ridge in RIDGES:
        model = ridge_fit(inputs[:split], fit.error[:split], fit.kept[:split], ridge)
        shares = explained_by_region(
            fit.error[split:], ridge_predict(model, inputs[split:]), fit.kept[split:]
        )
        scores.append(float(np.mean(shares)))
        print(f"refit ridge {ridge:g}: {np.mean(shares):+.3f} on the fitting set's last fifth")
    ridge = RIDGES[int(np.argmax(scores))]
    return ridge, ridge_fit(inputs, fit.error, fit.kept, ridge)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        data_dir = require_data_dir(args.data_dir)
        runtime = ModelRuntime(args.model)
    except (OSError, ValueError) as exc:  # no data, or a missing or altered model file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fit_mixtures = build_dev_mixtures(
        data_dir, per_snr=args.per_snr, seed=args.fit_seed, split=args.fit_split
    )
    test_mixtures = build_dev_mixtures(data_dir)  # the pinned 60
    fit = frame_set(fit_mixtures, runtime, args.target)
    test = frame_set(test_mixtures, runtime, args.target)
    region_names = [f"{lo / 1000:g}–{hi / 1000:g} kHz" for lo, hi in REGIONS_HZ]
    print(
        f"fit: {len(fit_mixtures)} mixtures ({fit.error.shape[0]} frames, {args.fit_split} "
        f"split, seed {args.fit_seed}); scored on the pinned {len(test_mixtures)} "
        f"({test.error.shape[0]} frames)"
    )
    print("| inputs | dims | " + " | ".join(region_names) + " | (fit set, mean) | ridge |")
    print("|---|---|" + "---|" * (len(REGIONS_HZ) + 2))
    for name, inputs in fit.blocks.items():
        best: tuple[float, list[float], list[float]] | None = None
        for ridge in RIDGES:
            model = ridge_fit(inputs, fit.error, fit.kept, ridge)
            held_out = explained_by_region(
                test.error, ridge_predict(model, test.blocks[name]), test.kept
            )
            if best is None or np.mean(held_out) > np.mean(best[1]):
                in_sample = explained_by_region(fit.error, ridge_predict(model, inputs), fit.kept)
                best = (ridge, held_out, in_sample)
        assert best is not None
        cells = " | ".join(f"{share:+.3f}" for share in best[1])
        print(
            f"| {name} | {inputs.shape[1]} | {cells} | {np.mean(best[2]):+.3f} | {best[0]:g} |",
            flush=True,
        )
    if args.score_refit is not None:
        ridge, refit = chosen_refit(fit)
        config = {
            "probe": "feature_probe --score-refit",
            "target": args.target,
            "ridge": ridge,
            "refit_above": args.refit_above,
            "model": str(args.model),
        }
        systems = {
            MODEL_SYSTEM_NAME: refit_system(runtime, refit, ridge, args.target, args.refit_above)
        }
        score_and_write(systems, test_mixtures, args.score_refit, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
