"""Cross-stream batching: the same output as one stream at a time, sample for sample, whoever
shares the batch; pass-through and odd frame sizes mix in one batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.batching import Cancellable, EnhancerPool, Outcome, enhance_batch
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


def test_two_hops_a_call_give_the_audio_of_one_hop_a_call(runtime: ModelRuntime) -> None:
    # The shards enhance a packet's two hops with one call of the two-hop graph; the same
    # speaker enhanced one hop at a time (the one-hop graph, the enhancer alternating analysis
    # and synthesis) must come out the same, sample for sample, in frames of 1 to 4 hops.
    from dsp.enhancer import Enhancer
    from model.runtime import ModelGainSource

    assert runtime.two_hop_session is not None
    signal = speech_noise(4, 12)
    one_hop = Enhancer(ModelGainSource(runtime))
    expected = np.concatenate([one_hop.process_hop(hop).copy() for hop in signal.reshape(-1, 480)])
    probe = SpeakerPipeline(runtime, EnhancementSettings())
    mate = SpeakerPipeline(runtime, EnhancementSettings())
    got, start = [], 0
    for hops in [2, 3, 1, 4, 2, 2, 1, 3, 2, 4]:
        part = signal[start : start + hops * 480]
        results = enhance_batch([mate, probe], [part[::-1].copy(), part])
        assert not isinstance(results[1], Exception)
        got.append(results[1].samples)
        start += hops * 480
    np.testing.assert_array_equal(np.concatenate(got), expected[:start])


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


@pytest.mark.parametrize("threads", [2, 0], ids=["threads", "event-loop"])
def test_the_pool_resolves_every_frame_in_order_and_reports_batches(
    runtime: ModelRuntime, threads: int
) -> None:
    sizes: list[int] = []
    pool = EnhancerPool(threads=threads, clock_seconds=0.002, on_batch=sizes.append)
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


@pytest.mark.parametrize("threads", [1, 0], ids=["thread", "event-loop"])
def test_a_failing_batch_reaches_its_speakers_and_the_shard_survives(
    runtime: ModelRuntime, threads: int
) -> None:
    pool = EnhancerPool(threads=threads)
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
    """A clock that stands still until the test lets the shard's wait pass: a thread shard's
    sleep blocks until :meth:`release`; a loop shard's timer runs at :meth:`release`."""

    def __init__(self) -> None:
        self.now = 100.003
        self.waits: list[float] = []
        self.waiting = threading.Event()
        self.tick = threading.Event()
        self._timer: Callable[[], None] | None = None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.waiting.set()
        self.tick.wait(5)
        self.tick.clear()
        self.now += seconds

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Cancellable:
        if seconds <= 0:
            return asyncio.get_running_loop().call_soon(callback)
        assert self._timer is None, "one wait at a time"
        self.waits.append(seconds)
        self._timer = callback
        self.waiting.set()
        return _Timer(self)

    def release(self) -> None:
        """The wait is over (on the loop, for a loop shard's timer)."""
        if self._timer is None:
            self.tick.set()
            return
        callback, self._timer = self._timer, None
        self.now += self.waits[-1]
        callback()

    def pool(self, threads: int, **options: Any) -> EnhancerPool:
        return EnhancerPool(
            threads, 0.010, clock=self.time, sleep=self.sleep, call_later=self.call_later, **options
        )


class _Timer:
    """A loop shard's pending wait on the fake clock."""

    def __init__(self, clock: _FakeClock) -> None:
        self.clock = clock

    def cancel(self) -> None:
        self.clock._timer = None


SHARD_KINDS = pytest.mark.parametrize("threads", [1, 0], ids=["thread", "event-loop"])


@SHARD_KINDS
def test_a_shard_waits_for_the_speakers_due_within_its_clock_and_the_audio_is_the_same(
    runtime: ModelRuntime, threads: int
) -> None:
    # four speakers' frames come in 2 ms apart every 20 ms. The first frames go alone (nobody
    # is known to be due); from then on, speaker 0's frame waits until the last of the others
    # is due (+1 ms), meanwhile they arrive, and all four are enhanced in one model call, with
    # the samples enhance_batch gives over the same frames
    clock = _FakeClock()
    sizes: list[int] = []
    pool = clock.pool(threads, on_batch=sizes.append)
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
            clock.release()
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


@SHARD_KINDS
def test_a_lone_speaker_never_waits_for_the_clock(runtime: ModelRuntime, threads: int) -> None:
    clock = _FakeClock()
    sizes: list[int] = []
    pool = clock.pool(threads, on_batch=sizes.append)
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


