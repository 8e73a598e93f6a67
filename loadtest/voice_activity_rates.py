"""How well the relay's voice activity tells speech from noise: hit and false-alarm rates.

Runs the relay's speaker pipeline (``service.speaker``, the shipped int8 model) over dev
mixtures 20 ms frame by frame, and over each mixture's noise alone at the level it has there
(a silent participant with background noise), and judges every output frame as
``service.voice_activity`` does, with the ``kept_snr`` rule and the ``gain`` rule at several
thresholds. A frame is speech when the clean reference of the frame its gains answer for lies
within ``SPEECH_WITHIN_DB`` of the utterance's loud frames, noise-only when it lies more than
``NOISE_BELOW_DB`` under them (every frame of the noise alone is); frames between are left out.
Per rule: the share of speech frames that would start speech on their own (hit), of noise-only
frames that would (false alarm), and with the rule's hangover the share of speech frames
covered (of all, and of those the enhancer leaves audible, above ``QUIET_DB``) and of
noise-alone frames that count as speaking (what costs encodes; also without each stream's
first second, where the ``kept_snr`` rule falls back on the gains); then the rule's cost in µs
per frame per speaker. ``--pesq-snr`` adds what leaving out the frames of a speaker not
speaking costs in PESQ-WB on the pinned dev mixtures at that SNR.

    python -m loadtest.voice_activity_rates --per-snr 12 --seed 1 [--pesq-snr 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp.constants import DELAY_SAMPLES, HOP_SAMPLES, LOOKAHEAD_HOPS, NUM_BANDS
from dsp.speech_presence import kept_to_noise_db, new_tracker
from model.devset import DevMixture, build_dev_mixtures, require_data_dir
from model.evaluate import pesq_wb
from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.audio_frames import FRAME_SAMPLES
from service.speaker import EnhancementSettings, ProcessResult, SpeakerPipeline
from service.voice_activity import QUIET_DB, WARM_UP_FRAMES, Rule, VoiceActivity, level_db

SNRS_DB = (0.0, 5.0, 10.0, 15.0)
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
SPEECH_WITHIN_DB = 20.0  # a speech frame is this close to the utterance's loud frames
NOISE_BELOW_DB = 45.0  # a noise-only frame is this far under them
LOUD_QUANTILE = 0.7  # the frame level that stands for "the utterance's loud frames"
PEAK = 0.5  # mixtures are scaled to this peak, as the load test scales its participants
HOPS_PER_FRAME = FRAME_SAMPLES // HOP_SAMPLES


@dataclass(frozen=True)
class Detector:
    """A voice-activity rule as the relay would run it."""

    rule: Rule
    threshold: float = 0.1  # the gain rule's mean gain (0: every frame is speech)

    @property
    def name(self) -> str:
        return self.rule if self.rule == "kept_snr" else f"gain {self.threshold:g}"

    def voice(self) -> VoiceActivity:
        return VoiceActivity(self.threshold, rule=self.rule)


DETECTORS = (Detector("kept_snr"), *(Detector("gain", t) for t in THRESHOLDS))


@dataclass(frozen=True)
class Rates:
    """One rule's rates (shares of frames, 0–1)."""

    detector: str
    hit: float
    false_alarm: float
    speech_covered: float  # with the hangover
    audible_covered: float  # with the hangover, speech frames the enhancer leaves audible
    noise_speaking: float  # with the hangover, frames of the noise alone
    settled_noise_speaking: float  # the same after the first second (the rule's warm-up)


def enhance_frames(runtime: ModelRuntime, signal: np.ndarray) -> list[ProcessResult]:
    """The relay's output frames (with their speech evidence) for ``signal``."""
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


def decisions(frames: Sequence[ProcessResult], detector: Detector) -> np.ndarray:
    """Whether the relay's voice activity counts each frame as speaking."""
    voice = detector.voice()
    return np.array(
        [voice.update(f.samples, f.speech_probability, f.kept_to_noise_db) for f in frames]
    )


def starts(frames: Sequence[ProcessResult], detector: Detector) -> np.ndarray:
    """Whether each frame would start speech on its own (no hangover, no history)."""
    voice = detector.voice()
    return np.array(
        [
            voice.evidence(
                level_db(f.samples),
                f.speech_probability,
                f.kept_to_noise_db,
                warming_up=index < WARM_UP_FRAMES,
            )[0]
            for index, f in enumerate(frames)
        ]
    )


