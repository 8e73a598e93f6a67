"""Export a trained network as a single-step streaming ONNX graph, quantise it to int8, and
record its SHA-256.

    python -m model.export --checkpoint runs/default/checkpoint.pt --out model/weights
    python -m model.export --onnx model/weights/percepnet-fp32.onnx   # re-quantise shipped

The graph's inputs are one hop's features and the explicit state (conv histories, every GRU's
hidden state); its outputs are gains, strengths and the next state; the batch axis is dynamic
so several streams share one call. Beside the int8 graph goes its two-hop twin
(``percepnet-int8-2hop.onnx``, :class:`model.network.PercepNetTwoHopStep`): a relay packet's
two hops in one call, each weight read once per packet, written only once its outputs equal two
calls of the one-hop graph bit for bit. The int8 graph quantises each stream of a batch on its own
(``model.quantise``): a stream's output does not depend on its batch-mates, bit for bit. The
exporter checks onnxruntime against PyTorch before it writes anything, and the int8 file
against the fp32 one (closeness, and batch independence).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from google.protobuf.message import DecodeError

from dsp.constants import NUM_FEATURES
from model.network import (
    MAX_STRENGTH_SCALE,
    STRENGTH_SCALE_NAME,
    NetworkConfig,
    PercepNet,
    PercepNetStep,
    PercepNetTwoHopStep,
    count_parameters,
)
from model.quantise import quantise_rowwise
from model.runtime import INPUT_NAMES, ModelRuntime, load_session, sha256_of, two_hop_twin

OUTPUT_NAMES = ["gains", "strengths", "next_conv1_history", "next_conv2_history", "next_gru_state"]
FP32_NAME = "percepnet-fp32.onnx"
INT8_NAME = "percepnet-int8.onnx"
TWO_HOP_INT8_NAME = "percepnet-int8-2hop.onnx"  # INT8_NAME's twin, where the runtime looks
PARITY_TOLERANCE = 1e-4
INT8_TOLERANCE = 0.05  # max |int8 − fp32| over gains, strengths and states, random inputs
QUANTISED_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def load_checkpoint(path: Path) -> PercepNet:
    """The network stored in a training checkpoint."""
    state = torch.load(path, weights_only=False, map_location="cpu")
    model = PercepNet(NetworkConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def load_onnx_network(path: Path) -> PercepNet:
    """The sequence network whose weights a fp32 streaming graph written by :func:`export_fp32`
    holds (the inverse of :class:`PercepNetStep`'s layout), so that shipped weights can be
    fine-tuned without the training checkpoint they came from. Refuses int8 graphs."""
    try:
        graph = onnx.load(str(path)).graph
    except DecodeError:
        raise ValueError(f"{path}: not an ONNX file") from None
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    if any(w.dtype != np.float32 for w in weights.values()):
        raise ValueError(f"{path}: not a fp32 graph (an int8 file cannot be fine-tuned)")
    try:
        conv1, conv2 = weights["conv1.weight_t"], weights["conv2.weight_t"]
        gru_size = weights["hidden_maps.0.weight_t"].shape[0]
        layers = sum(1 for name in weights if name.startswith("hidden_maps.") and "weight" in name)
        head_inputs = weights["gain_head.weight_t"].shape[0]
    except KeyError as exc:
        raise ValueError(f"{path}: not a PercepNet streaming graph (no {exc})") from None
    if head_inputs != gru_size:
        raise ValueError(f"{path}: its heads read {head_inputs} values, not the last GRU's")
    config = NetworkConfig(
        conv1_channels=conv1.shape[1],
        conv2_channels=conv2.shape[1],
        gru_size=gru_size,
        gru_layers=layers,
        strength_scale=float(weights.get(STRENGTH_SCALE_NAME, 1.0)),
    )
    model = PercepNet(config)

    def tensor(name: str, transpose: bool = False) -> torch.Tensor:
        value = torch.from_numpy(weights[name].copy())
        return value.t().contiguous() if transpose else value

    def conv_weight(name: str, width: int) -> torch.Tensor:
        flat = tensor(name, transpose=True)  # [out, width·in], oldest frame first
        return flat.reshape(flat.shape[0], width, -1).permute(0, 2, 1).contiguous()

    state = {
        "conv1.weight": conv_weight("conv1.weight_t", model.conv1.kernel_size[0]),
        "conv1.bias": tensor("conv1.bias"),
        "conv2.weight": conv_weight("conv2.weight_t", model.conv2.kernel_size[0]),
        "conv2.bias": tensor("conv2.bias"),
    }
    for i in range(layers):
        state[f"grus.{i}.weight_ih_l0"] = tensor(f"input_maps.{i}.weight_t", transpose=True)
        state[f"grus.{i}.bias_ih_l0"] = tensor(f"input_maps.{i}.bias")
        state[f"grus.{i}.weight_hh_l0"] = tensor(f"hidden_maps.{i}.weight_t", transpose=True)
        state[f"grus.{i}.bias_hh_l0"] = tensor(f"hidden_maps.{i}.bias")
    for head in ("gain_head", "strength_head"):
        state[f"{head}.weight"] = tensor(f"{head}.weight_t", transpose=True)
        state[f"{head}.bias"] = tensor(f"{head}.bias")
    model.load_state_dict(state)
    return model.eval()


def zero_state(step: PercepNetStep, batch: int) -> list[np.ndarray]:
    """Zero state arrays (a fresh stream) for a batch."""
    return [np.zeros(shape, dtype=np.float32) for shape in step.state_shapes(batch)]


def _torch_outputs(step: PercepNetStep, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in step(*(torch.from_numpy(a) for a in inputs))]


def random_inputs(step: PercepNetStep, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Features and states in the range the network sees."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((batch, NUM_FEATURES)).astype(np.float32)
    states = [
        rng.uniform(-0.9, 0.9, shape).astype(np.float32) for shape in step.state_shapes(batch)
    ]
    return [features, *states]


def _export_graph(
    step: torch.nn.Module, example: list[torch.Tensor], path: Path, axes: dict[str, dict[int, str]]
) -> None:
    """torch's ONNX export of a streaming step module (TorchScript exporter, opset 17)."""
    torch.onnx.export(
        step,
        tuple(example),
        str(path),
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes=axes,
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )


def export_fp32(model: PercepNet, path: Path) -> Path:
    """Write the fp32 streaming graph after checking it against PyTorch (max diff < 1e-4)."""
    step = PercepNetStep(model).eval()
    example = [torch.from_numpy(a) for a in random_inputs(step, 2)]
    batch_axis = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}
    partial = path.with_suffix(".partial.onnx")
    _export_graph(step, example, partial, batch_axis)
    runtime = ModelRuntime(partial)
    for batch in (1, 3):
        inputs = random_inputs(step, batch, seed=batch)
        expected = _torch_outputs(step, inputs)
        got = runtime.step_batch(*inputs)
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, got, strict=True))
        if worst > PARITY_TOLERANCE:
            partial.unlink()
            raise RuntimeError(f"ONNX export differs from PyTorch by {worst:.2e}")
    partial.replace(path)
    return path


