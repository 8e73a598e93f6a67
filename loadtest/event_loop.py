"""uvloop against asyncio's own event loop (a benchmark, not a test): the same load test
(``loadtest.relay_load``) run alternately with ``PNR_EVENT_LOOP=asyncio`` and ``uvloop``, in
one run, so both see the same machine; prints the server's CPU per participant (all of it, and
its event-loop thread alone) for each loop and the ratio uvloop / asyncio.

    python -m loadtest.event_loop --repeats 3 -- --isolate --participants 16 --seconds 16

Arguments after ``--`` go to ``loadtest.relay_load`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LOOPS = ("asyncio", "uvloop")
FIGURES = {  # report key: column heading
    "server_cpu_percent_per_participant": "server CPU %/participant",
    "event_loop": "event-loop thread %/participant",
    "lag_seconds_p99": "lag p99 (ms)",
}


def run_once(loop: str, load_args: list[str], folder: Path) -> dict[str, float]:
    """One load-test run with ``loop``; its figures (None where the report has none)."""
    report_path = folder / f"{loop}.json"
    command = [sys.executable, "-m", "loadtest.relay_load", *load_args]
    command += ["--set", f"PNR_EVENT_LOOP={loop}", "--json", str(report_path)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    report = json.loads(report_path.read_text())
    threads = report.get("server_cpu_percent_per_participant_by_thread") or {}
    lag = report.get("lag_seconds_p99")
    return {
        "server_cpu_percent_per_participant": float(report["server_cpu_percent_per_participant"]),
        "event_loop": float(threads.get("event_loop", 0.0)),
        "lag_seconds_p99": 1000.0 * float(lag) if lag is not None else float("nan"),
    }


def compare(repeats: int, load_args: list[str]) -> dict[str, dict[str, list[float]]]:
    """Each loop ``repeats`` times, alternating (the order flips every round)."""
    runs: dict[str, dict[str, list[float]]] = {loop: {k: [] for k in FIGURES} for loop in LOOPS}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(repeats):
            order = LOOPS if round_index % 2 == 0 else LOOPS[::-1]
            for loop in order:
                figures = run_once(loop, load_args, Path(folder))
                print(f"round {round_index + 1} {loop}: {figures}", flush=True)
                for key, value in figures.items():
                    runs[loop][key].append(value)
    return runs


def print_table(runs: dict[str, dict[str, list[float]]]) -> None:
    """Median of each figure per loop, and uvloop / asyncio."""
    medians = {loop: {k: statistics.median(v) for k, v in f.items()} for loop, f in runs.items()}
    print(f"{'':<34}" + "".join(f"{loop:>10}" for loop in LOOPS) + f"{'ratio':>10}")
    for key, heading in FIGURES.items():
        a, u = medians["asyncio"][key], medians["uvloop"][key]
        ratio = u / a if a else float("nan")
        print(f"{heading:<34}{a:>10.2f}{u:>10.2f}{ratio:>10.2f}")
    spread = {loop: runs[loop]["server_cpu_percent_per_participant"] for loop in LOOPS}
    print(
        "runs (server CPU %/participant): "
        + "; ".join(
            f"{loop} " + ", ".join(f"{v:.2f}" for v in values) for loop, values in spread.items()
        )
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop")
    parser.add_argument("load_args", nargs="*", help="after --: loadtest.relay_load's arguments")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    print_table(compare(args.repeats, args.load_args))


if __name__ == "__main__":
    main()