def rates(
    streams: Sequence[tuple[Sequence[ProcessResult], np.ndarray]],
    noise_alone: Sequence[Sequence[ProcessResult]],
    detectors: Sequence[Detector] = DETECTORS,
) -> list[Rates]:
    """Rates over labelled streams (frames, labels) and streams of noise alone."""
    rows = []
    for detector in detectors:
        frame_speech, frame_noise, held_speech, held_audible = [], [], [], []
        held_noise, settled_noise = [], []
        for frames, labels in streams:
            now = starts(frames, detector)
            held = decisions(frames, detector)
            audible = np.array([level_db(f.samples) >= QUIET_DB for f in frames])
            frame_speech.append(now[labels == 1])
            frame_noise.append(now[labels == 0])
            held_speech.append(held[labels == 1])
            held_audible.append(held[(labels == 1) & audible])
        for frames in noise_alone:
            frame_noise.append(starts(frames, detector))
            held = decisions(frames, detector)
            held_noise.append(held)
            settled_noise.append(held[WARM_UP_FRAMES:])
        rows.append(
            Rates(
                detector=detector.name,
                hit=float(np.concatenate(frame_speech).mean()),
                false_alarm=float(np.concatenate(frame_noise).mean()),
                speech_covered=float(np.concatenate(held_speech).mean()),
                audible_covered=float(np.concatenate(held_audible).mean()),
                noise_speaking=float(np.concatenate(held_noise).mean()) if held_noise else 0.0,
                settled_noise_speaking=(
                    float(np.concatenate(settled_noise).mean()) if settled_noise else 0.0
                ),
            )
        )
    return rows


def measure(
    runtime: ModelRuntime, mixtures: Sequence[DevMixture], detectors: Sequence[Detector]
) -> tuple[list[Rates], list[ProcessResult]]:
    """Rates of the relay's voice activity on ``mixtures`` and their noise alone, and every
    enhanced frame of the mixtures (for :func:`cost_us_per_frame`)."""
    streams, noise_alone = [], []
    for mixture in mixtures:
        scale = PEAK / (float(np.max(np.abs(mixture.noisy))) or 1.0)
        streams.append(
            (enhance_frames(runtime, mixture.noisy * scale), frame_labels(mixture.clean * scale))
        )
        noise_alone.append(enhance_frames(runtime, (mixture.noisy - mixture.clean) * scale))
    frames = [f for stream, _ in streams for f in stream]
    return rates(streams, noise_alone, detectors), frames


def cost_us_per_frame(frames: Sequence[ProcessResult], detector: Detector) -> float:
    """What the rule costs per 20 ms frame of one speaker, in µs: its update on the event
    loop, and for ``kept_snr`` the ratio the enhancer works out per hop (timed on stand-in
    gains and band energies: the arithmetic does not depend on their values)."""
    voice = detector.voice()
    started = time.perf_counter()
    for f in frames:
        voice.update(f.samples, f.speech_probability, f.kept_to_noise_db)
    seconds = (time.perf_counter() - started) / len(frames)
    if detector.rule == "kept_snr":
        gains = np.full(NUM_BANDS, 0.5, dtype=np.float32)
        energy, tracker = np.ones(NUM_BANDS), new_tracker()
        kept_to_noise_db(gains, energy, tracker)  # compiled before timing
        started = time.perf_counter()
        for _ in range(len(frames) * HOPS_PER_FRAME):
            kept_to_noise_db(gains, energy, tracker)
        seconds += (time.perf_counter() - started) / len(frames)
    return seconds * 1e6


def pesq_cost(
    runtime: ModelRuntime, mixture: DevMixture, detectors: Sequence[Detector]
) -> list[float]:
    """PESQ-WB of the enhanced mixture less that of the same with the frames of a speaker not
    speaking (with the hangover) silenced, per rule."""
    padded = np.concatenate([mixture.noisy, np.zeros(DELAY_SAMPLES + FRAME_SAMPLES)])
    frames = enhance_frames(runtime, padded)
    span = slice(DELAY_SAMPLES, DELAY_SAMPLES + mixture.clean.shape[0])
    full = pesq_wb(mixture.clean, np.concatenate([f.samples for f in frames])[span])
    costs = []
    for detector in detectors:
        kept = decisions(frames, detector)
        gated = np.concatenate([f.samples * k for f, k in zip(frames, kept, strict=True)])
        try:
            costs.append(full - pesq_wb(mixture.clean, gated[span]))
        except ValueError:  # the pesq package fails on some mostly silent signals
            costs.append(math.nan)
    return costs


def to_markdown(rows: Sequence[Rates]) -> str:
    """The rates as a Markdown table."""
    lines = [
        "| rule | speech frames starting | noise-only frames starting "
        "| speech covered (hangover) | audible speech covered | noise counted as speaking "
        "(hangover) | the same after 1 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.detector} | {r.hit:.3f} | {r.false_alarm:.3f} | {r.speech_covered:.3f} "
            f"| {r.audible_covered:.3f} | {r.noise_speaking:.3f} | {r.settled_noise_speaking:.3f} |"
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
    rows, frames = measure(runtime, mixtures, DETECTORS)
    print(to_markdown(rows), end="")
    print(
        "\nµs per frame per speaker: "
        + ", ".join(f"{d.name}: {cost_us_per_frame(frames, d):.1f}" for d in DETECTORS[:2])
    )
    if args.pesq_snr is not None:
        pinned = build_dev_mixtures(data_dir, snrs_db=(args.pesq_snr,))
        costs = np.nanmean([pesq_cost(runtime, m, DETECTORS) for m in pinned], axis=0)
        print(
            f"\nPESQ-WB cost of leaving out frames not speaking, {len(pinned)} pinned mixtures "
            f"at {args.pesq_snr:g} dB: "
            + ", ".join(f"{d.name}: {c:.3f}" for d, c in zip(DETECTORS, costs, strict=True))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
