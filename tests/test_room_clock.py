"""The room's mixing clock on a fake clock: its phase moves only while nobody is heard, and each
listener's RTP timestamps stay continuous against the ticks (phase moves, skipped ticks, DTX
pauses and dropped packets included), so a receiver's jitter buffer sees a steady stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import av
import numpy as np
import pytest
from fake_rooms import room_of

from service.room import TICK_SECONDS, Room
from service.tracks import MixedAudioTrack

FRAME = 960
RATE = 48000


def _room(dtx: bool = True) -> Room:
    return room_of(("talker", "listener"), dtx, align_margin_seconds=0.004)


def _pts(packet: av.Packet) -> int:
    assert packet.pts is not None
    return int(packet.pts)


def _voice(index: int) -> np.ndarray:
    t = np.arange(FRAME) + index * FRAME
    return (0.1 * np.sin(2 * np.pi * 200 * t / RATE)).astype(np.float32)


async def _call(
    room: Room,
    ticks: int,
    talking: Callable[[int], bool],
    arrival: Callable[[int], float] = lambda frame: 0.020 * frame + 0.007,
    stall_at: int | None = None,
) -> list[tuple[float, int, bool]]:
    """``ticks`` ticks on a fake clock; the talker's frame ``n`` comes at ``arrival(n)``,
    speech while ``talking(n)``. Returns, per packet the listener was sent, (the tick's due
    time, its RTP timestamp, whether the talker was heard)."""
    now, frame, sent = 0.0, 0, []
    track = room.participants["listener"].output
    room.schedule_next_tick(now)
    for tick in range(ticks):
        while arrival(frame) <= room._next_tick:  # frames before the tick (it may move)
            now = max(now, arrival(frame))
            speaking = talking(frame)
            room.mixer.push("talker", _voice(frame), speaking)
            room.frame_arrived("talker", speaking, now=now)
            frame += 1
        now = max(now, room._next_tick)
        due = room._next_tick
        room.tick()
        heard = bool(room.mixer.heard["listener"])
        while track._queue.qsize():
            packet = await track.recv()
            sent.append((due, _pts(packet), heard))
        if tick == stall_at:
            now += 0.150  # the loop stalled: the clock skips the ticks it missed
        room.schedule_next_tick(now)
    return sent


def _offsets(sent: list[tuple[float, int, bool]]) -> np.ndarray:
    """Each packet's tick time less its timestamp, from the first's (seconds)."""
    offsets = np.array([due - pts / RATE for due, pts, _ in sent])
    return offsets - offsets[0]


def _jittery(frame: int) -> float:
    """Frames 7 ms into each period, 0.5 ms either side."""
    return 0.020 * frame + 0.007 + (0.0005 if frame % 2 else -0.0005)


def _moves(room: Room) -> list[tuple[float, bool]]:
    """Each move of the room's clock, and whether the listener heard the talker then."""
    moves: list[tuple[float, bool]] = []
    original = room.phase.moved

    def moved(seconds: float) -> None:
        moves.append((seconds, bool(room.mixer.heard.get("listener"))))
        original(seconds)

    room.phase.moved = moved  # type: ignore[method-assign]
    return moves


def test_a_talk_spurt_in_a_quiet_room_sets_the_phase_and_the_timestamps_take_it_up() -> None:
    room = _room()
    moves = _moves(room)
    # talk for 1.2 s, pause for 0.8 s (the voice's hangover is the caller's, not the room's)
    sent = asyncio.run(_call(room, 400, lambda frame: frame % 100 < 60, _jittery))
    assert moves, "the first talk spurt must move the clock"
    assert all(not heard for _, heard in moves), "never while someone is heard"
    # the latest frames come 7.5 ms into the period: the clock ticks 4 ms after them
    assert room._next_tick % 0.020 == pytest.approx(0.0115)
    assert len(moves) == 1  # later talk spurts find it set
    # the timestamps follow the ticks: every packet's offset is the first's (± a sample)
    assert np.abs(_offsets(sent)).max() <= 1 / RATE
    assert sum(heard for _, _, heard in sent) == 4 * 60


