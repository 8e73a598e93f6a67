"""Benchmark (not a test): per-hop cost of the DSP path against RNNoise, in one process.

The DSP path is ``Enhancer.process_hop`` with its default unity gain source: feature analysis
plus synthesis (pitch, comb filter, postfilter), no network. RNNoise is timed through the
``pyrnnoise`` package: its C ``rnnoise_process_frame`` called directly over ctypes with
preallocated buffers (the lowest overhead the package allows), and for reference its Python
per-frame wrapper ``pyrnnoise.rnnoise.process_mono_frame``. RNNoise's figure includes its own
DSP *and* its GRU inference. The librnnoise in pyrnnoise 0.4.5's wheel is a generic SSE2 build
(no AVX2/FMA kernels), so it is slower than an upstream build configured with x86 RTCD.

When an exported model is present (the shipped one, or ``--model PATH``), the same run also
times the network's single-step int8 (and fp32) inference at batch 1, and the whole enhancer
(DSP + int8 model) per hop, and checks both against issue 25's CPU targets (medians): the whole
enhancer at most half RNNoise's cost in the same run, the int8 step at most 150 µs. With the
model's two-hop graph beside it, both again as the relay runs them: a 20 ms packet's two hops
analysed, one model call for both, both synthesised (``Enhancer.process_pair``), half of each
call's time billed to each hop.

Run: ``python -m loadtest.bench_dsp [--seconds S] [--iterations N] [--json PATH]`` or
``percepnet-relay bench dsp``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsp.constants import HOP_SAMPLES, SAMPLE_RATE_HZ

HOP_MICROSECONDS = 1e6 * HOP_SAMPLES / SAMPLE_RATE_HZ  # 10 000 µs of audio per hop
INT16_FULL_SCALE = 32768.0  # RNNoise works on floats scaled like 16-bit PCM
DEFAULT_SECONDS = 5.0
DEFAULT_ITERATIONS = 3000
DEFAULT_WARMUP = 300
ENHANCER_SHARE_OF_RNNOISE = 0.5  # issue 25: DSP + int8 model per hop ≤ this × RNNoise's
INT8_STEP_BUDGET_US = 150.0  # issue 25: one int8 model step at batch 1
ROUNDS = 10  # every processor timed in turns, a tenth of its calls a round

DSP_CALL = "dsp.enhancer.Enhancer.process_hop (unity gains: features + synthesis)"
RNNOISE_CALL = "librnnoise rnnoise_process_frame via ctypes, preallocated buffers"
RNNOISE_WRAPPER_CALL = "pyrnnoise.rnnoise.process_mono_frame (Python wrapper, int16 in/out)"


def synthetic_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Harmonic voice-like tone (f0 gliding 110–220 Hz) plus white noise at 10 dB SNR, 48 kHz."""
    num_samples = max(HOP_SAMPLES, int(seconds * SAMPLE_RATE_HZ))
    t = np.arange(num_samples) / SAMPLE_RATE_HZ
    f0_hz = 165.0 + 55.0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0_hz) / SAMPLE_RATE_HZ
    rng = np.random.default_rng(seed)
    voice = np.zeros(num_samples)
    for harmonic in range(1, 31):
        audible = harmonic * f0_hz < 8_000.0
        amplitude = harmonic**-1.0  # −6 dB per octave
        voice += audible * amplitude * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
    noise = rng.standard_normal(num_samples)
    noise *= np.sqrt(np.mean(voice**2) / np.mean(noise**2) / 10.0)
    mix = voice + noise
    return 0.5 * mix / np.max(np.abs(mix))


def time_calls(
    fn: Callable[..., object],
    args_per_call: Sequence[tuple[Any, ...]],
    iterations: int,
    start: int = 0,
) -> np.ndarray:
    """Wall time in ns of ``fn(*args)`` per call, cycling through ``args_per_call`` from
    index ``start``.

    The garbage collector is off while timing so that a collection is not billed to a call.
    """
    times_ns = np.empty(iterations, dtype=np.int64)
    num_args = len(args_per_call)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(iterations):
            args = args_per_call[(start + i) % num_args]
            began = time.perf_counter_ns()
            fn(*args)
            times_ns[i] = time.perf_counter_ns() - began
    finally:
        if gc_was_enabled:
            gc.enable()
    return times_ns


