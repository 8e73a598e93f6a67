"""Cross-stream batching: the same output as one stream at a time, sample for sample, whoever
shares the batch; pass-through and odd frame sizes mix in one batch."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.batching import EnhancerPool, enhance_batch
from service.speaker import EnhancementSettings, SpeakerPipeline

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(DEFAULT_MODEL)


def speech_noise(seed: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames * 960) / 48000
    voice = np.sin(2 * np.pi * (120 + 20 * seed) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (0.2 * voice + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_a_speakers_audio_is_the_same_sample_for_sample_whoever_shares_its_batch(
    runtime: ModelRuntime,
) -> None:
    # One speaker enhanced alone, then through enhance_batch (the shards' path: state gather,
    # one model call, scatter) in batches of 2, 7 and 32 whose other speakers differ (speech,
    # silence, loud noise), come and go from frame to frame, and take its row in turn.
    frames = 8
    signal = speech_noise(0, frames)
    alone = SpeakerPipeline(runtime, EnhancementSettings())
    reference = [alone.process(signal[f * 960 : (f + 1) * 960]).samples for f in range(frames)]
    rng = np.random.default_rng(5)
    for size in (1, 2, 7, 32):
        mates = [SpeakerPipeline(runtime, EnhancementSettings()) for _ in range(size - 1)]
        mate_audio = [
            speech_noise(seed, frames) * np.float32([0.0, 1.0, 4.0][seed % 3])
            + np.float32(seed % 5 == 4) * rng.uniform(-1, 1, frames * 960).astype(np.float32)
            for seed in range(1, size)
        ]
        probe = SpeakerPipeline(runtime, EnhancementSettings())
        for frame in range(frames):
            part = slice(frame * 960, (frame + 1) * 960)
            present = [i for i in range(size - 1) if size < 7 or rng.random() < 0.8]
            order = [-1, *present]
            rng.shuffle(order)
            pipelines = [probe if i < 0 else mates[i] for i in order]
            inputs = [signal[part] if i < 0 else mate_audio[i][part] for i in order]
            results = enhance_batch(pipelines, inputs)
            mine = results[order.index(-1)]
            assert not isinstance(mine, Exception) and mine.enhanced
            np.testing.assert_array_equal(mine.samples, reference[frame], f"{size=} {frame=}")


def test_a_batch_mixes_pass_through_and_other_frame_sizes(runtime: ModelRuntime) -> None:
    on = SpeakerPipeline(runtime, EnhancementSettings())
    off = SpeakerPipeline(runtime, EnhancementSettings(enhance=False))
    short = SpeakerPipeline(runtime, EnhancementSettings())
    frames = [speech_noise(1, 1), speech_noise(2, 1), speech_noise(3, 1)[:480]]
    bad = SpeakerPipeline(runtime, EnhancementSettings())
    results = enhance_batch([on, off, short, bad], [*frames, np.zeros((2, 480), np.float32)])
    assert isinstance(results[3], ValueError)  # fails alone, the others are enhanced
    good = [r for r in results[:3] if not isinstance(r, Exception)]
    assert [r.enhanced for r in good] == [True, False, True]
    np.testing.assert_array_equal(good[1].samples, frames[1])
    assert good[2].samples.shape == (480,)


def test_the_pool_resolves_every_frame_in_order_and_reports_batches(
    runtime: ModelRuntime,
) -> None:
    sizes: list[int] = []
    pool = EnhancerPool(shards=2, clock_seconds=0.002, on_batch=sizes.append)
    pipelines = [SpeakerPipeline(runtime, EnhancementSettings()) for _ in range(6)]
    signals = [speech_noise(seed, 10) for seed in range(6)]

    async def speak(index: int) -> list[np.ndarray]:
        shard = index % pool.shards
        out = []
        for frame in range(10):
            samples = signals[index][frame * 960 : (frame + 1) * 960]
            out.append((await pool.enhance(shard, pipelines[index], samples)).samples)
        return out

    async def main() -> list[list[np.ndarray]]:
        return await asyncio.gather(*(speak(i) for i in range(6)))

    try:
        outputs = asyncio.run(main())
    finally:
        pool.close()
    assert all(len(o) == 10 and all(np.isfinite(f).all() for f in o) for o in outputs)
    assert sum(sizes) == 60 and max(sizes) > 1  # six speakers at once do batch


def test_a_failing_batch_reaches_its_speakers_and_the_shard_survives(
    runtime: ModelRuntime,
) -> None:
    pool = EnhancerPool(shards=1)
    good = SpeakerPipeline(runtime, EnhancementSettings())

    async def main() -> tuple[BaseException | None, bool]:
        try:
            await pool.enhance(0, good, np.full(960, np.nan, np.float32).reshape(2, 480))
            failure = None
        except Exception as error:  # a 2-D frame cannot be cut into hops
            failure = error
        result = await pool.enhance(0, good, speech_noise(1, 1))
        return failure, result.enhanced

    try:
        failure, recovered = asyncio.run(main())
    finally:
        pool.close()
    assert failure is not None and recovered


class _FakeClock:
    """A clock that stands still until the test lets the shard's wait pass."""

    def __init__(self) -> None:
        self.now = 100.003
        self.waits: list[float] = []
        self.waiting = threading.Event()
        self.tick = threading.Event()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.waiting.set()
        self.tick.wait(5)
        self.tick.clear()
        self.now += seconds


