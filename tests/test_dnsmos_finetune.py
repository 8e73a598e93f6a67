"""DNSMOS fine-tuning: the torch synthesis is the enhancer's (same output for the same gains),
the torch DNSMOS is speechmos's (same scores for the same audio), gradients reach the gains, and
the fine-tune runs, checkpoints and resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("speechmos")

from shared_data import find_shared_data  # noqa: E402

from dsp.constants import NUM_BANDS  # noqa: E402
from dsp.enhancer import ReplayGains  # noqa: E402
from dsp.offline import enhance_signal  # noqa: E402
from model.devset import DevMixture  # noqa: E402
from model.research.differentiable_synthesis import (  # noqa: E402
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

RATE = 48_000


def voiced_noisy(seconds: float, seed: int = 0) -> np.ndarray:
    """A pitched, amplitude-modulated tone in white noise (exercises pitch and comb)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = 0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return voiced + 0.02 * rng.standard_normal(t.size)


def synthetic_mixture(seconds: float, seed: int) -> DevMixture:
    """A voiced tone in white noise as a 48 kHz dev mixture (full-band source)."""
    noisy = voiced_noisy(seconds, seed)
    t = np.arange(noisy.size) / RATE
    clean = 0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return DevMixture(
        name=f"synthetic-{seed}",
        clean=clean,
        noisy=noisy,
        snr_db=5.0,
        speech_path=Path("speech.wav"),
        noise_path=Path("noise.wav"),
        source_rate=RATE,
    )


def one_step_argv(out: Path, data_dir: Path) -> list[str]:
    """A fine-tune of the shipped fp32 weights for one step of one mixture, on one thread."""
    weights = Path(__file__).resolve().parents[1] / "model" / "weights" / "percepnet-fp32.onnx"
    options = {"--init-from": weights, "--out": out, "--minutes": 0.001, "--batch": 1}
    options |= {"--data-dir": data_dir, "--threads": 1}
    return [str(item) for pair in options.items() for item in pair]


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


@pytest.mark.parametrize("postfilter", [True, False])
def test_torch_synthesis_matches_the_enhancer(postfilter: bool) -> None:
    noisy = voiced_noisy(1.0)
    inputs = synthesis_inputs(noisy)
    frames = inputs.features.shape[0]
    rng = np.random.default_rng(1)
    gains = rng.uniform(0, 1, (frames, NUM_BANDS)).astype(np.float32)
    strengths = rng.uniform(0, 1, (frames, NUM_BANDS)).astype(np.float32)
    expected = enhance_signal(noisy, ReplayGains(gains, strengths), postfilter=postfilter)
    batch = stack_inputs([inputs])
    batch.pop("features")
    out = TorchSynthesis()(
        torch.from_numpy(gains)[None],
        torch.from_numpy(strengths)[None],
        **batch,
        postfilter=postfilter,
    )
    got = out[0, : noisy.size].numpy()
    assert np.max(np.abs(got - expected)) < 1e-5 * np.max(np.abs(expected))


def test_synthesis_features_are_the_oracle_features() -> None:
    from dsp.offline import compute_oracle_targets

    noisy = voiced_noisy(0.5)
    inputs = synthesis_inputs(noisy)
    np.testing.assert_array_equal(inputs.features, compute_oracle_targets(noisy, noisy).features)


def test_stacked_batches_pad_with_unit_energies() -> None:
    short, long = synthesis_inputs(voiced_noisy(0.3)), synthesis_inputs(voiced_noisy(0.6))
    batch = stack_inputs([short, long])
    frames = short.features.shape[0]
    assert batch["features"].shape[:2] == (2, long.features.shape[0])
    assert torch.all(batch["energy_noisy"][0, frames:] == 1.0)
    assert torch.all(batch["noisy_spectrum"][0, frames:] == 0)


def test_resampling_keeps_a_tone() -> None:
    t48 = torch.arange(RATE, dtype=torch.float64) / RATE
    t16 = torch.arange(16_000, dtype=torch.float64) / 16_000
    got = resample_ideal(torch.sin(2 * torch.pi * 1000 * t48)[None], RATE, 16_000)[0]
    assert torch.max(torch.abs(got - torch.sin(2 * torch.pi * 1000 * t16))) < 1e-9


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


def test_finetune_checkpoints_and_resumes(tmp_path) -> None:
    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    from model.research.dnsmos_finetune import finetune, parse_args

    argv = one_step_argv(tmp_path, data_dir)
    path = finetune(parse_args(argv))
    first = torch.load(path, weights_only=False)
    assert first["step"] == 1 and first["config"]["gru_size"] > 0
    # resumed with a budget just past the time spent: one more step, not a fresh start
    argv[5] = str(first["elapsed"] / 60.0 + 0.001)
    resumed = torch.load(finetune(parse_args(argv)), weights_only=False)
    assert resumed["step"] == 2
    assert len(resumed["history"]) == 0 or resumed["history"][0]["step"] >= 1
    from model.export import load_checkpoint

    assert load_checkpoint(path).config.gru_size == first["config"]["gru_size"]


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


