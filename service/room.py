"""A room: its participants and the 20 ms clock that drives their mix-minus and its encoding."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np

from service.metrics import RelayMetrics
from service.mix_encoding import MixEncoders
from service.mixer import RoomMixer
from service.opus import OpusSettings
from service.tick_phase import TickPhase

if TYPE_CHECKING:
    from service.participant import Participant

TICK_SECONDS = 0.020
MAX_CATCH_UP_SECONDS = 0.100  # later than this, skip ticks instead of bursting
MIN_MOVE_SECONDS = 0.0005  # a smaller change of the clock's phase is not worth a move


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Room:
    """Participants of one call; the clock runs while anyone is in it."""

    def __init__(
        self,
        name: str,
        metrics: RelayMetrics,
        mix_buffer_frames: int = 3,
        opus: OpusSettings | None = None,
        align_margin_seconds: float = 0.0,
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.created_at = time.time()
        self.empty_since: float | None = time.monotonic()  # None while anyone is in it
        self.participants: dict[str, Participant] = {}
        self.mixer = RoomMixer(buffer_frames=mix_buffer_frames)
        self.encoders = MixEncoders(opus or OpusSettings())
        self.phase = TickPhase(align_margin_seconds, TICK_SECONDS)
        self._clock: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_tick = 0.0  # on the loop's clock
        self._quiet_ticks = 0  # ticks in a row whose mixes were all silent
        self._wake: asyncio.Future[None] | None = None  # the clock's wait for its next tick

    def add(self, participant: Participant) -> None:
        """Admit a participant (starts the clock if needed)."""
        self.participants[participant.id] = participant
        self.empty_since = None
        self.mixer.add(participant.id, echo=participant.echo)
        if self._clock is None:
            self._clock = asyncio.create_task(self._run_clock(), name=f"mixer-{self.name}")

    def remove(self, participant_id: str) -> Participant | None:
        """Take a participant out of the room (their peer connection is not closed here)."""
        self.mixer.remove(participant_id)
        self.phase.forget(participant_id)
        participant = self.participants.pop(participant_id, None)
        if not self.participants and self.empty_since is None:
            self.empty_since = time.monotonic()
        return participant

    async def stop_clock(self) -> None:
        """Stop mixing (when the room empties)."""
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
            self._clock = None

    def frame_arrived(self, speaker_id: str, speaking: bool, now: float | None = None) -> None:
        """Frames of ``speaker_id`` reached the mixer now (``now``: on the loop's clock, by
        default read from it; ``speaking``: they will be mixed). The first that will be mixed
        in a quiet room starts a talk spurt: the clock moves to tick the alignment margin after
        this speaker's frames come in (:class:`TickPhase`)."""
        if not self.phase.enabled:
            return
        if now is None:
            if self._loop is None:
                return
            now = self._loop.time()
        self.phase.arrived(speaker_id, now)
        if not (speaking and self._may_move()):
            return
        move = self.phase.next_tick(speaker_id, now, self._next_tick) - self._next_tick
        if abs(move) < MIN_MOVE_SECONDS:
            return
        for participant in self.participants.values():
            participant.output.clock_moved(move)
        self._next_tick += move
        self.phase.moved(move)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)  # the clock waits for the tick as it now is

    async def _run_clock(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._next_tick = loop.time()
        while True:
            delay = self.schedule_next_tick(loop.time())
            if delay <= 0:  # catching up after a stall: the senders take the last tick's
                await asyncio.sleep(0)  # packets first, so the listeners' queues do not overflow
                delay = self._next_tick - loop.time()  # (the clock may have moved meanwhile)
            while delay > 0:
                self._wake = loop.create_future()
                timer = loop.call_later(delay, _wake_up, self._wake)
                await self._wake
                timer.cancel()
                delay = self._next_tick - loop.time()
            self.tick()

    def schedule_next_tick(self, now: float) -> float:
        """Set when the next tick is due, ``now`` being the loop's time; returns the seconds to
        wait for it. Ticks more than ``MAX_CATCH_UP_SECONDS`` overdue are skipped, and the
        listeners' timestamps skip them too."""
        self._next_tick += TICK_SECONDS
        delay = self._next_tick - now
        if delay < -MAX_CATCH_UP_SECONDS:
            skipped = int(-delay / TICK_SECONDS)
            self._next_tick += skipped * TICK_SECONDS
            delay += skipped * TICK_SECONDS
            self.metrics.mixer_ticks_late.inc(skipped)
            for participant in self.participants.values():
                participant.output.ticks_skipped(skipped)
        return delay

    def _may_move(self) -> bool:
        """Whether the clock's phase may move now: nobody was heard at the last tick, and every
        listener's stream that pauses in silence (DTX) pauses, so that its timestamps take the
        move up."""
        return self._quiet_ticks > 0 and all(
            participant.output.paused or not participant.output.dtx.enabled
            for participant in self.participants.values()
            if participant.listens and participant.connected_at is not None
        )

    def tick(self) -> int:
        """Mix this tick's frames and queue each listener's packet; returns the encodes."""
        trimmed = self.mixer.trimmed_frames
        outputs = self.mixer.tick()
        if self.mixer.trimmed_frames != trimmed:
            self.metrics.frames_dropped.labels("latency_trim").inc(
                self.mixer.trimmed_frames - trimmed
            )
        self._quiet_ticks = 0 if any(self.mixer.heard.values()) else self._quiet_ticks + 1
        return self.send(outputs)

    def send(self, outputs: dict[str, np.ndarray]) -> int:
        """Encode this tick's mixes, each distinct one once, and queue them for the listeners
        whose senders run; returns how many encodes that took."""
        listeners: dict[str, frozenset[str]] = {}
        mixes: dict[frozenset[str], np.ndarray] = {}
        for participant_id, mix in outputs.items():
            participant = self.participants.get(participant_id)
            if (
                participant is not None
                and participant.listens
                and participant.connected_at is not None  # its sender has started
                and not participant.closed
            ):
                heard = self.mixer.heard[participant_id]
                listeners[participant_id] = heard
                mixes[heard] = mix
        payloads = self.encoders.encode(mixes)
        encodes = self.encoders.encodes(mixes)
        self.metrics.mix_encodes.inc(encodes)
        self.metrics.mix_frames_sent.inc(len(listeners))
        unsent = 0
        for participant_id, heard in listeners.items():
            output = self.participants[participant_id].output
            skipped = output.dtx.skipped_frames
            dropped = output.put(payloads[heard], silent=not heard)
            unsent += output.dtx.skipped_frames - skipped
            if dropped:
                self.metrics.frames_dropped.labels("output_overflow").inc(dropped)
        self.metrics.mix_frames_unsent.inc(unsent)
        return encodes

    def describe(self, with_participants: bool = False) -> dict[str, object]:
        """The room as the control plane shows it."""
        out: dict[str, object] = {
            "room": self.name,
            "participants": len(self.participants),
            "created_at": self.created_at,
        }
        if with_participants:
            out["participants"] = [p.describe() for p in self.participants.values()]
        return out
