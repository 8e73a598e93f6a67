"""How well the relay's voice activity tells speech from noise: hit and false-alarm rates.

Runs the relay's speaker pipeline (``service.speaker``, the shipped int8 model) over dev
mixtures 20 ms frame by frame, and over each mixture's noise alone at the level it has there
(a silent participant with background noise), and judges every output frame as
``service.voice_activity`` does. A frame is speech when the clean reference of the frame its
gains answer for lies within ``SPEECH_WITHIN_DB`` of the utterance's loud frames, noise-only
when it lies more than ``NOISE_BELOW_DB`` under them (every frame of the noise alone is);
frames between are left out. Per threshold: the share of speech frames above it (hit), of
noise-only frames above it (false alarm), and with the relay's 500 ms hangover the share of
speech frames covered and of noise-alone frames that count as speaking (what costs encodes).
``--pesq-snr`` adds what leaving out the frames of a speaker not speaking costs in PESQ-WB on
the pinned dev mixtures at that SNR.

    python -m loadtest.voice_activity_rates --per-snr 6 --seed 1 [--pesq-snr 0]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp.constants import DELAY_SAMPLES, HOP_SAMPLES, LOOKAHEAD_HOPS
from model.devset import DevMixture, build_dev_mixtures, require_data_dir
from model.evaluate import pesq_wb
from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.audio_frames import FRAME_SAMPLES
from service.speaker import EnhancementSettings, ProcessResult, SpeakerPipeline
from service.voice_activity import HANGOVER_FRAMES, VoiceActivity, level_db

SNRS_DB = (0.0, 5.0, 10.0, 15.0)
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
SPEECH_WITHIN_DB = 20.0  # a speech frame is this close to the utterance's loud frames
NOISE_BELOW_DB = 45.0  # a noise-only frame is this far under them
LOUD_QUANTILE = 0.7  # the frame level that stands for "the utterance's loud frames"
PEAK = 0.5  # mixtures are scaled to this peak, as the load test scales its participants


@dataclass(frozen=True)
class Rates:
    """One threshold's rates (shares of frames, 0–1)."""

    threshold: float
    hit: float
    false_alarm: float
    speech_covered: float  # with the hangover
    noise_speaking: float  # with the hangover, frames of the noise alone


def enhance_frames(runtime: ModelRuntime, signal: np.ndarray) -> list[ProcessResult]:
    """The relay's output frames (with their speech probabilities) for ``signal``."""
    pipeline = SpeakerPipeline(runtime, EnhancementSettings())
    frames = signal.shape[0] // FRAME_SAMPLES
    parts = signal[: frames * FRAME_SAMPLES].astype(np.float32).reshape(frames, FRAME_SAMPLES)
    return [pipeline.process(part) for part in parts]


def frame_labels(clean: np.ndarray) -> np.ndarray:
    """Per output frame: 1 speech, 0 noise-only, -1 left out (the gains of output frame k
    answer for input frame k - 1: two hops of lookahead)."""
    frames = clean.shape[0] // FRAME_SAMPLES
    parts = clean[: frames * FRAME_SAMPLES].reshape(frames, FRAME_SAMPLES)
    levels = np.array([level_db(part) for part in parts])
    loud = float(np.quantile(levels, LOUD_QUANTILE))
    labels = np.full(frames, -1)
    shift = LOOKAHEAD_HOPS * HOP_SAMPLES // FRAME_SAMPLES
    labels[shift:][levels[:-shift] > loud - SPEECH_WITHIN_DB] = 1
    labels[shift:][levels[:-shift] < loud - NOISE_BELOW_DB] = 0
    return labels


def decisions(frames: Sequence[ProcessResult], threshold: float, hangover: int) -> np.ndarray:
    """Whether the relay's voice activity counts each frame as speaking."""
    voice = VoiceActivity(threshold, hangover_frames=hangover)
    return np.array([voice.update(f.samples, f.speech_probability) for f in frames])


