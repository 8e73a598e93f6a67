"""The deterministic twin of the network-fault benchmark (``loadtest.playout_sim``): the relay's
receive buffer, concealing decoder and mixer on a simulated clock, under seeded loss, jitter and
a 2 s outage. The listener's audio stays continuous: no gap longer than the loss, no burst after
an outage, the delay back to normal within a second."""

from __future__ import annotations

import functools

import pytest

from loadtest.playout_sim import (
    CONDITIONS,
    PACKET_SECONDS,
    Playout,
    encode,
    simulate,
)
from loadtest.speech import speech_over_floor

SECONDS = 14.0


@functools.cache
def played(name: str, conceal: bool = True) -> Playout:
    clean, sent = speech_over_floor(SECONDS)
    condition = next(c for c in CONDITIONS if c.name == name)
    return simulate(condition, clean, encode(sent, fec_loss_percent=10), conceal=conceal)


def test_a_clean_path_has_no_gap_and_a_steady_delay() -> None:
    playout = played("clean")
    before, after, settle = playout.delays()
    assert playout.longest_gap() == 0.0 and playout.lost == 0
    assert before is not None and 0.0 < before < 0.030  # tick phase plus the codec's look-ahead
    assert after == pytest.approx(before, abs=0.002)


def test_random_loss_leaves_no_gap_longer_than_the_loss_and_no_lasting_delay() -> None:
    playout = played("10 % random loss")
    before, after, settle = playout.delays()
    assert playout.lost >= 15
    assert playout.concealed == playout.lost  # no run of three or more in this draw
    assert playout.longest_gap() <= playout.longest_loss_seconds
    assert after == pytest.approx(before, abs=0.002)
    assert settle is not None and settle <= 1.0


def test_concealment_sounds_better_than_silence() -> None:
    concealed, silent = played("10 % random loss"), played("10 % random loss", conceal=False)
    print(f"\nPESQ-WB under 10 % loss: silence {silent.pesq():.2f}, FEC/PLC {concealed.pesq():.2f}")
    assert concealed.pesq() > silent.pesq() + 0.3


@pytest.mark.parametrize("name", ["2 s outage", "2 s stall, then a burst"])
def test_an_outage_leaves_a_gap_no_longer_than_itself_and_no_burst(name: str) -> None:
    playout = played(name)
    condition = playout.condition
    before, after, settle = playout.delays()
    assert playout.longest_gap() <= condition.end - condition.start + PACKET_SECONDS
    assert after == pytest.approx(before, abs=0.002)  # nothing left queued behind the outage
    assert settle is not None and settle <= 1.0


def test_jitter_with_reordering_does_not_leave_the_delay_raised() -> None:
    playout = played("50 ms jitter, reordering")
    before, after, settle = playout.delays()
    assert playout.concealed > 0
    assert after == pytest.approx(before, abs=0.002)
    assert settle is not None and settle <= 1.0