def test_the_phase_follows_whoever_starts_a_talk_spurt() -> None:
    room = _room()
    first = 0.003
    # frames 3 ms into the period for 2 s, then (another device, say) 14 ms: the tick 4 ms
    # after the first would keep them 13 ms, more than the margin and the kept extra wait
    sent = asyncio.run(
        _call(
            room,
            300,
            lambda frame: frame % 100 < 40,
            lambda frame: 0.020 * frame + (first if frame < 100 else 0.014),
        )
    )
    assert room._next_tick % 0.020 == pytest.approx(0.018)
    assert room.phase.moves == 2
    assert np.abs(_offsets(sent)).max() <= 1 / RATE


def test_without_dtx_a_later_tick_is_taken_up_and_an_earlier_one_left() -> None:
    room = _room(dtx=False)
    moves = _moves(room)
    sent = asyncio.run(
        _call(
            room,
            300,
            lambda frame: 30 <= frame % 100 < 70,  # after half a second at the new phase
            lambda frame: 0.020 * frame + (0.003 if frame < 100 else 0.006),
        )
    )
    # 6 ms frames would wait 1 ms for the tick at 7 ms, under half the margin: it moves later
    assert [round(move, 4) for move, _ in moves] == [-0.013, 0.003]
    steps = np.diff(_offsets(sent))
    # the stream never pauses: the earlier tick shows as one step, as the talk spurt starts
    (index,) = np.flatnonzero(np.abs(steps) > 1 / RATE)
    assert steps[index] == pytest.approx(-0.013, abs=1 / RATE)
    assert not sent[index][2] and sent[index + 1][2]


def test_skipped_ticks_are_skipped_by_the_timestamps_too() -> None:
    room = _room()
    room.phase.margin = 0.0  # no moves: the skip alone
    sent = asyncio.run(_call(room, 100, lambda frame: True, stall_at=50))
    assert room.metrics.mixer_ticks_late._value.get() >= 5
    assert np.abs(_offsets(sent)).max() <= 1 / RATE


def test_a_track_takes_up_a_move_only_while_it_pauses() -> None:
    async def run() -> list[int]:
        track = MixedAudioTrack(max_frames=100)
        assert not track.clock_moved(0.005)  # sending: a move cannot be hidden
        track.put(b"\x01\x02\x03")
        for _ in range(3):  # silence: one packet, one DTX packet, then nothing
            track.put(b"\xf8\xff\xfe", silent=True)
        assert track.paused and track.clock_moved(0.005)
        track.put(b"\x01\x02\x03")
        return [_pts(await track.recv()) for _ in range(4)]

    assert asyncio.run(run()) == [0, FRAME, 2 * FRAME, 4 * FRAME + 240]


def test_packets_dropped_from_a_full_queue_keep_the_timestamps_on_time() -> None:
    async def run() -> list[int]:
        track = MixedAudioTrack(max_frames=2)
        dropped = sum(track.put(bytes([1, 2, index])) for index in range(5))
        assert dropped == 3
        return [_pts(await track.recv()) for _ in range(2)]

    assert asyncio.run(run()) == [3 * FRAME, 4 * FRAME]


def test_a_tick_is_due_every_period_while_nothing_moves() -> None:
    room = _room()
    room.phase.margin = 0.0
    dues = []
    for _ in range(5):
        room.schedule_next_tick(0.0)
        dues.append(room._next_tick)
    assert np.diff(dues) == pytest.approx([TICK_SECONDS] * 4)


def test_after_a_stall_the_senders_take_each_tick_before_the_next() -> None:
    """Overdue ticks (a stall under ``MAX_CATCH_UP_SECONDS``) run one per turn of the loop, so a
    listener's sender takes each packet before the next tick queues another: nothing
    overflows a one-packet queue. Back to back, three overdue ticks dropped two."""

    async def run() -> tuple[float, int]:
        room = _room(dtx=False)
        track = MixedAudioTrack(max_frames=1, dtx=False)
        room.participants["listener"].output = track
        received = 0

        async def send() -> None:
            nonlocal received
            while True:
                await track.recv()
                received += 1

        sender = asyncio.create_task(send())
        clock = asyncio.create_task(room._run_clock())
        await asyncio.sleep(0.03)
        time.sleep(0.06)  # the loop stalls: three ticks fall due meanwhile
        await asyncio.sleep(0.03)
        for task in (clock, sender):
            task.cancel()
        await asyncio.gather(clock, sender, return_exceptions=True)
        dropped = room.metrics.frames_dropped.labels("output_overflow")._value.get()
        return dropped, received

    dropped, received = asyncio.run(run())
    assert dropped == 0
    assert received >= 5  # every tick's packet, the overdue ones included
