"""Encode once per distinct mix: shared encodes keep every listener's mix-minus, and a tick
encodes exactly as many times as there are distinct mixes; voice activity decides who is mixed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fake_rooms import room_of

from service.metrics import RelayMetrics
from service.mix_encoding import IDLE_TICKS, MAX_ENCODERS, MixEncoders
from service.opus import OpusPacketEncoder, OpusSettings
from service.room import Room
from service.tracks import MixedAudioTrack
from service.voice_activity import HANGOVER_FRAMES, VoiceActivity, level_db

FRAME = 960


def _frame(tick: int, speaker: int) -> np.ndarray:
    t = np.arange(FRAME) + tick * FRAME
    return (0.1 * np.sin(2 * np.pi * (150 + 70 * speaker) * t / 48000)).astype(np.float32)


def _room(names: list[str], dtx: bool = False) -> tuple[Room, RelayMetrics]:
    room = room_of(names, dtx, mix_buffer_frames=3)
    return room, room.metrics


def _queued(track: MixedAudioTrack) -> list[bytes]:
    """The packets queued on ``track`` (without the frames skipped before each)."""
    queued = [track._queue.get_nowait() for _ in range(track._queue.qsize())]
    return [item[0] for item in queued if item is not None]


def test_a_room_of_four_with_one_talker_encodes_once_and_everyone_hears_the_others() -> None:
    async def run() -> None:
        names = ["a", "b", "c", "d"]
        room, metrics = _room(names)
        expected: dict[str, list[np.ndarray]] = {name: [] for name in names}
        encodes = []
        for tick in range(6):
            talking = {"a"} if tick < 4 else {"a", "c"}  # then c joins in
            frames = {name: _frame(tick, i) for i, name in enumerate(names)}
            for name in names:
                room.mixer.push(name, frames[name], speaking=name in talking)
            for listener in names:
                heard = [frames[s] for s in sorted(talking - {listener})]
                expected[listener].append(np.sum(heard, axis=0) if heard else np.zeros(FRAME))
            outputs = room.mixer.tick()
            for listener in names:  # mix-minus: each hears exactly the others who talk
                np.testing.assert_allclose(outputs[listener], expected[listener][-1], atol=1e-6)
            encodes.append(room.send(outputs))
            distinct = {id(mix) for name, mix in outputs.items() if room.mixer.heard[name]}
            assert encodes[-1] == len(distinct)
        # one talker: b, c, d share a's voice (one encode), a hears silence (no encode);
        # a and c talking: a hears c, c hears a, b and d hear both
        assert encodes == [1, 1, 1, 1, 3, 3]
        assert metrics.mix_encodes._value.get() == sum(encodes)
        assert metrics.mix_frames_sent._value.get() == 6 * 4
        silence = room.encoders.silence
        for listener in names:
            # a private encoder per listener gives the same bytes while its set of speakers
            # stays put: the shared packets are that listener's own stream
            sent = _queued(room.participants[listener].output)
            own = OpusPacketEncoder(OpusSettings())
            for tick, mix in enumerate(expected[listener][:4]):
                packet = own.encode(mix.astype(np.float32))
                assert sent[tick] == (silence if listener == "a" else packet), (listener, tick)

    asyncio.run(run())


def test_a_talker_who_resumes_continues_the_stream_the_listeners_last_played() -> None:
    """Across a pause shorter than ``IDLE_TICKS`` the set's encoder is kept: the packets after
    the pause are the ones one encoder fed the talk spurts back to back gives (a fresh encoder
    at each spurt cost Chromium's playout 10-15 ms at the onset); after a longer pause, and
    past ``MAX_ENCODERS``, encoders are let go, the one in use last."""
    encoders = MixEncoders(OpusSettings())
    continuous = OpusPacketEncoder(OpusSettings())
    talker, nobody = frozenset({"a"}), frozenset[str]()
    spurts = [[_frame(tick, 0) for tick in range(start, start + 5)] for start in (0, 40)]
    for spurt_index, spurt in enumerate(spurts):
        for frame in spurt:
            sent = encoders.encode({talker: frame})[talker]
            assert sent == continuous.encode(frame), spurt_index
        for _ in range(30):  # 600 ms of pause: nobody heard
            assert encoders.encode({nobody: np.zeros(FRAME, np.float32)}) == {
                nobody: encoders.silence
            }
        assert encoders.live == 1
    for _ in range(IDLE_TICKS):
        encoders.encode({nobody: np.zeros(FRAME, np.float32)})
    assert encoders.live == 0  # a long silence lets it go
    # more sets than the cap: the idle ones go first, longest idle first; none in use goes
    sets = [frozenset({f"s{i}"}) for i in range(MAX_ENCODERS + 8)]
    for group in sets:
        encoders.encode({group: _frame(0, 1)})
    in_use = {group: _frame(1, 1) for group in sets[-MAX_ENCODERS - 2 :]}
    encoders.encode(in_use)
    assert encoders.live == MAX_ENCODERS + 2  # every set of this tick kept, the idle ones gone
    assert set(encoders._encoders) == set(in_use)


def test_the_silence_packet_decodes_to_silence() -> None:
    import av

    silence = MixEncoders(OpusSettings()).silence
    decoder = av.CodecContext.create("libopus", "r")
    samples = np.concatenate(
        [f.to_ndarray().ravel() for _ in range(3) for f in decoder.decode(av.Packet(silence))]
    )
    assert samples.size and np.abs(samples).max() < 1e-3


def test_voice_activity_holds_over_gaps_and_judges_pass_through_by_level() -> None:
    voice = VoiceActivity(threshold=0.2, rule="gain")
    loud, quiet = np.full(FRAME, 0.1, np.float32), np.zeros(FRAME, np.float32)
    assert not voice.update(loud, 0.1)  # below the threshold: not speech
    assert voice.update(loud, 0.5)
    assert voice.level_db == pytest.approx(-20.0, abs=0.01)
    for _ in range(HANGOVER_FRAMES):
        assert voice.update(quiet, 0.0)  # a pause between words
    assert not voice.update(quiet, 0.0)
    assert voice.level_db == -100.0 == level_db(quiet)
    assert voice.update(loud, None) and not VoiceActivity(0.2).update(quiet, None)
    assert VoiceActivity(0.0).update(quiet, 0.0)  # threshold 0: every frame is mixed
    # the model keeps digital silence (gains near 1), as a muted microphone sends: not speech
    assert not VoiceActivity(0.2).update(quiet, 0.97)
    assert not VoiceActivity(0.2).update(np.full(FRAME, 1e-4, np.float32), 0.97)  # -80 dB
    assert VoiceActivity(0.2).update(np.full(FRAME, 1e-3, np.float32), 0.97)  # -60 dB
