"""Cross-stream batching: speakers' frames are enhanced together, one model call per two hops
(a 20 ms packet's; :meth:`service.speaker.SpeakerPipeline.analyze_two_hops`).

A speaker is pinned to one shard (its audio stays in order: a speaker is in a shard's queue at
most once). What a shard enhances is a :class:`Stream`: when it has audio ready it is queued;
the shard takes all of it at once (a participant's stream decodes its Opus packets there, see
:mod:`service.inbound`). Every shard follows one policy (:class:`_Batcher`): woken by a frame, it
waits for the frames of other speakers due within ``clock_seconds``
(:class:`service.batch_wait.BatchWait`: only when at least two are, and only until the last of
them is due), then takes every frame queued by then (the speakers whose audio is ready) and
runs the DSP per speaker and the network once per packet over the batch axis. Speakers' frames
arrive at unrelated moments, so without the clock a batch is whatever happened to queue up (1–2
at light load); with it, a frame waits less than one tick, and a lone speaker not at all.
``clock_seconds`` 0: no clock, only what is already queued.

Where a shard runs:

- ``threads`` 0: on the event loop (:class:`_LoopShard`). The wait is a loop timer and a batch is
  one loop callback, so on a node with one core the loop's own work and the enhancement take
  turns by construction (a batch is never preempted by the loop's wake-ups, nor a room's encode
  by a batch); results go to their streams directly.
- ``threads`` N >= 1: N shard threads (:class:`_ThreadShard`), results handed back to each event
  loop in one callback per batch. numba kernels and onnxruntime release the GIL, so shard
  threads run beside the loop on other cores; on one core they only preempt it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from dsp.constants import NUM_FEATURES
from model.runtime import step_sources, step_sources_two_hops
from service.batch_wait import BatchWait
from service.speaker import ProcessResult, SpeakerPipeline

log = logging.getLogger(__name__)

Outcome = ProcessResult | Exception


class Stream(Protocol):
    """One speaker's audio as a shard sees it."""

    pipeline: SpeakerPipeline
    loop: asyncio.AbstractEventLoop  # where the results are delivered

    def take(self) -> tuple[np.ndarray, object] | None:
        """On the shard: all the audio ready now and what :meth:`deliver` needs to know about
        it (None: nothing is ready)."""

    def deliver(self, taken: object, outcome: Outcome) -> None:
        """On the event loop: the enhanced audio (or the error) of what :meth:`take` gave."""


class _FrameJob:
    """One frame to enhance, its result to a future (:meth:`EnhancerPool.enhance`)."""

    def __init__(
        self, pipeline: SpeakerPipeline, samples: np.ndarray, future: asyncio.Future[ProcessResult]
    ) -> None:
        self.pipeline = pipeline
        self.loop = future.get_loop()
        self._samples: np.ndarray | None = samples
        self._future = future

    def take(self) -> tuple[np.ndarray, object] | None:
        samples, self._samples = self._samples, None
        return None if samples is None or self._future.cancelled() else (samples, None)

    def deliver(self, taken: object, outcome: Outcome) -> None:
        if self._future.done():
            return
        if isinstance(outcome, BaseException):
            self._future.set_exception(outcome)
        else:
            self._future.set_result(outcome)


def enhance_batch(
    pipelines: list[SpeakerPipeline], frames: list[np.ndarray]
) -> list[ProcessResult | Exception]:
    """Enhance one frame of each pipeline (all distinct), batching the model over them.

    A frame that cannot even start (wrong shape) fails alone: its slot holds the error.
    """
    start = time.perf_counter()
    hops: list[int] = []
    outcomes: list[ProcessResult | Exception | None] = []
    for pipeline, frame in zip(pipelines, frames, strict=True):
        try:
            hops.append(pipeline.begin(frame))
            outcomes.append(None)
        except ValueError as error:
            hops.append(-1)
            outcomes.append(error)
    for index in range(0, max(hops, default=0), 2):
        pairs = [p for p, count in zip(pipelines, hops, strict=True) if count > index + 1]
        if pairs:  # two hops of each in one model call
            features = np.empty((2, len(pairs), NUM_FEATURES), dtype=np.float32)
            for row, pipeline in enumerate(pairs):
                pipeline.analyze_two_hops(index, features[:, row])
            gains, strengths = step_sources_two_hops([p.gain_source for p in pairs], features)
            for row, pipeline in enumerate(pairs):
                pipeline.synthesize_two_hops(index, gains[:, row], strengths[:, row])
        last = [p for p, count in zip(pipelines, hops, strict=True) if count == index + 1]
        if last:  # an odd hop count ends with one hop
            rows = np.empty((len(last), NUM_FEATURES), dtype=np.float32)
            for row, pipeline in enumerate(last):
                rows[row] = pipeline.analyze_hop(index)
            gains, strengths = step_sources([p.gain_source for p in last], rows)
            for row, pipeline in enumerate(last):
                pipeline.synthesize_hop(index, gains[row], strengths[row])
    per_hop = (time.perf_counter() - start) / max(sum(h for h in hops if h > 0), 1)
    results: list[ProcessResult | Exception] = []
    for pipeline, outcome in zip(pipelines, outcomes, strict=True):
        if outcome is not None:
            results.append(outcome)
            continue
        result = pipeline.finish()
        if result.enhanced:
            result.seconds_per_hop = per_hop
        results.append(result)
    return results


