"""Research probe: how fast is the int8 step when the GRU maps are low-rank?

Factors the chosen GRU maps of a fp32 streaming graph by truncated SVD (W ≈ A·B, rank r),
writes the one-hop and two-hop int8 graphs of each rank, and times them at batch 1 against the
unfactored graph in the same process, in interleaved rounds.

    python -m model.research.low_rank_speed --ranks 96 128 192 --out runs/low-rank-speed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.export import OUTPUT_NAMES, _export_graph, random_inputs
from model.network import PercepNet, PercepNetStep, PercepNetTwoHopStep
from model.quantise import quantise_rowwise
from model.runtime import DEFAULT_MODEL, INPUT_NAMES, ModelRuntime, load_session

PARITY = 0.25  # |int8 − torch| on random states: shipped two-hop graph 0.051, rank 192 0.106


class LowRankAffine(nn.Module):
    """y = (x·A)·B + b, A [in, r] and B [r, out] from the truncated SVD of Wᵀ."""

    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor, rank: int) -> None:
        super().__init__()
        u, s, vt = torch.linalg.svd(weight_t.detach(), full_matrices=False)
        root = s[:rank].sqrt()
        self.first = nn.Parameter((u[:, :rank] * root).contiguous())
        self.second = nn.Parameter((root[:, None] * vt[:rank]).contiguous())
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the factored map."""
        return torch.matmul(torch.matmul(x, self.first), self.second) + self.bias


def factor(step: PercepNetStep, rank: int, maps: list[str]) -> list[str]:
    """Replace ``maps`` (e.g. ``hidden_maps.0``) by rank-``rank`` factors; returns the fixed-scale
    weight names of the factored step."""
    fixed = set(step.fixed_scale_weights())
    for name in maps:
        group, index = name.split(".")
        old = getattr(step, group)[int(index)]
        getattr(step, group)[int(index)] = LowRankAffine(old.weight_t, old.bias, rank)
        fixed.discard(f"{name}.weight_t")
        fixed.add(f"{name}.first")
    return sorted(fixed)


def write_graphs(model: PercepNet, rank: int, maps: list[str], out: Path) -> tuple[Path, Path]:
    """One-hop and two-hop int8 graphs of the factored network."""
    out.mkdir(parents=True, exist_ok=True)
    one = PercepNetStep(model).eval()
    two = PercepNetTwoHopStep(model).eval()
    paths = []
    for step, name, two_hops in (
        (one, "percepnet-int8.onnx", False),
        (two, "percepnet-int8-2hop.onnx", True),
    ):
        fixed = factor(step, rank, maps) if rank else step.fixed_scale_weights()
        inputs = random_inputs(step, 2)
        axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in INPUT_NAMES + OUTPUT_NAMES}
        if two_hops:
            inputs[0] = np.stack([inputs[0], random_inputs(step, 2, seed=1)[0]])
            for n in ("features", "gains", "strengths"):
                axes[n] = {1: "batch"}
        fp32 = out / name.replace("int8", "fp32")
        _export_graph(step, [torch.from_numpy(a) for a in inputs], fp32, axes)
        quantise_rowwise(fp32, out / name, fixed, row_axis=-1 if two_hops else 1)
        fp32.unlink()
        check_close_to_torch(step, out / name, inputs)
        paths.append(out / name)
    return paths[0], paths[1]


def check_close_to_torch(step: nn.Module, int8: Path, inputs: list[np.ndarray]) -> None:
    """RuntimeError unless the int8 graph is within ``PARITY`` of the (factored) torch step on
    ``inputs``: the timings are of a graph that computes the network."""
    with torch.no_grad():
        expected = [t.numpy() for t in step(*(torch.from_numpy(a) for a in inputs))]
    got = load_session(int8).run(OUTPUT_NAMES, dict(zip(INPUT_NAMES, inputs, strict=True)))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, got, strict=True))
    if worst > PARITY:
        raise RuntimeError(f"{int8}: differs from its torch step by {worst:.3f}")


def time_graphs(graphs: dict[str, Path], rounds: int, calls: int) -> dict[str, tuple[float, float]]:
    """Median µs per hop (one hop a call, two hops a call) for each graph, interleaved rounds."""
    runtimes = {name: ModelRuntime(path) for name, path in graphs.items()}
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2, 1, 70)).astype(np.float32)
    one: dict[str, list[float]] = {n: [] for n in graphs}
    two: dict[str, list[float]] = {n: [] for n in graphs}
    for _ in range(rounds):
        for name, runtime in runtimes.items():
            state = list(runtime.zero_state(1))
            for i in range(calls + 50):
                t0 = time.perf_counter()
                out = runtime.step_batch(features[0], *state)
                if i >= 50:
                    one[name].append((time.perf_counter() - t0) * 1e6)
                state = out[2:]
            state = list(runtime.zero_state(1))
            for i in range(calls + 50):
                t0 = time.perf_counter()
                out = runtime.step_two_hops(features, *state)
                if i >= 50:
                    two[name].append((time.perf_counter() - t0) * 1e6 / 2)
                state = out[2:]
    return {n: (float(np.median(one[n])), float(np.median(two[n]))) for n in graphs}


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, default=DEFAULT_MODEL.with_name("percepnet-fp32.onnx"))
    parser.add_argument("--ranks", type=int, nargs="+", default=[96, 128, 192])
    parser.add_argument(
        "--maps",
        nargs="+",
        default=[f"hidden_maps.{i}" for i in range(3)] + [f"input_maps.{i}" for i in range(3)],
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("runs/low-rank-speed"))
    args = parser.parse_args(argv)
    from model.export import load_onnx_network

    model = load_onnx_network(args.fp32)
    graphs = {}
    for rank in [0, *args.ranks]:
        one, _ = write_graphs(model, rank, args.maps, args.out / f"rank{rank}")
        graphs[f"rank {rank}" if rank else "full"] = one
        print(f"rank {rank}: {one.stat().st_size:,} bytes", flush=True)
    result = time_graphs(graphs, args.rounds, args.calls)
    print("graph        µs/hop (1 hop a call)  µs/hop (2 hops a call)")
    for name, (a, b) in result.items():
        print(f"{name:12s} {a:10.1f} {b:22.1f}")


if __name__ == "__main__":
    main()