def test_a_shard_waits_for_the_speakers_due_within_its_clock_and_the_audio_is_the_same(
    runtime: ModelRuntime,
) -> None:
    # four speakers' frames come in 2 ms apart every 20 ms. The first frames go alone (nobody
    # is known to be due); from then on, speaker 0's frame waits until the last of the others
    # is due (+1 ms), meanwhile they arrive, and all four are enhanced in one model call, with
    # the samples enhance_batch gives over the same frames
    clock = _FakeClock()
    sizes: list[int] = []
    pool = EnhancerPool(1, 0.010, on_batch=sizes.append, clock=clock.time, sleep=clock.sleep)
    speakers, frames = 4, 6
    signals = [speech_noise(seed, frames) for seed in range(speakers)]
    clocked = [SpeakerPipeline(runtime, EnhancementSettings()) for _ in range(speakers)]
    direct = [SpeakerPipeline(runtime, EnhancementSettings()) for _ in range(speakers)]
    start = clock.now

    async def run() -> list[list[np.ndarray]]:
        heard: list[list[np.ndarray]] = [[] for _ in range(speakers)]
        for frame in range(frames):
            part = slice(frame * 960, (frame + 1) * 960)
            clock.now = start + 0.020 * frame
            if frame == 0:
                for index in range(speakers):
                    clock.now = start + 0.002 * index
                    result = await pool.enhance(0, clocked[index], signals[index][part])
                    heard[index].append(result.samples)
                continue
            futures = [pool.enhance(0, clocked[0], signals[0][part])]
            await asyncio.to_thread(clock.waiting.wait, 5)
            clock.waiting.clear()
            for index in range(1, speakers):
                clock.now = start + 0.020 * frame + 0.002 * index
                futures.append(pool.enhance(0, clocked[index], signals[index][part]))
            clock.tick.set()
            for index, result in enumerate(await asyncio.gather(*futures)):
                heard[index].append(result.samples)
        return heard

    try:
        heard = asyncio.run(run())
    finally:
        clock.tick.set()
        pool.close()
    assert sizes == [1] * speakers + [speakers] * (frames - 1)
    assert clock.waits == pytest.approx([0.007] * (frames - 1))  # 6 ms + 1 ms, under 10 ms
    for frame in range(frames):
        part = slice(frame * 960, (frame + 1) * 960)
        expected = enhance_batch(direct, [s[part] for s in signals])
        for index in range(speakers):
            result = expected[index]
            assert not isinstance(result, Exception)
            np.testing.assert_array_equal(heard[index][frame], result.samples)


def test_a_lone_speaker_never_waits_for_the_clock(runtime: ModelRuntime) -> None:
    clock = _FakeClock()
    sizes: list[int] = []
    pool = EnhancerPool(1, 0.010, on_batch=sizes.append, clock=clock.time, sleep=clock.sleep)
    pipeline = SpeakerPipeline(runtime, EnhancementSettings())
    signal = speech_noise(7, 5)

    async def run() -> None:
        for frame in range(5):
            clock.now = 100.0 + 0.020 * frame
            await pool.enhance(0, pipeline, signal[frame * 960 : (frame + 1) * 960])

    try:
        asyncio.run(run())
    finally:
        clock.tick.set()
        pool.close()
    assert sizes == [1] * 5 and clock.waits == []
