"""Cross-stream batching: speakers' frames are enhanced together, one model call per hop.

Each of ``shards`` threads owns a queue. A speaker is pinned to one shard (its audio stays in
order: a speaker is in a shard's queue at most once). What a shard enhances is a
:class:`Stream`: when it has audio ready it is queued; the shard takes all of it at once (a
participant's stream decodes its Opus packets there, see :mod:`service.inbound`), and hands
the results of a batch back to each event loop in one callback. A shard runs on a clock of
``clock_seconds``: woken by a frame, it waits for the frames of other speakers due within one
tick (:class:`service.batch_wait.BatchWait`: only when at least two are, and only until the last
of them is due), then takes every frame queued by then (the speakers whose audio is ready) and
runs the DSP per speaker and the network once per hop over the batch axis. Speakers' frames
arrive at unrelated moments, so without the clock a batch is whatever happened to queue up (1–2
at light load); with it, a frame waits less than one tick, and a lone speaker not at all.
``clock_seconds`` 0: no clock, only what is already queued.
numba kernels and onnxruntime release the GIL, so shards run on separate cores.
"""

from __future__ import annotations

import asyncio
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
from model.runtime import step_sources
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
    features = np.empty((len(pipelines), NUM_FEATURES), dtype=np.float32)  # one per batch
    for index in range(max(hops, default=0)):
        active = [p for p, count in zip(pipelines, hops, strict=True) if count > index]
        rows = features[: len(active)]
        for row, pipeline in enumerate(active):
            rows[row] = pipeline.analyze_hop(index)
        gains, strengths = step_sources([p.gain_source for p in active], rows)
        for row, pipeline in enumerate(active):
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


class EnhancerPool:
    """Shard threads that batch the frames of the speakers pinned to them."""

    def __init__(
        self,
        shards: int = 2,
        clock_seconds: float = 0.0,
        max_batch: int = 64,
        on_batch: object = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock_seconds = clock_seconds
        self._clock, self._sleep = clock, sleep  # replaceable: tests run on a fake clock
        self.max_batch = max_batch
        self.on_batch = on_batch  # called with each batch's size (metrics)
        # each queued stream with the clock's time when it was queued
        self._queues: list[queue.SimpleQueue[tuple[Stream, float] | None]] = [
            queue.SimpleQueue() for _ in range(shards)
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"enhance-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        self._next_shard = itertools.cycle(range(shards))
        self._closed = False
        for thread in self._threads:
            thread.start()

    @property
    def shards(self) -> int:
        """Number of shard threads."""
        return len(self._queues)

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
        """``stream`` has audio ready: the shard takes it at its next tick. Submit a stream
        again only once the shard has taken what it had (the stream knows)."""
        if not self._closed:
            self._queues[shard].put((stream, self._clock()))

    def _collect(
        self,
        jobs: queue.SimpleQueue[tuple[Stream, float] | None],
        first: tuple[Stream, float],
        arrivals: BatchWait,
    ) -> list[Stream]:
        stream, queued_at = first
        arrivals.arrived(stream.pipeline, queued_at)
        wait = arrivals.wait(stream.pipeline, self._clock())
        if wait > 0:  # others are due within the clock: wait for them, then take all ready
            self._sleep(wait)
        batch = [stream]
        while len(batch) < self.max_batch:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                jobs.put(None)  # stop after this batch
                break
            arrivals.arrived(job[0].pipeline, job[1])
            batch.append(job[0])
        return batch

    def _run(self, jobs: queue.SimpleQueue[tuple[Stream, float] | None]) -> None:
        arrivals = BatchWait(self.clock_seconds)
        while True:
            first = jobs.get()
            if first is None:
                return
            taken: list[tuple[Stream, tuple[np.ndarray, object]]] = []
            for stream in self._collect(jobs, first, arrivals):
                try:
                    ready = stream.take()
                except Exception:  # a stream that cannot say what it has loses that much
                    log.exception("a stream failed to hand over its audio")
                    continue
                if ready is not None:
                    taken.append((stream, ready))
            if taken:
                self._enhance(taken)

    def _enhance(self, taken: list[tuple[Stream, tuple[np.ndarray, object]]]) -> None:
        try:
            results: list[Outcome] = enhance_batch(
                [stream.pipeline for stream, _ in taken], [ready[0] for _, ready in taken]
            )
        except Exception as caught:  # keep the shard alive; the speakers get the error
            results = [caught] * len(taken)
        if self.on_batch is not None:
            self.on_batch(len(taken))  # type: ignore[operator]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Stream, object, Outcome]]] = {}
        for (stream, ready), outcome in zip(taken, results, strict=True):
            by_loop.setdefault(stream.loop, []).append((stream, ready[1], outcome))
        for loop, deliveries in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_deliver, deliveries)

    def close(self) -> None:
        """Stop the shard threads after the frames already queued."""
        if self._closed:
            return
        self._closed = True
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join(5.0)


def _deliver(deliveries: list[tuple[Stream, object, Outcome]]) -> None:
    """On an event loop: one batch's results to their streams."""
    for stream, taken, outcome in deliveries:
        try:
            stream.deliver(taken, outcome)
        except Exception:  # one stream's fault must not cost the others their audio
            log.exception("delivering enhanced audio failed")
