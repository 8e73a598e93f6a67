"""Run ``percepnet-relay serve`` with a timing trace of its outbound media (for benchmarks).

    python -m loadtest.relay_trace TRACE.json serve --host 127.0.0.1 --port 8080

The relay runs as ``serve`` would, in this process, with hooks that note (``time.monotonic``,
system-wide on Linux, so the times compare with other processes') every RTP packet handed to
a DTLS transport (its SSRC, sequence number, RTP timestamp and size), every mixing tick (how
late it ran against its due time), each move of a room clock's phase, the frames the mixer
sheds or trims, each frame a speaker pushes into the mixer, each frame DTX leaves unsent and
each garbage collection (its generation and how long it took).
The trace is written as JSON when the relay exits (SIGTERM: it drains, then exits).
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.rtcdtlstransport import RTCDtlsTransport

from service.mixer import RoomMixer
from service.room import Room
from service.tick_phase import TickPhase
from service.tracks import MixedAudioTrack

RATE = 48000
FRAME = 960
HISTORY_SECONDS = 2.0  # NetEq's relative-delay history
CAUSE_WINDOW_SECONDS = 0.025  # a relay event this long before a step may have caused it


def unwrapped(timestamps: Sequence[int]) -> np.ndarray:
    """32-bit RTP timestamps as one increasing count (wraps undone)."""
    steps = np.mod(np.diff(np.asarray(timestamps, dtype=np.int64)), 1 << 32)
    steps[steps >= 1 << 31] -= 1 << 32  # a step back (reordering) stays negative
    return np.concatenate(([0], np.cumsum(steps)))


def offsets_seconds(times: Sequence[float], timestamps: Sequence[int]) -> np.ndarray:
    """Each packet's send (or arrival) time less its RTP timestamp, from the first's."""
    offsets = np.asarray(times, dtype=np.float64) - unwrapped(timestamps) / RATE
    return offsets - offsets[0]


def relative_delays(times: Sequence[float], offsets: np.ndarray) -> np.ndarray:
    """Each offset above the lowest of the ``HISTORY_SECONDS`` up to it (itself included)."""
    times_array = np.asarray(times, dtype=np.float64)
    out = np.empty_like(offsets)
    start = 0
    for i, now in enumerate(times_array):
        while times_array[start] < now - HISTORY_SECONDS:
            start += 1
        out[i] = offsets[i] - offsets[start : i + 1].min()
    return out


def rfc3550_jitter(offsets: np.ndarray) -> np.ndarray:
    """The interarrival jitter estimate after each packet (RFC 3550 A.8), in seconds."""
    jitter = np.zeros_like(offsets)
    for i in range(1, offsets.shape[0]):
        jitter[i] = jitter[i - 1] + (abs(offsets[i] - offsets[i - 1]) - jitter[i - 1]) / 16
    return jitter


@dataclass
class Step:
    """A change of the offset between two consecutive packets."""

    time: float
    seconds: float
    cause: str


def steps(
    times: Sequence[float],
    timestamps: Sequence[int],
    offsets: np.ndarray,
    events: dict[str, list[list]],
    threshold_seconds: float,
) -> list[Step]:
    """Offset steps above ``threshold_seconds``, each with the relay's likely cause."""
    ticks = unwrapped(timestamps)
    found = []
    for i in (np.flatnonzero(np.abs(np.diff(offsets)) > threshold_seconds) + 1).tolist():
        start, end = times[i - 1] - CAUSE_WINDOW_SECONDS, times[i]

        def near(kind: str, start: float = start, end: float = end) -> list[list]:
            return [event for event in events.get(kind, []) if start < event[0] <= end]

        if ticks[i] - ticks[i - 1] > FRAME:
            cause = "DTX pause ended"
        elif any(seconds > threshold_seconds / 2 for _, _, seconds, _ in near("gc")):
            cause = "garbage collection"
        elif near("phase"):
            cause = "clock phase moved"
        elif any(late > threshold_seconds for _, _, late in near("tick")):
            cause = "tick ran late"
        elif near("trim"):
            cause = "mixer shed/trimmed"
        else:
            cause = "other"
        found.append(Step(times[i], float(offsets[i] - offsets[i - 1]), cause))
    return found