def quantise_int8(fp32_path: Path, int8_path: Path, step: PercepNetStep) -> Path:
    """int8 graph of every MatMul, each stream of a batch quantised on its own; written only
    once it is within ``INT8_TOLERANCE`` of fp32 and batch-independent (see
    :func:`check_batch_independence`)."""
    partial = int8_path.with_suffix(".partial.onnx")
    quantise_rowwise(fp32_path, partial, step.fixed_scale_weights())
    try:
        int8, fp32 = ModelRuntime(partial), ModelRuntime(fp32_path)
        inputs = random_inputs(step, 4, seed=7)
        pairs = zip(int8.step_batch(*inputs), fp32.step_batch(*inputs), strict=True)
        worst = max(float(np.max(np.abs(a - b))) for a, b in pairs)
        if worst > INT8_TOLERANCE:
            raise RuntimeError(f"int8 graph differs from fp32 by {worst:.3f}")
        check_batch_independence(int8, step)
    except BaseException:
        partial.unlink()
        raise
    partial.replace(int8_path)
    return int8_path


def check_batch_independence(runtime: ModelRuntime, step: PercepNetStep) -> None:
    """RuntimeError unless each stream's outputs are bitwise the same alone (batch 1) as in
    batches of 2, 7 and 32, at any row, beside any batch-mates (quiet, loud, reordered)."""
    rng = np.random.default_rng(11)
    probe = random_inputs(step, 1, seed=12)
    alone = runtime.step_batch(*probe)
    for batch in (2, 7, 32):
        for loudness in (0.0, 1.0, 20.0):
            mates = random_inputs(step, batch, seed=batch)
            mates[0] *= loudness
            row = int(rng.integers(batch))
            for mate, mine in zip(mates, probe, strict=True):
                mate[row] = mine[0]
            outputs = runtime.step_batch(*mates)
            if not all(np.array_equal(a[0], b[row]) for a, b in zip(alone, outputs, strict=True)):
                raise RuntimeError(
                    f"{runtime.path}: a stream's output changes with its batch-mates "
                    f"(batch {batch}, row {row})"
                )


def export_two_hop_int8(model: PercepNet, int8_path: Path) -> Path:
    """Write the two-hop int8 graph beside ``int8_path`` (the one-hop graph of the same
    weights), once onnxruntime's fp32 two-hop graph matches PyTorch and the int8 one equals two
    calls of ``int8_path`` bit for bit (:func:`check_two_hops_equal_one_hop_twice`)."""
    step = PercepNetTwoHopStep(model).eval()
    target = two_hop_twin(int8_path)
    fp32 = target.with_suffix(".fp32.partial.onnx")
    partial = target.with_suffix(".partial.onnx")
    hop_a = random_inputs(step, 2)
    example = [np.stack([hop_a[0], random_inputs(step, 2, seed=1)[0]]), *hop_a[1:]]
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}
    for name in ("features", "gains", "strengths"):
        axes[name] = {1: "batch"}  # [hop, batch, ...]
    try:
        _export_graph(step, [torch.from_numpy(a) for a in example], fp32, axes)
        expected = _torch_outputs(step, example)
        got = load_session(fp32).run(OUTPUT_NAMES, dict(zip(INPUT_NAMES, example, strict=True)))
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, got, strict=True))
        if worst > PARITY_TOLERANCE:
            raise RuntimeError(f"two-hop ONNX export differs from PyTorch by {worst:.2e}")
        quantise_rowwise(fp32, partial, step.fixed_scale_weights(), row_axis=-1)
        one_hop = ModelRuntime(int8_path, two_hops=False)  # not the twin being replaced
        check_two_hops_equal_one_hop_twice(one_hop, partial, step)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        fp32.unlink(missing_ok=True)
    partial.replace(target)
    return target


