"""The low-rank speed probe (research, not shipped) on the small network: its factors, the
int8 graphs it times, and their parity with the torch step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import onnx  # noqa: E402
import torch  # noqa: E402
from small_network import small_network  # noqa: E402

from model.export import random_inputs  # noqa: E402
from model.network import PercepNetStep  # noqa: E402
from model.research.low_rank_speed import LowRankAffine, factor, write_graphs  # noqa: E402

MAPS = ["hidden_maps.0", "hidden_maps.1", "input_maps.1"]


def outputs(step: PercepNetStep, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in step(*(torch.from_numpy(a) for a in inputs))]


def test_full_rank_factors_compute_the_same_step() -> None:
    model = small_network(seed=3)
    inputs = random_inputs(PercepNetStep(model), 3)
    expected = outputs(PercepNetStep(model).eval(), inputs)
    factored = PercepNetStep(model).eval()
    fixed = factor(factored, rank=40, maps=MAPS)  # the small network's GRUs have 40 units
    assert all(isinstance(factored.hidden_maps[i], LowRankAffine) for i in (0, 1))
    assert "hidden_maps.0.first" in fixed and "hidden_maps.0.weight_t" not in fixed
    assert "input_maps.0.weight_t" in fixed  # an unfactored map keeps its fixed scale
    for a, b in zip(expected, outputs(factored, inputs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_truncated_rank_changes_the_step() -> None:
    model = small_network(seed=3)
    inputs = random_inputs(PercepNetStep(model), 3)
    factored = PercepNetStep(model).eval()
    factor(factored, rank=4, maps=MAPS)
    gains, truncated = outputs(PercepNetStep(model).eval(), inputs)[0], outputs(factored, inputs)[0]
    assert np.max(np.abs(gains - truncated)) > 1e-3


def test_graphs_have_two_integer_matmuls_per_factored_map(tmp_path: Path) -> None:
    model = small_network(seed=5)
    one_hop, two_hop = write_graphs(model, rank=8, maps=MAPS, out=tmp_path)  # parity checked
    # unfactored: conv1, conv2, input_maps.0, the two heads (each once a call, whatever the
    # hops); factored: two products each, input_maps.1 once a call, the hidden maps once a hop
    expected = {one_hop: 5 + 2 + 2 * 2, two_hop: 5 + 2 + 2 * 2 * 2}
    for path, count in expected.items():
        nodes = onnx.load(str(path)).graph.node
        assert len([n for n in nodes if n.op_type == "MatMulIntegerToFloat"]) == count
        assert not [n for n in nodes if n.op_type == "MatMul"]