def summarize(times_ns: np.ndarray, call: str, first_call_s: float) -> dict[str, Any]:
    """Median/p99/mean/max in µs and the share of the 10 ms real-time budget per hop."""
    times_us = times_ns / 1_000.0
    mean_us = float(np.mean(times_us))
    return {
        "call": call,
        "iterations": int(times_ns.shape[0]),
        "median_us": float(np.median(times_us)),
        "p99_us": float(np.percentile(times_us, 99)),
        "mean_us": mean_us,
        "max_us": float(np.max(times_us)),
        "realtime_percent": 100.0 * mean_us / HOP_MICROSECONDS,
        "first_call_s": first_call_s,
    }


@dataclass
class Timed:
    """One processor to time: ``fn(*args)`` cycling through ``args``, each call ``hops`` hops
    (its time is billed to them in equal parts)."""

    call: str
    fn: Callable[..., object]
    args: Sequence[tuple[Any, ...]]
    hops: int = 1
    first_call_s: float = 0.0


def time_interleaved(
    timed: dict[str, Timed], iterations: int, warmup: int, rounds: int = ROUNDS
) -> dict[str, dict[str, Any]]:
    """Per-hop summaries of every processor, timed in turns: ``rounds`` rounds in which each
    times its share of ``iterations`` hops, so that all of them sample the same stretch of a
    shared machine's speed, and their ratios do not depend on which ran while a neighbour
    was busy."""
    done = {key: max(warmup // item.hops, 1) for key, item in timed.items()}  # calls so far
    for key, item in timed.items():
        time_calls(item.fn, item.args, done[key])
    parts: dict[str, list[np.ndarray]] = {key: [] for key in timed}
    for round_index in range(rounds):
        for key, item in timed.items():
            calls = max(iterations // item.hops, 1)
            share = calls // rounds + (round_index < calls % rounds)
            if share:  # each round goes on through the audio where the last one stopped
                parts[key].append(time_calls(item.fn, item.args, share, done[key]) / item.hops)
                done[key] += share
    return {
        key: summarize(np.concatenate(parts[key]), item.call, item.first_call_s)
        for key, item in timed.items()
    }


def _time_first_call(fn: Callable[..., object], *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)  # numba kernels load (or compile) here
    return time.perf_counter() - start


def _dsp_timed(hops: np.ndarray) -> dict[str, Timed]:
    from dsp.enhancer import Enhancer

    enhancer = Enhancer()
    out = np.zeros(HOP_SAMPLES, dtype=np.float32)
    first_call_s = _time_first_call(enhancer.process_hop, hops[0], out)
    args = [(hop, out) for hop in hops]
    return {"dsp": Timed(DSP_CALL, enhancer.process_hop, args, first_call_s=first_call_s)}


def _model_timed(hops: np.ndarray, model_path: Path) -> dict[str, Timed]:
    """Batch-1 step of the int8 model (and of its fp32 original when beside it), and the
    whole enhancer driven by the int8 model; with its two-hop graph, both again two hops a
    call (the relay's path: a 20 ms packet's two hops analysed, one model call, both
    synthesised)."""
    from dsp.enhancer import Enhancer
    from model.runtime import ModelGainSource, ModelRuntime, two_hop_twin

    timed: dict[str, Timed] = {}
    features = [Enhancer().analyze(hop).copy() for hop in hops[:50]]
    fp32_path = model_path.with_name(model_path.name.replace("int8", "fp32"))
    for label, path in (("model_int8", model_path), ("model_fp32", fp32_path)):
        if label == "model_fp32" and (fp32_path == model_path or not fp32_path.exists()):
            continue
        source = ModelGainSource(ModelRuntime(path, two_hops=False))
        timed[label] = Timed(
            f"model.runtime.ModelGainSource.gains_for ({path.name}, batch 1)",
            source.gains_for,
            [(f,) for f in features],
        )
    out = np.zeros(HOP_SAMPLES, dtype=np.float32)
    enhancer = Enhancer(ModelGainSource(ModelRuntime(model_path, two_hops=False)))
    timed["enhancer"] = Timed(
        "Enhancer.process_hop with the int8 model (DSP + network)",
        enhancer.process_hop,
        [(hop, out) for hop in hops],
    )
    runtime = ModelRuntime(model_path)
    if runtime.two_hop_session is None:
        return timed
    pair_source = ModelGainSource(runtime)
    timed["model_int8_two_hop"] = Timed(
        f"ModelGainSource.gains_for_pair ({two_hop_twin(model_path).name}, batch 1), ½ call",
        pair_source.gains_for_pair,
        list(zip(features[::2], features[1::2], strict=True)),
        hops=2,
    )
    pair_enhancer = Enhancer(ModelGainSource(runtime))
    out_pair = np.zeros(2 * HOP_SAMPLES, dtype=np.float32)
    timed["enhancer_two_hop"] = Timed(
        "Enhancer.process_pair with the int8 model (DSP + network), ½ call",
        pair_enhancer.process_pair,
        [(a, b, out_pair) for a, b in zip(hops[::2], hops[1::2], strict=True)],
        hops=2,
    )
    return timed


def _rnnoise_timed(hops: np.ndarray, resources: contextlib.ExitStack) -> dict[str, Timed]:
    """RNNoise called directly and through its Python wrapper; its states are freed when
    ``resources`` closes."""
    from pyrnnoise import rnnoise

    if rnnoise.FRAME_SIZE != HOP_SAMPLES:
        raise RuntimeError(f"librnnoise frames are {rnnoise.FRAME_SIZE} samples, not 480")
    scaled = np.ascontiguousarray(hops * INT16_FULL_SCALE, dtype=np.float32)
    float_ptr = ctypes.POINTER(ctypes.c_float)
    out = np.zeros(HOP_SAMPLES, dtype=np.float32)
    out_ptr = out.ctypes.data_as(float_ptr)
    state = rnnoise.create()
    resources.callback(rnnoise.destroy, state)
    wrapper_state = rnnoise.create()
    resources.callback(rnnoise.destroy, wrapper_state)
    process = rnnoise.lib.rnnoise_process_frame
    first_call_s = _time_first_call(process, state, out_ptr, scaled[0].ctypes.data_as(float_ptr))
    return {
        "rnnoise": Timed(
            RNNOISE_CALL,
            process,
            [(state, out_ptr, frame.ctypes.data_as(float_ptr)) for frame in scaled],
            first_call_s=first_call_s,
        ),
        "rnnoise_wrapper": Timed(
            RNNOISE_WRAPPER_CALL,
            rnnoise.process_mono_frame,
            [(wrapper_state, frame.astype(np.int16)) for frame in np.round(scaled)],
        ),
    }


def rnnoise_summary(hops: np.ndarray, iterations: int, warmup: int) -> dict[str, Any]:
    """RNNoise's per-frame cost alone (``rnnoise_process_frame`` over ctypes), for other
    benchmarks' ratios."""
    with contextlib.ExitStack() as resources:
        timed = _rnnoise_timed(hops, resources)
        return time_interleaved({"rnnoise": timed["rnnoise"]}, iterations, warmup)["rnnoise"]


# x86 instruction sets that decide the int8 matmuls' speed: onnxruntime multiplies uint8 by int8
# with VNNI or AMX where present, else with AVX2's 16-bit pair sums (model/quantise.py)
INT8_INSTRUCTION_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")
CPU_CACHE_FOLDER = Path("/sys/devices/system/cpu/cpu0/cache")


def l2_cache_kib(folder: Path = CPU_CACHE_FOLDER) -> int | None:
    """The size of the first CPU's level-2 cache (KiB), where Linux says: at batch 1 the step is
    bound by reading the weights, and it slows when they outgrow this cache (docs/performance.md);
    None where it is not said."""
    for index in sorted(folder.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                scale = {"K": 1, "M": 1024}.get(size[-1:])
                return int(size[:-1]) * scale if scale else int(size) // 1024
        except (OSError, ValueError):
            return None
    return None


def _platform() -> dict[str, Any]:
    import numba

    cpu = platform.processor()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = next(
            (set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")), set()
        )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "int8_instructions": [flag for flag in INT8_INSTRUCTION_FLAGS if flag in flags],
        "l2_cache_kib": l2_cache_kib(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
    }


def run_dsp_benchmark(
    seconds: float = DEFAULT_SECONDS,
    iterations: int = DEFAULT_ITERATIONS,
    warmup: int = DEFAULT_WARMUP,
    seed: int = 0,
    model_path: Path | None = None,
) -> dict[str, Any]:
    """Time the DSP path and RNNoise per 10 ms hop over ``seconds`` of synthetic audio.

    Each processor gets ``warmup`` untimed hops, then ``iterations`` timed ones, cycling
    through the audio, all of them in turns (:func:`time_interleaved`). Returns the config,
    the platform, one summary per processor (``dsp``, ``rnnoise``, ``rnnoise_wrapper``; the
    RNNoise ones are None with ``rnnoise_error`` set when pyrnnoise cannot be loaded), the
    DSP/RNNoise ratios of median and p99, and with a model its SHA-256, its rows, the
    enhancer's ratios and ``targets`` (``cpu_targets``).
    """
    if seconds <= 0 or iterations <= 0 or warmup < 0:
        raise ValueError("seconds and iterations must be positive, warmup non-negative")
    audio = synthetic_audio(seconds, seed)
    num_hops = audio.shape[0] // HOP_SAMPLES
    hops = audio[: num_hops * HOP_SAMPLES].reshape(num_hops, HOP_SAMPLES)
    result: dict[str, Any] = {
        "config": {
            "seconds": num_hops * HOP_SAMPLES / SAMPLE_RATE_HZ,
            "hop_samples": HOP_SAMPLES,
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "iterations": iterations,
            "warmup": warmup,
            "seed": seed,
        },
        "platform": _platform(),
        "rnnoise": None,
        "rnnoise_wrapper": None,
        "rnnoise_error": None,
        "ratio_median": None,
        "ratio_p99": None,
    }
    with contextlib.ExitStack() as resources:
        timed = _dsp_timed(hops)
        try:
            timed |= _rnnoise_timed(hops, resources)
        except (ImportError, OSError, RuntimeError) as exc:
            result["rnnoise_error"] = f"{type(exc).__name__}: {exc}"
        if model_path is not None and model_path.exists():
            from model.runtime import sha256_of

            result["model_sha256"] = sha256_of(model_path)  # which weights the rows timed
            timed |= _model_timed(hops, model_path)
        result.update(time_interleaved(timed, iterations, warmup))
    if result["rnnoise"] is not None:
        result["ratio_median"] = result["dsp"]["median_us"] / result["rnnoise"]["median_us"]
        result["ratio_p99"] = result["dsp"]["p99_us"] / result["rnnoise"]["p99_us"]
        if "enhancer" in result:
            result["enhancer_ratio_median"] = (
                result["enhancer"]["median_us"] / result["rnnoise"]["median_us"]
            )
        if "enhancer_two_hop" in result:
            result["enhancer_two_hop_ratio_median"] = (
                result["enhancer_two_hop"]["median_us"] / result["rnnoise"]["median_us"]
            )
    result["targets"] = cpu_targets(result)
    return result


def cpu_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 25's CPU targets against this run's medians (those the run measured), each with
    the ``row`` of the result it reads: one hop a call, and two hops a call (the relay's 20 ms
    packets) where the model has a two-hop graph."""
    targets = []
    for suffix, how in (("", "one hop a call"), ("_two_hop", "two hops a call")):
        ratio = result.get(f"enhancer{suffix}_ratio_median")
        if ratio is not None:
            targets.append(
                {
                    "row": f"enhancer{suffix}",
                    "target": f"(DSP + int8 model) / RNNoise ≤ {ENHANCER_SHARE_OF_RNNOISE:g},"
                    f" {how}",
                    "measured": ratio,
                    "met": ratio <= ENHANCER_SHARE_OF_RNNOISE,
                }
            )
        if f"model_int8{suffix}" in result:
            step_us = result[f"model_int8{suffix}"]["median_us"]
            targets.append(
                {
                    "row": f"model_int8{suffix}",
                    "target": f"int8 step at batch 1 ≤ {INT8_STEP_BUDGET_US:g} µs per hop, {how}",
                    "measured": step_us,
                    "met": step_us <= INT8_STEP_BUDGET_US,
                }
            )
    return targets


def format_table(result: dict[str, Any]) -> str:
    """The benchmark result as a plain-text table."""
    config = result["config"]
    int8_instructions = ", ".join(result["platform"].get("int8_instructions", [])) or "none"
    l2 = result["platform"].get("l2_cache_kib")
    l2_cache = f", L2 cache {l2:,} KiB" if l2 else ""
    lines = [
        f"Per-hop cost, {config['hop_samples']} samples = 10 ms at {config['sample_rate_hz']} Hz;"
        f" {config['iterations']} timed hops each after {config['warmup']} warm-up hops, in"
        f" {ROUNDS} rounds taken in turns, over {config['seconds']:.2f} s of synthetic voice +"
        " noise",
        f"CPU: {result['platform']['cpu']} ({result['platform']['cpu_count']} logical),"
        f" int8 instructions: {int8_instructions}{l2_cache},"
        f" numba {result['platform']['numba']}",
        "",
        f"{'processor':<17} {'median µs':>10} {'p99 µs':>9} {'mean µs':>9} {'max µs':>9}"
        f" {'% of 10 ms':>10}  call timed",
    ]
    rows = [("DSP (no model)", result["dsp"])]
    for key, name in (
        ("model_int8", "model int8 b=1"),
        ("model_fp32", "model fp32 b=1"),
        ("enhancer", "DSP + int8 model"),
        ("model_int8_two_hop", "int8 b=1, 2 hops"),
        ("enhancer_two_hop", "DSP + int8, 2 hops"),
    ):
        if key in result:
            rows.append((name, result[key]))
    if result["rnnoise"] is not None:
        rows += [("RNNoise", result["rnnoise"]), ("RNNoise wrapper", result["rnnoise_wrapper"])]
    for name, row in rows:
        lines.append(
            f"{name:<17} {row['median_us']:>10.1f} {row['p99_us']:>9.1f} {row['mean_us']:>9.1f}"
            f" {row['max_us']:>9.1f} {row['realtime_percent']:>10.2f}  {row['call']}"
        )
    lines.append("")
    if result["rnnoise"] is None:
        lines.append(f"RNNoise not measured: {result['rnnoise_error']}")
    else:
        lines.append(
            f"ratio DSP/RNNoise (direct call): median {result['ratio_median']:.3f},"
            f" p99 {result['ratio_p99']:.3f}"
        )
        if "enhancer_ratio_median" in result:
            lines.append(
                f"ratio (DSP + int8 model)/RNNoise: median {result['enhancer_ratio_median']:.3f}"
            )
        if "enhancer_two_hop_ratio_median" in result:
            lines.append(
                "ratio (DSP + int8 model)/RNNoise, two hops a call: median"
                f" {result['enhancer_two_hop_ratio_median']:.3f}"
            )
    for target in result.get("targets", []):
        lines.append(
            f"target {target['target']}: {target['measured']:.3g} "
            f"({'met' if target['met'] else 'NOT met'})"
        )
    lines.append(
        f"first call (JIT load/compile): DSP {result['dsp']['first_call_s'] * 1e3:.1f} ms"
        + (
            f", RNNoise {result['rnnoise']['first_call_s'] * 1e3:.1f} ms"
            if result["rnnoise"] is not None
            else ""
        )
    )
    return "\n".join(lines)


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the benchmark (shared by ``python -m`` and the CLI)."""
    parser.add_argument(
        "--seconds",
        type=_positive(float),
        default=DEFAULT_SECONDS,
        help=f"seconds of synthetic audio cycled through (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--iterations",
        type=_positive(int),
        default=DEFAULT_ITERATIONS,
        help=f"timed calls per processor (default {DEFAULT_ITERATIONS})",
    )
    parser.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=DEFAULT_WARMUP,
        help=f"untimed calls first (default {DEFAULT_WARMUP})",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result here")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="PATH",
        help="exported int8 model to time too (default: the shipped one)",
    )


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run with parsed options, print the table, write ``--json`` if given."""
    from model.runtime import DEFAULT_MODEL

    model_path = args.model if args.model is not None else DEFAULT_MODEL
    result = run_dsp_benchmark(args.seconds, args.iterations, args.warmup, model_path=model_path)
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m loadtest.bench_dsp``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
