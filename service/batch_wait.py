"""How long an enhancement shard woken by a speaker's frame waits to batch it with others.

Each speaker's packets reach the relay every 20 ms at a moment of their own, so the shard knows
when the next frame of each is due: the last one's arrival plus a period. Woken by a frame, it
waits only if at least ``min_others`` other speakers' frames are due within ``clock_seconds``
(waiting is then worth a shared model call), and then only until the last of those is due,
plus ``slack_seconds`` for jitter: never longer than ``clock_seconds``. A lone speaker, or two
in a call, are enhanced at once; a busy shard still gathers everyone due within one hop.
Pure logic: the shard passes in the times (tests run it on a fake clock).
"""

from __future__ import annotations

from collections.abc import Hashable

PERIOD_SECONDS = 0.020  # one Opus packet per 20 ms frame
MIN_OTHERS = 2  # other speakers due within the clock before a frame waits for them
SLACK_SECONDS = 0.001  # beyond the due moment, for the frame's own jitter
FORGET_SECONDS = 0.100  # a speaker not heard from for this long is not waited for


class BatchWait:
    """One shard's record of its speakers' arrivals (used on the shard's thread only)."""

    def __init__(
        self,
        clock_seconds: float,
        min_others: int = MIN_OTHERS,
        slack_seconds: float = SLACK_SECONDS,
        period_seconds: float = PERIOD_SECONDS,
    ) -> None:
        self.clock_seconds = clock_seconds
        self.min_others = min_others
        self.slack = slack_seconds
        self.period = period_seconds
        self._last: dict[Hashable, float] = {}  # speaker: when their latest frame came in

    def arrived(self, speaker: Hashable, at: float) -> None:
        """A frame of ``speaker`` came in (was queued for the shard) at ``at``."""
        self._last[speaker] = at

    def wait(self, speaker: Hashable, now: float) -> float:
        """Seconds to wait, woken at ``now`` by a frame of ``speaker``, for the others due."""
        if self.clock_seconds <= 0:
            return 0.0
        horizon = now + self.clock_seconds - self.slack
        due = []
        for other, last in list(self._last.items()):
            if now - last > FORGET_SECONDS:
                del self._last[other]
            elif other is not speaker and now - self.slack <= last + self.period <= horizon:
                due.append(last + self.period)
        if len(due) < self.min_others:
            return 0.0
        return max(due) + self.slack - now