def check_two_hops_equal_one_hop_twice(
    one_hop: ModelRuntime, two_hop_file: Path, step: PercepNetStep
) -> None:
    """RuntimeError unless the two-hop graph's gains, strengths and state equal two calls of
    the one-hop graph, bit for bit (:meth:`ModelRuntime.two_hop_graph_agrees`), for batches of
    1, 3 and 32 (quiet and loud streams)."""
    session = load_session(two_hop_file)
    for batch in (1, 3, 32):
        for loudness in (0.0, 1.0, 20.0):
            first = random_inputs(step, batch, seed=batch)
            second = random_inputs(step, batch, seed=batch + 100)[0] * loudness
            features = np.stack([first[0], second])
            if not one_hop.two_hop_graph_agrees(session, features, *first[1:]):
                raise RuntimeError(
                    f"{two_hop_file}: two hops in one call differ from two one-hop calls "
                    f"(batch {batch})"
                )


def weight_counts(path: Path) -> tuple[int, int]:
    """(weights consumed by integer matmul ops, all weights) in an ONNX file."""
    graph = onnx.load(str(path)).graph
    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer}
    quantised: set[str] = set()
    for node in graph.node:
        if node.op_type in QUANTISED_OPS:
            quantised.update(name for name in node.input if name in sizes)
    total = sum(sizes.values())
    integer = sum(sizes[name] for name in quantised if graph_initializer_is_int8(graph, name))
    return integer, total


def graph_initializer_is_int8(graph: onnx.GraphProto, name: str) -> bool:
    """Whether initializer ``name`` is stored as 8-bit integers."""
    for init in graph.initializer:
        if init.name == name:
            return init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return False


def write_sha256(path: Path) -> Path:
    """Record the file's SHA-256 beside it (``NAME.sha256``)."""
    digest_path = path.with_name(path.name + ".sha256")
    digest_path.write_text(f"{sha256_of(path)}  {path.name}\n")
    return digest_path


def export_all(model: PercepNet, out_dir: Path) -> dict[str, object]:
    """fp32 and int8 graphs with hashes; returns a summary for the model card."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(model, out_dir / FP32_NAME)
    write_sha256(fp32)  # before quantising: the int8 check loads it, digest checked
    int8 = quantise_int8(fp32, out_dir / INT8_NAME, PercepNetStep(model).eval())
    write_sha256(int8)
    two_hop = export_two_hop_int8(model, int8)
    write_sha256(two_hop)
    integer, total = weight_counts(int8)
    return {
        "parameters": count_parameters(model),
        "config": model.config.as_dict(),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": int8.stat().st_size,
        "int8_two_hop_bytes": two_hop.stat().st_size,
        "int8_weight_share": integer / max(total, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m model.export``."""
    parser = argparse.ArgumentParser(description="Export a checkpoint to streaming ONNX + int8")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a model.train checkpoint")
    source.add_argument(
        "--onnx", type=Path, help="a fp32 streaming graph (re-export and re-quantise its weights)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    parser.add_argument(
        "--strength-scale",
        type=float,
        help="export the comb strengths as min(1, S × the strength head's output), S in "
        f"[1, {MAX_STRENGTH_SCALE:g}] (a calibration; default: the weights' own)",
    )
    args = parser.parse_args(argv)
    from model.devset import default_data_dir
    from model.training_record import (
        find_record,
        record_from_run,
        with_strength_scale,
        write_record,
    )

    try:
        if args.checkpoint is not None:
            model = load_checkpoint(args.checkpoint)
        else:
            model = load_onnx_network(args.onnx)
        if args.strength_scale is not None:
            model.config = dataclasses.replace(model.config, strength_scale=args.strength_scale)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    kept = find_record(args.onnx) if args.onnx is not None else None  # same trained weights
    summary = export_all(model, args.out)
    print(json.dumps(summary, indent=2))
    if args.checkpoint is not None:
        record = record_from_run(args.checkpoint, args.out, default_data_dir())
    elif kept is not None:
        record = kept
    else:
        print(f"no training record beside {args.onnx}: none written", file=sys.stderr)
        return
    if (record.get("network") or {}).get("strength_scale", 1.0) != model.config.strength_scale:
        record = with_strength_scale(record, args.out, model.config.as_dict())
    print(f"training record: {write_record(record, args.out)}")


if __name__ == "__main__":
    main()
