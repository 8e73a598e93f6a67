"""Where a room's 20 ms mixing clock ticks: ``margin`` after the frames of whoever starts to talk.

Each speaker's enhanced frames reach the mixer at their own moment of every 20 ms, so with a
clock of arbitrary phase a frame waits for its tick anywhere from nothing to a whole period,
the same all call long, and a speaker whose frames come in right at the tick sometimes misses
it (then a frame stands in the mixer, +20 ms, for the rest of the talk spurt).

Moving the clock, though, moves when every listener's packets go out against their RTP
timestamps, and a receiver's jitter buffer grows to cover each such step. So the clock keeps
its phase while anyone is heard, and sets it when a talk spurt starts in a quiet room: then
every listener's stream pauses (DTX) and its timestamps take the move up
(``service/tracks.py``). :class:`TickPhase` keeps the phase of each speaker's recent frames
(all of them, speech or not) and says when the next tick should come for a speaker who starts
to talk: ``margin`` after the latest of those phases, read around their circular mean so that
frames straddling a period's edge stay together. A clock whose tick already comes between half
the margin and ``KEEP_EXTRA_WAIT_SECONDS`` more than the margin after them stays where it is:
each move, though the timestamps take it up, shifts the talk spurt in Chromium's playout (with
two talkers whose frames came 5 ms apart, a move at every spurt made its onsets 10–20 ms later
and unsteady, ``python -m loadtest.browser_delay``; docs/performance.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable

HISTORY_FRAMES = 25  # half a second of a speaker's frames
MIN_FRAMES = 5  # fewer than this: the talk spurt's first frame alone tells the phase
KEEP_EXTRA_WAIT_SECONDS = 0.008  # a tick this much later than the margin is kept, not moved


class TickPhase:
    """The phases of each speaker's frames, for one clock of ``period_seconds`` (all times in
    seconds, on the clock's own time line)."""

    def __init__(
        self,
        margin_seconds: float,
        period_seconds: float = 0.020,
        history_frames: int = HISTORY_FRAMES,
    ) -> None:
        self.margin = margin_seconds
        self.period = period_seconds
        self.history_frames = history_frames
        self.moves = 0  # how often the clock moved
        self._phases: dict[Hashable, deque[float]] = {}

    @property
    def enabled(self) -> bool:
        """False: the clock keeps the phase it started with (margin 0)."""
        return self.margin > 0

    def arrived(self, speaker: Hashable, now: float) -> None:
        """A frame of ``speaker`` reached the mixer at ``now``."""
        if self.enabled:
            phases = self._phases.get(speaker)
            if phases is None:
                phases = self._phases[speaker] = deque(maxlen=self.history_frames)
            phases.append(now % self.period)

    def forget(self, speaker: Hashable) -> None:
        """``speaker`` left."""
        self._phases.pop(speaker, None)

    def next_tick(self, speaker: Hashable, now: float, current: float | None = None) -> float:
        """When the next tick should come (at or after ``now``) for ``speaker``, whose talk
        spurt starts with the frame that arrived at ``now``: ``margin`` after the latest phase
        of its recent frames, or ``current`` (the tick now due) if that comes between half the
        margin and the margin plus ``KEEP_EXTRA_WAIT_SECONDS`` after it."""
        phases = list(self._phases.get(speaker, ()))
        latest = max(self._unwrapped(phases)) if len(phases) >= MIN_FRAMES else now
        if current is not None:
            wait = (current - latest) % self.period
            if self.margin / 2 <= wait <= self.margin + KEEP_EXTRA_WAIT_SECONDS:
                return current
        return now + (latest + self.margin - now) % self.period

    def moved(self, seconds: float) -> None:
        """The clock moved by ``seconds`` (negative: earlier); counted, and a hook for traces."""
        self.moves += 1

    def _unwrapped(self, phases: list[float]) -> list[float]:
        """``phases`` read around their circular mean, so that they stay together: frames that
        straddle the period's edge read as phases either side of it, not as some near 0 and
        some near a whole period."""
        turn = 2 * math.pi / self.period
        x = sum(math.cos(turn * phase) for phase in phases)
        y = sum(math.sin(turn * phase) for phase in phases)
        centre = (math.atan2(y, x) / turn) % self.period
        half = self.period / 2
        return [centre + (phase - centre + half) % self.period - half for phase in phases]
