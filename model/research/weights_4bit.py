"""A 4-bit-weight export of the streaming graph: faster at batch 1, slower batched; not shipped.

onnxruntime's own weight quantiser (``MatMulNBitsQuantizer``) turns each ``x·W`` of the fp32
streaming graph into a ``MatMulNBits`` node, except those named to stay fp32 (by default the
first layer and the heads):

- weights: 4-bit codes, symmetric, one fp32 scale per block of 32 inputs of each output column;
- accuracy level 4: at run time each row of ``x`` is quantised to int8 per block of 32 on its
  own range, multiplied by the weight codes in integers and scaled back to float.

At batch 1 the network's step is bound by reading its weights: the shipped 8-bit graph's 2.7
MB outgrow a 2 MiB L2 cache, this graph's 1.9 MB do not, and on such a Xeon its step took
0.6–0.7 × the 8-bit graph's. But onnxruntime's kernel for several rows does not share the
weights' reads the way its 8-bit kernel does: from 4 streams a call on, the 4-bit graph costs
more per stream (at 16 and 32 streams 2.4–2.8 × the 8-bit graph's), and the relay batches
every speaker of a tick, so the shipped graph stays 8-bit (docs/performance.md). Each row is
quantised on its own (batch-independent, bit for bit, with blocks of 32; not with 64 or more);
a pair of integer products is at most 2 · 15 · 127 = 3,810 (weight codes stored 0…15), so
kernels that add pairs in 16 bits cannot saturate.

    python -m model.research.weights_4bit --out runs/w4   # then --model runs/w4/percepnet-int8.onnx
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import onnx

WEIGHT_BITS = 4
BLOCK_SIZE = 32  # inputs per weight scale (64 and 128: faster, but batching changes a row)
# the first layer and the heads: in 4 bits they cost SI-SDR and STOI on the dev mixtures
KEEP_FP32 = ("conv1.weight_t", "gain_head.weight_t", "strength_head.weight_t")
ACCURACY_LEVEL = 4  # int8 activations and integer products (onnxruntime's ``accuracy_level``)
QUANTISED_OP = "MatMulNBits"


def quantise_weights(fp32_path: Path, out_path: Path, keep_fp32: Collection[str] = ()) -> None:
    """Write ``out_path``: the graph at ``fp32_path`` with every MatMul a 4-bit
    ``MatMulNBits``, except those by the weights named in ``keep_fp32``; ValueError if one of
    them is not in the graph or another MatMul could not be quantised (its weights not a
    constant of the graph)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(fp32_path))
    kept = [node for node in model.graph.node if node.op_type == "MatMul"]
    kept = [node for node in kept if node.input[1] in keep_fp32]
    missing = set(keep_fp32) - {node.input[1] for node in kept}
    if missing:
        raise ValueError(f"{fp32_path}: no MatMul by {sorted(missing)}")
    if any(not node.name for node in kept):
        raise ValueError(f"{fp32_path}: a MatMul to keep in fp32 has no name")

    quantiser_log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quantiser_log.level
    quantiser_log.setLevel(logging.WARNING)  # it logs every node it leaves alone
    try:
        quantiser = MatMulNBitsQuantizer(
            model,
            block_size=BLOCK_SIZE,
            is_symmetric=True,
            accuracy_level=ACCURACY_LEVEL,
            nodes_to_exclude=[node.name for node in kept],
        )
        quantiser.process()
    finally:
        quantiser_log.setLevel(level)
    graph = quantiser.model.model
    left = [
        node.name or node.output[0]
        for node in graph.graph.node
        if node.op_type == "MatMul" and node.input[1] not in keep_fp32
    ]
    if left:
        raise ValueError(f"{fp32_path}: MatMul left in fp32 (weights not constant): {left}")
    onnx.save(graph, str(out_path))


def matmul_shapes(graph: onnx.GraphProto) -> list[tuple[int, int]]:
    """(inputs K, outputs N) of every 4-bit MatMul in ``graph``."""
    shapes = []
    for node in graph.node:
        if node.op_type == QUANTISED_OP:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            shapes.append((int(attributes["K"]), int(attributes["N"])))
    return shapes


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model.research.weights_4bit")
    parser.add_argument("--out", type=Path, required=True, help="folder for percepnet-int8.onnx")
    parser.add_argument(
        "--fp32",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "weights" / "percepnet-fp32.onnx",
    )
    parser.add_argument(
        "--keep-fp32",
        nargs="*",
        default=list(KEEP_FP32),
        metavar="WEIGHT",
        help="weights whose MatMul stays fp32 (default: the first layer and the heads)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the 4-bit graph beside its SHA-256, check it is batch-independent, and print its
    mean distance to the fp32 graph on the exporter's random inputs."""
    from model.export import (
        INT8_NAME,
        check_batch_independence,
        load_onnx_network,
        random_inputs,
        write_sha256,
    )
    from model.network import PercepNetStep
    from model.runtime import ModelRuntime

    args = _parse_args(argv)
    try:
        step = PercepNetStep(load_onnx_network(args.fp32)).eval()
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / INT8_NAME
        quantise_weights(args.fp32, path, args.keep_fp32)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_sha256(path)
    quantised, fp32 = ModelRuntime(path, two_hops=False), ModelRuntime(args.fp32)
    try:
        check_batch_independence(quantised, step)
    except RuntimeError as exc:  # the graph is written; say why it would not do for the relay
        print(f"error: {exc}", file=sys.stderr)
        return 1
    inputs = random_inputs(step, 4, seed=7)
    pairs = zip(quantised.step_batch(*inputs), fp32.step_batch(*inputs), strict=True)
    distances = [float(np.mean(np.abs(a - b))) for a, b in pairs]
    names = ("gains", "strengths", "conv1 history", "conv2 history", "GRU state")
    print(f"wrote {path} ({path.stat().st_size:,} bytes); batch-independent")
    for name, distance in zip(names, distances, strict=True):
        print(f"mean |4-bit − fp32| {name}: {distance:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