Queued = tuple[Stream, float]  # a stream with the clock's time when it was queued
Delivery = tuple[Stream, object, Outcome]  # a stream, what it took, what became of it


class Cancellable(Protocol):
    """A scheduled call (:class:`asyncio.Handle`)."""

    def cancel(self) -> None: ...


def _call_on_running_loop(delay_seconds: float, callback: Callable[[], None]) -> Cancellable:
    loop = asyncio.get_running_loop()
    if delay_seconds > 0:
        return loop.call_later(delay_seconds, callback)
    return loop.call_soon(callback)


class _Batcher:
    """One shard's batching policy, whichever thread runs it: how long a frame waits for
    others, what goes into a batch, and the batch enhanced with each stream's fault its own."""

    def __init__(
        self,
        clock_seconds: float,
        max_batch: int,
        on_batch: Callable[[int], object] | None,
        clock: Callable[[], float],
    ) -> None:
        self._arrivals = BatchWait(clock_seconds)
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._clock = clock

    def wait_seconds(self, first: Queued) -> float:
        """Woken by ``first``: seconds to wait for the other speakers' frames due."""
        stream, queued_at = first
        self._arrivals.arrived(stream.pipeline, queued_at)
        return self._arrivals.wait(stream.pipeline, self._clock())

    def run(self, first: Stream, more: Callable[[], Queued | None]) -> list[Delivery]:
        """After the wait: ``first`` and what ``more`` hands out (None: nothing more), up to
        ``max_batch`` streams, taken and enhanced in one batch; what goes back to each."""
        batch = [first]
        while len(batch) < self.max_batch:
            queued = more()
            if queued is None:
                break
            self._arrivals.arrived(queued[0].pipeline, queued[1])
            batch.append(queued[0])
        taken: list[tuple[Stream, tuple[np.ndarray, object]]] = []
        for stream in batch:
            try:
                ready = stream.take()
            except Exception:  # a stream that cannot say what it has loses that much
                log.exception("a stream failed to hand over its audio")
                continue
            if ready is not None:
                taken.append((stream, ready))
        if not taken:
            return []
        try:
            results: list[Outcome] = enhance_batch(
                [stream.pipeline for stream, _ in taken], [ready[0] for _, ready in taken]
            )
        except Exception as caught:  # keep the shard alive; the speakers get the error
            results = [caught] * len(taken)
        if self.on_batch is not None:
            self.on_batch(len(taken))
        return [
            (stream, ready[1], outcome)
            for (stream, ready), outcome in zip(taken, results, strict=True)
        ]


class _ThreadShard:
    """A shard on a thread of its own: it sleeps through the wait; results go back to each
    stream's event loop in one callback per batch."""

    def __init__(self, batcher: _Batcher, name: str, sleep: Callable[[float], None]) -> None:
        self._batcher = batcher
        self._sleep = sleep
        self._jobs: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, queued: Queued) -> None:
        self._jobs.put(queued)

    def _more(self) -> Queued | None:
        try:
            queued = self._jobs.get_nowait()
        except queue.Empty:
            return None
        if queued is None:
            self._jobs.put(None)  # stop after this batch
        return queued

    def _run(self) -> None:
        while (first := self._jobs.get()) is not None:
            wait = self._batcher.wait_seconds(first)
            if wait > 0:  # others are due within the clock: wait for them, then take all ready
                self._sleep(wait)
            by_loop: dict[asyncio.AbstractEventLoop, list[Delivery]] = {}
            for delivery in self._batcher.run(first[0], self._more):
                by_loop.setdefault(delivery[0].loop, []).append(delivery)
            for loop, deliveries in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_deliver, deliveries)

    def close(self) -> None:
        """Stop after the frames already queued (:meth:`join` waits for it)."""
        self._jobs.put(None)

    def join(self, timeout_seconds: float) -> None:
        self._thread.join(timeout_seconds)


