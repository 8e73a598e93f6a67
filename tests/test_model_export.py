"""Network, export and runtime: streaming parity with PyTorch, int8 coverage, file checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from signals import add_white_noise, harmonic_tone  # noqa: E402
from small_network import SMALL, exported_folder, small_network  # noqa: E402

from dsp.constants import NUM_FEATURES  # noqa: E402
from dsp.offline import compute_oracle_targets  # noqa: E402
from model.export import (  # noqa: E402
    export_fp32,
    load_onnx_network,
    random_inputs,
    weight_counts,
)
from model.network import PercepNet, PercepNetStep  # noqa: E402
from model.runtime import (  # noqa: E402
    DEFAULT_MODEL,
    ModelFileError,
    ModelGainSource,
    ModelRuntime,
)


@pytest.fixture(scope="module")
def small_model() -> PercepNet:
    return small_network(0)


@pytest.fixture(scope="module")
def exported(small_model: PercepNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_folder(small_model, tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def mixture_features() -> np.ndarray:
    """Features of real speech in real noise at 5 dB when ../shared/data is there."""
    from shared_data import find_shared_data, mix_at_snr, speech_and_noise

    data_dir = find_shared_data()
    if data_dir is None:
        clean = harmonic_tone(180.0, 1.0)
        noisy = add_white_noise(clean, 5.0)
    else:
        clean, noise = speech_and_noise(data_dir, num_utterances=1)
        noisy = mix_at_snr(clean, noise, 5.0)
    return compute_oracle_targets(noisy, clean).features


def _stream(runtime: ModelRuntime, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a feature sequence through the ONNX step graph, flushed with two zero frames."""
    source = ModelGainSource(runtime)
    gains, strengths = [], []
    padded = np.concatenate([features, np.zeros((2, features.shape[1]), np.float32)])
    for frame in padded:
        g, r = source.gains_for(frame)
        gains.append(g.copy())
        strengths.append(r.copy())
    return np.array(gains[2:]), np.array(strengths[2:])


def test_step_module_matches_sequence_model(small_model: PercepNet) -> None:
    step = PercepNetStep(small_model).eval()
    features = torch.randn(2, 30, NUM_FEATURES)
    with torch.no_grad():
        gains, strengths = small_model(features)
        state = [torch.zeros(shape) for shape in step.state_shapes(2)]
        outs = []
        for t in range(32):
            frame = features[:, t] if t < 30 else torch.zeros(2, NUM_FEATURES)
            g, r, *state = step(frame, *state)
            outs.append((g, r))
    streamed = torch.stack([g for g, _ in outs[2:]], dim=1)
    assert float((streamed - gains).abs().max()) < 1e-5


def test_fp32_onnx_streaming_matches_pytorch_sequence(
    small_model: PercepNet, exported: Path, mixture_features: np.ndarray
) -> None:
    with torch.no_grad():
        gains, strengths = small_model(torch.from_numpy(mixture_features)[None])
    runtime = ModelRuntime(exported / "percepnet-fp32.onnx")
    onnx_gains, onnx_strengths = _stream(runtime, mixture_features)
    assert np.max(np.abs(onnx_gains - gains[0].numpy())) < 1e-4
    assert np.max(np.abs(onnx_strengths - strengths[0].numpy())) < 1e-4


def test_int8_graph_quantises_the_weights_to_one_byte_each(exported: Path) -> None:
    integer, total = weight_counts(exported / "percepnet-int8.onnx")
    assert integer / total >= 0.9
    parameters = sum(p.numel() for p in PercepNet(SMALL).parameters())
    size = (exported / "percepnet-int8.onnx").stat().st_size
    fp32_size = (exported / "percepnet-fp32.onnx").stat().st_size
    assert size < 0.4 * fp32_size
    assert size < 1.6 * parameters + 20_000  # about one byte per weight, plus graph overhead


def test_batched_steps_equal_separate_streams_bit_for_bit(exported: Path) -> None:
    runtime = ModelRuntime(exported / "percepnet-int8.onnx")
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 10, NUM_FEATURES)).astype(np.float32)
    features[1] *= 30.0  # a loud batch-mate must not coarsen the others' quantisation
    state = list(runtime.zero_state(3))
    batched = []
    for t in range(10):
        gains, strengths, *state = runtime.step_batch(features[:, t], *state)
        batched.append(gains)
    for stream in range(3):
        source = ModelGainSource(runtime)
        for t in range(10):
            g, _ = source.gains_for(features[stream, t])
            np.testing.assert_array_equal(g, batched[t][stream])


