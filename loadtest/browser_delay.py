"""Benchmark (not a test): mouth-to-ear delay through the relay to a browser, on loopback.

An aiortc peer speaks voiced bursts (200 ms every second) into a room; headless Chromium
listens from the served page with ``?measure=1``, whose audio worklet logs the wall-clock time
of each burst onset it hears. Delay = onset heard − burst handed to the speaker's encoder. The
page hears of an onset on its main thread, whose other work delays that by a few to tens of
milliseconds; each run also reports the delay to when the onset reaches the audio output, by
the audio clock (``AudioContext.getOutputTimestamp``), which the main thread does not delay.
Three relays are measured in the same run: this relay with its defaults (enhancement, low-delay
receive buffer, mono voice Opus, DTX between bursts: the speaker is silent for 300 ms after
its 500 ms voice hangover), the same without DTX, and a plain aiortc pass-through relay (the
same server with enhancement off, aiortc's own jitter buffer and aiortc's default Opus
settings). Chromium's receiver statistics at the end (``getStats``) show how its jitter buffer
took the DTX pauses: its mean delay, and the share of samples it concealed.

    python -m loadtest.browser_delay [--seconds 15] [--json PATH]

``--a`` and ``--b`` (server settings ``PNR_NAME=VALUE``, each may repeat) instead measure this
relay under two settings alternately, ``--rounds`` times each (the order flips every round),
and print each run's median: the run-to-run spread here is as large as the effects sought.
Other work on the machine moves these figures by tens of milliseconds; ``nice -n -15 python -m
loadtest.browser_delay ...`` (as root) runs the relay, the speaker and Chromium ahead of it. Not
under ``chrt -f``: Chromium's threads under SCHED_FIFO, preempted by other real-time work, once
took both cores for minutes (load average 80).

    python -m loadtest.browser_delay --a PNR_BATCH_CLOCK_MS=10 --b PNR_BATCH_CLOCK_MS=0 --rounds 6

``--a-source``/``--b-source DIR`` run that side's relay from another source tree (a code change
against ``git archive main``), ``--plain`` adds the plain relay as a third side, ``--trace``
runs each relay under :mod:`loadtest.relay_trace` and prints how steadily it sent to the
browser and, per burst, how long the relay took to send its first packet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from loadtest.browsers import CHROMIUM, chromium_command
from loadtest.peers import Peer
from loadtest.relay_trace import describe, resumptions, stream_figures
from loadtest.server import serve_on_loopback

RATE = 48000
FRAME = 960
BURST_EVERY_FRAMES = 50  # one second
SETTLE_SECONDS = 3.0
PLAIN = "plain aiortc pass-through relay"
CONFIGURATIONS = {
    "this relay (defaults)": {},
    "this relay without DTX": {"PNR_OPUS_DTX": "false"},
    PLAIN: {
        "PNR_DEFAULT_ENHANCE": "false",
        "PNR_AIORTC_JITTER_BUFFER": "true",
        "PNR_OPUS_BITRATE": "96000",
        "PNR_OPUS_CHANNELS": "2",
        "PNR_OPUS_COMPLEXITY": "10",
        "PNR_OPUS_APPLICATION": "voip",
        "PNR_OPUS_DTX": "false",
    },
}
ONSET = re.compile(r"pnr-onset ([0-9.]+)(?: ([0-9.]+))?")
STATS = re.compile(r"pnr-stats (\{.*?\})")
UNSENT = re.compile(r"^pnr_mix_frames_unsent_total ([0-9.e+]+)$", re.M)


@dataclass
class Measurement:
    """One relay's run: a delay per burst heard, the bursts sent after the settling time,
    Chromium's last receiver statistics, the frames the relay left unsent (DTX) and, traced,
    how steadily the relay sent to the browser (:func:`loadtest.relay_trace.stream_figures`)."""

    delays: list[float]
    bursts: int
    stats: dict[str, float] = field(default_factory=dict)
    unsent_frames: float = 0.0
    relay_send: dict[str, object] | None = None  # with a trace: how steadily the relay sent
    output_delays: list[float] = field(default_factory=list)  # to the audio output, per burst

    def row(self) -> dict[str, object]:
        """The figures of the table and the JSON."""
        stats = self.stats
        emitted = stats.get("jitterBufferEmittedCount") or 0
        received = stats.get("totalSamplesReceived") or 0
        return {
            "bursts": self.bursts,
            "bursts_heard": len(self.delays),
            "median_ms": 1000 * float(np.median(self.delays)) if self.delays else None,
            "p95_ms": 1000 * float(np.percentile(self.delays, 95)) if self.delays else None,
            "spread_ms": (
                1000 * float(np.percentile(self.delays, 90) - np.percentile(self.delays, 10))
                if self.delays
                else None
            ),
            "jitter_buffer_ms": 1000 * stats["jitterBufferDelay"] / emitted if emitted else None,
            "jitter_buffer_target_ms": (
                1000 * stats.get("jitterBufferTargetDelay", 0) / emitted if emitted else None
            ),
            "browser_jitter_ms": 1000 * stats["jitter"] if "jitter" in stats else None,
            "relay_send": self.relay_send,
            "delays_ms": [round(1000 * delay, 1) for delay in self.delays],
            "output_median_ms": (
                1000 * float(np.median(self.output_delays)) if self.output_delays else None
            ),
            "output_spread_ms": (
                1000
                * float(
                    np.percentile(self.output_delays, 90) - np.percentile(self.output_delays, 10)
                )
                if self.output_delays
                else None
            ),
            "concealed_percent": (
                100 * stats.get("concealedSamples", 0) / received if received else None
            ),
            "packets_lost": stats.get("packetsLost"),
            "frames_unsent": self.unsent_frames,
            "browser_stats": stats,
        }


def burst_signal(seconds: float) -> np.ndarray:
    """Voiced 200 ms bursts (150 Hz and harmonics, 2 ms fades) every second, silence between."""
    n = int(seconds * RATE)
    t = np.arange(int(0.2 * RATE)) / RATE
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.002)  # 2 ms fades: a sharp onset
    burst = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12)) * envelope
    burst = (0.4 * burst / np.max(np.abs(burst))).astype(np.float32)
    signal = np.zeros(n, dtype=np.float32)
    for start in range(0, n - burst.size, BURST_EVERY_FRAMES * FRAME):
        signal[start : start + burst.size] = burst
    return signal


def measure(extra_env: dict[str, str], seconds: float, trace: bool = False) -> Measurement:
    """The browser's delays through one relay (seconds, one per burst heard), and more
    (``trace``: the relay runs under :mod:`loadtest.relay_trace`)."""
    profile = tempfile.mkdtemp(prefix="pnr-chromium-")
    trace_path = Path(profile) / "relay-trace.json"
    served = serve_on_loopback(
        {"PNR_LOG_LEVEL": "WARNING", "PNR_DRAIN_SECONDS": "0", **extra_env},
        runner=("-m", "loadtest.relay_trace", str(trace_path)) if trace else ("-m", "service.cli"),
    )
    url = served.url
    onsets: list[tuple[float, float | None]] = []  # heard by the page, at the audio output
    stats: list[dict[str, float]] = []
    browser = None
    relay_send = None
    resumed: list[tuple[float, float]] = []  # traced: each talk spurt's first packet, mixer wait
    try:
        browser = subprocess.Popen(
            chromium_command(
                f"{served.url}/?room=delay&name=browser&autojoin=1&measure=1",
                Path(profile),
                log_console=True,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        reader = threading.Thread(target=_collect, args=(browser, onsets, stats), daemon=True)
        reader.start()
        _wait_for_browser(url)

        async def speak() -> list[float]:
            speaker = Peer(burst_signal(seconds + 2))
            await speaker.join(url, "delay")
            await speaker.wait_connected()
            await asyncio.sleep(seconds)
            await speaker.close()
            assert speaker.sender is not None
            return speaker.sender.send_times

        send_times = asyncio.run(speak())
        to_epoch = time.time() - time.monotonic()
        found = UNSENT.search(httpx.get(url + "/metrics", timeout=5).text)
        unsent = float(found[1]) if found else 0.0
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(15)
        served.stop()
        if trace and stats and trace_path.exists():
            events = json.loads(trace_path.read_text())
            relay_send = stream_figures(events, int(stats[-1]["ssrc"]), skip_seconds=SETTLE_SECONDS)
            resumed = resumptions(events, int(stats[-1]["ssrc"]))
        shutil.rmtree(profile, ignore_errors=True)
    bursts = [to_epoch + send_times[i] for i in range(0, len(send_times), BURST_EVERY_FRAMES)]
    first = bursts[0] + SETTLE_SECONDS if bursts else 0.0
    delays, relay_shares, output_delays, mixer_waits = [], [], [], []
    for onset_ms, output_ms in onsets:
        onset = onset_ms / 1000.0
        earlier = [b for b in bursts if b <= onset]
        if earlier and earlier[-1] >= first and onset - earlier[-1] < 0.8:
            delays.append(onset - earlier[-1])
            if output_ms is not None:
                output_delays.append(output_ms / 1000.0 - earlier[-1])
            sent = [(t + to_epoch, w) for t, w in resumed if earlier[-1] <= t + to_epoch <= onset]
            if sent:  # the relay's share: burst sent to the relay's first packet of it
                relay_shares.append(sent[0][0] - earlier[-1])
                mixer_waits.append(sent[0][1])
    last = to_epoch + send_times[-1] - 0.8 if send_times else 0.0  # later ones may be unheard
    counted = sum(1 for b in bursts if first <= b <= last)
    if relay_send is not None:
        relay_send["onset_relay_share_ms"] = [round(1000 * share, 1) for share in relay_shares]
        relay_send["onset_mixer_wait_ms"] = [round(1000 * wait, 1) for wait in mixer_waits]
    return Measurement(
        delays, counted, stats[-1] if stats else {}, unsent, relay_send, output_delays
    )


def _collect(
    browser: subprocess.Popen, onsets: list[tuple[float, float | None]], stats: list[dict]
) -> None:
    assert browser.stderr is not None
    for line in browser.stderr:
        match = ONSET.search(line)
        if match:
            onsets.append((float(match[1]), float(match[2]) if match[2] else None))
        reported = STATS.search(line)
        if reported:
            with contextlib.suppress(ValueError):
                stats.append(json.loads(reported[1]))


def _wait_for_browser(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        room = httpx.get(url + "/rooms/delay", timeout=2)
        if room.status_code == 200 and any(
            p["connection_state"] == "connected" for p in room.json()["participants"]
        ):
            return
        time.sleep(0.2)
    raise TimeoutError("the browser did not join")


def main(argv: list[str] | None = None) -> None:
    """Measure both relays and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--a", action="append", default=[], metavar="PNR_NAME=VALUE")
    parser.add_argument("--b", action="append", default=[], metavar="PNR_NAME=VALUE")
    parser.add_argument("--rounds", type=int, default=4, help="with --a/--b: runs of each")
    parser.add_argument(
        "--plain", action="store_true", help="with --a/--b: the plain relay as a third side"
    )
    for side in ("a", "b"):
        parser.add_argument(
            f"--{side}-source",
            type=Path,
            metavar="DIR",
            help=f"with --a/--b: side {side.upper()}'s relay runs the code of this source tree "
            "(another checkout: code changes measured alternately)",
        )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run the relay under loadtest.relay_trace and print how steadily it sent",
    )
    args = parser.parse_args(argv)
    if CHROMIUM is None:
        parser.error("this benchmark needs Chromium (Debian package 'chromium')")
    if args.a or args.b:
        try:
            sides = {"A": _settings(args.a), "B": _settings(args.b)}
        except ValueError as error:
            parser.error(str(error))
        for side, source in (("A", args.a_source), ("B", args.b_source)):
            if source is not None:
                if not (source / "service" / "cli.py").is_file():
                    parser.error(f"{source} is not a source tree of the relay")
                sides[side]["PYTHONPATH"] = str(source.resolve())
        if args.plain:
            sides["plain"] = CONFIGURATIONS[PLAIN]
        compare(sides, args.rounds, args.seconds, args.json, args.trace)
        return
    results = {
        name: measure(extra_env, args.seconds, args.trace).row()
        for name, extra_env in CONFIGURATIONS.items()
    }
    print(
        "| relay | bursts heard | mouth-to-ear median | p95 | p10–p90 spread "
        "| browser jitter buffer (target) | browser jitter | concealed | frames unsent (DTX) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {row['bursts_heard']}/{row['bursts']} | {_ms(row['median_ms'])} "
            f"| {_ms(row['p95_ms'])} | {_ms(row['spread_ms'])} | {_ms(row['jitter_buffer_ms'])} "
            f"({_ms(row['jitter_buffer_target_ms'])}) | {_ms(row['browser_jitter_ms'])} "
            f"| {_percent(row['concealed_percent'])} | {row['frames_unsent']:.0f} |"
        )
    for name, row in results.items():
        if isinstance(row["relay_send"], dict):
            print(f"{name}, relay's sends to the browser: {describe(row['relay_send'])}")
    ours, plain = results["this relay (defaults)"], results[PLAIN]
    if ours["median_ms"] and plain["median_ms"]:
        print(f"ratio: {ours['median_ms'] / plain['median_ms']:.2f}")  # type: ignore[operator]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _settings(pairs: list[str]) -> dict[str, str]:
    """``PNR_NAME=VALUE`` arguments as an environment."""
    settings = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.startswith("PNR_"):
            raise ValueError(f"a setting is PNR_NAME=VALUE, got {pair!r}")
        settings[name] = value
    return settings


