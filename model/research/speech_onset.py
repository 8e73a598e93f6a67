"""How much of the speech in a dev mixture's first few hundred milliseconds an enhancer keeps.

A diagnostic of the start of a stream, when the network's state is still empty. For each dev
mixture whose reference opens with speech (the level of its first ``--window-ms`` within 20 dB
of its loudest 100 ms), the table gives each system's output level over that window against
the reference's, in dB: 0 keeps the opening, −15 mutes it. Mixtures whose speech starts later
are counted, not listed. For comparison, a last line gives the same measure at the speech
onsets past every file's opening window: a 10 ms frame within 20 dB of the loudest, after at
least 200 ms of frames 30 dB or more below it. The model runs as ``percepnet-relay eval`` runs
it (the streaming enhancer over the whole file). RNNoise is the baseline; ``--deepfilternet3``
adds DeepFilterNet3.

    python -m model.research.speech_onset [--model PATH.onnx] [--window-ms 300] [--deepfilternet3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.devset import DEV_SNRS_DB, DevMixture, build_dev_mixtures, require_data_dir
from model.mixtures import FRAME_SAMPLES as FRAME
from model.mixtures import SAMPLE_RATE, frame_powers

SPEECH_WITHIN_DB = 20.0  # an opening this close to the loudest 100 ms holds speech
PAUSE_FRAMES = 20  # a later onset follows at least 200 ms of pause
PAUSE_BELOW_DB = 30.0  # a pause frame is this far below the loudest frame
FLOOR = 1e-12  # mean power floor (−120 dB) so silent windows stay finite

Enhance = Callable[[np.ndarray], np.ndarray]


def level_db(signal: np.ndarray) -> float:
    """Mean power in dB."""
    return float(10.0 * np.log10(np.mean(np.square(signal)) + FLOOR))


def opens_with_speech(clean: np.ndarray, window: int) -> bool:
    """Whether the reference's first ``window`` samples are within ``SPEECH_WITHIN_DB`` of its
    loudest 100 ms."""
    block = SAMPLE_RATE // 10
    loudest = max(
        (level_db(clean[i : i + block]) for i in range(0, clean.shape[0] - block + 1, block)),
        default=level_db(clean),
    )
    return level_db(clean[:window]) > loudest - SPEECH_WITHIN_DB


def later_onsets(clean: np.ndarray, window: int) -> list[int]:
    """Sample positions of the speech onsets past the opening ``window``: a 10 ms frame within
    ``SPEECH_WITHIN_DB`` of the loudest, after ``PAUSE_FRAMES`` frames ``PAUSE_BELOW_DB`` or
    more below it, with a whole ``window`` of signal after it (one onset per window)."""
    levels = 10.0 * np.log10(frame_powers(clean) + FLOOR)
    loudest = levels.max()
    quiet = levels < loudest - PAUSE_BELOW_DB
    onsets: list[int] = []
    frame = max(PAUSE_FRAMES, -(-window // FRAME))
    while frame * FRAME + window <= clean.shape[0]:
        if levels[frame] > loudest - SPEECH_WITHIN_DB and quiet[frame - PAUSE_FRAMES : frame].all():
            onsets.append(frame * FRAME)
            frame += -(-window // FRAME)
        else:
            frame += 1
    return onsets


def opening_level_db(clean: np.ndarray, enhanced: np.ndarray, window: int) -> float:
    """The output's level over the first ``window`` samples against the reference's, in dB."""
    return level_db(enhanced[:window]) - level_db(clean[:window])


@dataclass(frozen=True)
class OnsetReport:
    """Opening levels (dB, by system) of the mixtures that open with speech, and the levels
    after every later onset of every mixture."""

    window_ms: float
    total: int  # mixtures looked at
    rows: list[tuple[str, dict[str, float]]]  # (mixture, level by system)
    later: dict[str, list[float]]  # by system: the level after each later onset, all mixtures

    def means(self) -> dict[str, float]:
        """Mean opening level of each system over the listed mixtures."""
        if not self.rows:
            return {}
        names = self.rows[0][1].keys()
        return {name: float(np.mean([levels[name] for _, levels in self.rows])) for name in names}


def onset_report(
    mixtures: Sequence[DevMixture], systems: Mapping[str, Enhance], window_ms: float = 300.0
) -> OnsetReport:
    """Run every system on the mixtures; measure the openings of those that open with speech,
    and every mixture's later onsets."""
    window = int(round(window_ms * SAMPLE_RATE / 1000))
    rows = []
    later: dict[str, list[float]] = {name: [] for name in systems}
    for mixture in mixtures:
        clean = mixture.clean
        outputs = {name: enhance(mixture.noisy) for name, enhance in systems.items()}
        for start in later_onsets(clean, window):
            span = slice(start, start + window)
            for name, output in outputs.items():
                later[name].append(opening_level_db(clean[span], output[span], window))
        if opens_with_speech(clean, window):
            levels = {name: opening_level_db(clean, out, window) for name, out in outputs.items()}
            rows.append((mixture.name, levels))
    return OnsetReport(window_ms=window_ms, total=len(mixtures), rows=rows, later=later)