RTCP_TYPES = range(200, 208)  # the second byte of an RTCP packet (RFC 3550, RFC 4585)

Events = dict[str, list[list[Any]]]


def _wrap(owner: type, name: str, note: Callable[..., None]) -> None:
    """Replace ``owner.name`` by a wrapper that calls ``note(result, self, *args)`` after it;
    coroutine functions are noted when they finish."""
    original = getattr(owner, name)
    if hasattr(original, "__code__") and original.__code__.co_flags & 0x80:  # async def

        @functools.wraps(original)
        async def wrapped_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original(self, *args, **kwargs)
            note(result, self, *args)
            return result

        setattr(owner, name, wrapped_async)
        return

    @functools.wraps(original)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        note(result, self, *args)
        return result

    setattr(owner, name, wrapped)


def install() -> Events:
    """Hook the relay's classes; returns the lists the hooks append to."""
    events: Events = {
        "rtp": [],  # [t, ssrc, seq, timestamp, bytes]
        "tick": [],  # [t, room, seconds late against the tick's due time]
        "phase": [],  # [t, seconds moved (negative: earlier)]
        "trim": [],  # [t, frames shed or trimmed by this tick]
        "push": [],  # [t, speaker, speaking, frames waiting after the push]
        "dtx_unsent": [],  # [t]
        "gc": [],  # [t at its end, generation, seconds it took, objects collected]
    }
    now = time.monotonic

    def rtp(_: object, transport: RTCDtlsTransport, data: bytes) -> None:
        if len(data) >= 12 and data[1] not in RTCP_TYPES:
            seq, timestamp, ssrc = struct.unpack_from("!HII", data, 2)
            events["rtp"].append([now(), ssrc, seq, timestamp, len(data)])

    def tick(_: object, room: Room, outputs: object) -> None:
        loop_late = (room._loop.time() - room._next_tick) if room._loop else 0.0
        events["tick"].append([now(), room.name, loop_late])

    def phase(_: object, __: TickPhase, move: float) -> None:
        events["phase"].append([now(), move])

    trimmed_before: dict[int, int] = {}

    def mixer_tick(_: object, mixer: RoomMixer) -> None:
        before = trimmed_before.get(id(mixer), 0)
        if mixer.trimmed_frames != before:
            events["trim"].append([now(), mixer.trimmed_frames - before])
        trimmed_before[id(mixer)] = mixer.trimmed_frames

    def push(_: object, mixer: RoomMixer, speaker: str, samples: object, *rest: Any) -> None:
        speaking = bool(rest[0]) if rest else True
        waiting = len(mixer._channels[speaker].frames) if speaker in mixer else 0
        events["push"].append([now(), speaker, speaking, waiting])

    def put(_: object, track: MixedAudioTrack, *args: Any) -> None:
        if track._gap_frames:
            events["dtx_unsent"].append([now()])

    gc_started = [0.0]

    def collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = now()
        else:
            end = now()
            events["gc"].append([end, info["generation"], end - gc_started[0], info["collected"]])

    gc.callbacks.append(collection)
    _wrap(RTCDtlsTransport, "_send_rtp", rtp)
    _wrap(Room, "send", tick)
    _wrap(TickPhase, "moved", phase)
    _wrap(RoomMixer, "tick", mixer_tick)
    _wrap(RoomMixer, "push", push)
    _wrap(MixedAudioTrack, "put", put)
    return events


def resumptions(events: Events, ssrc: int) -> list[tuple[float, float]]:
    """The packets of ``ssrc`` that end a DTX pause (the first of a talk spurt): when each was
    sent, and how long before that the last frame to be mixed reached the mixer."""
    sent = [event for event in events["rtp"] if event[1] == ssrc]
    if not sent:
        return []
    ticks = unwrapped([event[3] for event in sent])
    pushed = np.array([event[0] for event in events.get("push", []) if event[2]])
    found = []
    for i in (np.flatnonzero(np.diff(ticks) > FRAME) + 1).tolist():
        before = pushed[pushed <= sent[i][0]]
        found.append((sent[i][0], sent[i][0] - before[-1] if before.size else float("nan")))
    return found


