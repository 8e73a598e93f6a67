"""Load test (a benchmark, not a test): N aiortc participants in rooms on 127.0.0.1.

Starts ``percepnet-relay serve`` (or targets ``--url``), spreads N participants over several
client processes so the clients are not the bottleneck, has each send noisy speech as Opus in
real time (pre-encoded; dev-split speech + noise from ../shared/data, or generated audio
without it) and record what it receives, for a fixed duration once every peer is connected.
Only the first listener of each room decodes what it hears (for the mouth-to-ear delay); the
others time the packets and drop them. ``--isolate`` keeps the server on core 0 and the
clients on the other cores, so the server's CPU is measured apart from the load generator's;
``--realtime-priority P`` also runs them under SCHED_FIFO (server P, clients P - 1), so that
other work on a shared machine cannot take the server's core.
Reports, as a table and JSON: server CPU per participant (% of one core), per-hop processing
time and processing lag p50/p99 (from the server's histograms), frames dropped or passed
through, mouth-to-ear delay p50/p95 (received audio aligned with each other speaker's signal
and their send times), server RSS and the client processes' own CPU; ``--profile RAW`` adds
where the server's time goes (py-spy, see loadtest/profile.py).

    python -m loadtest.relay_load --participants 8 --room-size 4 --seconds 20
    python -m loadtest.relay_load --isolate --ramp --participants 8   # one server core
    python -m loadtest.relay_load --isolate --realtime-priority 40 --participants 24
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from loadtest.process_stats import cores_busy_seconds, cpu_seconds, rss_bytes
from loadtest.profile import (
    components,
    print_components,
    py_spy_command,
    read_samples,
    start_recording,
)
from loadtest.server import pin, serve_on_loopback

RATE = 48000
FRAME = 960
SETTLE_SECONDS = 2.0  # after everyone connected, before the measured window
ALIGN_SECONDS = 4.0
TURN_SECONDS = 3.0  # --one-talker: each member of a room talks for this long in turn
PROFILE_KEY = "server_profile_percent_per_participant"


def participant_signal(
    index: int, seconds: float, data_dir: Path | None, turn: tuple[int, int] | None = None
) -> np.ndarray:
    """Noisy speech for participant ``index`` (distinct per participant, deterministic).
    ``turn`` = (slot, slots): speech only in every ``slots``-th stretch of ``TURN_SECONDS``
    starting with stretch ``slot``, background noise throughout (one talker at a time)."""
    from model.splits import has_manifest

    n = int(seconds * RATE)
    talks = np.ones(n, dtype=bool)
    if turn is not None:
        slot, slots = turn
        talks = (np.arange(n) // int(TURN_SECONDS * RATE)) % slots == slot
    if data_dir is not None and has_manifest(data_dir):
        from model.devset import build_dev_mixtures

        # several different utterances back to back: a looped one would make the alignment
        # of received audio ambiguous by whole periods; drawn seeds (seed 0 is the 12 pinned
        # evaluation mixtures per SNR, too few for a long run)
        mixtures = build_dev_mixtures(
            data_dir, per_snr=int(seconds // 2) + 2, snrs_db=(5.0,), seed=index + 1
        )
        noisy = np.resize(np.concatenate([m.noisy for m in mixtures]), n)
        clean = np.resize(np.concatenate([m.clean for m in mixtures]), n)
        signal = noisy - clean * ~talks
    else:
        # voiced bursts of random length and pitch over a noise floor: never periodic, so the
        # received audio aligns unambiguously
        rng = np.random.default_rng(index)
        signal = 0.03 * rng.standard_normal(n)
        position = 0
        while position < n:
            length = int(rng.uniform(0.1, 0.4) * RATE)
            if rng.random() < 0.6:
                t = np.arange(min(length, n - position)) / RATE
                f0 = rng.uniform(90, 250) * (1 + 0.1 * t)
                phase = 2 * np.pi * np.cumsum(f0) / RATE
                burst = sum(np.sin(k * phase) / k for k in range(1, 15))
                part = slice(position, position + t.size)
                signal[part] += 0.3 * burst * np.hanning(t.size) * talks[part]
            position += length
    peak = np.max(np.abs(signal)) or 1.0
    return (0.5 * signal / peak).astype(np.float32)


def _turn(index: int, others: list[int], one_talker: bool) -> tuple[int, int] | None:
    """``index``'s turn in its room when one talks at a time, else None."""
    members = sorted([index, *others])
    return (members.index(index), len(members)) if one_talker else None


