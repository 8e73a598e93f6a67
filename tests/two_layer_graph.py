"""A small two-layer fp32 ONNX graph (MatMul, tanh, MatMul) for the quantiser tests, and the
check that a row's output does not depend on its batch-mates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def two_layer_weights(inputs: int, hidden: int, outputs: int) -> dict[str, np.ndarray]:
    """w1 [inputs, hidden], b1, w2 [hidden, outputs], b2: uniform, seeded."""
    rng = np.random.default_rng(0)
    return {
        "w1": rng.uniform(-0.5, 0.5, (inputs, hidden)).astype(np.float32),
        "b1": rng.uniform(-0.2, 0.2, hidden).astype(np.float32),
        "w2": rng.uniform(-0.5, 0.5, (hidden, outputs)).astype(np.float32),
        "b2": rng.uniform(-0.2, 0.2, outputs).astype(np.float32),
    }


def save_graph(
    nodes: list[onnx.NodeProto],
    weights: dict[str, np.ndarray],
    inputs: int,
    outputs: int,
    path: Path,
) -> Path:
    """A graph of ``nodes`` from ``x`` [batch, inputs] to ``y`` [batch, outputs], its weights
    as initializers."""
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])]
    y = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])]
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    graph = helper.make_graph(nodes, "g", x, y, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def save_two_layer_graph(weights: dict[str, np.ndarray], path: Path) -> Path:
    """y = tanh(x·w1 + b1)·w2 + b2, the MatMuls named ``first`` and ``second``."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="first"),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Tanh", ["a1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["m2"], name="second"),
        helper.make_node("Add", ["m2", "b2"], ["y"]),
    ]
    inputs, outputs = weights["w1"].shape[0], weights["w2"].shape[1]
    return save_graph(nodes, weights, inputs, outputs, path)


def assert_rows_independent_of_batch(session: ort.InferenceSession, inputs: int) -> None:
    """A probe row's output is bitwise the same alone and in batches of 2, 7 and 32, at any
    row, beside quiet, ordinary and loud batch-mates."""
    rng = np.random.default_rng(2)
    probe = rng.uniform(-1, 1, (1, inputs)).astype(np.float32)
    (alone,) = session.run(None, {"x": probe})
    for batch in (2, 7, 32):
        for loudness in (0.0, 1.0, 50.0):
            x = (rng.uniform(-1, 1, (batch, inputs)) * loudness).astype(np.float32)
            row = int(rng.integers(batch))
            x[row] = probe[0]
            (y,) = session.run(None, {"x": x})
            np.testing.assert_array_equal(y[row], alone[0])