def test_int8_export_checks_batch_independence_and_closeness_to_fp32(
    small_model: PercepNet, exported: Path, tmp_path: Path
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from model.export import check_batch_independence

    step = PercepNetStep(small_model).eval()
    check_batch_independence(ModelRuntime(exported / "percepnet-int8.onnx"), step)
    per_call = tmp_path / "per-call.onnx"  # one activation scale per call, over the batch
    quantize_dynamic(
        str(exported / "percepnet-fp32.onnx"),
        str(per_call),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )
    with pytest.raises(RuntimeError, match="batch-mates"):
        check_batch_independence(ModelRuntime(per_call), step)
    int8 = ModelRuntime(exported / "percepnet-int8.onnx")
    fp32 = ModelRuntime(exported / "percepnet-fp32.onnx")
    inputs = random_inputs(step, 5, seed=3)
    for a, b in zip(int8.step_batch(*inputs), fp32.step_batch(*inputs), strict=True):
        assert float(np.max(np.abs(a - b))) < 0.05


def test_re_export_from_the_fp32_graph_reproduces_every_file_and_keeps_its_record(
    exported: Path, tmp_path: Path
) -> None:
    import shutil

    from model.export import main
    from model.training_record import RECORD_NAME, weights_identity, write_record

    source = tmp_path / "shipped"
    source.mkdir()
    shutil.copy(exported / "percepnet-fp32.onnx", source)
    write_record({"format": 1, "weights": weights_identity(source)}, source)
    main(["--onnx", str(source / "percepnet-fp32.onnx"), "--out", str(tmp_path / "out")])
    for name in ("percepnet-fp32.onnx", "percepnet-int8.onnx", "percepnet-int8-2hop.onnx"):
        assert (tmp_path / "out" / name).read_bytes() == (exported / name).read_bytes(), name
        assert (tmp_path / "out" / f"{name}.sha256").read_text() == (
            exported / f"{name}.sha256"
        ).read_text()
    assert (tmp_path / "out" / RECORD_NAME).read_text() == (source / RECORD_NAME).read_text()


def test_export_command_refuses_a_file_that_is_not_a_fp32_graph(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.export import main

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    for source in (garbage, exported / "percepnet-int8.onnx", tmp_path / "absent.onnx"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--onnx", str(source), "--out", str(tmp_path / "out")])
        assert str(exit_info.value).startswith("error: ")
        assert str(source) in str(exit_info.value)
    assert not (tmp_path / "out").exists()


def test_shipped_int8_model_is_quantised_and_close_to_fp32(mixture_features: np.ndarray) -> None:
    int8 = DEFAULT_MODEL
    fp32 = DEFAULT_MODEL.with_name("percepnet-fp32.onnx")
    if not int8.exists() or not fp32.exists():
        pytest.skip("no shipped model under model/weights")
    integer, total = weight_counts(int8)
    assert integer / total >= 0.9
    g8, _ = _stream(ModelRuntime(int8), mixture_features)
    g32, _ = _stream(ModelRuntime(fp32), mixture_features)
    assert float(np.mean(np.abs(g8 - g32))) < 0.02


def test_runtime_rejects_missing_altered_and_foreign_files(
    exported: Path, tmp_path: Path, small_model: PercepNet
) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        ModelRuntime(tmp_path / "absent.onnx")
    altered = tmp_path / "percepnet-int8.onnx"
    altered.write_bytes((exported / "percepnet-int8.onnx").read_bytes()[:-10] + b"0123456789")
    (tmp_path / "percepnet-int8.onnx.sha256").write_text(
        (exported / "percepnet-int8.onnx.sha256").read_text()
    )
    with pytest.raises(ModelFileError, match="SHA-256"):
        ModelRuntime(altered)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a loadable"):
        ModelRuntime(garbage)


def test_the_runtime_names_a_model_that_reads_other_features(tmp_path: Path) -> None:
    import onnx

    helper = onnx.helper
    widths = {"features": NUM_FEATURES + 80, "conv1_history": 8, "conv2_history": 8, "gru_state": 4}
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in widths],
        "other_bands",
        [
            helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", width])
            for name, width in widths.items()
        ],
        [
            helper.make_tensor_value_info(f"{name}_out", onnx.TensorProto.FLOAT, None)
            for name in widths
        ],
    )
    path = tmp_path / "other_bands.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(
        ModelFileError, match=f"reads {NUM_FEATURES + 80} features per hop, .* give"
    ):
        ModelRuntime(path)


def test_export_refuses_a_graph_that_differs_from_pytorch(
    small_model: PercepNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(RuntimeError, match="differs"):
        export_fp32(small_model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_fp32_graph_loads_back_into_the_network_that_wrote_it(
    small_model: PercepNet, exported: Path
) -> None:
    restored = load_onnx_network(exported / "percepnet-fp32.onnx")
    assert restored.config == small_model.config
    original = small_model.state_dict()
    for name, value in restored.state_dict().items():
        assert torch.equal(value, original[name]), name


def test_only_a_fp32_percepnet_graph_can_be_loaded_for_fine_tuning(
    exported: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not a fp32 graph"):
        load_onnx_network(exported / "percepnet-int8.onnx")
    import onnx

    other = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "other",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
            [onnx.numpy_helper.from_array(np.zeros(1, np.float32), "w")],
        )
    )
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(ValueError, match="not a PercepNet streaming graph"):
        load_onnx_network(tmp_path / "other.onnx")


def test_init_from_takes_a_graph_or_a_checkpoint_of_the_same_network(
    small_model: PercepNet, exported: Path, tmp_path: Path
) -> None:
    from model.train import initial_weights

    from_graph = initial_weights(exported / "percepnet-fp32.onnx", small_model.config)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save(
        {"model": small_model.state_dict(), "config": small_model.config.as_dict()}, checkpoint
    )
    from_checkpoint = initial_weights(checkpoint, small_model.config)
    for name, value in small_model.state_dict().items():
        assert torch.equal(from_graph[name], value) and torch.equal(from_checkpoint[name], value)
    narrower = dataclasses.replace(small_model.config, gru_size=small_model.config.gru_size - 8)
    other_conv = dataclasses.replace(small_model.config, conv2_channels=8)
    for source in (exported / "percepnet-fp32.onnx", checkpoint):
        for config in (narrower, other_conv):
            with pytest.raises(SystemExit, match="is not"):
                initial_weights(source, config)
    with pytest.raises(SystemExit, match="not a fp32 graph"):
        initial_weights(exported / "percepnet-int8.onnx", small_model.config)
    for missing in (tmp_path / "missing.onnx", tmp_path / "missing.pt"):
        with pytest.raises(SystemExit, match="^error: --init-from: "):
            initial_weights(missing, small_model.config)