class _Speaker:
    """A stream as a participant's would be, in memory: frames put in, results heard."""

    def __init__(
        self, runtime: ModelRuntime, pool: EnhancerPool, frames: list[np.ndarray] | None = None
    ) -> None:
        self.pipeline = SpeakerPipeline(runtime, EnhancementSettings())
        self.loop = asyncio.get_running_loop()
        self.pool = pool
        self.waiting: list[np.ndarray] = list(frames or [])
        self.heard: list[Outcome] = []
        self.fail_take = self.fail_deliver = False

    def put(self, frame: np.ndarray) -> None:
        self.waiting.append(frame)
        self.pool.submit(0, self)

    def take(self) -> tuple[np.ndarray, object] | None:
        if self.fail_take:
            raise RuntimeError("the decoder broke")
        taken, self.waiting = self.waiting, []
        return (np.concatenate(taken), len(taken)) if taken else None

    def deliver(self, taken: object, outcome: Outcome) -> None:
        if self.fail_deliver:
            raise RuntimeError("the mixer broke")
        self.heard.append(outcome)


def test_on_the_event_loop_one_failing_stream_costs_the_others_nothing(
    runtime: ModelRuntime,
) -> None:
    # one batch: a stream whose take raises, one whose delivery raises, one whose frame cannot
    # be cut into hops, and two good ones, which get their enhanced audio
    clock = _FakeClock()
    sizes: list[int] = []
    pool = clock.pool(0, on_batch=sizes.append)

    async def run() -> list[_Speaker]:
        speakers = [_Speaker(runtime, pool) for _ in range(5)]
        speakers[1].fail_take = True
        speakers[3].fail_deliver = True
        clock.now = 100.0  # the others' last frames, so that speaker 0's frame waits for them
        for speaker in speakers[1:]:
            pool.submit(0, speaker)
        await asyncio.sleep(0)  # their batch: nothing taken but from speakers 2-4, no audio
        clock.now = 100.018
        speakers[0].put(speech_noise(0, 1))
        assert clock.waits, "speaker 0 waits for the others due"
        speakers[1].put(speech_noise(1, 1))
        speakers[2].put(np.zeros((2, 480), np.float32))
        speakers[3].put(speech_noise(3, 1))
        speakers[4].put(speech_noise(4, 1))
        clock.release()
        return speakers

    speakers = asyncio.run(run())
    pool.close()
    assert sizes == [4]  # speaker 1 handed nothing over
    good = [s.heard for s in (speakers[0], speakers[4])]
    assert all(len(h) == 1 and not isinstance(h[0], Exception) and h[0].enhanced for h in good)
    assert speakers[1].heard == [] and speakers[3].heard == []
    assert len(speakers[2].heard) == 1 and isinstance(speakers[2].heard[0], ValueError)


def test_on_the_event_loop_a_batch_is_capped_and_the_rest_waits_anew(
    runtime: ModelRuntime,
) -> None:
    clock = _FakeClock()
    sizes: list[int] = []
    pool = clock.pool(0, on_batch=sizes.append, max_batch=2)

    async def run() -> list[_Speaker]:
        speakers = [_Speaker(runtime, pool) for _ in range(5)]
        for speaker in speakers:  # heard from 2 ms apart, each alone, no wait
            speaker.put(speech_noise(1, 1))
            await asyncio.sleep(0)
            clock.now += 0.002
        clock.now = 100.003 + 0.020
        speakers[0].put(speech_noise(2, 1))  # waits 9 ms for the four others
        for index, speaker in enumerate(speakers[1:], 1):
            clock.now = 100.003 + 0.020 + 0.002 * index
            speaker.put(speech_noise(3, 1))
        for _ in range(5):  # a batch of 2 at a time; the rest wait anew for whoever is due
            clock.release()
            for _ in range(3):
                await asyncio.sleep(0)
            if clock._timer is None and all(len(s.heard) == 2 for s in speakers):
                break
        return speakers

    speakers = asyncio.run(run())
    pool.close()
    assert sizes == [1] * 5 + [2, 2, 1]
    assert clock.waits[0] == pytest.approx(0.009)
    assert all(len(s.heard) == 2 for s in speakers)


def test_closing_the_event_loop_shard_enhances_what_is_queued_then_refuses(
    runtime: ModelRuntime,
) -> None:
    clock = _FakeClock()
    sizes: list[int] = []
    pool = clock.pool(0, on_batch=sizes.append)

    async def run() -> tuple[list[_Speaker], BaseException | None]:
        speakers = [_Speaker(runtime, pool) for _ in range(3)]
        for speaker in speakers[1:]:
            pool.submit(0, speaker)
        await asyncio.sleep(0)
        clock.now += 0.018
        for speaker in speakers:  # speaker 0 waits for the other two, which come in
            speaker.put(speech_noise(5, 1))
        assert clock.waits
        pool.close()  # the wait is cut short: all three enhanced now
        speakers[0].put(speech_noise(6, 1))  # after close: never taken
        try:
            await pool.enhance(0, speakers[1].pipeline, speech_noise(6, 1))
            refused = None
        except RuntimeError as error:
            refused = error
        return speakers, refused

    speakers, refused = asyncio.run(run())
    assert sizes == [3]
    assert [len(s.heard) for s in speakers] == [1, 1, 1]
    assert refused is not None and "closed" in str(refused)
    assert clock._timer is None  # the wait was cancelled
