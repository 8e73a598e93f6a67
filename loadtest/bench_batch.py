"""Benchmark (not a test): enhancer cost per stream with cross-stream batching, against batch 1
and against RNNoise measured in the same run.

For each batch size B, B streams each enhance a 20 ms frame (two hops: DSP per stream, the
int8 model over the batch axis, ``service.batching.enhance_batch``), with one model call per
hop and, where the model has its two-hop graph, one call for both hops (the relay's default),
side by side, taking turns frame by frame; the table gives the model step alone (per call,
and per stream per hop), the whole enhancer's median cost per stream per 10 ms hop (wall time,
and this thread's CPU time, which other work on the core does not inflate), and their ratios
to RNNoise's per-frame cost.

    python -m loadtest.bench_batch [--sizes 1,2,4,8,16,32,64] [--frames 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dsp.constants import HOP_SAMPLES, NUM_FEATURES
from loadtest.bench_dsp import rnnoise_summary, synthetic_audio
from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.batching import enhance_batch
from service.speaker import EnhancementSettings, SpeakerPipeline

FRAME = 2 * HOP_SAMPLES


def bench_batch(
    runtimes: dict[str, ModelRuntime], size: int, frames: int
) -> dict[str, dict[str, float]]:
    """Per runtime: median and p99 wall µs, and median CPU µs of this thread (what the batch
    cost, whoever else ran on the core meanwhile), per stream per hop for ``size`` streams
    batched; the runtimes take turns frame by frame, so they sample the same stretch of a
    shared machine's speed."""
    audio = [
        synthetic_audio(frames * FRAME / 48000, seed=s).astype(np.float32) for s in range(size)
    ]
    pipelines = {
        key: [SpeakerPipeline(runtime, EnhancementSettings()) for _ in range(size)]
        for key, runtime in runtimes.items()
    }
    times: dict[str, list[float]] = {key: [] for key in runtimes}
    cpu_times: dict[str, list[float]] = {key: [] for key in runtimes}
    for frame in range(-10, frames):  # ten frames of warm-up
        inputs = [a[(frame % frames) * FRAME : (frame % frames + 1) * FRAME] for a in audio]
        for key in runtimes:
            start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
            enhance_batch(pipelines[key], inputs)  # numba and onnxruntime run in this thread
            if frame >= 0:
                cpu_times[key].append((time.thread_time_ns() - cpu_start) / 1000 / (2 * size))
                times[key].append((time.perf_counter_ns() - start) / 1000 / (2 * size))
    return {
        key: {
            "median_us": float(np.median(times[key])),
            "p99_us": float(np.percentile(times[key], 99)),
            "cpu_median_us": float(np.median(cpu_times[key])),
        }
        for key in runtimes
    }


def bench_model_step(
    runtimes: dict[str, ModelRuntime], size: int, calls: int
) -> dict[str, dict[str, float]]:
    """Per runtime: median µs of one model call over ``size`` streams (states in their running
    range), and per stream per hop: one hop a call, or two with the runtime's two-hop graph;
    the runtimes take turns call by call."""
    rng = np.random.default_rng(size)
    features = rng.uniform(-2.5, 2.5, (2, size, NUM_FEATURES)).astype(np.float32)
    some = next(iter(runtimes.values()))
    state = [rng.uniform(-0.9, 0.9, s.shape).astype(np.float32) for s in some.zero_state(size)]
    steps = {
        key: (
            (lambda r=runtime: r.step_two_hops(features, *state), 2)
            if runtime.two_hop_session is not None
            else (lambda r=runtime: r.step_batch(features[0], *state), 1)
        )
        for key, runtime in runtimes.items()
    }
    times: dict[str, list[float]] = {key: [] for key in runtimes}
    for call in range(-50, calls):  # fifty calls of warm-up
        for key, (step, _) in steps.items():
            start = time.perf_counter_ns()
            step()
            if call >= 0:
                times[key].append((time.perf_counter_ns() - start) / 1000)
    rows = {}
    for key, (_, hops) in steps.items():
        median = float(np.median(times[key]))
        rows[key] = {"model_call_us": median, "model_per_stream_us": median / size / hops}
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runtimes = {"one hop a call": ModelRuntime(args.model, two_hops=False)}
    two_hop = ModelRuntime(args.model)
    if two_hop.two_hop_session is not None:
        runtimes["two hops a call"] = two_hop
    hops = synthetic_audio(3.0).astype(np.float32)
    hops = hops[: hops.shape[0] // HOP_SAMPLES * HOP_SAMPLES].reshape(-1, HOP_SAMPLES)
    rnnoise = rnnoise_summary(hops, iterations=3000, warmup=300)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        steps = bench_model_step(runtimes, size, 10 * args.frames)
        batches = bench_batch(runtimes, size, args.frames)
        for calls in runtimes:  # side by side, size after size
            row = {"batch": size, "calls": calls, **steps[calls], **batches[calls]}
            row["ratio_to_rnnoise"] = row["median_us"] / rnnoise["median_us"]
            row["cpu_ratio_to_rnnoise"] = row["cpu_median_us"] / rnnoise["median_us"]
            rows.append(row)
    print(f"RNNoise (pyrnnoise, same run): median {rnnoise['median_us']:.1f} µs per 10 ms frame")
    print(
        "| streams batched | model calls | model step µs per call | model µs per stream per hop | "
        "whole enhancer µs per stream per hop: wall median | p99 | ratio to RNNoise | "
        "CPU median | CPU ratio to RNNoise |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['batch']} | {row['calls']} | {row['model_call_us']:.1f} "
            f"| {row['model_per_stream_us']:.1f} | {row['median_us']:.1f} | {row['p99_us']:.1f} "
            f"| {row['ratio_to_rnnoise']:.3f} | {row['cpu_median_us']:.1f} "
            f"| {row['cpu_ratio_to_rnnoise']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rnnoise": rnnoise, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
