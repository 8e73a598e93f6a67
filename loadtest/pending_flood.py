"""Pending-join flood (a benchmark, not a test): offers that never connect, from one address.

Starts ``percepnet-relay serve`` on 127.0.0.1, posts ``--joins`` real aiortc offers to
``/offer`` from this one address (``--concurrency`` at a time, over ``--rooms`` rooms) and
never applies an answer, so every admitted peer stays pending until the relay removes it after
``PNR_CONNECT_TIMEOUT_SECONDS``. Prints the answers by status and reason, and the server's RSS
and open file descriptors before the flood, at their peak (sampled every 50 ms) and after the
reap, against the limits the issue sets: most joins refused, no answer without ICE candidates,
RSS growth under 100 MiB, fds back to their baseline. ``--no-limits`` lifts the pending caps
and the rate limit, to show what the same flood costs without them. Exits 1 when a criterion fails.

    python -m loadtest.pending_flood --joins 2000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

from loadtest.peers import Peer
from loadtest.process_stats import open_fds, rss_bytes
from loadtest.server import serve_on_loopback

MIB = 1024 * 1024
MAX_RSS_GROWTH_BYTES = 100 * MIB
SAMPLE_SECONDS = 0.05
FD_SLACK = 4  # descriptors the process may open on its own in the meantime (logs, imports)
NO_LIMITS = {
    "PNR_MAX_PENDING_PEERS": "1000000",
    "PNR_MAX_PENDING_PER_ADDRESS": "1000000",
    "PNR_SIGNALING_RATE_PER_SECOND": "0",
}


@dataclass
class Usage:
    """RSS and fds of one process: at the start, the peak while sampling, and the latest."""

    pid: int
    rss_before: int = 0
    fds_before: int = 0
    rss_peak: int = 0
    fds_peak: int = 0
    rss_after: int = 0
    fds_after: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> tuple[int, int]:
        rss, fds = rss_bytes(self.pid), open_fds(self.pid)
        self.rss_peak, self.fds_peak = max(self.rss_peak, rss), max(self.fds_peak, fds)
        self.rss_after, self.fds_after = rss, fds
        return rss, fds

    def start(self) -> threading.Thread:
        self.rss_before, self.fds_before = self.sample()

        def run() -> None:
            while not self._stop.wait(SAMPLE_SECONDS):
                self.sample()

        thread = threading.Thread(target=run, name="usage-sampler", daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join()


async def an_offer() -> str:
    """One real aiortc offer (audio, Opus, candidates, fingerprint); every join reuses it."""
    peer = Peer(None)
    sdp = await peer.offer_sdp()
    await peer.pc.close()
    return sdp


def answer_label(response: httpx.Response | None) -> str:
    """``200``, or the status and the refusal's reason (``429 rate_limited``)."""
    if response is None:
        return "no answer"
    if response.status_code < 300:
        try:
            answer = str(response.json().get("sdp", ""))
        except ValueError:
            answer = ""
        if "a=candidate:" not in answer:  # nothing a client could connect to
            return f"{response.status_code} without ICE candidates"
        return str(response.status_code)
    try:
        reason = response.json().get("error", "?")
    except ValueError:
        reason = "?"
    return f"{response.status_code} {reason}"


async def flood(url: str, joins: int, concurrency: int, rooms: int) -> collections.Counter[str]:
    """Post ``joins`` offers, ``concurrency`` at a time; count the answers by label."""
    sdp = await an_offer()
    counts: collections.Counter[str] = collections.Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(joins):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                body = {"sdp": sdp, "type": "offer", "room": f"flood{index % rooms}"}
                try:
                    response: httpx.Response | None = await client.post("/offer", json=body)
                except httpx.HTTPError:
                    response = None
                counts[answer_label(response)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def wait_for_reap(url: str, timeout_seconds: float) -> float:
    """Seconds until the relay has no participant left (pending ones removed), or the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_seconds:
        rooms = httpx.get(url + "/rooms", timeout=5).json()
        if not any(room["participants"] for room in rooms):
            return time.monotonic() - start
        time.sleep(0.25)
    return float("nan")


def run(args: argparse.Namespace) -> dict[str, object]:
    """Serve, flood, wait for the reap; returns the report."""
    env = {"PNR_LOG_LEVEL": "ERROR", "PNR_CONNECT_TIMEOUT_SECONDS": str(args.connect_timeout)}
    if args.no_limits:
        env |= NO_LIMITS
    served = serve_on_loopback(env)
    try:
        time.sleep(1.0)  # let the process settle after /readyz
        usage = Usage(served.process.pid)
        sampler = usage.start()
        started = time.monotonic()
        counts = asyncio.run(flood(served.url, args.joins, args.concurrency, args.rooms))
        flood_seconds = time.monotonic() - started
        reap_seconds = wait_for_reap(served.url, args.connect_timeout + 30)
        time.sleep(2.0)  # closed sockets and tasks settle
        usage.stop(sampler)
        usage.sample()
        metrics = httpx.get(served.url + "/metrics", timeout=5).text
    finally:
        served.stop()
    refused = sum(n for label, n in counts.items() if label.startswith(("429", "503")))
    return {
        "joins": args.joins,
        "limits": "lifted" if args.no_limits else "default",
        "answers": dict(sorted(counts.items())),
        "refused_429_503": refused,
        "flood_seconds": round(flood_seconds, 2),
        "reap_seconds": round(reap_seconds, 2),
        "rss_mib": [round(v / MIB, 1) for v in (usage.rss_before, usage.rss_peak, usage.rss_after)],
        "rss_growth_mib": round((usage.rss_peak - usage.rss_before) / MIB, 1),
        "fds": [usage.fds_before, usage.fds_peak, usage.fds_after],
        "refusals_counted": sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("pnr_signaling_errors_total{")
        ),
    }


def verdicts(report: dict[str, object]) -> list[tuple[str, bool]]:
    """The issue's criteria, each with whether this run met it."""
    joins, refused = int(report["joins"]), int(report["refused_429_503"])  # type: ignore[call-overload]
    fds = report["fds"]
    assert isinstance(fds, list)
    growth_mib = float(report["rss_growth_mib"])  # type: ignore[arg-type]
    answers = report["answers"]
    assert isinstance(answers, dict)
    dead = sum(n for label, n in answers.items() if "without ICE candidates" in label)
    return [
        (f"most joins refused (429/503): {refused} of {joins}", refused > joins / 2),
        (f"no answer without ICE candidates: {dead}", dead == 0),
        (f"RSS growth < 100 MiB: {growth_mib:.1f} MiB", growth_mib * MIB < MAX_RSS_GROWTH_BYTES),
        (
            f"fds back to their baseline after the reap: {fds[2]} against {fds[0]}",
            fds[2] <= fds[0] + FD_SLACK,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32, help="offers in flight at once")
    parser.add_argument("--rooms", type=int, default=50, help="rooms the offers are spread over")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=20.0,
        help="PNR_CONNECT_TIMEOUT_SECONDS of the relay (its default: 20)",
    )
    parser.add_argument("--no-limits", action="store_true", help="lift the pending caps and rate")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if args.joins < 1 or args.concurrency < 1 or args.rooms < 1 or args.connect_timeout <= 0:
        parser.error("--joins, --concurrency, --rooms and --connect-timeout must be positive")
    report = run(args)
    for key, value in report.items():
        print(f"{key:<20} {value}")
    failed = False
    for text, ok in verdicts(report):
        print(f"{'ok    ' if ok else 'FAILED'} {text}")
        failed |= not ok
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
