"""Soak benchmark (not a test): N participants talk for a long time; does anything grow?

Starts ``percepnet-relay serve`` on loopback, has N aiortc participants (in rooms of
``--room-size``, spread over client processes) send Opus speech in real time and count what they
hear, and samples the server every ``--sample-seconds``: resident memory, open file
descriptors, threads (all of its process tree), asyncio tasks in its event loop, and the p99
processing lag over the interval (from its histogram). Prints one table row per sample, then a
verdict: memory must stop climbing after the warm-up, and fds, threads and tasks must end where
they were after it.

    python -m loadtest.soak --participants 16 --minutes 30
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from dataclasses import dataclass

import numpy as np

from loadtest.process_stats import open_fds, process_tree, rss_bytes, thread_count
from loadtest.relay_load import _histogram_quantile, _scrape, participant_signal
from loadtest.server import serve_on_loopback
from service.metrics import LAG_BUCKETS

WARM_UP_SAMPLES = 2  # the first samples: joins, kernels, allocator pools filling
RSS_SLOPE_LIMIT_MIB_PER_HOUR = 20.0  # steady memory: less than this after the warm-up


@dataclass
class Sample:
    """The server at one moment (lag: over the interval that ended then)."""

    minute: float
    rss_mib: float
    fds: int
    threads: int
    tasks: int
    participants: int
    lag_p99_ms: float | None
    frames_dropped: float


def _value(samples: dict, name: str) -> float:
    return sum(v for (sample, _), v in samples.items() if sample == name)


async def _talk(url: str, plan: list[tuple[int, str]], seconds: float) -> list[int]:
    from loadtest.peers import Peer

    peers = [
        Peer(participant_signal(index, 60.0, None), pre_encoded=True, decode=False)
        for index, _ in plan
    ]
    await asyncio.gather(
        *(peer.join(url, room) for peer, (_, room) in zip(peers, plan, strict=True))
    )
    await asyncio.sleep(seconds)
    heard = [len(peer.recorder.arrivals) for peer in peers]  # packets: 20 ms each
    await asyncio.gather(*(peer.close() for peer in peers))
    return heard


def _client_process(args: tuple[str, list[tuple[int, str]], float]) -> list[int]:
    from service.aiortc_patches import restrict_host_addresses

    url, plan, seconds = args
    restrict_host_addresses(["127.0.0.1"])
    try:
        return asyncio.run(_talk(url, plan, seconds))
    except Exception as error:  # some exceptions (httpx's) do not survive pickling
        raise RuntimeError(f"client process failed: {error!r}") from None


def _sample(pid: int, url: str, started: float, before: dict) -> tuple[Sample, dict]:
    after = _scrape(url)
    lag = _histogram_quantile(before, after, "pnr_processing_lag_seconds", 0.99)
    dropped = _value(after, "pnr_frames_dropped_total") - _value(before, "pnr_frames_dropped_total")
    sample = Sample(
        minute=(time.monotonic() - started) / 60.0,
        rss_mib=rss_bytes(pid) / 2**20,
        fds=sum(open_fds(member) for member in process_tree(pid)),
        threads=thread_count(pid),
        tasks=int(_value(after, "pnr_asyncio_tasks")),
        participants=int(_value(after, "pnr_participants")),
        lag_p99_ms=None if lag is None else 1000.0 * lag,
        frames_dropped=dropped,
    )
    return sample, after


def _lag(lag_ms: float | None) -> str:
    if lag_ms is None:
        return "n/a"
    # a p99 past the histogram's last bucket reads as that bucket's bound
    return f">={lag_ms:.0f}" if lag_ms >= 1000 * LAG_BUCKETS[-1] else f"{lag_ms:.1f}"


def _row(sample: Sample) -> str:
    lag = _lag(sample.lag_p99_ms)
    return (
        f"{sample.minute:>6.1f} {sample.participants:>6} {sample.rss_mib:>8.1f} {sample.fds:>5} "
        f"{sample.threads:>7} {sample.tasks:>6} {lag:>8} {sample.frames_dropped:>8.0f}"
    )


HEADER = (
    f"{'minute':>6} {'peers':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'tasks':>6} "
    f"{'lag p99':>8} {'dropped':>8}"
)


def verdict(samples: list[Sample], idle_before: Sample, idle_after: Sample) -> list[str]:
    """One line per resource: steady or growing. While talking (samples after the warm-up),
    memory must not trend up, and a count grows only if its lowest value in the last third is
    above its highest in the first (in-flight tasks come and go with the load); once everyone
    has left, fds, threads and tasks must be back where they were before anyone joined."""
    steady = samples[WARM_UP_SAMPLES:]
    if len(steady) < 3:
        return ["too few samples after the warm-up for a verdict"]
    minutes = np.array([s.minute for s in steady])
    rss = np.array([s.rss_mib for s in steady])
    slope = float(np.polyfit(minutes, rss, 1)[0]) * 60.0  # MiB per hour
    lines = [
        f"RSS: {rss[0]:.1f} -> {rss[-1]:.1f} MiB while talking, trend {slope:+.1f} MiB/h: "
        + ("steady" if slope < RSS_SLOPE_LIMIT_MIB_PER_HOUR else "GROWING")
    ]
    third = max(len(steady) // 3, 1)
    for name in ("fds", "threads", "tasks"):
        values = [getattr(s, name) for s in steady]
        grew = min(values[-third:]) > max(values[:third])
        before, after = getattr(idle_before, name), getattr(idle_after, name)
        lines.append(
            f"{name}: {min(values)}-{max(values)} while talking, "
            + ("GROWING" if grew else "no upward trend")
            + f"; idle {before} before, {after} after: "
            + ("back" if after <= before else "NOT BACK")
        )
    lags = [s.lag_p99_ms for s in steady if s.lag_p99_ms is not None]
    if lags:
        lines.append(f"lag p99 per interval: {_lag(min(lags))} to {_lag(max(lags))} ms")
    return lines


def run(args: argparse.Namespace) -> list[Sample]:
    """Serve, talk, sample; returns the samples (also printed as they come)."""
    served = serve_on_loopback(
        {
            "PNR_MAX_PARTICIPANTS_PER_ROOM": str(args.room_size),
            "PNR_MAX_ROOMS": "1000",
            "PNR_LOG_LEVEL": "WARNING",
        }
        | ({} if args.workers is None else {"PNR_WORKER_THREADS": str(args.workers)})
    )
    pid, url = served.process.pid, served.url
    seconds = args.minutes * 60.0
    plan = [(i, f"soak{i // args.room_size}") for i in range(args.participants)]
    processes = max(1, min(args.client_processes, args.participants))
    samples: list[Sample] = []
    try:
        started = time.monotonic()
        idle_before, before = _sample(pid, url, started, _scrape(url))
        print(HEADER, flush=True)
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            pending = pool.map_async(
                _client_process, [(url, plan[k::processes], seconds) for k in range(processes)]
            )
            while not pending.ready():
                pending.wait(args.sample_seconds)
                sample, before = _sample(pid, url, started, before)
                samples.append(sample)
                print(_row(sample), flush=True)
            heard = [n for part in pending.get() for n in part]
        time.sleep(5.0)  # the relay notices the peers' goodbyes and closes their calls
        idle_after, _ = _sample(pid, url, started, before)
        print(f"{_row(idle_before)}   <- idle, before anyone joined")
        print(f"{_row(idle_after)}   <- idle, after everyone left")
        expected = seconds * 50
        print(f"frames heard per participant: {min(heard)}-{max(heard)} of about {expected:.0f}")
    finally:
        served.stop()
    for line in verdict(samples, idle_before, idle_after):
        print(line)
    return samples


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=16)
    parser.add_argument("--room-size", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        help="server enhancement threads (PNR_WORKER_THREADS; 0: on the event loop; "
        "default: the server's)",
    )
    args = parser.parse_args(argv)
    if args.participants < 2 or args.room_size < 2 or args.minutes <= 0:
        parser.error("need at least 2 participants, rooms of 2 or more, and a positive duration")
    run(args)


if __name__ == "__main__":
    main()