def rates(
    streams: Sequence[tuple[Sequence[ProcessResult], np.ndarray]],
    noise_alone: Sequence[Sequence[ProcessResult]],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[Rates]:
    """Rates over labelled streams (frames, labels) and streams of noise alone."""
    rows = []
    for threshold in thresholds:
        frame_speech, frame_noise, held_speech, held_noise = [], [], [], []
        for frames, labels in streams:
            now = decisions(frames, threshold, 0)
            held = decisions(frames, threshold, HANGOVER_FRAMES)
            frame_speech.append(now[labels == 1])
            frame_noise.append(now[labels == 0])
            held_speech.append(held[labels == 1])
        for frames in noise_alone:
            frame_noise.append(decisions(frames, threshold, 0))
            held_noise.append(decisions(frames, threshold, HANGOVER_FRAMES))
        rows.append(
            Rates(
                threshold=threshold,
                hit=float(np.concatenate(frame_speech).mean()),
                false_alarm=float(np.concatenate(frame_noise).mean()),
                speech_covered=float(np.concatenate(held_speech).mean()),
                noise_speaking=float(np.concatenate(held_noise).mean()) if held_noise else 0.0,
            )
        )
    return rows


def measure(
    runtime: ModelRuntime, mixtures: Sequence[DevMixture], thresholds: Sequence[float]
) -> list[Rates]:
    """Rates of the relay's voice activity on ``mixtures`` and their noise alone."""
    streams, noise_alone = [], []
    for mixture in mixtures:
        scale = PEAK / (float(np.max(np.abs(mixture.noisy))) or 1.0)
        streams.append(
            (enhance_frames(runtime, mixture.noisy * scale), frame_labels(mixture.clean * scale))
        )
        noise_alone.append(enhance_frames(runtime, (mixture.noisy - mixture.clean) * scale))
    return rates(streams, noise_alone, thresholds)


def pesq_cost(
    runtime: ModelRuntime, mixture: DevMixture, thresholds: Sequence[float]
) -> list[float]:
    """PESQ-WB of the enhanced mixture less that of the same with the frames of a speaker not
    speaking (with the hangover) silenced, per threshold."""
    padded = np.concatenate([mixture.noisy, np.zeros(DELAY_SAMPLES + FRAME_SAMPLES)])
    frames = enhance_frames(runtime, padded)
    span = slice(DELAY_SAMPLES, DELAY_SAMPLES + mixture.clean.shape[0])
    full = pesq_wb(mixture.clean, np.concatenate([f.samples for f in frames])[span])
    costs = []
    for threshold in thresholds:
        kept = decisions(frames, threshold, HANGOVER_FRAMES)
        gated = np.concatenate([f.samples * k for f, k in zip(frames, kept, strict=True)])
        try:
            costs.append(full - pesq_wb(mixture.clean, gated[span]))
        except ValueError:  # the pesq package fails on some mostly silent signals
            costs.append(math.nan)
    return costs


def to_markdown(rows: Sequence[Rates]) -> str:
    """The rates as a Markdown table."""
    lines = [
        "| threshold | speech frames above | noise-only frames above "
        "| speech covered (hangover) | noise counted as speaking (hangover) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.threshold:g} | {r.hit:.3f} | {r.false_alarm:.3f} | {r.speech_covered:.3f} "
            f"| {r.noise_speaking:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.voice_activity_rates", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model")
    parser.add_argument("--per-snr", type=int, default=6, help="mixtures per SNR (default 6)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pesq-snr", type=float, help="also the PESQ-WB cost at this SNR")
    parser.add_argument("--data-dir", type=Path, help="default: $PNR_DATA_DIR or ../shared/data")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the rates of the relay's voice activity on dev mixtures at 0–15 dB SNR."""
    args = _parse_args(argv)
    try:
        data_dir = require_data_dir(args.data_dir)
        runtime = ModelRuntime(args.model)
    except (OSError, ValueError) as exc:  # no data, a missing or altered model file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mixtures = build_dev_mixtures(data_dir, per_snr=args.per_snr, snrs_db=SNRS_DB, seed=args.seed)
    print(to_markdown(measure(runtime, mixtures, THRESHOLDS)), end="")
    if args.pesq_snr is not None:
        pinned = build_dev_mixtures(data_dir, snrs_db=(args.pesq_snr,))
        costs = np.nanmean([pesq_cost(runtime, m, THRESHOLDS) for m in pinned], axis=0)
        print(
            f"\nPESQ-WB cost of leaving out frames not speaking, {len(pinned)} pinned mixtures "
            f"at {args.pesq_snr:g} dB: "
            + ", ".join(f"{t:g}: {c:.3f}" for t, c in zip(THRESHOLDS, costs, strict=True))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
