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


def test_a_take_is_what_the_decoder_thread_would_have_decoded(runtime: ModelRuntime) -> None:
    data, lost = packets(12), {3, 7, 8}
    reference = ConcealingOpusDecoder()
    frames = [f for r in released(data, lost) for f in reference.decode(r)]
    expected = np.concatenate([frame_to_mono(f) for f in frames])  # type: ignore[arg-type]

    async def main() -> list[Received]:
        pool = EnhancerPool(threads=1)  # never used: take is called here, as a shard would
        taken: list[Received] = []
        inbound = InboundAudio(
            SpeakerPipeline(runtime, EnhancementSettings()),
            pool,
            0,
            99,
            lambda r, o: None,
            lambda reason: None,
        )
        for frame in released(data, lost):
            inbound.put(frame)
            if frame.timestamp in (4 * FRAME, 11 * FRAME):  # two takes: 4 packets, then the rest
                ready = inbound.take()
                assert ready is not None and ready[0] is ready[1].samples
                taken.append(ready[1])
        assert inbound.take() is None  # nothing left
        pool.close()
        return taken

    taken = asyncio.run(main())
    np.testing.assert_array_equal(np.concatenate([t.samples for t in taken]), expected)
    assert [t.frames for t in taken] == [5, 7]  # 12 packets, 3 lost: all stood in for
    assert sum(t.concealed for t in taken) == sum(is_concealed(f) for f in frames) == 3


def test_a_backlog_loses_its_oldest_packets_and_results_come_back_per_batch(
    runtime: ModelRuntime,
) -> None:
    data = packets(6)
    dropped: list[str] = []
    heard: list[tuple[Received, Outcome]] = []

    async def main() -> None:
        pool = EnhancerPool(threads=1)
        pipeline = SpeakerPipeline(runtime, EnhancementSettings())
        inbound = InboundAudio(
            pipeline, pool, 0, 3, lambda r, o: heard.append((r, o)), dropped.append
        )
        inbound._queued = True  # as if the shard had it queued: it takes all at once below
        for frame in released(data, set()):
            inbound.put(frame)
        assert dropped == ["behind"] * 3  # three may wait; the oldest go
        inbound._queued = False
        inbound.put(ReleasedFrame(packets(1)[0], 6 * FRAME))  # drops one more, queues it
        for _ in range(200):
            if heard:
                break
            await asyncio.sleep(0.01)
        pool.close()

    asyncio.run(main())
    assert dropped == ["behind"] * 4
    assert len(heard) == 1
    received, outcome = heard[0]
    assert received.frames == 3 and not isinstance(outcome, Exception)
    assert outcome.enhanced and outcome.samples.shape == (3 * FRAME,)
