"""The batch-independent int8 quantiser against its own arithmetic written out in numpy, on a
two-layer graph: one input quantised per row on its own range, one at the fixed scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from two_layer_graph import (  # noqa: E402
    assert_rows_independent_of_batch,
    save_two_layer_graph,
    two_layer_weights,
)

from model.quantise import (  # noqa: E402
    ACTIVATION_LEVELS,
    CODE_OFFSET,
    INT8_LEVELS,
    MAX_ACTIVATION_CODE,
    ROW_LEVELS,
    quantise_rowwise,
    quantise_weight,
)
from model.runtime import session_options  # noqa: E402

K, H, N = 24, 16, 8


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return two_layer_weights(K, H, N)


@pytest.fixture(scope="module")
def int8_session(
    weights: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> ort.InferenceSession:
    folder = tmp_path_factory.mktemp("quantise")
    save_two_layer_graph(weights, folder / "f.onnx")
    quantise_rowwise(folder / "f.onnx", folder / "q.onnx", fixed_scale_weights=["w2"])
    return ort.InferenceSession(str(folder / "q.onnx"), session_options())


def reference(x: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """What the int8 graph computes, in float64 from the same integer codes."""
    codes1, scale1 = quantise_weight(weights["w1"])
    low = np.minimum(x.min(axis=1, keepdims=True), 0)
    high = np.maximum(x.max(axis=1, keepdims=True), 0)
    step = np.maximum(high - low, 1e-30) / ROW_LEVELS
    origin = np.rint(low / step)
    codes = np.clip(np.rint(x / step) - origin, 0, ROW_LEVELS)
    hidden = np.tanh(step * ((codes + origin) @ codes1) * scale1 + weights["b1"])
    codes2, scale2 = quantise_weight(weights["w2"])
    fixed = np.clip(np.rint(hidden * ACTIVATION_LEVELS), -ACTIVATION_LEVELS, ACTIVATION_LEVELS)
    return (fixed @ codes2) * scale2 / ACTIVATION_LEVELS + weights["b2"]


def test_each_row_is_quantised_on_its_own_range_and_tanh_outputs_at_the_fixed_scale(
    int8_session: ort.InferenceSession, weights: dict[str, np.ndarray]
) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (5, K)).astype(np.float32)
    x[1] = np.abs(x[1]) * 0.01  # one-sided and small: a step of its own, 100× finer
    x[2] = 0.0  # a fresh stream's zero state
    x[3] *= 40.0  # a loud row must not coarsen the others
    (y,) = int8_session.run(None, {"x": x})
    np.testing.assert_allclose(y, reference(x.astype(np.float64), weights), atol=2e-5)
    float_y = np.tanh(x @ weights["w1"] + weights["b1"]) @ weights["w2"] + weights["b2"]
    assert np.max(np.abs(y - float_y)) < 0.05


def test_a_rows_output_is_bitwise_the_same_in_any_batch(
    int8_session: ort.InferenceSession,
) -> None:
    assert_rows_independent_of_batch(int8_session, K)


def test_a_fixed_scale_weight_the_graph_does_not_multiply_by_is_refused(
    tmp_path: Path, weights: dict[str, np.ndarray]
) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["y"])],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", H])],
        [numpy_helper.from_array(weights["w1"], "w1")],
    )
    onnx.save(helper.make_model(graph), tmp_path / "f.onnx")
    with pytest.raises(ValueError, match="no MatMul by w2"):
        quantise_rowwise(tmp_path / "f.onnx", tmp_path / "q.onnx", ["w2"])


def test_no_pair_of_products_outgrows_16_bits() -> None:
    """onnxruntime's uint8 × int8 kernel on AVX2 CPUs without VNNI adds each pair of products
    in 16 bits with saturation (module docstring): every activation code, fixed-scale or
    per-row, and every weight code must keep such a pair within 32,767."""
    assert 2 * MAX_ACTIVATION_CODE * INT8_LEVELS <= 32_767
    assert ROW_LEVELS <= MAX_ACTIVATION_CODE
    assert (
        0 <= CODE_OFFSET - ACTIVATION_LEVELS
        and CODE_OFFSET + ACTIVATION_LEVELS <= MAX_ACTIVATION_CODE
    )


def test_the_largest_codes_are_summed_exactly(
    weights: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """Rows at the top code against weights at ±127, the products' largest pair sums: the
    quantised graph gives the exact result on this CPU, whatever its kernel."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "extremes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", H])],
        [numpy_helper.from_array(np.sign(weights["w1"]).astype(np.float32), "w")],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f.onnx"
    )
    quantise_rowwise(tmp_path / "f.onnx", tmp_path / "q.onnx", fixed_scale_weights=[])
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), session_options())
    x = np.ones((3, K), np.float32)  # every code at the top of its row's range [0, 1]
    x[1] *= -1.0  # every code 0, the origin at the bottom
    x[2, ::2] = 0.0  # the bottom and top codes interleaved
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ np.sign(weights["w1"]), rtol=1e-6, atol=1e-5)
