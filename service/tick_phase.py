"""Where a room's 20 ms mixing clock ticks: a few milliseconds after its talkers' frames come in.

A room's clock starts at an arbitrary moment and each speaker's enhanced frames reach the mixer
at their own moment of every 20 ms, so a frame waits for its tick anywhere from nothing to a
whole period (10 ms on average), and a speaker whose frames come in right at the tick (a
millisecond or two of scheduling jitter either side) sometimes misses it: silent for that tick,
then a frame standing in the mixer (+20 ms) until the mixer trims it a second later, a lost
frame. :class:`TickPhase` watches how long the talkers' frames wait for their tick and says
how far to move the clock: earlier while every frame of a window waits more than twice
``margin`` (halfway to the margin, by at most ``max_earlier`` per window: gently, never past a
frame), at once later, to the margin, when a frame comes within half the margin of its tick or
misses it, as long as that pushes no other speaker's frames past a whole period. Each
speaker's waits are read around their own circular mean, so a frame that just missed its tick
counts as late, not as early for the next.

A move shifts when every listener's packets go out against their RTP timestamps, and a
receiver's jitter buffer grows to cover each such step, so the room asks for moves only while
nobody is heard (``quiet``), when its listeners' streams pause (DTX) and their timestamps can
take the move up (``service/tracks.py``): a move found while someone talks waits for the next
pause, the latest window's verdict standing for the phase it was measured at.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

MIN_FRAMES = 10  # a speaker's frames in a window before their timing counts


class TickPhase:
    """Corrections for one clock of ``period_seconds`` (all times in seconds)."""

    def __init__(
        self,
        margin_seconds: float,
        period_seconds: float = 0.020,
        window_ticks: int = 25,
        max_earlier_seconds: float = 0.005,
    ) -> None:
        self.margin = margin_seconds
        self.period = period_seconds
        self.window_ticks = window_ticks
        self.max_earlier = max_earlier_seconds
        self.moved_seconds = 0.0  # in all: negative is earlier
        self.pending_seconds = 0.0  # the latest window's move, not yet made (nobody was quiet)
        self._waits: dict[Hashable, list[float]] = {}
        self._ticks = 0

    @property
    def enabled(self) -> bool:
        """False: the clock keeps the phase it started with (margin 0)."""
        return self.margin > 0

    def arrived(self, speaker: Hashable, wait_seconds: float) -> None:
        """A frame of ``speaker`` that will be mixed came in ``wait_seconds`` before the next
        tick was due (negative: after it was due, before it ran)."""
        if self.enabled:
            self._waits.setdefault(speaker, []).append(wait_seconds)

    def correction(self, quiet: bool = True) -> float:
        """Once per tick: seconds to move the next tick by (negative: earlier), only when
        ``quiet`` (else the move waits for a quiet tick). A window of enough frames gives the
        move; one that moves starts the next window afresh."""
        if not self.enabled:
            return 0.0
        self._ticks += 1
        if self._ticks >= self.window_ticks:
            self._ticks = 0
            if self._waits:
                self.pending_seconds = self._verdict()
                self._waits.clear()
        if not (quiet and self.pending_seconds):
            return 0.0
        move, self.pending_seconds = self.pending_seconds, 0.0
        self._waits.clear()  # they were measured against the old phase
        self._ticks = 0
        self.moved_seconds += move
        return move

    def _verdict(self) -> float:
        """The move that this window's waits ask for (0: none, or too few frames)."""
        waits = sorted(
            wait
            for speaker_waits in self._waits.values()
            if len(speaker_waits) >= MIN_FRAMES
            for wait in self._unwrapped(speaker_waits)
        )
        if not waits:
            return self.pending_seconds  # too few frames to tell: what was found stands
        low, high = waits[0], waits[-1]
        if low > 2 * self.margin:  # halfway to the margin, at most max_earlier per window
            return -min((low - self.margin) / 2, self.max_earlier)
        if low < self.margin / 2 and high + (self.margin - low) < self.period:
            return self.margin - low
        return 0.0

    def _unwrapped(self, waits: list[float]) -> list[float]:
        """``waits`` read around their circular mean, so that they stay together: frames that
        straddle the tick read as small waits either side of 0 (the late ones negative), not as
        some near 0 and some near a whole period."""
        turn = 2 * math.pi / self.period
        x = sum(math.cos(turn * wait) for wait in waits)
        y = sum(math.sin(turn * wait) for wait in waits)
        centre = (math.atan2(y, x) / turn) % self.period
        half = self.period / 2
        unwrapped = [centre + (wait - centre + half) % self.period - half for wait in waits]
        if max(unwrapped) > self.period:  # the cluster reaches past a period: it straddles 0
            return [wait - self.period for wait in unwrapped]
        return unwrapped