def to_markdown(report: OnsetReport) -> str:
    """The report as a Markdown table: a row a mixture that opens with speech, their mean, then
    the mean over the later onsets."""
    names = list(report.later)
    lines = [
        f"{len(report.rows)} of {report.total} mixtures open with speech; output level over "
        f"their first {report.window_ms:g} ms against the reference's (dB):",
        "",
        "| mixture | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for name, levels in report.rows:
        lines.append(f"| {name} | " + " | ".join(f"{levels[n]:+.1f}" for n in names) + " |")
    means = report.means()
    if means:
        lines.append("| **mean** | " + " | ".join(f"**{means[n]:+.1f}**" for n in names) + " |")
    onsets = len(next(iter(report.later.values()), []))
    if onsets:
        cells = " | ".join(f"{np.mean(levels):+.1f}" for levels in report.later.values())
        lines.append(f"| later onsets, after a pause ({onsets}) | {cells} |")
    return "\n".join(lines) + "\n"


def model_enhance(model: Path) -> Enhance:
    """The streaming enhancer driven by an exported model, as the evaluation runs it."""
    from model.evaluate import model_system

    system = model_system(model)
    return lambda noisy: np.asarray(system(noisy), dtype=np.float64)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from model.runtime import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="python -m model.research.speech_onset", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model")
    parser.add_argument("--window-ms", type=float, default=300.0, help="opening (default 300)")
    parser.add_argument("--per-snr", type=int, default=None, help="default: every pinned one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, help="default: $PNR_DATA_DIR or ../shared/data")
    parser.add_argument(
        "--deepfilternet3", action="store_true", help="add DeepFilterNet3 (the 'eval' extra)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the opening levels of the model, RNNoise (and DeepFilterNet3) on the dev mixtures."""
    args = _parse_args(argv)
    if not 10.0 <= args.window_ms <= 2000.0:
        print(f"error: --window-ms must lie in 10-2000, got {args.window_ms:g}", file=sys.stderr)
        return 2
    from model.rnnoise_baseline import rnnoise_enhance

    try:
        data_dir = require_data_dir(args.data_dir)
        systems: dict[str, Enhance] = {
            "model": model_enhance(args.model),
            "rnnoise": rnnoise_enhance,
        }
        if args.deepfilternet3:
            from model.deepfilternet_baseline import DeepFilterNet3

            systems["deepfilternet3"] = DeepFilterNet3().enhance
        mixtures = build_dev_mixtures(
            data_dir, per_snr=args.per_snr, snrs_db=DEV_SNRS_DB, seed=args.seed
        )
    except (OSError, ValueError) as exc:  # no data, a missing or altered model, too many asked
        print(f"error: {exc}", file=sys.stderr)  # (or DeepFilterNet3 asked and not installed)
        return 2
    print(to_markdown(onset_report(mixtures, systems, args.window_ms)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
