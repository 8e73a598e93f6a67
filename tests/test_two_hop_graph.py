"""The two-hop graph: a packet's two hops in one call, equal to two one-hop calls bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from small_network import exported_folder, small_network  # noqa: E402

from dsp.constants import NUM_BANDS, NUM_FEATURES  # noqa: E402
from model.export import (  # noqa: E402
    TWO_HOP_INT8_NAME,
    check_two_hops_equal_one_hop_twice,
)
from model.network import PercepNet, PercepNetStep  # noqa: E402
from model.runtime import (  # noqa: E402
    DEFAULT_MODEL,
    ModelFileError,
    ModelGainSource,
    ModelRuntime,
    step_sources,
    step_sources_two_hops,
    two_hop_twin,
)


@pytest.fixture(scope="module")
def small_model() -> PercepNet:
    return small_network(3)


@pytest.fixture(scope="module")
def exported(small_model: PercepNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_folder(small_model, tmp_path_factory.mktemp("weights"))


def _features(streams: int, hops: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((hops, streams, NUM_FEATURES)).astype(np.float32)
    features[:, 0] *= 30.0  # a loud stream must not change the others' quantisation
    return features


def _one_hop_at_a_time(runtime: ModelRuntime, features: np.ndarray) -> np.ndarray:
    sources = [ModelGainSource(runtime) for _ in range(features.shape[1])]
    return np.stack([step_sources(sources, hop)[0] for hop in features])


def _two_hops_at_a_time(runtime: ModelRuntime, features: np.ndarray) -> np.ndarray:
    sources = [ModelGainSource(runtime) for _ in range(features.shape[1])]
    pairs = [step_sources_two_hops(sources, features[t : t + 2])[0] for t in range(0, 12, 2)]
    return np.concatenate(pairs)


def test_the_exporter_writes_a_two_hop_twin_beside_the_int8_graph(exported: Path) -> None:
    twin = exported / TWO_HOP_INT8_NAME
    assert twin == two_hop_twin(exported / "percepnet-int8.onnx")
    assert twin.is_file() and (exported / f"{TWO_HOP_INT8_NAME}.sha256").is_file()
    assert ModelRuntime(exported / "percepnet-int8.onnx").two_hop_session is not None


@pytest.mark.parametrize("streams", [1, 3, 16])
def test_two_hops_a_call_equal_one_hop_a_call_bit_for_bit(exported: Path, streams: int) -> None:
    runtime = ModelRuntime(exported / "percepnet-int8.onnx")
    features = _features(streams, 12, seed=streams)
    np.testing.assert_array_equal(
        _two_hops_at_a_time(runtime, features), _one_hop_at_a_time(runtime, features)
    )


def test_without_a_twin_two_hops_run_as_two_calls_with_the_same_result(
    exported: Path, tmp_path: Path
) -> None:
    for name in ("percepnet-int8.onnx", "percepnet-int8.onnx.sha256"):
        shutil.copy(exported / name, tmp_path / name)
    alone = ModelRuntime(tmp_path / "percepnet-int8.onnx")
    assert alone.two_hop_session is None
    features = _features(4, 12, seed=9)
    with_twin = ModelRuntime(exported / "percepnet-int8.onnx")
    np.testing.assert_array_equal(
        _two_hops_at_a_time(alone, features), _two_hops_at_a_time(with_twin, features)
    )


def test_a_source_gives_both_hops_gains_as_gains_for_twice_would(exported: Path) -> None:
    runtime = ModelRuntime(exported / "percepnet-int8.onnx")
    features = _features(1, 6, seed=4)[:, 0]
    paired, single = ModelGainSource(runtime), ModelGainSource(runtime)
    for t in range(0, 6, 2):
        gains, strengths = paired.gains_for_pair(features[t], features[t + 1])
        assert gains.shape == strengths.shape == (2, NUM_BANDS)
        for hop in range(2):
            g, r = single.gains_for(features[t + hop])
            np.testing.assert_array_equal(gains[hop], g)
            np.testing.assert_array_equal(strengths[hop], r)


def test_the_runtime_refuses_an_altered_or_foreign_twin(exported: Path, tmp_path: Path) -> None:
    for name in ("percepnet-int8.onnx", "percepnet-int8.onnx.sha256"):
        shutil.copy(exported / name, tmp_path / name)
    twin = tmp_path / TWO_HOP_INT8_NAME
    data = (exported / TWO_HOP_INT8_NAME).read_bytes()
    twin.write_bytes(data[:-10] + b"0123456789")
    shutil.copy(exported / f"{TWO_HOP_INT8_NAME}.sha256", tmp_path)
    with pytest.raises(ModelFileError, match="SHA-256"):
        ModelRuntime(tmp_path / "percepnet-int8.onnx")
    (tmp_path / f"{TWO_HOP_INT8_NAME}.sha256").unlink()
    shutil.copy(exported / "percepnet-int8.onnx", twin)  # a one-hop graph is no twin
    with pytest.raises(ModelFileError, match="not the two-hop graph"):
        ModelRuntime(tmp_path / "percepnet-int8.onnx")


def test_the_runtime_refuses_a_twin_of_other_weights(exported: Path, tmp_path: Path) -> None:
    # a replaced model whose old twin was left beside it: refused, not run with other weights
    other = exported_folder(small_network(5), tmp_path / "other")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("percepnet-int8.onnx", "percepnet-int8.onnx.sha256"):
        shutil.copy(other / name, mixed / name)
    for name in (TWO_HOP_INT8_NAME, f"{TWO_HOP_INT8_NAME}.sha256"):
        shutil.copy(exported / name, mixed / name)
    with pytest.raises(ModelFileError, match="differ from two calls of percepnet-int8.onnx"):
        ModelRuntime(mixed / "percepnet-int8.onnx")
    assert ModelRuntime(mixed / "percepnet-int8.onnx", two_hops=False).two_hop_session is None
    exported_folder(small_network(5), mixed)  # exporting again over it replaces the twin
    assert ModelRuntime(mixed / "percepnet-int8.onnx").two_hop_session is not None


def test_the_check_catches_a_twin_of_other_weights(
    exported: Path, small_model: PercepNet, tmp_path: Path
) -> None:
    exported_folder(small_network(4), tmp_path)
    step = PercepNetStep(small_model).eval()
    runtime = ModelRuntime(exported / "percepnet-int8.onnx")
    check_two_hops_equal_one_hop_twice(runtime, exported / TWO_HOP_INT8_NAME, step)
    with pytest.raises(RuntimeError, match="differ from two one-hop calls"):
        check_two_hops_equal_one_hop_twice(runtime, tmp_path / TWO_HOP_INT8_NAME, step)


def test_the_shipped_model_has_its_two_hop_twin_and_it_agrees() -> None:
    runtime = ModelRuntime(DEFAULT_MODEL)
    assert runtime.two_hop_session is not None
    features = _features(2, 12, seed=5) / 10.0
    np.testing.assert_array_equal(
        _two_hops_at_a_time(runtime, features), _one_hop_at_a_time(runtime, features)
    )
