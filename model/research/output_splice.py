"""Two enhancers' outputs spliced in time or in frequency, scored on the dev mixtures.

Where in the signal does one system's lead on a metric live? Each splice takes one system's
output in one part of the signal and the other's elsewhere, both first scaled to the clean
speech's energy (so that no level step marks the seams), and goes through ``model.evaluate``
like any system. A research probe; nothing on the shipped path reads it.

    python -m model.research.output_splice --out runs/splice

Splices: ``speech:A/B`` (A in the 10 ms frames where the clean speech is within
``ACTIVE_WITHIN_DB`` of its loudest, widened by ``ACTIVE_HANG_FRAMES`` each side, B elsewhere)
and ``below:HZ:A/B`` (A below HZ, B above, joined by ``model.audio_finetune.crossover``), with
A and B each ``model`` (the shipped int8, or ``--model``) or ``rnnoise``; ``model`` and
``rnnoise`` alone are the two outputs, scaled. Each output is made once and shared by every
splice that reads it, so the table's CPU column times the splicing, not the enhancers.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import binary_dilation

from model.audio_finetune import crossover
from model.devset import build_dev_mixtures, require_data_dir
from model.evaluate import System, model_system
from model.mixtures import FRAME_SAMPLES, frame_powers
from model.research.dev_probe import add_dev_options, score_and_write
from model.rnnoise_baseline import rnnoise_enhance

ACTIVE_WITHIN_DB = 30.0
ACTIVE_HANG_FRAMES = 4
SOURCES = ("model", "rnnoise")
DEFAULT_SPLICES = (
    "model",
    "rnnoise",
    "speech:model/rnnoise",
    "speech:rnnoise/model",
    "below:500:model/rnnoise",
    "below:1000:model/rnnoise",
    "below:3000:model/rnnoise",
    "below:1000:rnnoise/model",
)

Enhance = Callable[[np.ndarray], np.ndarray]


def scaled_to(reference: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """``signal`` scaled to the energy of ``reference`` (a silent signal stays silent)."""
    energy = float(np.sum(np.square(signal)))
    if energy <= 0.0:
        return np.array(signal, dtype=np.float64)
    return signal * np.sqrt(float(np.sum(np.square(reference))) / energy)


def speech_activity(clean: np.ndarray) -> np.ndarray:
    """Per sample, 1 where the clean speech is active and 0 in its pauses, ramped linearly
    between the centres of 10 ms frames (:data:`ACTIVE_WITHIN_DB`, :data:`ACTIVE_HANG_FRAMES`)."""
    powers = frame_powers(clean)
    active = powers >= powers.max() * 10 ** (-ACTIVE_WITHIN_DB / 10)
    widened = binary_dilation(active, iterations=ACTIVE_HANG_FRAMES)
    centres = np.arange(powers.shape[0]) * FRAME_SAMPLES + FRAME_SAMPLES / 2
    return np.interp(np.arange(clean.shape[0]), centres, widened.astype(np.float64))


Join = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (A, B, clean) -> spliced


def take_first(first: np.ndarray, second: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """A alone."""
    return first


def join_by_speech(first: np.ndarray, second: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """A where the clean speech is active, B in its pauses."""
    activity = speech_activity(clean)
    return activity * first + (1.0 - activity) * second


def join_below(cutoff_hz: float) -> Join:
    """A below ``cutoff_hz``, B above."""
    return lambda first, second, clean: crossover(first, second, cutoff_hz)[: clean.shape[0]]


def parse_splice(spec: str) -> tuple[str, str, Join]:
    """(A, B, how they are joined) of a splice; ValueError names what is wrong."""
    if spec in SOURCES:
        return spec, spec, take_first
    kind, *fields = spec.split(":")
    if kind not in ("speech", "below") or len(fields) != (1 if kind == "speech" else 2):
        known = "model, rnnoise, speech:A/B, below:HZ:A/B"
        raise ValueError(f"unknown splice {spec!r}; known: {known}")
    pair = fields[-1].split("/")
    if len(pair) != 2 or any(name not in SOURCES for name in pair):
        raise ValueError(f"splice {spec!r}: A/B must name two of {', '.join(SOURCES)}")
    if kind == "speech":
        return pair[0], pair[1], join_by_speech
    try:
        cutoff_hz = float(fields[0])
    except ValueError:
        raise ValueError(f"splice {spec!r}: the crossover must be a number of Hz") from None
    if not cutoff_hz > 0:
        raise ValueError(f"splice {spec!r}: the crossover must be above 0 Hz")
    return pair[0], pair[1], join_below(cutoff_hz)


class OutputCache:
    """Each source's output on a mixture, computed once however many splices read it."""

    def __init__(self, sources: dict[str, Enhance]) -> None:
        self.sources = sources
        self._outputs: dict[tuple[str, str], np.ndarray] = {}

    def output(self, name: str, noisy: np.ndarray) -> np.ndarray:
        """``name``'s output on ``noisy``, as long as it."""
        digest = hashlib.sha256(np.asarray(noisy, dtype=np.float64).tobytes()).hexdigest()
        key = (name, digest)
        if key not in self._outputs:
            self._outputs[key] = np.asarray(self.sources[name](noisy), dtype=np.float64)
        return self._outputs[key]


def splice_system(spec: str, cache: OutputCache) -> System:
    """The splice ``spec`` as a system (it reads the clean speech: scaling and activity)."""
    first, second, join = parse_splice(spec)

    def process(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
        a = scaled_to(clean, cache.output(first, noisy))
        b = scaled_to(clean, cache.output(second, noisy))
        return join(a, b, clean)

    return System(spec, process, needs_clean=True, description=f"splice {spec}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model.research.output_splice", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--splices", nargs="+", default=list(DEFAULT_SPLICES))
    add_dev_options(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Score the splices on the dev mixtures; write ``results.json`` and the Markdown table."""
    args = _parse_args(argv)
    try:
        for spec in args.splices:
            parse_splice(spec)
        model = model_system(args.model)
        mixtures = build_dev_mixtures(require_data_dir(args.data_dir), seed=args.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = OutputCache({"model": model, "rnnoise": rnnoise_enhance})
    systems = {spec: splice_system(spec, cache) for spec in args.splices}
    score_and_write(systems, mixtures, args.out, {"seed": args.seed, "model": str(args.model)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