def test_finetune_options_are_checked(tmp_path) -> None:
    from model.research.dnsmos_finetune import finetune, parse_args

    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--batch", "0"])
    with pytest.raises(SystemExit, match="no such file"):
        finetune(
            parse_args(
                ["--init-from", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "run")]
            )
        )


def test_the_spectral_loss_is_zero_on_the_reference_and_grows_with_noise() -> None:
    from model.research.spectral_loss import multi_resolution_loss

    t = torch.arange(RATE // 2) / RATE
    clean = (0.1 * torch.sin(2 * torch.pi * 200 * t))[None]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    assert float(multi_resolution_loss(clean, clean)) == pytest.approx(0.0, abs=1e-9)
    small = float(multi_resolution_loss(clean + 0.001 * noise, clean))
    large = float(multi_resolution_loss(clean + 0.01 * noise, clean))
    assert 0.0 < small < large


def test_the_anchor_covers_each_clip_and_not_the_padding_after_it() -> None:
    from model.research.dnsmos_finetune import BatchTensors

    mixtures = [synthetic_mixture(seconds, seed) for seed, seconds in enumerate((0.3, 0.6))]
    batch = BatchTensors(mixtures)
    frames = batch.features.shape[1]
    gains = torch.rand(2, frames, NUM_BANDS, generator=torch.Generator().manual_seed(0))
    strengths = torch.rand(2, frames, NUM_BANDS, generator=torch.Generator().manual_seed(1))
    alone = [
        BatchTensors([m]).anchor_loss(
            gains[i : i + 1, : batch.frames[i]], strengths[i : i + 1, : batch.frames[i]]
        )
        for i, m in enumerate(mixtures)
    ]
    assert batch.frames[0] < frames  # the shorter clip is padded
    assert float(batch.anchor_loss(gains, strengths)) == pytest.approx(
        float(torch.stack(alone).mean()), rel=1e-6
    )
    gains[0, batch.frames[0] :] = 0.0  # whatever the gains are over the padding
    assert float(batch.anchor_loss(gains, strengths)) == pytest.approx(
        float(torch.stack(alone).mean()), rel=1e-6
    )


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
    state = torch.load(dnsmos_finetune.finetune(args), weights_only=False)
    assert state["step"] == 1


def test_a_draw_on_silent_noise_is_drawn_again(monkeypatch, tmp_path) -> None:
    from model.devset import SilentSignalError, mix_at_snr
    from model.research import dnsmos_finetune

    with pytest.raises(SilentSignalError):
        mix_at_snr(np.ones(100), np.zeros(100), 0.0, -26.0)
    seeds: list[int] = []

    def build(
        data_dir: Path, per_snr: int, snrs_db: list[float], seed: int, split: str
    ) -> list[str]:
        seeds.append(seed)
        if len(seeds) == 1 or always_silent:
            raise SilentSignalError("speech and noise must both carry energy")
        return ["a mixture"] * len(snrs_db)

    always_silent = False

    monkeypatch.setattr(dnsmos_finetune, "build_dev_mixtures", build)
    batch = dnsmos_finetune.draw_batch(tmp_path, np.random.default_rng(0), 2)
    assert batch == ["a mixture"] * 2 and len(seeds) == 2 and seeds[0] != seeds[1]
    always_silent = True
    with pytest.raises(RuntimeError, match="draws in a row"):
        dnsmos_finetune.draw_batch(tmp_path, np.random.default_rng(0), 2)


def test_the_teacher_blends_into_the_targets_and_can_be_the_spectral_reference(
    monkeypatch,
) -> None:
    from model.research import dnsmos_finetune

    mixture = synthetic_mixture(0.4, 3)
    # a teacher that hands back its input: its band gains are all 1
    monkeypatch.setattr(dnsmos_finetune, "deepfilternet_enhance", lambda noisy: noisy.copy())
    oracle = dnsmos_finetune.BatchTensors([mixture])
    blended = dnsmos_finetune.BatchTensors([mixture], teacher_blend=0.5)
    taught = dnsmos_finetune.BatchTensors([mixture], teacher_audio=True)
    frames = oracle.frames[0]
    below = oracle.target_gains[0, :frames] < 0.99
    assert below.any()
    assert (blended.target_gains[0, :frames][below] > oracle.target_gains[0, :frames][below]).all()
    torch.testing.assert_close(taught.target_gains, oracle.target_gains)
    torch.testing.assert_close(oracle.references[0], torch.from_numpy(mixture.clean))
    torch.testing.assert_close(taught.references[0], torch.from_numpy(mixture.noisy))


def test_a_teacher_blend_outside_zero_to_one_and_negative_weights_are_refused(tmp_path) -> None:
    from model.research.dnsmos_finetune import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--teacher-blend", "1.5"])
    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--spectral-weight", "-1"])
