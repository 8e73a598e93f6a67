"""The room's mixing clock on a fake clock: its phase moves only while nobody is heard, and each
listener's RTP timestamps stay continuous against the ticks (phase moves, skipped ticks, DTX
pauses and dropped packets included), so a receiver's jitter buffer sees a steady stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

import av
import numpy as np
import pytest

from service.metrics import RelayMetrics
from service.opus import OpusSettings
from service.room import TICK_SECONDS, Room
from service.tracks import MixedAudioTrack

FRAME = 960
RATE = 48000


def _room(dtx: bool = True) -> Room:
    room = Room("r", RelayMetrics(), opus=OpusSettings(), align_margin_seconds=0.004)
    for name in ("talker", "listener"):
        room.mixer.add(name)
        room.participants[name] = SimpleNamespace(  # type: ignore[assignment]
            listens=True,
            connected_at=0.0,
            closed=False,
            output=MixedAudioTrack(max_frames=100, dtx=dtx),
        )
    return room


def _pts(packet: av.Packet) -> int:
    assert packet.pts is not None
    return int(packet.pts)


def _voice(index: int) -> np.ndarray:
    t = np.arange(FRAME) + index * FRAME
    return (0.1 * np.sin(2 * np.pi * 200 * t / RATE)).astype(np.float32)


async def _call(
    room: Room, ticks: int, talking: Callable[[int], bool], stall_at: int | None = None
) -> list[tuple[float, int, bool]]:
    """``ticks`` ticks on a fake clock; the talker's frames come 0.5 ms either side of each
    tick (some just miss it), speech while ``talking(frame)``. Returns, per packet the listener
    was sent, (the tick's due time, its RTP timestamp, whether the talker was heard)."""
    now, frame, sent = 0.0, 0, []
    track = room.participants["listener"].output
    for tick in range(ticks):
        if tick == stall_at:
            now += 0.150  # the loop stalled: the clock skips the ticks it missed
        delay = room.schedule_next_tick(now)
        due = now + delay
        while 0.020 * frame + (0.0005 if frame % 2 else -0.0005) <= due:  # frames so far
            arrival = 0.020 * frame + (0.0005 if frame % 2 else -0.0005)
            speaking = talking(frame)
            room.mixer.push("talker", _voice(frame), speaking)
            if speaking:
                room.frame_arrived("talker", now=arrival)
            frame += 1
        now = max(now, due)
        room.tick()
        heard = bool(room.mixer.heard["listener"])
        while track._queue.qsize():
            packet = await track.recv()
            sent.append((room._next_tick, _pts(packet), heard))
    return sent


def _offsets(sent: list[tuple[float, int, bool]]) -> np.ndarray:
    """Each packet's tick time less its timestamp, from the first's (seconds)."""
    offsets = np.array([due - pts / RATE for due, pts, _ in sent])
    return offsets - offsets[0]


def test_the_phase_moves_in_a_pause_and_the_timestamps_take_it_up() -> None:
    room = _room()
    moves = []
    original = room.phase.correction

    def correction(quiet: bool = True) -> float:
        move = original(quiet)
        if move:
            moves.append((move, bool(room.mixer.heard.get("listener"))))
        return move

    room.phase.correction = correction  # type: ignore[method-assign]
    # talk for 1.2 s, pause for 0.8 s (the voice's hangover is the caller's, not the room's)
    sent = asyncio.run(_call(room, 400, lambda frame: frame % 100 < 60))
    assert moves, "frames straddling the tick must move the clock"
    assert all(not heard for _, heard in moves), "never while someone is heard"
    assert room.phase.moved_seconds == pytest.approx(sum(move for move, _ in moves))
    # the timestamps follow the ticks: every packet's offset is the first's (± a sample)
    assert np.abs(_offsets(sent)).max() <= 1 / RATE
    speech = [pts for _, pts, heard in sent if heard]
    assert len(speech) > 100


def test_without_dtx_a_pause_moves_the_clock_all_the_same() -> None:
    room = _room(dtx=False)
    sent = asyncio.run(_call(room, 300, lambda frame: frame % 100 < 60))
    assert room.phase.moved_seconds != 0
    steps = np.abs(np.diff(_offsets(sent)))
    # the stream never pauses, so a move is a step of its offset, but only in silence
    for index in np.flatnonzero(steps > 1 / RATE):
        assert not sent[index][2] and not sent[index + 1][2]


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
