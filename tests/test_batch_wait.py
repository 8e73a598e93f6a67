"""The enhancement shard's wait for other speakers' frames (pure logic, times passed in)."""

from __future__ import annotations

import pytest

from service.batch_wait import FORGET_SECONDS, BatchWait


def test_a_frame_waits_for_the_others_due_within_the_clock_and_no_longer() -> None:
    wait = BatchWait(0.010)
    for speaker, at in [("a", 0.000), ("b", 0.003), ("c", 0.008), ("d", 0.0125)]:
        wait.arrived(speaker, at)
    # a's next frame at 20 ms: b due at 23 ms, c at 28 ms; d (32.5 ms) is past the clock
    assert wait.wait("a", 0.020) == pytest.approx(0.009)
    # the frame woken later waits only for what is still due; d's own frame is not waited for
    assert wait.wait("d", 0.0325) == pytest.approx(0.0)


def test_one_or_two_speakers_never_wait() -> None:
    wait = BatchWait(0.010)
    wait.arrived("a", 0.000)
    assert wait.wait("a", 0.020) == 0.0  # alone
    wait.arrived("b", 0.004)
    assert wait.wait("a", 0.020) == 0.0  # one other due: not worth a wait
    wait.arrived("c", 0.006)
    assert wait.wait("a", 0.020) == pytest.approx(0.007)


def test_speakers_gone_quiet_are_not_waited_for_and_no_clock_means_no_wait() -> None:
    wait = BatchWait(0.010)
    for speaker, at in [("b", 0.002), ("c", 0.004)]:
        wait.arrived(speaker, at)
    assert wait.wait("a", 0.020) == pytest.approx(0.005)
    assert wait.wait("a", 0.020 + FORGET_SECONDS) == 0.0
    off = BatchWait(0.0)
    for speaker, at in [("b", 0.002), ("c", 0.004)]:
        off.arrived(speaker, at)
    assert off.wait("a", 0.020) == 0.0
