"""The DNSMOS fine-tune (``model.research.dnsmos_finetune``): the torch DNSMOS is speechmos's
(same scores for the same audio), the torch STOI is pystoi's, gradients reach the gains, and the
research loop runs without DNSMOS when its weight is 0."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("speechmos")

from finetune_inputs import RATE, one_step_argv, voiced_noisy  # noqa: E402
from shared_data import find_shared_data  # noqa: E402

from dsp.constants import NUM_BANDS  # noqa: E402
from model.differentiable_synthesis import (  # noqa: E402
    TorchSynthesis,
    resample_ideal,
    stack_inputs,
    synthesis_inputs,
)
from model.research.dnsmos_loss import (  # noqa: E402
    WINDOW_SAMPLES_16K,
    DnsmosP835,
    dnsmos_window,
)


@pytest.fixture(scope="module")
def dnsmos() -> DnsmosP835:
    return DnsmosP835()


def test_the_graph_interpreter_refuses_operators_it_does_not_know(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from model.research.dnsmos_loss import OnnxTorchGraph

    node = helper.make_node("Tanh", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "tanh.onnx")
    with pytest.raises(ValueError, match="Tanh"):
        OnnxTorchGraph(tmp_path / "tanh.onnx")


def test_short_clips_loop_as_speechmos_loops_them() -> None:
    clip = np.arange(50_000, dtype=np.float32)
    looped = clip
    while looped.size < WINDOW_SAMPLES_16K:  # speechmos's own loop
        looped = np.append(looped, looped)
    window = dnsmos_window(torch.from_numpy(clip)[None])
    np.testing.assert_array_equal(window[0].numpy(), looped[:WINDOW_SAMPLES_16K])
    longer = dnsmos_window(torch.zeros(1, WINDOW_SAMPLES_16K + 10), start=99)
    assert longer.shape == (1, WINDOW_SAMPLES_16K)


def test_torch_dnsmos_scores_as_speechmos(dnsmos: DnsmosP835) -> None:
    from speechmos import dnsmos as speechmos_dnsmos

    from model.evaluate import DnsmosScorer

    rng = np.random.default_rng(2)
    t = np.arange(WINDOW_SAMPLES_16K) / 16_000
    audio = (0.1 * np.sin(2 * np.pi * 200 * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )
    assert speechmos_dnsmos.INPUT_LENGTH * 16_000 == pytest.approx(WINDOW_SAMPLES_16K)
    expected = DnsmosScorer()(audio)
    sig, bak, ovrl = dnsmos(torch.from_numpy(audio)[None])
    np.testing.assert_allclose([float(sig), float(bak), float(ovrl)], expected, atol=1e-3)


def test_ovrl_gradient_reaches_the_gains(dnsmos: DnsmosP835) -> None:
    noisy = voiced_noisy(1.0)
    batch = stack_inputs([synthesis_inputs(noisy)])
    batch.pop("features")
    frames = batch["energy_noisy"].shape[1]
    gains = torch.full((1, frames, NUM_BANDS), 0.5, requires_grad=True)
    strengths = torch.full((1, frames, NUM_BANDS), 0.5)
    enhanced = TorchSynthesis()(gains, strengths, **batch)
    _, _, ovrl = dnsmos(dnsmos_window(resample_ideal(enhanced, RATE, 16_000)))
    ovrl.sum().backward()
    assert gains.grad is not None
    assert torch.isfinite(gains.grad).all() and gains.grad.abs().sum() > 0


def test_torch_stoi_scores_as_pystoi() -> None:
    from pystoi import stoi as pystoi_stoi

    from model.research.stoi_loss import Stoi

    rng = np.random.default_rng(4)
    clean = voiced_noisy(2.0, seed=5) * np.repeat(rng.uniform(0.05, 1.0, 20), RATE // 10)
    clean[: RATE // 4] = 0.0  # a silent lead-in: STOI's silent-frame removal acts
    processed = 0.6 * clean + 0.03 * rng.standard_normal(clean.size)
    expected = pystoi_stoi(clean, processed, RATE, extended=False)
    estimate = torch.from_numpy(processed).requires_grad_()
    score = Stoi()(torch.from_numpy(clean), estimate, RATE)
    assert float(score) == pytest.approx(expected, abs=0.005)
    score.backward()
    assert estimate.grad is not None and torch.isfinite(estimate.grad).all()


def test_export_refuses_the_shipped_weights_folder(capsys) -> None:
    from model.research.dnsmos_finetune import parse_args
    from model.runtime import WEIGHTS_DIR

    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", "runs/d", "--export", str(WEIGHTS_DIR)])
    assert "never shipped" in capsys.readouterr().err
    assert parse_args(["--init-from", "x.onnx", "--out", "d", "--export", "runs/e"]).export


def test_stoi_refuses_clips_with_too_little_speech_and_the_batch_skips_them() -> None:
    from model.research.dnsmos_finetune import batch_stoi
    from model.research.stoi_loss import Stoi

    stoi = Stoi()
    short = torch.from_numpy(voiced_noisy(0.2))
    with pytest.raises(ValueError, match="too little speech"):
        stoi(short, short, RATE)
    long = torch.from_numpy(voiced_noisy(1.5))
    enhanced = torch.zeros(2, long.shape[0], dtype=torch.float64)
    enhanced[0, : short.shape[0]] = short
    enhanced[1] = long
    assert float(batch_stoi(stoi, [short, long], enhanced)) == pytest.approx(1.0, abs=1e-6)
    assert float(batch_stoi(stoi, [short], enhanced[:1])) == 0.0


def test_a_spectral_finetune_runs_without_dnsmos(tmp_path, monkeypatch) -> None:
    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    from model.research import dnsmos_finetune

    def refuse() -> None:
        raise AssertionError("DNSMOS loaded with --dnsmos-weight 0")

    monkeypatch.setattr(dnsmos_finetune, "DnsmosP835", refuse)
    args = dnsmos_finetune.parse_args(
        one_step_argv(tmp_path, data_dir) + ["--dnsmos-weight", "0", "--spectral-weight", "4"]
    )
    state = torch.load(dnsmos_finetune.research_finetune(args), weights_only=False)
    assert state["step"] == 1
    assert state["trainer"] == "model.research.dnsmos_finetune"
    assert state["loss"]["quality_predictors"] == []


def test_the_research_loss_names_dnsmos_as_a_quality_predictor(monkeypatch) -> None:
    from model.research import dnsmos_finetune

    monkeypatch.setattr(dnsmos_finetune, "DnsmosP835", lambda: object())
    terms, predictors = dnsmos_finetune.ResearchTerms(1.0, 0.5).loss_terms()
    assert predictors == ["DNSMOS P.835"] and len(terms) == 2
    assert dnsmos_finetune.ResearchTerms(0.0, 0.0).loss_terms() == ([], [])
