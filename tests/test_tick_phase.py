"""The room clock's phase following the talkers' frames (pure logic, waits passed in)."""

from __future__ import annotations

import pytest

from service.tick_phase import TickPhase

PERIOD = 0.020


def settle(phase: TickPhase, arrivals: dict[str, list[float]], windows: int) -> list[float]:
    """Moves over ``windows`` windows of one frame per speaker per tick; each speaker's frame
    comes ``arrivals[speaker][tick % len]`` seconds into the period of a clock that starts
    ticking at 0 and moves as told."""
    offset, moves = 0.0, []
    for tick in range(windows * phase.window_ticks):
        for speaker, pattern in arrivals.items():
            arrival = pattern[tick % len(pattern)]
            phase.arrived(speaker, (offset - arrival) % PERIOD)
        move = phase.correction()
        offset += move
        if move:
            moves.append(move)
    return moves


def test_the_clock_moves_earlier_until_the_frames_wait_only_the_margin() -> None:
    phase = TickPhase(0.003, PERIOD)
    # frames come 2 ms into each period, ±0.5 ms: they wait 17.5–18.5 ms at first, then
    # 12.5 (a 5 ms step), 7.75, 5.375: less than twice the margin, so the clock stays
    moves = settle(phase, {"a": [0.0015, 0.002, 0.0025]}, windows=8)
    assert moves == pytest.approx([-0.005, -0.00475, -0.002375])  # gently, never later


def test_frames_that_straddle_the_tick_move_it_later_not_round_the_period() -> None:
    phase = TickPhase(0.003, PERIOD)
    # frames come at the tick, some 0.5 ms before it and some 0.5 ms after (late)
    moves = settle(phase, {"a": [-0.0005, 0.0, 0.0005]}, windows=3)
    assert moves and moves[0] == pytest.approx(0.0035)
    assert phase.moved_seconds == pytest.approx(0.0035)  # then they wait 3–4 ms: settled


def test_another_speakers_frames_are_not_pushed_past_their_tick() -> None:
    phase = TickPhase(0.003, PERIOD)
    # a straddles the tick; b's frames come 1 ms after it (they wait 19 ms): moving later
    # would make b's frames wait longer than a period, so the clock stays
    moves = settle(phase, {"a": [-0.0005, 0.0005], "b": [0.001]}, windows=3)
    assert moves == []


def test_a_margin_of_zero_keeps_the_phase() -> None:
    phase = TickPhase(0.0, PERIOD)
    assert settle(phase, {"a": [0.002]}, windows=3) == [] and not phase.enabled


def test_a_move_found_while_someone_talks_waits_for_a_quiet_tick() -> None:
    phase = TickPhase(0.003, PERIOD)
    for _ in range(3 * phase.window_ticks):  # frames straddle the tick all along
        for wait in (-0.0005, 0.0005):
            phase.arrived("a", wait)
        assert phase.correction(quiet=False) == 0.0
    assert phase.pending_seconds == pytest.approx(0.0035) and phase.moved_seconds == 0.0
    # the latest window's verdict stands: the frames now wait 5 ms, nothing to move
    for _ in range(phase.window_ticks):
        phase.arrived("a", 0.005)
        assert phase.correction(quiet=False) == 0.0
    assert phase.pending_seconds == 0.0
    for _ in range(phase.window_ticks):  # straddling again
        for wait in (-0.0005, 0.0005):
            phase.arrived("a", wait)
        phase.correction(quiet=False)
    assert phase.correction(quiet=True) == pytest.approx(0.0035)  # the first quiet tick
    assert phase.correction(quiet=True) == 0.0 and phase.pending_seconds == 0.0
