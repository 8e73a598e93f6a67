"""The 4-bit-weight export (research, not shipped: onnxruntime's ``MatMulNBits``, int8
products) on small graphs: what it writes, how close it stays to fp32, batch independence,
exact sums at the largest codes on this CPU, and its command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnx_ir")  # the quantiser's own dependency (the train extra)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from two_layer_graph import (  # noqa: E402
    assert_rows_independent_of_batch,
    save_graph,
    save_two_layer_graph,
    two_layer_weights,
)

from model.research.weights_4bit import (  # noqa: E402
    ACCURACY_LEVEL,
    BLOCK_SIZE,
    QUANTISED_OP,
    WEIGHT_BITS,
    main,
    matmul_shapes,
    quantise_weights,
)
from model.runtime import session_options  # noqa: E402

K, H, N = 70, 48, 8  # K not a multiple of the block: the last block is padded


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return two_layer_weights(K, H, N)


@pytest.fixture(scope="module")
def quantised(weights: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("quantise")
    fp32 = save_two_layer_graph(weights, folder / "f.onnx")
    quantise_weights(fp32, folder / "q.onnx")
    return folder / "q.onnx"


def dequantised(graph: onnx.GraphProto, weight: str) -> np.ndarray:
    """The [K, N] weights a 4-bit matmul of ``graph`` holds: two codes a byte, low nibble
    first, zero point 8, one scale per block of each output column."""
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    node = next(n for n in graph.node if n.op_type == QUANTISED_OP and n.input[1] == f"{weight}_Q4")
    packed, scales = arrays[node.input[1]], arrays[node.input[2]]
    columns, blocks, _ = packed.shape
    codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(columns, blocks, -1) - 8.0
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (codes * scales[:, :, None]).reshape(columns, -1)[:, : attributes["K"]].T


def reference(x: np.ndarray, weights: dict[str, np.ndarray], graph: onnx.GraphProto) -> np.ndarray:
    """The two layers in float64 with the graph's own 4-bit weights."""
    hidden = np.tanh(x @ dequantised(graph, "w1") + weights["b1"])
    return hidden @ dequantised(graph, "w2") + weights["b2"]


def test_every_matmul_becomes_4_bit_weights_with_int8_products(quantised: Path) -> None:
    graph = onnx.load(str(quantised)).graph
    assert not [node for node in graph.node if node.op_type == "MatMul"]
    nodes = [node for node in graph.node if node.op_type == QUANTISED_OP]
    assert len(nodes) == 2
    for node in nodes:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["bits"] == WEIGHT_BITS
        assert attributes["block_size"] == BLOCK_SIZE
        assert attributes["accuracy_level"] == ACCURACY_LEVEL
    assert matmul_shapes(graph) == [(K, H), (H, N)]


def test_the_graph_multiplies_by_its_4_bit_weights_with_each_row_in_int8(
    quantised: Path, weights: dict[str, np.ndarray]
) -> None:
    graph = onnx.load(str(quantised)).graph
    for name in ("w1", "w2"):  # each weight within one 4-bit step of its block's scale
        step = np.abs(weights[name]).max() / 8
        assert np.abs(dequantised(graph, name) - weights[name]).max() <= step * 1.01
    session = ort.InferenceSession(str(quantised), session_options())
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (5, K)).astype(np.float32)
    x[1] *= 0.01  # quiet: its own scales, as fine as a loud row's
    x[2] = 0.0  # a fresh stream's zero state
    x[3] *= 40.0
    (y,) = session.run(None, {"x": x})
    expected = reference(x.astype(np.float64), weights, graph)
    spread = np.abs(expected).max(axis=1, keepdims=True)
    assert np.all(np.abs(y - expected) <= 0.01 * spread)  # int8 rows: 1/127 of each block's


def test_a_rows_output_is_bitwise_the_same_in_any_batch(quantised: Path) -> None:
    session = ort.InferenceSession(str(quantised), session_options())
    assert_rows_independent_of_batch(session, K)


def test_the_largest_codes_are_summed_exactly(tmp_path: Path) -> None:
    """Weights that 4 bits hold exactly (codes −8 … 7 of one scale per block, −8 in every
    block) against rows that int8 holds exactly (codes −127 … 127, ±127 in every block), so
    the largest products meet: the quantised graph gives the float result on this CPU, so no
    16-bit pair sum of its kernel saturated."""
    rng = np.random.default_rng(3)
    codes = rng.integers(-8, 8, (K, H)).astype(np.float32)
    codes[rng.integers(BLOCK_SIZE, size=H), np.arange(H)] = -8
    codes[BLOCK_SIZE + rng.integers(BLOCK_SIZE, size=H), np.arange(H)] = -8
    codes[2 * BLOCK_SIZE, :] = -8  # the last, padded block
    codes[:32, :4] = -8  # a block at the lowest code throughout
    codes[:32, 4:8] = 7  # … and at the highest, beside one -8
    codes[0, 4:8] = -8
    w = codes * np.float32(0.125)
    x = np.full((3, K), 127.0, np.float32)  # every activation code at the top
    x[1] = -x[1]
    x[2] = rng.integers(-127, 128, K)
    x[2, [0, BLOCK_SIZE, 2 * BLOCK_SIZE]] = 127  # the scale of every block 1
    path = save_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": w}, K, H, tmp_path / "f"
    )
    quantise_weights(path, tmp_path / "q.onnx")
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), session_options())
    (y,) = session.run(None, {"x": x / 127.0})
    np.testing.assert_allclose(y, (x / 127.0).astype(np.float64) @ w, rtol=1e-6, atol=1e-5)


def test_a_matmul_whose_weights_are_not_constant_is_refused(tmp_path: Path) -> None:
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [K, H]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", inputs, outputs)
    path = tmp_path / "f.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="MatMul left in fp32"):
        quantise_weights(path, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_the_weights_named_to_keep_stay_fp32(
    weights: dict[str, np.ndarray], tmp_path: Path
) -> None:
    fp32 = save_two_layer_graph(weights, tmp_path / "f.onnx")
    quantise_weights(fp32, tmp_path / "q.onnx", keep_fp32=["w2"])
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert [(n.op_type, n.input[1]) for n in graph.node if n.op_type == "MatMul"] == [
        ("MatMul", "w2")
    ]
    assert matmul_shapes(graph) == [(K, H)]
    with pytest.raises(ValueError, match=r"no MatMul by \['w3'\]"):
        quantise_weights(fp32, tmp_path / "r.onnx", keep_fp32=["w3"])


def test_the_command_writes_a_batch_independent_graph_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.runtime import DEFAULT_MODEL

    fp32 = DEFAULT_MODEL.with_name("percepnet-fp32.onnx")
    if not fp32.exists():
        pytest.skip("no shipped fp32 graph under model/weights")
    assert main(["--out", str(tmp_path / "w4"), "--fp32", str(fp32)]) == 0
    assert "batch-independent" in capsys.readouterr().out
    assert (tmp_path / "w4" / "percepnet-int8.onnx.sha256").exists()
    assert main(["--out", str(tmp_path / "x"), "--fp32", str(fp32), "--keep-fp32", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["--out", str(tmp_path / "y"), "--fp32", str(tmp_path / "absent.onnx")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