def lag_of(reference: np.ndarray, received: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Best lag of ``reference`` inside ``received`` and the normalised correlation there."""
    size = 1 << int(np.ceil(np.log2(reference.shape[0] + received.shape[0])))
    spectrum = np.fft.rfft(received, size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)[: max_lag + 1]
    lag = int(np.argmax(correlation))
    norm = np.linalg.norm(reference) * np.linalg.norm(received[lag : lag + reference.shape[0]])
    return lag, float(correlation[lag] / norm) if norm > 0 else 0.0


@dataclass
class PeerResult:
    """What one participant measured."""

    index: int
    room: str
    connected: bool
    send_times: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    lags: dict[int, tuple[int, float]] = field(default_factory=dict)  # speaker → (lag, corr)
    received_rms: float = 0.0


async def _run_peers(
    url: str,
    plan: list[tuple[int, str, list[int]]],
    seconds: float,
    data_dir: Path | None,
    one_talker: bool = False,
) -> list[PeerResult]:
    from loadtest.peers import Peer

    signals = {
        index: participant_signal(index, seconds + 5, data_dir, _turn(index, others, one_talker))
        for index, _, others in plan
    }
    peers = [  # the first of each room decodes what it hears, the others only time it
        Peer(signals[index], pre_encoded=True, decode=index < min(others, default=index + 1))
        for index, _, others in plan
    ]
    results = [PeerResult(index, room, False) for index, room, _ in plan]
    await asyncio.gather(*(p.join(url, room) for p, (_, room, _) in zip(peers, plan, strict=True)))
    try:
        await asyncio.gather(*(p.wait_connected(60) for p in peers))
    except TimeoutError:
        pass
    # a full collection of the peers' objects stalls this process's sends for 50-70 ms every
    # ~2 s, and the relay then gets a burst of packets per peer: out of the collector's reach
    gc.collect()
    gc.freeze()
    if _connected is not None:  # tell the parent: its measured window may begin
        with _connected.get_lock():
            _connected.value += 1
    await asyncio.sleep(seconds)
    for peer, result, (_, _, others) in zip(peers, results, plan, strict=True):
        result.connected = peer.pc.connectionState == "connected"
        assert peer.sender is not None
        result.send_times = list(peer.sender.send_times)
        result.arrivals = list(peer.recorder.arrivals)
        received = peer.recorder.samples
        result.received_rms = float(np.sqrt(np.mean(received**2))) if received.size else 0.0
        end = min(SETTLE_SECONDS + ALIGN_SECONDS, seconds - 1.5)
        window = slice(int(RATE * SETTLE_SECONDS), int(RATE * end))
        for other in others:  # align each other speaker's signal inside what we heard
            turn = _turn(other, [i for i in others if i != other] + [result.index], one_talker)
            reference = participant_signal(other, seconds + 5, data_dir, turn)[window]
            if received.shape[0] > window.stop + RATE // 2:
                lag, corr = lag_of(reference, received, max_lag=received.shape[0] - reference.size)
                result.lags[other] = (lag - window.start, corr)
    await asyncio.gather(*(p.close() for p in peers))
    return results


_connected: Any = None  # a client process's shared counter of processes whose peers connected


def _client_init(connected: Any, cpus: set[int] | None, realtime_priority: int | None) -> None:
    global _connected
    _connected = connected
    pin(cpus, realtime_priority)


def _client_process(
    args: tuple[str, list[tuple[int, str, list[int]]], float, str | None, bool],
) -> list[PeerResult]:
    from service.aiortc_patches import restrict_host_addresses

    url, plan, seconds, data_dir, one_talker = args
    restrict_host_addresses(["127.0.0.1"])  # loopback only, like the server
    try:
        return asyncio.run(
            _run_peers(url, plan, seconds, Path(data_dir) if data_dir else None, one_talker)
        )
    except Exception as error:  # some exceptions (httpx's) do not survive pickling
        raise RuntimeError(f"client process failed: {error!r}") from None


# ---- server side ------------------------------------------------------------------------------
def _clients_cpu_seconds(server_seconds: float | None, profiler: Any) -> float:
    """CPU time of the client processes: this process's tree less the server and py-spy."""
    others = (server_seconds or 0.0) + (cpu_seconds(profiler.pid) if profiler else 0.0)
    return cpu_seconds(os.getpid()) - others


Sample = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted label pairs)


