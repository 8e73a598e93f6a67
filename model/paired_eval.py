"""Paired comparison of two systems scored by ``percepnet-relay eval`` on the same mixtures: per
metric the mean per-file change (candidate − base), its standard error and the files the
candidate scores better on, overall and by SNR, as Markdown tables.

Usage::

    python -m model.paired_eval out/eval-shipped/results.json out/eval-new/results.json \\
        --base-system percepnet_int8 --candidate-system percepnet
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METRICS = (
    ("pesq_wb", "PESQ-WB"),
    ("stoi", "STOI"),
    ("si_sdr_db", "SI-SDR (dB)"),
    ("dnsmos_p808", "DNSMOS P.808"),
    ("dnsmos_sig", "P.835 SIG"),
    ("dnsmos_bak", "P.835 BAK"),
    ("dnsmos_ovrl", "P.835 OVRL"),
)


@dataclass(frozen=True)
class Change:
    """One metric's per-file change, candidate − base."""

    base_mean: float
    candidate_mean: float
    mean: float
    standard_error: float
    better: int
    files: int

    @property
    def beyond_error(self) -> bool:
        """The change is positive by more than its standard error."""
        return self.mean > self.standard_error


def scores(results: dict[str, Any], system: str) -> dict[str, dict[str, Any]]:
    """``system``'s per-file rows of an eval's ``results.json``, by mixture name; ValueError
    when it has none."""
    rows = {row["mixture"]: row for row in results["files"] if row["system"] == system}
    if not rows:
        systems = sorted({row["system"] for row in results["files"]})
        raise ValueError(f"no files scored for system {system!r} (has: {', '.join(systems)})")
    return rows


def paired_change(base: Sequence[float], candidate: Sequence[float]) -> Change:
    """Mean per-file change of ``candidate`` over ``base`` (same files, same order)."""
    before, after = np.asarray(base, dtype=float), np.asarray(candidate, dtype=float)
    delta = after - before
    error = float(np.std(delta, ddof=1) / np.sqrt(delta.size)) if delta.size > 1 else float("nan")
    return Change(
        float(before.mean()),
        float(after.mean()),
        float(delta.mean()),
        error,
        int(np.sum(delta > 0)),
        int(delta.size),
    )


def compare(
    base: dict[str, dict[str, Any]], candidate: dict[str, dict[str, Any]], snr_db: float | None
) -> dict[str, Change]:
    """Per metric the paired change on the mixtures at ``snr_db`` (every mixture when None)."""
    names = sorted(n for n in base if snr_db is None or base[n]["snr_db"] == snr_db)
    return {
        key: paired_change([base[n][key] for n in names], [candidate[n][key] for n in names])
        for key, _ in METRICS
    }


def report(base: dict[str, dict[str, Any]], candidate: dict[str, dict[str, Any]]) -> str:
    """Markdown: the overall table (means, change, standard error, files better), then each
    metric's means by SNR."""
    if set(base) != set(candidate):
        missing = sorted(set(base) ^ set(candidate))
        raise ValueError(f"the two runs scored different mixtures, e.g. {missing[0]}")
    overall = compare(base, candidate, None)
    lines = [
        "| metric | base | candidate | change (standard error, files better) | rises beyond it |",
        "|---|---|---|---|---|",
    ]
    for key, label in METRICS:
        c = overall[key]
        lines.append(
            f"| {label} | {c.base_mean:.3f} | {c.candidate_mean:.3f} | {c.mean:+.3f} "
            f"({c.standard_error:.3f}, {c.better} of {c.files}) | "
            f"{'yes' if c.beyond_error else 'no'} |"
        )
    snrs = sorted({float(row["snr_db"]) for row in base.values()})
    by_snr = {snr: compare(base, candidate, snr) for snr in snrs}
    lines += [
        "",
        "| metric by SNR | " + " | ".join(f"{snr:g} dB" for snr in snrs) + " |",
        "|---|" + "---|" * len(snrs),
    ]
    for key, label in METRICS:
        cells = [
            f"{by_snr[s][key].base_mean:.3f} → {by_snr[s][key].candidate_mean:.3f} "
            f"({by_snr[s][key].mean:+.3f} ± {by_snr[s][key].standard_error:.3f})"
            for s in snrs
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m model.paired_eval BASE CANDIDATE``: print the paired tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path, help="results.json of the base run")
    parser.add_argument("candidate", type=Path, help="results.json of the candidate run")
    parser.add_argument("--base-system", default="percepnet_int8")
    parser.add_argument("--candidate-system", default="percepnet")
    args = parser.parse_args(argv)
    try:
        base = scores(json.loads(args.base.read_text()), args.base_system)
        candidate = scores(json.loads(args.candidate.read_text()), args.candidate_system)
        print(report(base, candidate))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
