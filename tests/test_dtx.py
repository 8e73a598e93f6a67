"""DTX for silent mixes: which packets a listener gets while nobody it hears talks, their
timestamps across the gap, what a decoder makes of them, and a room that stops sending."""

from __future__ import annotations

import asyncio

import av
import numpy as np
from test_mix_encoding import _frame, _room

from loadtest.peers import Recorder
from service.dtx import REFRESH_FRAMES, DtxGate, dtx_packet
from service.mix_encoding import MixEncoders
from service.opus import OpusSettings
from service.tracks import MixedAudioTrack

FRAME = 960
SILENCE = MixEncoders(OpusSettings()).silence


def test_a_silent_stream_sends_silence_then_dtx_then_nothing_refreshed_every_400_ms() -> None:
    gate = DtxGate()
    speech = b"\xf8speech"
    assert gate.packet(speech, silent=False) == speech
    sent = [gate.packet(SILENCE, silent=True) for _ in range(2 * REFRESH_FRAMES + 2)]
    dtx = dtx_packet(SILENCE)
    pair_and_gap = [SILENCE, dtx] + [None] * (REFRESH_FRAMES - 2)
    assert sent == pair_and_gap * 2 + [SILENCE, dtx]
    assert gate.skipped_frames == 2 * (REFRESH_FRAMES - 2)
    assert gate.packet(speech, silent=False) == speech  # speech goes out at once
    assert gate.packet(SILENCE, silent=True) == SILENCE  # and a new pause starts over
    off = DtxGate(enabled=False)
    assert all(off.packet(SILENCE, silent=True) == SILENCE for _ in range(50))


def test_the_dtx_packet_is_the_toc_byte_alone_and_decodes_to_silence() -> None:
    dtx = dtx_packet(SILENCE)
    # one byte: libwebrtc's NetEq takes an Opus packet of two bytes or less as DTX
    assert len(dtx) == 1 and dtx[0] >> 3 == SILENCE[0] >> 3 and dtx[0] & 0x3 == 0
    decoder = av.CodecContext.create("libopus", "r")
    frames = [f for p in (SILENCE, dtx, dtx) for f in decoder.decode(av.Packet(p))]
    assert [f.samples for f in frames] == [FRAME] * 3
    assert max(np.abs(f.to_ndarray()).max() for f in frames) < 1e-3


def test_timestamps_run_on_across_the_frames_left_unsent() -> None:
    async def run() -> list[tuple[bytes, int]]:
        track = MixedAudioTrack(max_frames=100)
        silent = [False, False] + [True] * 25 + [False]
        for index, is_silent in enumerate(silent):
            track.put(SILENCE if is_silent else bytes([0xF8, index]), silent=is_silent)
        received = []
        while not track._queue.empty():
            packet = await track.recv()
            received.append((bytes(packet), int(packet.pts or 0)))
        track.stop()
        return received

    received = asyncio.run(run())
    dtx = dtx_packet(SILENCE)
    assert received == [
        (bytes([0xF8, 0]), 0),
        (bytes([0xF8, 1]), FRAME),
        (SILENCE, 2 * FRAME),  # the pause: silence, DTX …
        (dtx, 3 * FRAME),
        (SILENCE, (2 + REFRESH_FRAMES) * FRAME),  # … the 400 ms refresh …
        (dtx, (3 + REFRESH_FRAMES) * FRAME),
        (bytes([0xF8, 27]), 27 * FRAME),  # … and speech on time
    ]


def test_a_room_with_one_talker_sends_the_talker_nothing_while_the_others_are_quiet() -> None:
    async def run() -> None:
        names = ["a", "b", "c", "d"]
        room, metrics = _room(names, dtx=True)
        ticks = 30
        for tick in range(ticks):
            for i, name in enumerate(names):
                room.mixer.push(name, _frame(tick, i), speaking=name == "a")
            room.send(room.mixer.tick())
        queued = {name: room.participants[name].output._queue.qsize() for name in names}
        # a hears nobody: silence, DTX, a gap, the 400 ms refresh pair; the others hear a
        assert queued == {"a": 4, "b": ticks, "c": ticks, "d": ticks}
        assert metrics.mix_frames_unsent._value.get() == ticks - 4
        assert metrics.mix_frames_sent._value.get() == 4 * ticks

    asyncio.run(run())


def test_a_recorder_fills_the_gap_with_silence_on_the_sender_s_timeline() -> None:
    recorder = Recorder()
    for timestamp in (1000, 1000 + FRAME, 1000 + 20 * FRAME, 1000 + 21 * FRAME):
        recorder._arrived(timestamp, FRAME, np.ones(FRAME, np.float32))
    assert recorder.gap_frames == 18
    assert recorder.samples.size == 22 * FRAME
    assert not recorder.samples[2 * FRAME : 20 * FRAME].any()
    # the filled frames are timed 20 ms apart, up to the frame that ended the gap
    assert len(recorder.arrivals) == 22
    np.testing.assert_allclose(np.diff(recorder.arrivals[2:21]), FRAME / 48000, atol=1e-9)