def _scrape(url: str) -> dict[Sample, float]:
    """Every sample of the relay's ``/metrics``, summed over its nodes (``serve --processes N``
    runs N, each with its own ``/metrics``)."""
    nodes = [str(node["url"]) for node in httpx.get(url + "/nodes", timeout=5).json()]
    totals: dict[Sample, float] = {}
    for node in nodes or [url]:
        text = httpx.get(node + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _delta(before: dict, after: dict, name: str, **wanted: str) -> dict[Sample, float]:
    """Increase of every sample of ``name`` whose labels include ``wanted``."""
    out = {}
    for key, value in after.items():
        sample, labels = key[0], dict(key[1])
        if sample == name and all(labels.get(k) == v for k, v in wanted.items()):
            out[key] = value - before.get(key, 0.0)
    return out


def _histogram_quantile(before: dict, after: dict, name: str, q: float) -> float | None:
    by_bound: dict[float, float] = {}  # summed over workers
    for key, increase in _delta(before, after, f"{name}_bucket").items():
        bound = float(dict(key[1])["le"])  # "+Inf" reads as inf
        by_bound[bound] = by_bound.get(bound, 0.0) + increase
    buckets = sorted(by_bound.items())
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= q * total:
            if bound == float("inf"):
                return previous_bound
            share = (q * total - previous_count) / max(count - previous_count, 1e-12)
            return previous_bound + share * (bound - previous_bound)
        previous_bound, previous_count = bound, count
    return previous_bound


def _histogram_mean(before: dict, after: dict, name: str) -> float | None:
    count = sum(_delta(before, after, f"{name}_count").values())
    total = sum(_delta(before, after, f"{name}_sum").values())
    return total / count if count > 0 else None


def _bucket_shares(before: dict, after: dict, name: str) -> dict[str, float]:
    """Share of a histogram's observations in each bucket, as ``"≤bound"``: share."""
    cumulative = sorted(
        (float(dict(key[1])["le"]), increase)
        for key, increase in _delta(before, after, f"{name}_bucket").items()
    )
    merged: dict[float, float] = {}
    for bound, count in cumulative:  # summed over nodes
        merged[bound] = merged.get(bound, 0.0) + count
    total = max(merged.values(), default=0.0)
    shares, previous = {}, 0.0
    for bound, count in sorted(merged.items()):
        if total > 0 and count > previous:
            shares[f"<={bound:g}"] = round((count - previous) / total, 3)
        previous = count
    return shares


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _counter_sum(before: dict, after: dict, name: str, **wanted: str) -> float:
    return sum(_delta(before, after, name, **wanted).values())


def run(args: argparse.Namespace) -> dict[str, object]:
    """One load-test run; returns the report."""
    data_dir = None if args.generated else _data_dir(args.data_dir)
    server = None
    ready_seconds = None
    url = args.url
    if url is None:
        served = serve_on_loopback(
            {
                "PNR_MAX_PARTICIPANTS_PER_ROOM": str(args.room_size),
                "PNR_MAX_ROOMS": "1000",
                # every client peer joins from 127.0.0.1 at once: lift the per-address bounds
                "PNR_MAX_PENDING_PER_ADDRESS": str(max(args.participants, 1)),
                "PNR_MAX_PENDING_PEERS": str(max(args.participants, 128)),
                "PNR_SIGNALING_RATE_PER_SECOND": "0",
                "PNR_PROCESSES": str(args.processes),
                "PNR_LOG_LEVEL": "WARNING",
                **({} if args.workers is None else {"PNR_WORKER_THREADS": str(args.workers)}),
                **dict(setting.split("=", 1) for setting in args.set),
            },
            nodes=args.processes,
            cpus=args.server_cpus,
            realtime_priority=args.realtime_priority,
        )
        server, ready_seconds, url = served.process, served.ready_seconds, served.url
    try:
        rooms = [f"load{i // args.room_size}" for i in range(args.participants)]
        plan = [
            (i, rooms[i], [j for j in range(args.participants) if rooms[j] == rooms[i] and j != i])
            for i in range(args.participants)
        ]
        processes = max(1, min(args.client_processes, args.participants))
        shares = [plan[k::processes] for k in range(processes)]
        context = multiprocessing.get_context("spawn")
        connected = context.Value("i", 0)
        client_priority = args.realtime_priority and max(1, args.realtime_priority - 1)
        with context.Pool(
            processes, _client_init, (connected, args.client_cpus, client_priority)
        ) as pool:
            pending = pool.map_async(
                _client_process,
                [
                    (url, share, args.seconds, str(data_dir) if data_dir else None, args.one_talker)
                    for share in shares
                ],
            )
            deadline = time.monotonic() + 120.0  # joins and ICE, however loaded the machine
            while connected.value < processes and time.monotonic() < deadline:
                if pending.ready():
                    break
                time.sleep(0.05)
            time.sleep(min(args.seconds / 2 - 1.0, 8.0))  # then the steady window
            planned = max(1.0, args.seconds / 2 - 2.0)
            profiler = (  # runs past the window, so its own CPU can be told apart
                start_recording(server.pid, planned + 2.0, args.profile)
                if args.profile and server
                else None
            )
            window_start = time.monotonic()
            before = _scrape(url)
            cpu_before = cpu_seconds(server.pid) if server else None
            cores_before = cores_busy_seconds(args.server_cpus) if args.server_cpus else None
            clients_before = _clients_cpu_seconds(cpu_before, profiler)
            time.sleep(planned)
            window = time.monotonic() - window_start
            after = _scrape(url)
            cpu_after = cpu_seconds(server.pid) if server else None
            cores_after = cores_busy_seconds(args.server_cpus) if args.server_cpus else None
            clients_after = _clients_cpu_seconds(cpu_after, profiler)
            rss = rss_bytes(server.pid) if server else None
            scheduling = scheduling_of(server.pid) if server else None
            if profiler is not None:
                profiler.wait(planned + 30)
            results: list[PeerResult] = [
                r for part in pending.get(args.seconds + 180) for r in part
            ]
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    report = _report(
        args, results, before, after, window, cpu_before, cpu_after, rss, ready_seconds, data_dir
    )
    report["server_scheduling"] = scheduling
    if cpu_before is not None and cpu_after is not None and window > 0:
        # SCHED_FIFO near 95 % of its core would be capped by RT throttling, not by the relay
        report["server_cpu_percent_of_one_core"] = 100.0 * (cpu_after - cpu_before) / window
        if cores_before is not None and cores_after is not None:
            # what else ran on the server's cores (other jobs on a shared machine, interrupts;
            # SCHED_IDLE work too, which only fills time the server leaves idle)
            others = (cores_after - cores_before) - (cpu_after - cpu_before)
            report["server_cores_others_percent"] = 100.0 * max(others, 0.0) / window
    threads: dict[str, float] = {}  # where the server's time goes, % of one core, by thread
    for key, increase in _delta(before, after, "pnr_thread_cpu_seconds_total").items():
        group = dict(key[1]).get("thread", "?")
        if window > 0:
            threads[group] = threads.get(group, 0.0) + 100.0 * increase / window / args.participants
    threads = {group: round(share, 2) for group, share in threads.items() if share > 0.005}
    report["server_cpu_percent_per_participant_by_thread"] = dict(
        sorted(threads.items(), key=lambda kv: -kv[1])
    )
    if server is not None and window > 0:  # the load generator's own cost, same machine
        clients = 100.0 * (clients_after - clients_before) / window / args.participants
        report["client_cpu_percent_per_participant"] = clients
    if profiler is not None and args.profile.exists():
        rows = components(read_samples(args.profile), threads)
        report[PROFILE_KEY] = {k: round(v, 2) for k, v in rows}
    elif profiler is not None:
        why = (profiler.stderr.read() if profiler.stderr else b"").decode(errors="replace")
        print(f"no profile: py-spy wrote nothing ({why.strip()[-300:] or 'no message'})")
    return report


def _report(
    args: Any,
    results: list[PeerResult],
    before: dict[Sample, float],
    after: dict[Sample, float],
    window: float,
    cpu_before: float | None,
    cpu_after: float | None,
    rss: int | None,
    ready_seconds: float | None,
    data_dir: Path | None,
) -> dict[str, object]:
    by_index = {r.index: r for r in results}
    delays: list[float] = []
    for listener in results:
        for speaker_index, (lag, corr) in listener.lags.items():
            speaker = by_index[speaker_index]
            if corr < 0.2:  # not found in the mix (silent speaker or failed alignment)
                continue
            pair = []
            for frame, arrival in enumerate(listener.arrivals):
                sent = (frame * FRAME - lag) // FRAME
                if 0 <= sent < len(speaker.send_times) and frame * FRAME > RATE * SETTLE_SECONDS:
                    pair.append(arrival - speaker.send_times[sent])
            if pair and 0.0 < float(np.median(pair)) < 2.0:  # else the alignment went wrong
                delays.extend(pair)
    n = args.participants
    cpu_share = None
    if cpu_before is not None and cpu_after is not None and window > 0:
        cpu_share = 100.0 * (cpu_after - cpu_before) / window / n
    enhanced = _counter_sum(before, after, "pnr_frames_enhanced_total")
    report: dict[str, object] = {
        "participants": n,
        "room_size": args.room_size,
        "seconds": args.seconds,
        "audio": "dev split (../shared/data)" if data_dir else "generated",
        "server_cpus": ",".join(map(str, sorted(args.server_cpus))) if args.server_cpus else "any",
        "client_cpus": ",".join(map(str, sorted(args.client_cpus))) if args.client_cpus else "any",
        "connected": sum(r.connected for r in results),
        "server_ready_seconds": ready_seconds,
        "server_cpu_percent_per_participant": cpu_share,
        # CPU per second of audio actually enhanced: the same as the above when nothing is
        # lost, and still a cost (not a share of whatever CPU was left) on a starved machine
        "server_cpu_percent_per_enhanced_stream": (
            cpu_share * n / (enhanced / window / 50.0) if cpu_share and enhanced else None
        ),
        "hop_seconds_p50": _histogram_quantile(before, after, "pnr_hop_processing_seconds", 0.5),
        "hop_seconds_p99": _histogram_quantile(before, after, "pnr_hop_processing_seconds", 0.99),
        "lag_seconds_p50": _histogram_quantile(before, after, "pnr_processing_lag_seconds", 0.5),
        "lag_seconds_p99": _histogram_quantile(before, after, "pnr_processing_lag_seconds", 0.99),
        "frames_enhanced_per_second": enhanced / window if window else None,
        "frames_dropped": _counter_sum(before, after, "pnr_frames_dropped_total")
        - _counter_sum(before, after, "pnr_frames_dropped_total", reason="latency_trim"),
        "frames_dropped_by_reason": {
            dict(key[1]).get("reason", "?"): increase
            for key, increase in _delta(before, after, "pnr_frames_dropped_total").items()
            if increase > 0
        },
        "frames_trimmed_for_latency": _counter_sum(
            before, after, "pnr_frames_dropped_total", reason="latency_trim"
        ),
        "batch_size_mean": _histogram_mean(before, after, "pnr_batch_size"),
        "batch_size_share": _bucket_shares(before, after, "pnr_batch_size"),
        "talkers": "one per room at a time" if args.one_talker else "everyone",
        "server_settings": " ".join(args.set) or "defaults",
        "opus_encodes_per_listener_frame": _ratio(
            _counter_sum(before, after, "pnr_mix_encodes_total"),
            _counter_sum(before, after, "pnr_mix_frames_sent_total"),
        ),
        "mix_frames_unsent_share": _ratio(  # DTX: listeners' frames left unsent
            _counter_sum(before, after, "pnr_mix_frames_unsent_total"),
            _counter_sum(before, after, "pnr_mix_frames_sent_total"),
        ),
        "frames_passed_through": _counter_sum(before, after, "pnr_frames_passed_through_total"),
        "mouth_to_ear_seconds_p50": float(np.percentile(delays, 50)) if delays else None,
        "mouth_to_ear_seconds_p95": float(np.percentile(delays, 95)) if delays else None,
        "server_rss_bytes": rss,
        "server_rss_bytes_per_participant": rss / n if rss else None,
        "speakers_found_in_mixes": sum(1 for r in results for _, c in r.lags.values() if c >= 0.2),
        "speaker_pairs": sum(len(r.lags) for r in results),
    }
    return report


def _data_dir(option: str | None) -> Path | None:
    from model.devset import default_data_dir
    from model.splits import has_manifest

    path = Path(option) if option else default_data_dir()
    return path if has_manifest(path) else None


def print_table(report: dict[str, object]) -> None:
    """The report as a two-column table."""

    def show(value: object, key: str) -> str:
        if value is None:
            return "n/a"
        if key.endswith("_seconds_p50") or key.endswith("_seconds_p99") or "to_ear" in key:
            return f"{1000 * float(value):.2f} ms"  # type: ignore[arg-type]
        if "rss" in key:
            return f"{float(value) / 2**20:.1f} MiB"  # type: ignore[arg-type]
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    profile = report.get(PROFILE_KEY)
    rows = {k: v for k, v in report.items() if k != PROFILE_KEY}
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {show(value, key)}")
    if isinstance(profile, dict):
        print()
        print_components(list(profile.items()), "% of one core per participant")


def is_real_time(report: dict[str, object]) -> bool:
    """The ramp's criterion: every peer connected, p99 processing lag < 20 ms, nothing dropped."""
    lag = report["lag_seconds_p99"]
    return (
        report["connected"] == report["participants"]
        and lag is not None
        and float(lag) < 0.020  # type: ignore[arg-type]
        and report["frames_dropped"] == 0
    )


def plot_ramp(reports: list[dict[str, object]], path: Path) -> None:
    """Processing lag and server CPU against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [int(r["participants"]) for r in reports]  # type: ignore[call-overload]
    figure, (lag_axis, cpu_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("lag_seconds_p50", "p50"), ("lag_seconds_p99", "p99")):
        values = [
            1000 * float(r[key]) if r[key] is not None else float("nan")  # type: ignore[arg-type]
            for r in reports
        ]
        lag_axis.plot(counts, values, marker="o", label=label)
    lag_axis.axhline(20, color="grey", linestyle="--", linewidth=1)
    lag_axis.set(xlabel="participants", ylabel="processing lag (ms)", title="lag")
    lag_axis.legend()
    cpu = [
        float(r["server_cpu_percent_per_participant"] or 0) * int(r["participants"])  # type: ignore[arg-type,call-overload]
        for r in reports
    ]
    cpu_axis.plot(counts, cpu, marker="o")
    cpu_axis.set(xlabel="participants", ylabel="server CPU (% of one core)", title="CPU")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _cpus(text: str) -> set[int]:
    """``0`` or ``1,3`` or ``1-3``: a set of core numbers this process may use."""
    cores: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            cores.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of cores: {text!r}") from None
    if not cores or not cores <= os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"cores {text!r} are not all available here")
    return cores


def may_run_realtime(priority: int) -> bool:
    """Whether this process may use SCHED_FIFO at ``priority`` (tried, then undone)."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return False
    os.sched_setscheduler(0, policy, param)
    return True


def scheduling_of(pid: int) -> str:
    """``pid``'s scheduling policy, e.g. ``SCHED_FIFO 40`` or ``SCHED_OTHER nice 0``."""
    policy = os.sched_getscheduler(pid)
    if policy in (os.SCHED_FIFO, os.SCHED_RR):
        name = "SCHED_FIFO" if policy == os.SCHED_FIFO else "SCHED_RR"
        return f"{name} {os.sched_getparam(pid).sched_priority}"
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH"}
    names[os.SCHED_IDLE] = "SCHED_IDLE"
    return f"{names.get(policy, str(policy))} nice {os.getpriority(os.PRIO_PROCESS, pid)}"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=8)
    parser.add_argument("--room-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        help="server enhancement threads (PNR_WORKER_THREADS; 0: on the event loop; "
        "default: the server's)",
    )
    parser.add_argument("--processes", type=int, default=1, help="server relay processes")
    parser.add_argument("--url", help="target a running relay instead of starting one")
    parser.add_argument(
        "--one-talker",
        action="store_true",
        help=f"one talker per room at a time ({TURN_SECONDS:.0f} s turns), background noise "
        "from everyone (default: everyone talks all the time)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PNR_NAME=VALUE",
        help="a setting for the server it starts (repeatable), e.g. "
        "PNR_VOICE_ACTIVITY_THRESHOLD=0 for the every-frame-mixed baseline",
    )
    parser.add_argument(
        "--server-cpus", type=_cpus, help="cores the server runs on, e.g. 0 (default: any)"
    )
    parser.add_argument(
        "--client-cpus", type=_cpus, help="cores the client processes run on (default: any)"
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="server on core 0, clients on the other cores (same as --server-cpus 0 "
        "--client-cpus 1-…)",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        choices=range(2, 100),
        metavar="P",
        help="run the server's processes under SCHED_FIFO priority P and the client processes "
        "at P - 1 (2-99; needs root or CAP_SYS_NICE), so other work on their cores cannot take "
        "their time; the kernel still keeps 5 %% of each second for the rest (RT throttling)",
    )
    parser.add_argument("--data-dir", help="default: $PNR_DATA_DIR or ../shared/data")
    parser.add_argument("--generated", action="store_true", help="generated audio only")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--ramp",
        action="store_true",
        help="double N from --participants until it stops being real time "
        "(p99 lag < 20 ms, no drops), then bisect; plots lag and CPU against N",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="RAW",
        help="sample the server with py-spy during the measured window: collapsed stacks to "
        "RAW (flamegraph.pl/speedscope input), time by component in the report",
    )
    parser.add_argument("--max-participants", type=int, default=128)
    parser.add_argument("--plot", type=Path, default=Path("out/loadtest_ramp.png"))
    args = parser.parse_args(argv)
    if any("=" not in setting or not setting.startswith("PNR_") for setting in args.set):
        parser.error("--set takes PNR_NAME=VALUE")
    if args.isolate:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            parser.error("--isolate needs at least two cores")
        args.server_cpus, args.client_cpus = {cores[0]}, set(cores[1:])
    if args.participants < 2 or args.room_size < 2 or args.seconds < 4:
        parser.error("need at least 2 participants, rooms of 2 or more, and 4 seconds")
    if args.profile and (args.url or py_spy_command() is None):
        parser.error("--profile needs py-spy installed and a server started here (not --url)")
    if args.realtime_priority is not None and not may_run_realtime(args.realtime_priority):
        parser.error("--realtime-priority needs root or CAP_SYS_NICE (SCHED_FIFO was refused)")
    options = {key: str(value) for key, value in vars(args).items()}
    if not args.ramp:
        report = run(args)
        print_table(report)
        if args.json:
            args.json.write_text(json.dumps(report | {"args": options}, indent=2))
        return
    reports: list[dict[str, object]] = []
    good, bad = 0, None
    n = args.participants
    while n <= args.max_participants:
        args.participants = n
        report = run(args)
        reports.append(report)
        ok = is_real_time(report)
        print(f"N={n}: {'real time' if ok else 'NOT real time'}", flush=True)
        print_table(report)
        if ok:
            good = n
            if bad is None:
                n *= 2
        else:
            bad = n
        if bad is not None:
            if bad - good <= max(2, args.room_size // 2):
                break
            n = (good + bad) // 2
    reports.sort(key=lambda r: int(r["participants"]))  # type: ignore[call-overload]
    print(f"largest real-time N: {good or 'none'}")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot_ramp(reports, args.plot)
    print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(
            json.dumps({"largest_real_time": good, "runs": reports, "args": options}, indent=2)
        )


if __name__ == "__main__":
    main()
