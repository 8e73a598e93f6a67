"""What the research probes that score systems on the dev mixtures share: their common
command-line options, and the scoring that writes ``results.json`` and prints the table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model.devset import DevMixture
from model.evaluate import System, evaluate, write_results
from model.runtime import DEFAULT_MODEL


def add_dev_options(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--model``, ``--seed`` and ``--data-dir``."""
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=0, help="0: the pinned dev mixtures")
    parser.add_argument("--data-dir", type=Path, help="default: $PNR_DATA_DIR or ../shared/data")


def score_and_write(
    systems: Mapping[str, System],
    mixtures: Sequence[DevMixture],
    out: Path,
    config: Mapping[str, Any],
) -> None:
    """Score ``systems`` on ``mixtures``; write ``out/results.json`` (its config ``config`` and
    the mixtures' names) and print the Markdown table."""
    results = evaluate(systems, mixtures)
    results.config = {**config, "mixtures": [m.name for m in mixtures]}
    json_path, _ = write_results(results, out)
    print(results.to_markdown(), end="")
    print(f"\nwrote {json_path}", file=sys.stderr)