def stream_figures(
    events: Events, ssrc: int, step_threshold_seconds: float = 0.002, skip_seconds: float = 3.0
) -> dict[str, Any]:
    """The timing of the stream the relay sent as ``ssrc``, after ``skip_seconds`` of it."""
    sent = [event for event in events["rtp"] if event[1] == ssrc]
    whole_call = relative_delays(
        [event[0] for event in sent],
        offsets_seconds([event[0] for event in sent], [event[3] for event in sent]),
    )
    sent = [event for event in sent if event[0] >= sent[0][0] + skip_seconds]
    times, timestamps = [event[0] for event in sent], [event[3] for event in sent]
    offsets = offsets_seconds(times, timestamps)
    relative = relative_delays(times, offsets)
    causes: dict[str, list[float]] = {}
    for step in steps(times, timestamps, offsets, events, step_threshold_seconds):
        causes.setdefault(step.cause, []).append(round(1000 * step.seconds, 1))
    late = [1000 * late for t, _, late in events["tick"] if t >= times[0]]
    return {
        "packets": len(times),
        "rfc3550_jitter_ms": 1000 * float(np.mean(rfc3550_jitter(offsets))),
        "relative_delay_ms": {
            q: 1000 * float(np.percentile(relative, q)) for q in (50, 90, 95, 99, 100)
        },
        "whole_call_relative_delay_max_ms": 1000 * float(whole_call.max()),
        "tick_late_ms": {q: float(np.percentile(late, q)) for q in (50, 99, 100)} if late else {},
        "phase_moves_ms": [round(1000 * move, 1) for t, move in events["phase"] if t >= times[0]],
        "trimmed_frames": sum(n for t, n in events["trim"] if t >= times[0]),
        "gc_ms": {
            generation: [
                round(1000 * seconds, 1)
                for t, g, seconds, _ in events.get("gc", [])
                if g == generation and t >= times[0] and seconds > 0.001
            ]
            for generation in (0, 1, 2)
        },
        "steps_ms": causes,
    }


def describe(figures: dict[str, Any]) -> str:
    """One line of :func:`stream_figures`' figures."""
    relative, late = figures["relative_delay_ms"], figures["tick_late_ms"]
    return (
        f"{figures['packets']} packets, RFC 3550 jitter {figures['rfc3550_jitter_ms']:.2f} ms, "
        f"relative delay p50/p95/p99/max {relative[50]:.1f}/{relative[95]:.1f}/"
        f"{relative[99]:.1f}/{relative[100]:.1f} ms (from the start "
        f"{figures['whole_call_relative_delay_max_ms']:.1f}); ticks late p99/max "
        f"{late.get(99, 0):.1f}/{late.get(100, 0):.1f} ms; phase moves "
        f"{figures['phase_moves_ms']}; trimmed {figures['trimmed_frames']}; collections over 1 ms "
        f"by generation {figures['gc_ms']}; burst sent to its first packet sent "
        f"{figures.get('onset_relay_share_ms')} ms, of which from mixer to wire "
        f"{figures.get('onset_mixer_wait_ms')} ms; offset steps by "
        f"cause {figures['steps_ms']}"
    )


def main(argv: list[str] | None = None) -> int:
    """``TRACE_PATH`` then the arguments of ``percepnet-relay``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) < 2:
        print("error: usage: python -m loadtest.relay_trace TRACE.json serve ...", file=sys.stderr)
        return 2
    path = Path(arguments[0])
    events = install()
    atexit.register(lambda: path.write_text(json.dumps(events)))
    from service.cli import main as cli_main

    return cli_main(arguments[1:])


if __name__ == "__main__":
    sys.exit(main())
