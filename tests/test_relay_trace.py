"""The send-timing figures of loadtest.relay_trace, on made-up streams."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport

from loadtest.relay_trace import (
    offsets_seconds,
    relative_delays,
    rfc3550_jitter,
    steps,
    stream_figures,
    unwrapped,
)

FRAME = 960


def stream(count: int, start_timestamp: int = 0) -> tuple[list[float], list[int]]:
    """``count`` packets sent exactly every 20 ms, timestamps 960 apart (wrapping at 2**32)."""
    return [0.020 * i for i in range(count)], [
        (start_timestamp + FRAME * i) % (1 << 32) for i in range(count)
    ]


def test_a_steady_stream_has_no_jitter_even_across_a_timestamp_wrap() -> None:
    times, timestamps = stream(200, start_timestamp=(1 << 32) - 50 * FRAME)
    assert unwrapped(timestamps)[-1] == 199 * FRAME
    offsets = offsets_seconds(times, timestamps)
    assert np.abs(offsets).max() < 1e-9
    assert rfc3550_jitter(offsets).max() < 1e-9
    assert relative_delays(times, offsets).max() < 1e-9


def test_one_late_packet_shows_as_its_delay_and_two_steps() -> None:
    times, timestamps = stream(100)
    times[50] += 0.010
    offsets = offsets_seconds(times, timestamps)
    relative = relative_delays(times, offsets)
    assert relative[50] == pytest.approx(0.010) and relative.max() == pytest.approx(0.010)
    jitter = rfc3550_jitter(offsets)
    assert jitter[50] == pytest.approx(0.010 / 16) and jitter[51] > jitter[50]
    found = steps(times, timestamps, offsets, {"tick": [[times[50] - 0.001, "r", 0.010]]}, 0.002)
    assert [(s.cause, round(s.seconds, 4)) for s in found] == [
        ("tick ran late", 0.010),
        ("tick ran late", -0.010),  # the next tick, on time, undoes it
    ]


def test_a_phase_move_is_a_lasting_step_that_the_history_forgets() -> None:
    times, timestamps = stream(250)  # 5 s
    for i in range(100, 250):
        times[i] += 0.005  # the clock moved 5 ms later at packet 100
    offsets = offsets_seconds(times, timestamps)
    relative = relative_delays(times, offsets)
    assert relative[100] == pytest.approx(0.005)
    assert relative[249] == pytest.approx(0.0)  # more than 2 s later, the new phase is the floor
    found = steps(times, timestamps, offsets, {"phase": [[times[100] - 0.002, 0.005]]}, 0.002)
    assert [(s.cause, round(s.seconds, 4)) for s in found] == [("clock phase moved", 0.005)]


def test_a_dtx_pause_keeps_the_offset_and_its_end_is_named() -> None:
    times, timestamps = stream(100)
    del times[40:60], timestamps[40:60]  # 400 ms unsent, timestamps run on
    times[40] += 0.003
    offsets = offsets_seconds(times, timestamps)
    assert offsets[41] == pytest.approx(0.0)
    found = steps(times, timestamps, offsets, {}, 0.002)
    assert [s.cause for s in found] == ["DTX pause ended", "other"]


def test_the_figures_follow_one_ssrc_after_the_start_up() -> None:
    times, timestamps = stream(300)
    times[200] += 0.008
    ours = [[t, 7, i, ts, 100] for i, (t, ts) in enumerate(zip(times, timestamps, strict=True))]
    other = [
        [t, 9, i, ts + 480 * (i % 2), 99]
        for i, (t, ts) in enumerate(zip(times, timestamps, strict=True))
    ]
    events = {
        "rtp": ours + other,
        "tick": [],
        "phase": [[1.0, 0.004]],
        "trim": [[0.5, 1]],
    }
    figures = stream_figures(events, 7, skip_seconds=0.6)
    assert figures["packets"] == 270
    assert figures["relative_delay_ms"][100] == pytest.approx(8.0)
    assert figures["phase_moves_ms"] == [4.0] and figures["trimmed_frames"] == 0
    assert figures["steps_ms"] == {"other": [8.0, -8.0]}


def test_the_aiortc_name_the_trace_wraps_is_still_there() -> None:
    """``install`` notes each RTP packet sent by wrapping aiortc's private
    ``RTCDtlsTransport._send_rtp`` (a coroutine of the packet's bytes): a rename in aiortc would
    leave the trace without packets, so the name and its signature are pinned here."""
    original = RTCDtlsTransport._send_rtp
    assert inspect.iscoroutinefunction(original)
    assert list(inspect.signature(original).parameters) == ["self", "data"]
