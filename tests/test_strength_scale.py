"""The strength head's calibration (``NetworkConfig.strength_scale``): what the network and its
graphs compute with it, how an export sets it and records it, and that training keeps it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from small_network import SMALL, exported_folder, small_network  # noqa: E402

from model.export import load_onnx_network, random_inputs  # noqa: E402
from model.network import NetworkConfig, PercepNet, PercepNetStep  # noqa: E402
from model.runtime import ModelRuntime  # noqa: E402

SCALE = 1.5


def spread_network(seed: int) -> PercepNet:
    """The small network with strength-head biases from −4 to 4: strengths near 0 and near 1."""
    model = small_network(seed)
    with torch.no_grad():
        model.strength_head.bias.copy_(torch.linspace(-4.0, 4.0, model.strength_head.out_features))
    return model


def scaled(model: PercepNet, scale: float = SCALE) -> PercepNet:
    """The same weights with their strengths scaled by ``scale``."""
    twin = PercepNet(dataclasses.replace(model.config, strength_scale=scale)).eval()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.fixture(scope="module")
def plain_and_scaled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    model = spread_network(3)
    plain = exported_folder(model, tmp_path_factory.mktemp("plain"))
    return plain, exported_folder(scaled(model), tmp_path_factory.mktemp("scaled"))


def test_the_scale_multiplies_the_strengths_caps_them_at_one_and_leaves_the_gains() -> None:
    model = spread_network(1)
    with torch.no_grad():
        features = torch.randn(2, 30, 70) * 3
        gains, strengths = model(features)
        scaled_gains, scaled_strengths = scaled(model)(features)
    assert torch.equal(scaled_gains, gains)
    assert torch.allclose(scaled_strengths, torch.clamp(strengths * SCALE, max=1.0))
    assert bool((strengths * SCALE > 1).any()) and float(scaled_strengths.max()) == 1.0
    for bad in (0.9, 4.5):
        with pytest.raises(ValueError, match="strength_scale"):
            dataclasses.replace(SMALL, strength_scale=bad)


def test_a_scaled_graph_gives_the_plain_graphs_strengths_scaled_and_loads_back(
    plain_and_scaled: tuple[Path, Path],
) -> None:
    plain, with_scale = plain_and_scaled
    inputs = random_inputs(PercepNetStep(spread_network(3)), 5, seed=4)
    inputs[0] *= 4  # strengths near 1 as well
    for name in ("percepnet-fp32.onnx", "percepnet-int8.onnx"):
        gains, strengths, *state = ModelRuntime(plain / name).step_batch(*inputs)
        got_gains, got_strengths, *got_state = ModelRuntime(with_scale / name).step_batch(*inputs)
        assert np.array_equal(got_gains, gains), name
        assert np.allclose(got_strengths, np.minimum(1.0, strengths * SCALE), atol=1e-6), name
        assert all(np.array_equal(a, b) for a, b in zip(got_state, state, strict=True)), name
    assert load_onnx_network(with_scale / "percepnet-fp32.onnx").config.strength_scale == SCALE
    assert load_onnx_network(plain / "percepnet-fp32.onnx").config.strength_scale == 1.0


def test_the_weights_digest_tells_a_scaled_graph_from_its_plain_twin(
    plain_and_scaled: tuple[Path, Path],
) -> None:
    from model.training_record import network_digest

    plain, with_scale = plain_and_scaled
    assert network_digest(plain / "percepnet-fp32.onnx") != network_digest(
        with_scale / "percepnet-fp32.onnx"
    )


def test_export_strength_scale_calibrates_the_weights_and_names_it_in_their_record(
    plain_and_scaled: tuple[Path, Path], tmp_path: Path
) -> None:
    from model.export import main
    from model.training_record import RECORD_NAME, read_record, weights_identity, write_record

    plain, with_scale = plain_and_scaled
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(plain / "percepnet-fp32.onnx", source)
    write_record(
        {"format": 1, "weights": weights_identity(source), "network": SMALL.as_dict()}, source
    )
    out = tmp_path / "out"
    main(
        [
            "--onnx",
            str(source / "percepnet-fp32.onnx"),
            "--out",
            str(out),
            "--strength-scale",
            "1.5",
        ]
    )
    for name in ("percepnet-fp32.onnx", "percepnet-int8.onnx", "percepnet-int8-2hop.onnx"):
        assert (out / name).read_bytes() == (with_scale / name).read_bytes(), name
    record = read_record(out)  # names the calibrated weights, not the source's
    assert record["network"]["strength_scale"] == SCALE
    assert record["calibration"] == {"strength_scale": SCALE, "by": "model.export --strength-scale"}
    # the graph carries its scale: a plain re-export keeps it and the record
    again = tmp_path / "again"
    main(["--onnx", str(out / "percepnet-fp32.onnx"), "--out", str(again)])
    assert (again / "percepnet-int8.onnx").read_bytes() == (
        with_scale / "percepnet-int8.onnx"
    ).read_bytes()
    assert json.loads((again / RECORD_NAME).read_text()) == record


def test_export_refuses_a_scale_out_of_range_before_it_writes(
    plain_and_scaled: tuple[Path, Path], tmp_path: Path
) -> None:
    from model.export import main

    plain, _ = plain_and_scaled
    for bad in ("0.5", "9"):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "--onnx",
                    str(plain / "percepnet-fp32.onnx"),
                    "--out",
                    str(tmp_path / "out"),
                    "--strength-scale",
                    bad,
                ]
            )
        assert str(exit_info.value).startswith("error: ") and "strength_scale" in str(
            exit_info.value
        )
    assert not (tmp_path / "out").exists()


def test_a_run_goes_on_with_the_calibration_of_the_weights_it_starts_or_resumes_from(
    plain_and_scaled: tuple[Path, Path], tmp_path: Path
) -> None:
    from model.train import inherited_strength_scale, initial_weights, saved_weights

    plain, with_scale = plain_and_scaled
    plain_init = saved_weights(plain / "percepnet-fp32.onnx")
    scaled_init = saved_weights(with_scale / "percepnet-fp32.onnx")
    assert inherited_strength_scale(None, None) == 1.0
    assert inherited_strength_scale(None, plain_init) == 1.0
    assert inherited_strength_scale(None, scaled_init) == SCALE
    config = dataclasses.replace(SMALL, strength_scale=SCALE)
    weights = initial_weights(with_scale / "percepnet-fp32.onnx", config)
    assert set(weights) == set(spread_network(3).state_dict())
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"config": config.as_dict()}, checkpoint)  # a resumed run: its own checkpoint's
    resumed = torch.load(checkpoint, weights_only=False)
    assert inherited_strength_scale(resumed, plain_init) == SCALE
    assert NetworkConfig.from_dict(SMALL.as_dict()).strength_scale == 1.0
