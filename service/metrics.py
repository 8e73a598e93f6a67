"""Prometheus metrics of one relay (own registry, so several relays can live in one process).

Base units, ``_total`` counters, no room or participant ids as labels.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

HOP_BUCKETS = (
    25e-6,
    50e-6,
    75e-6,
    100e-6,
    150e-6,
    200e-6,
    300e-6,
    500e-6,
    1e-3,
    2e-3,
    5e-3,
    10e-3,
    20e-3,
)
# 2.5 ms steps around the 20 ms real-time bound, so a p99 read from them is not just
# interpolated across 10-20 ms
LAG_BUCKETS = (
    0.5e-3,
    1e-3,
    2e-3,
    5e-3,
    10e-3,
    12.5e-3,
    15e-3,
    17.5e-3,
    20e-3,
    22.5e-3,
    25e-3,
    30e-3,
    40e-3,
    80e-3,
    160e-3,
    320e-3,
)
NETWORK_BUCKETS = (1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3, 1.0)


def thread_group(name: str) -> str:
    """A thread's group: its Python name without the number ("enhance-1" → "enhance"), the
    main thread's "event_loop"."""
    if name == "MainThread":
        return "event_loop"
    return re.sub(r"[-_ ]?\(?\d+\)?$", "", name.split(" (")[0]) or "thread"


class ThreadCpuCollector(Collector):
    """``pnr_thread_cpu_seconds_total{thread=…}``: CPU time of this process's threads, grouped
    by Python thread name without its number (event loop, enhancement shards, aiortc's audio
    decoders, asyncio's executor…), read from /proc (Linux; nothing elsewhere)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "pnr_thread_cpu_seconds", "CPU time by thread group", labels=["thread"]
        )
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        groups: dict[str, float] = {}
        for thread in threading.enumerate():
            stat = Path(f"/proc/self/task/{thread.native_id}/stat")
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            group = "event_loop" if thread is threading.main_thread() else thread_group(thread.name)
            groups[group] = groups.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
        for group, seconds in sorted(groups.items()):
            family.add_metric([group], seconds)
        yield family


# Every reason the relay counts under these labelled counters: each series is created at zero
# on start-up, so that dashboards show 0 rather than "No data" before a first event.
FRAMES_DROPPED_REASONS = (
    "behind",
    "mixer_overflow",
    "latency_trim",
    "output_overflow",
)
FRAMES_PASSED_REASONS = ("error", "disabled")
LEAVE_REASONS = (
    "whip_delete",
    "whep_delete",
    "removed",
    "shutdown",
    "connection_failed",
    "connection_closed",
    "connect_timeout",
    "media_timeout",
    "room_closed",
)
FORWARDED_HOWS = ("redirect", "proxy")  # requests for other nodes' rooms

# the one signaling error worth an alert at any rate (a bug); the others are open-ended (one
# per refusal reason) and appear when first counted
SIGNALING_ERROR_REASONS = ("internal",)


class RelayMetrics:
    """Every metric the relay exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.info = Info("pnr_build", "Relay build and model", registry=r)
        self.ready = Gauge("pnr_ready", "1 when the relay accepts joins", registry=r)
        self.rooms = Gauge("pnr_rooms", "Rooms open", registry=r)
        self.participants = Gauge(
            "pnr_participants", "Participants connected or joining", registry=r
        )
        self.asyncio_tasks = Gauge(
            "pnr_asyncio_tasks", "Tasks alive in the relay's event loop (leak watch)", registry=r
        )
        self.joins = Counter("pnr_joins_total", "Participants admitted", registry=r)
        self.leaves = Counter(
            "pnr_leaves_total", "Participants gone, by reason", ["reason"], registry=r
        )
        self.signaling_errors = Counter(
            "pnr_signaling_errors_total",
            "Rejected signaling requests, by reason",
            ["reason"],
            registry=r,
        )
        self.signaling_forwarded = Counter(
            "pnr_signaling_forwarded_total",
            "Requests for rooms of other nodes, by how they were sent on (redirect, proxy)",
            ["how"],
            registry=r,
        )
        self.hop_seconds = Histogram(
            "pnr_hop_processing_seconds",
            "Enhancer time per 10 ms hop (DSP + model)",
            buckets=HOP_BUCKETS,
            registry=r,
        )
        self.lag_seconds = Histogram(
            "pnr_processing_lag_seconds",
            "From a decoded frame's arrival to its enhanced version reaching the mixer",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "pnr_batch_size",
            "Speakers enhanced together in one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.frames_enhanced = Counter(
            "pnr_frames_enhanced_total", "20 ms frames enhanced", registry=r
        )
        self.frames_passed = Counter(
            "pnr_frames_passed_through_total",
            "Frames forwarded without enhancement, by reason",
            ["reason"],
            registry=r,
        )
        self.frames_concealed = Counter(
            "pnr_frames_concealed_total",
            "Frames of lost packets filled by Opus concealment (PLC or in-band FEC)",
            registry=r,
        )
        self.frames_dropped = Counter(
            "pnr_frames_dropped_total", "Frames discarded, by reason", ["reason"], registry=r
        )
        self.speaking = Gauge(
            "pnr_speaking_participants", "Participants speaking now (voice activity)", registry=r
        )
        self.mix_encodes = Counter(
            "pnr_mix_encodes_total",
            "Opus encodes of listeners' mixes: one per distinct mix and tick, shared by every "
            "listener who hears the same speakers",
            registry=r,
        )
        self.mix_frames_sent = Counter(
            "pnr_mix_frames_sent_total",
            "Mixed frames handed to listeners (encoded, or the shared silence packet)",
            registry=r,
        )
        self.mix_frames_unsent = Counter(
            "pnr_mix_frames_unsent_total",
            "Of those, frames not sent at all: the listener's mix was silent (DTX)",
            registry=r,
        )
        self.mixer_ticks_late = Counter(
            "pnr_mixer_ticks_skipped_total",
            "Mixer ticks skipped because the loop was late",
            registry=r,
        )
        self.packets_received = Counter(
            "pnr_rtp_packets_received_total", "RTP packets received from participants", registry=r
        )
        self.packets_lost = Counter(
            "pnr_rtp_packets_lost_total",
            "RTP packets from participants that never arrived",
            registry=r,
        )
        self.jitter_seconds = Histogram(
            "pnr_rtp_jitter_seconds",
            "Interarrival jitter of participants' audio, sampled",
            buckets=NETWORK_BUCKETS,
            registry=r,
        )
        r.register(ThreadCpuCollector())
        for counter, reasons in (
            (self.frames_dropped, FRAMES_DROPPED_REASONS),
            (self.frames_passed, FRAMES_PASSED_REASONS),
            (self.leaves, LEAVE_REASONS),
            (self.signaling_errors, SIGNALING_ERROR_REASONS),
            (self.signaling_forwarded, FORWARDED_HOWS),
        ):
            for reason in reasons:
                counter.labels(reason)
        self.rtt_seconds = Histogram(
            "pnr_rtt_seconds",
            "Round-trip time to participants (RTCP), sampled",
            buckets=NETWORK_BUCKETS,
            registry=r,
        )