def compare(
    sides: dict[str, dict[str, str]],
    rounds: int,
    seconds: float,
    json_path: Path | None,
    trace: bool = False,
) -> None:
    """This relay under each side's settings, alternately; each run's figures and each side's
    run medians."""
    rows: dict[str, list[dict[str, object]]] = {side: [] for side in sides}
    names = list(sides)
    for round_index in range(rounds):
        for side in names if round_index % 2 == 0 else names[::-1]:
            started = time.strftime("%H:%M:%S", time.gmtime())
            row = measure(sides[side], seconds, trace).row()
            print(
                f"round {round_index + 1} {side} {sides[side]} ({started} UTC): median "
                f"{_ms(row['median_ms'])}, p10–p90 spread {_ms(row['spread_ms'])}, p95 "
                f"{_ms(row['p95_ms'])}, browser jitter buffer {_ms(row['jitter_buffer_ms'])} "
                f"(target {_ms(row['jitter_buffer_target_ms'])}), browser jitter "
                f"{_ms(row['browser_jitter_ms'])}, heard {row['bursts_heard']}/{row['bursts']}; "
                f"to the audio output: median {_ms(row['output_median_ms'])}, spread "
                f"{_ms(row['output_spread_ms'])}",
                flush=True,
            )
            print(f"  per burst (ms): {row['delays_ms']}", flush=True)
            if isinstance(row["relay_send"], dict):
                print(f"  relay's sends to the browser: {describe(row['relay_send'])}", flush=True)
            rows[side].append({"utc": started, **row})
    for side in names:
        medians = [r["median_ms"] for r in rows[side] if isinstance(r["median_ms"], float)]
        runs = ", ".join(f"{m:.0f}" for m in medians)
        spreads = ", ".join(_ms(r["spread_ms"]) for r in rows[side])
        buffers = ", ".join(_ms(r["jitter_buffer_ms"]) for r in rows[side])
        middle = _ms(float(np.median(medians))) if medians else "n/a"
        print(
            f"{side} {sides[side]}: median of run medians {middle} (runs {runs} ms; spreads "
            f"{spreads}; browser jitter buffer {buffers})"
        )
    if json_path:
        json_path.write_text(json.dumps({"sides": sides, "runs": rows}, indent=2))


def _ms(value: object) -> str:
    return f"{value:.0f} ms" if isinstance(value, float | int) else "n/a"


def _percent(value: object) -> str:
    return f"{value:.1f} %" if isinstance(value, float | int) else "n/a"


if __name__ == "__main__":
    main()
