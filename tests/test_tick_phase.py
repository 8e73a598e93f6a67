"""Where the room's clock should tick for a talk spurt: the phases of the speaker's frames
(pure logic, arrival times passed in)."""

from __future__ import annotations

import pytest

from service.tick_phase import TickPhase

PERIOD = 0.020


def arrive(phase: TickPhase, speaker: str, offsets: list[float], frames: int) -> float:
    """``frames`` frames of ``speaker``, frame n at 20n ms + ``offsets[n % len]``; returns the
    last one's arrival time."""
    now = 0.0
    for frame in range(frames):
        now = 1.0 + PERIOD * frame + offsets[frame % len(offsets)]
        phase.arrived(speaker, now)
    return now


def test_the_tick_comes_the_margin_after_the_latest_recent_frame() -> None:
    phase = TickPhase(0.004, PERIOD)
    now = arrive(phase, "a", [0.0065, 0.0075, 0.007], frames=30)  # the last came at 7 ms
    assert phase.next_tick("a", now) == pytest.approx(now + 0.0045)  # 7.5 + 4 ms


def test_frames_that_straddle_the_period_stay_together() -> None:
    phase = TickPhase(0.004, PERIOD)
    # frames 0.5 ms before the period's edge and 0.5 ms after it: the latest is 0.5 ms
    now = arrive(phase, "a", [-0.0005, 0.0005], frames=30)
    assert (phase.next_tick("a", now) - 1.0) % PERIOD == pytest.approx(0.0045)


def test_each_speaker_has_its_own_phase_and_a_newcomer_its_first_frame() -> None:
    phase = TickPhase(0.004, PERIOD)
    arrive(phase, "a", [0.003], frames=30)
    now = arrive(phase, "b", [0.015], frames=30)
    assert (phase.next_tick("b", now) - 1.0) % PERIOD == pytest.approx(0.019)
    assert (phase.next_tick("a", now) - 1.0) % PERIOD == pytest.approx(0.007)
    phase.arrived("c", 5.0123)
    assert phase.next_tick("c", 5.0123) == pytest.approx(5.0163)
    phase.forget("a")
    assert phase.next_tick("a", 6.0) == pytest.approx(6.004)  # nothing known: from now


def test_a_tick_that_already_suits_the_talker_stays_where_it_is() -> None:
    phase = TickPhase(0.004, PERIOD)
    arrive(phase, "a", [0.003], frames=30)
    current = 2.007  # the clock ticks 4 ms after a's frames
    now = arrive(phase, "b", [0.017], frames=30)  # b's would wait 10 ms: within 4 + 8 ms
    assert phase.next_tick("b", now, current) == current
    now = arrive(phase, "c", [0.010], frames=30)  # c's would wait 17 ms: the tick moves
    assert (phase.next_tick("c", now, current) - 1.0) % PERIOD == pytest.approx(0.014)
    now = arrive(phase, "d", [0.0065], frames=30)  # d's would wait 0.5 ms: it might miss it
    assert (phase.next_tick("d", now, current) - 1.0) % PERIOD == pytest.approx(0.0105)


def test_a_margin_of_zero_keeps_the_phase() -> None:
    phase = TickPhase(0.0, PERIOD)
    assert not phase.enabled
