"""Two server settings against each other (a benchmark, not a test): the same load test
(``loadtest.relay_load``) run alternately with setting A and setting B, in one run, so both
see the same machine; prints the server's CPU per participant (all of it, and its event-loop
thread alone), the processing lag, frames dropped, the mouth-to-ear delay and the frames sent,
per setting, and the ratio B / A.

    python -m loadtest.settings_ab --a PNR_EVENT_LOOP=asyncio --b PNR_EVENT_LOOP=uvloop \\
        --repeats 3 -- --isolate --participants 16 --seconds 16
    python -m loadtest.settings_ab --a PNR_OPUS_DTX=false --b PNR_OPUS_DTX=true \\
        -- --isolate --participants 16 --one-talker

Arguments after ``--`` go to ``loadtest.relay_load`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FIGURES = {  # figure: column heading
    "cpu": "server CPU %/participant",
    "event_loop": "event-loop thread %/participant",
    "lag_p99_ms": "lag p99 (ms)",
    "dropped": "frames dropped",
    "mouth_to_ear_ms": "mouth-to-ear p50 (ms)",
    "others": "others on the server's cores (%)",
    "unsent_share": "listener frames unsent (DTX)",
}


def run_once(settings: list[str], load_args: list[str], report_path: Path) -> dict[str, float]:
    """One load-test run with ``settings`` (PNR_NAME=VALUE each); its figures."""
    command = [sys.executable, "-m", "loadtest.relay_load", *load_args]
    for setting in settings:
        command += ["--set", setting]
    subprocess.run([*command, "--json", str(report_path)], check=True, stdout=subprocess.DEVNULL)
    report = json.loads(report_path.read_text())
    threads = report.get("server_cpu_percent_per_participant_by_thread") or {}
    lag = report.get("lag_seconds_p99")
    to_ear = report.get("mouth_to_ear_seconds_p50")
    return {
        "cpu": float(report["server_cpu_percent_per_participant"]),
        "event_loop": float(threads.get("event_loop", math.nan)),
        "lag_p99_ms": 1000.0 * float(lag) if lag is not None else math.nan,
        "dropped": float(report.get("frames_dropped") or 0.0),
        "mouth_to_ear_ms": 1000.0 * float(to_ear) if to_ear is not None else math.nan,
        "others": float(report.get("server_cores_others_percent") or math.nan),
        "unsent_share": float(report.get("mix_frames_unsent_share") or 0.0),
    }


def compare(
    sides: dict[str, list[str]], repeats: int, load_args: list[str]
) -> dict[str, dict[str, list[float]]]:
    """Each side ``repeats`` times, alternating (the order flips every round)."""
    runs: dict[str, dict[str, list[float]]] = {side: {k: [] for k in FIGURES} for side in sides}
    names = list(sides)
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(repeats):
            for side in names if round_index % 2 == 0 else names[::-1]:
                figures = run_once(sides[side], load_args, Path(folder) / "report.json")
                print(f"round {round_index + 1} {side}: {figures}", flush=True)
                for key, value in figures.items():
                    runs[side][key].append(value)
    return runs


def print_table(runs: dict[str, dict[str, list[float]]]) -> None:
    """Median of each figure per side, and B / A."""
    a, b = runs
    medians = {side: {k: statistics.median(v) for k, v in f.items()} for side, f in runs.items()}
    print(f"A: {a}\nB: {b}\n(medians of the runs)")
    print(f"{'':<34}{'A':>10}{'B':>10}{'B / A':>8}")
    for key, heading in FIGURES.items():
        first, second = medians[a][key], medians[b][key]
        ratio = second / first if first else math.nan
        print(f"{heading:<34}{first:>10.2f}{second:>10.2f}{ratio:>8.2f}")
    for side in runs:
        print(
            f"{side}: server CPU %/participant per run: "
            + ", ".join(f"{value:.2f}" for value in runs[side]["cpu"])
        )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", action="append", required=True, metavar="PNR_NAME=VALUE")
    parser.add_argument("--b", action="append", required=True, metavar="PNR_NAME=VALUE")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side")
    parser.add_argument("load_args", nargs="*", help="after --: loadtest.relay_load's arguments")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    sides = {" ".join(args.a): args.a, " ".join(args.b): args.b}
    if len(sides) != 2:
        parser.error("--a and --b must differ")
    print_table(compare(sides, args.repeats, args.load_args))


if __name__ == "__main__":
    main()
