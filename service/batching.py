"""Cross-stream batching: speakers' frames are enhanced together, one model call per hop.

Each of ``shards`` threads owns a queue. A speaker is pinned to one shard (its frames stay in
order: a speaker has at most one frame in flight). A shard runs on a clock of
``clock_seconds``: woken by a frame, it waits for the next tick of the clock, then takes every
frame queued by then (the speakers whose audio is ready) and runs the DSP per speaker and the
network once per hop over the batch axis. Speakers' frames arrive at unrelated moments, so
without the clock a batch is whatever happened to queue up (1–2 at light load); with it, a
frame waits less than one tick. ``clock_seconds`` 0: no clock, only what is already queued.
numba kernels and onnxruntime release the GIL, so shards run on separate cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dsp.constants import NUM_FEATURES
from model.runtime import step_sources
from service.speaker import ProcessResult, SpeakerPipeline


@dataclass
class _Job:
    pipeline: SpeakerPipeline
    samples: np.ndarray
    future: asyncio.Future[ProcessResult]
    loop: asyncio.AbstractEventLoop


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
        self._queues: list[queue.SimpleQueue[_Job | None]] = [
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
        """Queue one frame of ``pipeline`` on ``shard``; the future resolves on this loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ProcessResult] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError("the enhancer pool is closed"))
            return future
        self._queues[shard].put(_Job(pipeline, samples, future, loop))
        return future

    def _collect(self, jobs: queue.SimpleQueue[_Job | None], first: _Job) -> list[_Job]:
        if self.clock_seconds > 0:  # wait for the next tick, then take all that is ready
            now = self._clock()
            self._sleep((math.floor(now / self.clock_seconds) + 1) * self.clock_seconds - now)
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                jobs.put(None)  # stop after this batch
                break
            batch.append(job)
        return batch

    def _run(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while True:
            first = jobs.get()
            if first is None:
                return
            batch = [job for job in self._collect(jobs, first) if not job.future.cancelled()]
            if not batch:
                continue
            try:
                results: list[ProcessResult | Exception] | None = enhance_batch(
                    [job.pipeline for job in batch], [job.samples for job in batch]
                )
                error: BaseException | None = None
            except Exception as caught:  # keep the shard alive; the speakers get the error
                results, error = None, caught
            if self.on_batch is not None:
                self.on_batch(len(batch))  # type: ignore[operator]
            for index, job in enumerate(batch):
                outcome = results[index] if results is not None else error
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    job.loop.call_soon_threadsafe(_resolve, job.future, outcome)

    def close(self) -> None:
        """Stop the shard threads after the frames already queued."""
        if self._closed:
            return
        self._closed = True
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join(5.0)


def _resolve(future: asyncio.Future[ProcessResult], outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)  # type: ignore[arg-type]
