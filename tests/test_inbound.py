"""A speaker's packets decoded where they are enhanced: what the shard takes is what aiortc's
decoder thread would have decoded (concealment included), a backlog is bounded, and each
batch's results come back to the event loop."""

from __future__ import annotations

import asyncio

import numpy as np
import opuslib_next
import pytest

from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.audio_frames import frame_to_mono
from service.batching import EnhancerPool, Outcome
from service.concealment import ConcealingOpusDecoder, ReleasedFrame, is_concealed
from service.inbound import InboundAudio, Received
from service.speaker import EnhancementSettings, SpeakerPipeline

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
FRAME = 960


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(DEFAULT_MODEL)


def packets(count: int) -> list[bytes]:
    encoder = opuslib_next.Encoder(48000, 1, "voip")
    t = np.arange(count * FRAME) / 48000
    signal = (0.3 * np.sin(2 * np.pi * 180 * t) * 32767).astype(np.int16)
    return [
        encoder.encode(signal[i * FRAME : (i + 1) * FRAME].tobytes(), FRAME) for i in range(count)
    ]


def released(data: list[bytes], lost: set[int]) -> list[ReleasedFrame]:
    """The frames the receive buffer releases when the packets in ``lost`` never arrive."""
    frames, gap = [], 0
    for index, packet in enumerate(data):
        if index in lost:
            gap += 1
            continue
        frames.append(ReleasedFrame(packet, index * FRAME, lost_before=gap))
        gap = 0
    return frames


class _Shard:
    """Stands in for the pool: counts the times a stream asks to be taken."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, shard: int, stream: object) -> None:
        self.submitted += 1


def inbound_audio(
    runtime: ModelRuntime, pool: object, max_queued: int, dropped: list[str] | None = None
) -> InboundAudio:
    return InboundAudio(
        SpeakerPipeline(runtime, EnhancementSettings()),
        pool,  # type: ignore[arg-type]
        0,
        max_queued,
        lambda received, outcome: None,
        (dropped if dropped is not None else []).append,
    )


def test_each_take_is_one_packet_as_the_decoder_thread_would_have_decoded_it(
    runtime: ModelRuntime,
) -> None:
    data, lost = packets(12), {3, 7, 8}
    reference = ConcealingOpusDecoder()
    frames = [f for r in released(data, lost) for f in reference.decode(r)]
    expected = np.concatenate([frame_to_mono(f) for f in frames])  # type: ignore[arg-type]

    async def main() -> tuple[list[Received], int]:
        shard = _Shard()
        inbound = inbound_audio(runtime, shard, 99)
        for frame in released(data, lost):
            inbound.put(frame)
        assert shard.submitted == 1  # queued once however many wait
        taken = []
        while (ready := inbound.take()) is not None:
            assert ready[0] is ready[1].samples
            taken.append(ready[1])
        return taken, shard.submitted

    taken, submitted = asyncio.run(main())
    assert len(taken) == 9 and submitted == 9  # one packet a take, queued again while more wait
    np.testing.assert_array_equal(np.concatenate([t.samples for t in taken]), expected)
    assert [t.frames for t in taken] == [1, 1, 1, 2, 1, 1, 3, 1, 1]  # the lost, stood in for
    assert sum(t.concealed for t in taken) == sum(is_concealed(f) for f in frames) == 3


def test_a_backlog_loses_its_oldest_packets(runtime: ModelRuntime) -> None:
    dropped: list[str] = []

    async def main() -> list[int]:
        inbound = inbound_audio(runtime, _Shard(), 3, dropped)
        for frame in released(packets(6), set()):
            inbound.put(frame)
        left = []
        while (ready := inbound.take()) is not None:
            left.append(ready[1].frames)
        return left

    assert asyncio.run(main()) == [1, 1, 1]  # three may wait
    assert dropped == ["behind"] * 3  # the oldest went


def test_the_shard_enhances_every_packet_and_the_loop_gets_them_in_order(
    runtime: ModelRuntime,
) -> None:
    heard: list[tuple[Received, Outcome]] = []

    async def main() -> None:
        pool = EnhancerPool(shards=1)
        pipeline = SpeakerPipeline(runtime, EnhancementSettings())
        inbound = InboundAudio(pipeline, pool, 0, 8, lambda r, o: heard.append((r, o)), print)
        for frame in released(packets(5), set()):
            inbound.put(frame)
        for _ in range(500):
            if len(heard) == 5:
                break
            await asyncio.sleep(0.01)
        pool.close()

    asyncio.run(main())
    assert len(heard) == 5
    arrivals = [received.arrival for received, _ in heard]
    assert arrivals == sorted(arrivals)
    for received, outcome in heard:
        assert received.frames == 1 and not isinstance(outcome, Exception)
        assert outcome.enhanced and outcome.samples.shape == (FRAME,)
