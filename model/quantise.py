"""int8 quantisation of the streaming graph in which every stream of a batch is quantised on
its own, so that a stream's output is the same, bit for bit, whoever shares its batch.

onnxruntime's ``quantize_dynamic`` takes one activation range per call, over the whole batch:
a loud batch-mate coarsens everyone's activations. Here each MatMul ``x·W`` becomes

- weights: int8, one symmetric scale per output column (``max |W[:, j]| / 127``);
- activations known to lie in [−1, 1] and to use both signs (tanh outputs, GRU states): the
  fixed scale 1/63, codes ``64 + round(x · 63)``, nothing measured at run time;
- other activations: their own row's range (``ReduceMin``, ``ReduceMax``, widened to hold 0)
  in 127 steps, codes ``round(x / step) − origin`` with the integer ``origin = round(low /
  step)`` (tanh outputs are often one-sided, where this halves the step of a fixed scale), and
  ``x·W = step·(codes·W + origin·Σ_k W[k, :])``;
- uint8 codes times int8 weights accumulated in int32 (exact, in any order), then scaled to
  float element by element (``MatMulIntegerToFloat``).

Activation codes stay within 0 … 127 (7 bits) so that the sums are exact on every CPU.
onnxruntime's uint8 × int8 kernel for x86 CPUs with AVX2 but without VNNI (AMD Zen 2 and 3,
Intel before Ice Lake) multiplies with ``vpmaddubsw``, which adds each pair of products in 16
bits and saturates: with 8-bit codes 2 · 255 · 127 overflows (the model scored 0.1 PESQ-WB
lower on such a CPU), with 7-bit codes 2 · 127 · 127 = 32,258 fits. Its uint8 × uint8 kernel
would be exact too but was 10–18 % slower there, and 7 bits cost nothing measurable on the dev
split (docs/performance.md).

No step mixes rows, so batching changes nothing. (onnxruntime 1.32's ``MatMulIntegerToFloat``
scales its bias by a per-row ``a_scale`` too, which is why a row's scale, offset and bias are
applied by separate ``Mul`` and ``Add``; the exporter checks the result against fp32.)
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT8_LEVELS = 127  # symmetric weight codes −127 … 127
MAX_ACTIVATION_CODE = 127  # 2 · 127 · INT8_LEVELS fits a 16-bit pair sum (module docstring)
ACTIVATION_LEVELS = 63  # fixed-scale activation codes 64 + round(x · 63): 1 … 127
CODE_OFFSET = MAX_ACTIVATION_CODE - ACTIVATION_LEVELS
ROW_LEVELS = MAX_ACTIVATION_CODE  # per-row codes 0 … 127 span the row's [lo, hi]
TINY_SCALE = 1e-30  # a constant row (a fresh stream's zero state) keeps a finite step
MICROSOFT_DOMAIN = "com.microsoft"


def quantise_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and per-column scales of a [K, N] matrix (symmetric, no zero point)."""
    scale = np.maximum(np.abs(weight).max(axis=0), TINY_SCALE) / INT8_LEVELS
    codes = np.clip(np.rint(weight / scale), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return codes, scale.astype(np.float32)


class _GraphWriter:
    """Collects the new nodes and initializers of the quantised graph."""

    def __init__(self, graph: onnx.GraphProto, row_axis: int) -> None:
        self.row_axis = row_axis
        self.initializers = {init.name: init for init in graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.nodes: list[onnx.NodeProto] = []
        self.new_initializers: list[onnx.TensorProto] = []
        self.codes: dict[str, tuple[str, str | None]] = {}  # activation → (codes, row scale)
        self.constant("q_unit_scale", np.array(1.0, np.float32))
        self.constant("q_fixed_scale", np.array(1.0 / ACTIVATION_LEVELS, np.float32))
        self.constant("q_row_levels", np.array(float(ROW_LEVELS), np.float32))
        self.constant("q_row_step", np.array(1.0 / ROW_LEVELS, np.float32))
        self.constant("q_tiny", np.array(TINY_SCALE, np.float32))
        self.constant("q_zero", np.array(0.0, np.float32))
        self.constant("q_offset", np.array(CODE_OFFSET, np.uint8))
        self.constant("q_no_offset", np.array(0, np.uint8))

    def constant(self, name: str, value: np.ndarray) -> str:
        self.new_initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(
        self, op: str, inputs: list[str], outputs: list[str], domain: str = "", **kwargs: object
    ) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **kwargs))  # type: ignore[arg-type]

    def activation_codes(self, x: str, fixed_scale: bool) -> tuple[str, str | None]:
        """uint8 codes of activation ``x`` (once per activation, shared by its matmuls) and the
        stem of its per-row ``{stem}_origin`` and ``{stem}_step``, or None for the fixed
        scale."""
        if x in self.codes:
            return self.codes[x]
        stem = "q" + x.replace("/", "_")
        if fixed_scale:
            self.node("QuantizeLinear", [x, "q_fixed_scale", "q_offset"], [f"{stem}_codes"])
            self.codes[x] = (f"{stem}_codes", None)
            return self.codes[x]
        # the row's range, widened to hold 0 (so a zero is coded exactly), in ROW_LEVELS steps
        axes = [self.row_axis]
        self.node("ReduceMin", [x], [f"{stem}_min"], axes=axes, keepdims=1)
        self.node("ReduceMax", [x], [f"{stem}_max"], axes=axes, keepdims=1)
        self.node("Min", [f"{stem}_min", "q_zero"], [f"{stem}_low"])
        self.node("Max", [f"{stem}_max", "q_zero"], [f"{stem}_high"])
        self.node("Sub", [f"{stem}_high", f"{stem}_low"], [f"{stem}_span0"])
        self.node("Max", [f"{stem}_span0", "q_tiny"], [f"{stem}_span"])
        self.node("Div", ["q_row_levels", f"{stem}_span"], [f"{stem}_gain"])
        self.node("Mul", [f"{stem}_span", "q_row_step"], [f"{stem}_step"])
        self.node("Mul", [f"{stem}_low", f"{stem}_gain"], [f"{stem}_low_steps"])
        self.node("Round", [f"{stem}_low_steps"], [f"{stem}_origin"])  # −(zero point)
        self.node("Mul", [x, f"{stem}_gain"], [f"{stem}_steps"])
        self.node("Sub", [f"{stem}_steps", f"{stem}_origin"], [f"{stem}_scaled"])
        self.node(
            "QuantizeLinear", [f"{stem}_scaled", "q_unit_scale", "q_no_offset"], [f"{stem}_codes"]
        )
        self.codes[x] = (f"{stem}_codes", stem)
        return self.codes[x]

    def bias_add(self, matmul: onnx.NodeProto) -> onnx.NodeProto | None:
        """The ``Add`` of a constant bias that is the matmul's only consumer, if any."""
        users = self.consumers.get(matmul.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            other = [name for name in users[0].input if name != matmul.output[0]]
            if len(other) == 1 and other[0] in self.initializers:
                return users[0]
        return None


def quantise_rowwise(
    fp32_path: Path, int8_path: Path, fixed_scale_weights: Collection[str], row_axis: int = 1
) -> Path:
    """Write the int8 graph of ``fp32_path`` (every MatMul by a constant 2-D weight quantised).

    ``fixed_scale_weights`` names the weights whose MatMul input always lies in [−1, 1]
    (spread over both signs); those inputs get the fixed scale 1/63, every other input its
    own row's range, taken along ``row_axis`` (the feature axis: 1 for [batch, features],
    −1 for the two-hop graph's [hop, batch, features]). A weight read by several MatMuls (the
    two-hop graph's recurrent maps) is quantised once.
    """
    model = onnx.load(str(fp32_path))
    graph = model.graph
    writer = _GraphWriter(graph, row_axis)
    skipped: set[int] = set()  # bias adds folded into their matmul
    replaced: set[str] = set()
    for node in graph.node:
        if id(node) in skipped:
            continue
        weight = writer.initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            writer.nodes.append(node)
            continue
        name, out = node.input[1], node.output[0]
        codes, scale = quantise_weight(numpy_helper.to_array(weight))
        first_use = name not in replaced  # a weight several MatMuls read is stored once
        replaced.add(name)
        if first_use:
            writer.constant(f"{name}_quantized", codes)
            writer.constant(f"{name}_scale", scale)
        x_codes, row = writer.activation_codes(node.input[0], name in fixed_scale_weights)
        add = writer.bias_add(node)
        matmul = [x_codes, f"{name}_quantized"]
        if row is None:
            inputs = [*matmul, "q_fixed_scale", f"{name}_scale", "q_offset"]
            if add is not None:  # the bias fused into the matmul
                skipped.add(id(add))
                inputs += ["", next(i for i in add.input if i != out)]
                out = add.output[0]
            writer.node("MatMulIntegerToFloat", inputs, [out], domain=MICROSOFT_DOMAIN)
            continue
        if first_use:
            column_sums = codes.astype(np.int64).sum(axis=0) * scale.astype(np.float64)
            writer.constant(f"{name}_column_sums", column_sums.astype(np.float32))
        inputs = [*matmul, "q_unit_scale", f"{name}_scale"]
        writer.node("MatMulIntegerToFloat", inputs, [f"{out}_codes"], domain=MICROSOFT_DOMAIN)
        writer.node("Mul", [f"{row}_origin", f"{name}_column_sums"], [f"{out}_origin"])
        writer.node("Add", [f"{out}_codes", f"{out}_origin"], [f"{out}_steps"])
        writer.node("Mul", [f"{out}_steps", f"{row}_step"], [out])
    unknown = set(fixed_scale_weights) - replaced
    if unknown:
        raise ValueError(f"{fp32_path}: no MatMul by {', '.join(sorted(unknown))}")
    kept = [init for init in graph.initializer if init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + writer.new_initializers)
    del graph.node[:]
    graph.node.extend(writer.nodes)
    model.opset_import.append(helper.make_opsetid(MICROSOFT_DOMAIN, 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(int8_path))
    return int8_path