class _LoopShard:
    """A shard run by the event loop it is fed on: the wait is a loop timer and a batch one
    loop callback, its results handed to the streams in it (no thread, no hand-off)."""

    def __init__(
        self,
        batcher: _Batcher,
        call_later: Callable[[float, Callable[[], None]], Cancellable],
    ) -> None:
        self._batcher = batcher
        self._call_later = call_later
        self._first: Queued | None = None  # the frame that started the wait
        self._pending: collections.deque[Queued] = collections.deque()  # queued during it
        self._timer: Cancellable | None = None
        self._closed = False

    def submit(self, queued: Queued) -> None:
        if self._first is None:
            self._start(queued)
        else:
            self._pending.append(queued)

    def _start(self, first: Queued) -> None:
        self._first = first
        if not self._closed:
            self._timer = self._call_later(self._batcher.wait_seconds(first), self._run)

    def _more(self) -> Queued | None:
        return self._pending.popleft() if self._pending else None

    def _run(self) -> None:
        first, self._first, self._timer = self._first, None, None
        try:
            if first is not None:
                _deliver(self._batcher.run(first[0], self._more))
        finally:  # more than a batch was queued: the rest starts the next wait
            if self._first is None and self._pending:
                self._start(self._pending.popleft())

    def close(self) -> None:
        """Enhance and deliver the frames already queued, now (call it on the loop)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        while self._first is not None:
            self._run()

    def join(self, timeout_seconds: float) -> None:
        """Nothing to wait for: :meth:`close` has delivered everything."""


class EnhancerPool:
    """The shards that batch the frames of the speakers pinned to them: ``threads`` threads of
    their own, or with 0 one shard run by the event loop."""

    def __init__(
        self,
        threads: int = 1,
        clock_seconds: float = 0.0,
        max_batch: int = 64,
        on_batch: Callable[[int], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        call_later: Callable[[float, Callable[[], None]], Cancellable] = _call_on_running_loop,
    ) -> None:
        # clock, sleep, call_later: replaceable, tests run the shards on a fake clock
        self.clock_seconds = clock_seconds
        self._clock = clock
        self.threads = threads
        self._shards: list[_ThreadShard | _LoopShard] = [
            _ThreadShard(_Batcher(clock_seconds, max_batch, on_batch, clock), f"enhance-{i}", sleep)
            for i in range(threads)
        ] or [_LoopShard(_Batcher(clock_seconds, max_batch, on_batch, clock), call_later)]
        self._next_shard = itertools.cycle(range(len(self._shards)))
        self._closed = False

    @property
    def shards(self) -> int:
        """Number of shards (threads, or the one on the event loop)."""
        return len(self._shards)

    def assign_shard(self) -> int:
        """A shard for a new speaker (round robin)."""
        return next(self._next_shard)

    def enhance(
        self, shard: int, pipeline: SpeakerPipeline, samples: np.ndarray
    ) -> asyncio.Future[ProcessResult]:
        """Queue one frame of ``pipeline`` on ``shard``; the future resolves on this loop. (A
        pipeline has one frame queued at a time: await each before the next.)"""
        future: asyncio.Future[ProcessResult] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(RuntimeError("the enhancer pool is closed"))
            return future
        self.submit(shard, _FrameJob(pipeline, samples, future))
        return future

    def submit(self, shard: int, stream: Stream) -> None:
        """``stream`` has audio ready: the shard takes it at its next batch. Submit a stream
        again only once the shard has taken what it had (the stream knows). With no threads,
        submit on the event loop that runs the shard."""
        if not self._closed:
            self._shards[shard].submit((stream, self._clock()))

    def close(self) -> None:
        """Stop the shards after the frames already queued (the shard on the event loop
        enhances them at once: call it on that loop)."""
        if self._closed:
            return
        self._closed = True
        for shard in self._shards:
            shard.close()
        for shard in self._shards:
            shard.join(5.0)

    async def aclose(self) -> None:
        """:meth:`close` from the event loop: shard threads are joined off the loop, the shard
        on the loop enhances what is queued at once."""
        if self.threads:
            await asyncio.to_thread(self.close)
        else:
            self.close()


def _deliver(deliveries: list[Delivery]) -> None:
    """On an event loop: one batch's results to their streams."""
    for stream, taken, outcome in deliveries:
        try:
            stream.deliver(taken, outcome)
        except Exception:  # one stream's fault must not cost the others their audio
            log.exception("delivering enhanced audio failed")
