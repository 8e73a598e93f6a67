"""The output-domain fine-tune (``model.audio_finetune``): the torch synthesis is the enhancer's
(same output for the same gains), the anchor and spectral loss compare what they should, and the
fine-tune runs, records its training, checkpoints and resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from finetune_inputs import (  # noqa: E402
    RATE,
    one_step_argv,
    one_step_runs,
    synthetic_mixture,
    voiced_noisy,
    weights_differ,
)
from shared_data import find_shared_data  # noqa: E402

from dsp.constants import NUM_BANDS  # noqa: E402
from dsp.enhancer import ReplayGains  # noqa: E402
from dsp.offline import enhance_signal  # noqa: E402
from model.differentiable_synthesis import (  # noqa: E402
    TorchSynthesis,
    resample_ideal,
    stack_inputs,
    synthesis_inputs,
)


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


def test_finetune_checkpoints_and_resumes(tmp_path) -> None:
    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    from model.audio_finetune import finetune, parse_args

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


def test_finetune_options_are_checked(tmp_path) -> None:
    from model.audio_finetune import finetune, parse_args

    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--batch", "0"])
    with pytest.raises(SystemExit, match="no such file"):
        finetune(
            parse_args(
                ["--init-from", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "run")]
            )
        )


def test_the_spectral_loss_is_zero_on_the_reference_and_grows_with_noise() -> None:
    from model.spectral_loss import multi_resolution_loss

    t = torch.arange(RATE // 2) / RATE
    clean = (0.1 * torch.sin(2 * torch.pi * 200 * t))[None]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    assert float(multi_resolution_loss(clean, clean)) == pytest.approx(0.0, abs=1e-9)
    small = float(multi_resolution_loss(clean + 0.001 * noise, clean))
    large = float(multi_resolution_loss(clean + 0.01 * noise, clean))
    assert 0.0 < small < large


def test_the_log_mel_loss_is_zero_on_the_reference_and_counts_noise_down_to_its_floor() -> None:
    from model.spectral_loss import log_mel_loss

    t = torch.arange(RATE // 2) / RATE
    clean = (0.1 * torch.sin(2 * torch.pi * 200 * t))[None]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    assert float(log_mel_loss(clean, clean)) == pytest.approx(0.0, abs=1e-9)
    losses = [float(log_mel_loss(clean + level * noise, clean)) for level in (1e-4, 1e-3, 1e-2)]
    assert 0.0 < losses[0] < losses[1] < losses[2]
    # far under the floor (30 dB under the reference's mean) noise costs almost nothing
    assert losses[0] < 0.01 < losses[2]


def test_the_log_mel_loss_over_active_frames_ignores_the_references_pauses() -> None:
    from model.spectral_loss import log_mel_loss

    t = torch.arange(RATE) / RATE
    clean = (0.1 * torch.sin(2 * torch.pi * 200 * t))[None]
    clean[:, RATE // 2 :] = 0.0  # the second half is a pause
    noise = 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    in_pause, in_speech = noise.clone(), noise.clone()
    in_pause[:, : RATE // 2 + 2048] = 0.0  # a frame's width clear of the speech
    in_speech[:, RATE // 2 - 2048 :] = 0.0
    assert float(log_mel_loss(clean + in_pause, clean)) > 0.1  # every frame counts it
    assert float(log_mel_loss(clean + in_pause, clean, active_db=30.0)) == pytest.approx(
        0.0, abs=1e-6
    )
    over_speech = float(log_mel_loss(clean + in_speech, clean, active_db=30.0))
    assert over_speech > float(log_mel_loss(clean + in_speech, clean))  # a mean over fewer frames
    assert over_speech > 0.1


def test_the_log_mel_loss_lost_weight_counts_only_what_falls_under_the_reference() -> None:
    from model.spectral_loss import log_mel_loss

    t = torch.arange(RATE // 2) / RATE
    clean = (0.1 * torch.sin(2 * torch.pi * 1500 * t))[None]
    # every band under the reference (speech taken away), or over it (as noise left in is)
    for enhanced, factor in ((0.5 * clean, 3.0), (2.0 * clean, 1.0)):
        plain = float(log_mel_loss(enhanced, clean))
        assert plain > 0.01
        assert float(log_mel_loss(enhanced, clean, lost_weight=2.0)) == pytest.approx(
            factor * plain, rel=1e-6
        )


def test_the_log_mel_loss_sees_quiet_speech_only_above_its_floor() -> None:
    from model.spectral_loss import log_mel_loss

    t = torch.arange(RATE // 2) / RATE
    loud = 0.1 * torch.sin(2 * torch.pi * 300 * t)
    quiet = 10 ** (-40 / 20) * 0.1 * torch.sin(2 * torch.pi * 5000 * t)  # 40 dB under it
    reference, without_quiet = (loud + quiet)[None], loud[None]
    at_default = float(log_mel_loss(without_quiet, reference))
    at_60 = float(log_mel_loss(without_quiet, reference, floor_db=-60.0))
    assert at_default < 0.01  # under the default floor (30 dB under the mean) it hardly counts
    assert at_60 > 10 * at_default


def test_the_lost_weights_and_the_mel_floor_reach_the_weights_and_the_record(tmp_path) -> None:
    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    variants = {
        "plain": [],
        "band": ["--band-lost-weight", "3"],
        "mel": ["--mel-lost-weight", "3"],
        "floor": ["--mel-floor-db", "-60"],
    }
    runs = one_step_runs(tmp_path, data_dir, variants)
    plain, band, mel = (runs[name]["loss"]["terms"] for name in ("plain", "band", "mel"))
    floor = runs["floor"]["loss"]["terms"]
    assert floor[:-1] == plain[:-1] and "each clip's floor 60 dB under" in floor[-1]
    assert "each clip's floor 30 dB under" in plain[-1]
    assert band[0].endswith("a gain below its target costs 4×)") and band[1:] == plain[1:]
    assert mel[-1] == plain[-1] + ", a band under the reference costing 4×"
    assert mel[:-1] == plain[:-1]
    for name in ("band", "mel", "floor"):  # the same step and draw, weighted: other weights
        assert weights_differ(runs["plain"], runs[name])


def test_the_log_mel_term_reaches_the_weights_and_the_record(tmp_path) -> None:
    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    runs = one_step_runs(tmp_path, data_dir, {w: ["--mel-weight", w] for w in ("0", "4")})
    assert "log mel" in runs["4"]["loss"]["terms"][-1]
    assert runs["4"]["loss"]["terms"][:-1] == runs["0"]["loss"]["terms"]
    # the same step of the same draw, with the term: other weights
    assert weights_differ(runs["0"], runs["4"])


def test_the_log_mel_term_against_the_clean_speech_or_its_cleaned_version(tmp_path) -> None:
    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    mel = ["--mel-weight", "4"]
    variants = {
        "spectral": mel + ["--mel-reference", "spectral"],
        "clean": mel + ["--mel-reference", "clean", "--mel-active-db", "30"],
        "cleaned": mel + ["--mel-reference", "cleaned"],
    }
    runs = one_step_runs(tmp_path, data_dir, variants)
    term = runs["clean"]["loss"]["terms"][-1]
    assert "log mel" in term and term.endswith(
        "the clean speech, in the frames where it is within 30 dB of its loudest"
    )
    assert runs["cleaned"]["loss"]["terms"][-1].endswith(
        "DeepFilterNet3's output on the clean speech alone"
    )
    for name in ("clean", "cleaned"):  # the same step of the same draw, another reference
        assert weights_differ(runs["spectral"], runs[name])


def test_an_unknown_log_mel_reference_is_refused() -> None:
    from model.audio_finetune import BatchTensors

    with pytest.raises(ValueError, match="unknown log-mel reference 'noisy'"):
        BatchTensors([synthetic_mixture(0.3, 0)], mel_reference="noisy")


def test_the_anchor_covers_each_clip_and_not_the_padding_after_it() -> None:
    from model.audio_finetune import BatchTensors

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


def test_a_draw_on_silent_noise_is_drawn_again(monkeypatch, tmp_path) -> None:
    from model import audio_finetune
    from model.devset import SilentSignalError, mix_at_snr

    with pytest.raises(SilentSignalError):
        mix_at_snr(np.ones(100), np.zeros(100), 0.0, -26.0)
    seeds: list[int] = []

    def build(
        data_dir: Path, per_snr: int, snrs_db: list[float], seed: int, split: str, **_: object
    ) -> list[str]:
        seeds.append(seed)
        if len(seeds) == 1 or always_silent:
            raise SilentSignalError("speech and noise must both carry energy")
        return ["a mixture"] * len(snrs_db)

    always_silent = False

    monkeypatch.setattr(audio_finetune, "build_dev_mixtures", build)
    batch = audio_finetune.draw_batch(tmp_path, np.random.default_rng(0), 2)
    assert batch == ["a mixture"] * 2 and len(seeds) == 2 and seeds[0] != seeds[1]
    always_silent = True
    with pytest.raises(RuntimeError, match="draws in a row"):
        audio_finetune.draw_batch(tmp_path, np.random.default_rng(0), 2)


def test_the_mixtures_snrs_are_drawn_from_the_range_asked_for(monkeypatch, tmp_path) -> None:
    from model import audio_finetune

    drawn: list[float] = []

    def build(
        data_dir: Path, per_snr: int, snrs_db: list[float], seed: int, split: str, **_: object
    ) -> list[str]:
        drawn.extend(snrs_db)
        return ["a mixture"] * len(snrs_db)

    monkeypatch.setattr(audio_finetune, "build_dev_mixtures", build)
    rng = np.random.default_rng(0)
    audio_finetune.draw_batch(tmp_path, rng, 200, (-5.0, 0.0))
    assert min(drawn) >= -5.0 and max(drawn) <= 0.0 and max(drawn) - min(drawn) > 4.0
    drawn.clear()
    audio_finetune.draw_batch(tmp_path, rng, 200)  # the default: SNR_RANGE_DB
    assert max(drawn) > 15.0 and min(drawn) >= audio_finetune.SNR_RANGE_DB[0]


def test_the_teacher_blends_into_the_targets_and_can_be_the_spectral_reference(
    monkeypatch,
) -> None:
    from model import audio_finetune

    mixture = synthetic_mixture(0.4, 3)
    # a teacher that hands back its input: its band gains are all 1
    monkeypatch.setattr(audio_finetune, "deepfilternet_enhance", lambda noisy: noisy.copy())
    oracle = audio_finetune.BatchTensors([mixture])
    blended = audio_finetune.BatchTensors([mixture], teacher_blend=0.5)
    taught = audio_finetune.BatchTensors([mixture], reference="teacher")
    frames = oracle.frames[0]
    below = oracle.target_gains[0, :frames] < 0.99
    assert below.any()
    assert (blended.target_gains[0, :frames][below] > oracle.target_gains[0, :frames][below]).all()
    torch.testing.assert_close(taught.target_gains, oracle.target_gains)
    torch.testing.assert_close(oracle.references[0], torch.from_numpy(mixture.clean))
    torch.testing.assert_close(taught.references[0], torch.from_numpy(mixture.noisy))


def test_the_cleaned_reference_is_the_teacher_run_on_the_clean_speech(monkeypatch) -> None:
    from model import audio_finetune

    mixture = synthetic_mixture(0.4, 3)
    seen: list[np.ndarray] = []

    def halve(signal: np.ndarray) -> np.ndarray:  # a teacher whose output tells what it heard
        seen.append(signal)
        return 0.5 * signal

    monkeypatch.setattr(audio_finetune, "deepfilternet_enhance", halve)
    cleaned = audio_finetune.BatchTensors([mixture], 0.5, "cleaned")
    assert len(seen) == 2  # the mixture for the band targets, the clean speech for the reference
    np.testing.assert_allclose(cleaned.references[0].numpy(), 0.5 * mixture.clean)
    taught = audio_finetune.BatchTensors([mixture], 0.5, "teacher")
    torch.testing.assert_close(taught.target_gains, cleaned.target_gains)
    np.testing.assert_allclose(taught.references[0].numpy(), 0.5 * mixture.noisy)
    with pytest.raises(ValueError, match="unknown reference"):
        audio_finetune.BatchTensors([mixture], 0.5, "noisy")


def test_the_teacher_can_be_kept_below_a_frequency(monkeypatch) -> None:
    from dsp.bands import BIN_HZ, band_centre_bins
    from model import audio_finetune

    mixture = synthetic_mixture(0.4, 3)
    monkeypatch.setattr(audio_finetune, "deepfilternet_enhance", lambda noisy: noisy.copy())
    oracle = audio_finetune.BatchTensors([mixture])
    whole = audio_finetune.BatchTensors([mixture], 0.5, "teacher")
    low = audio_finetune.BatchTensors([mixture], 0.5, "teacher", teacher_below_hz=1000.0)
    frames = oracle.frames[0]
    under = torch.from_numpy(band_centre_bins() * BIN_HZ < 1000.0)
    assert 0 < int(under.sum()) < NUM_BANDS
    # the teacher's targets below the crossover, the oracle's alone above it
    torch.testing.assert_close(
        low.target_gains[0, :frames, under], whole.target_gains[0, :frames, under]
    )
    torch.testing.assert_close(
        low.target_gains[0, :frames, ~under], oracle.target_gains[0, :frames, ~under]
    )
    assert not torch.equal(
        whole.target_gains[0, :frames, ~under], oracle.target_gains[0, :frames, ~under]
    )
    # the reference: the teacher's output (here the noisy input) below, the clean speech above
    spectrum = np.fft.rfft(low.references[0].numpy())
    freqs = np.fft.rfftfreq(mixture.noisy.shape[0], 1.0 / RATE)
    noisy, clean = np.fft.rfft(mixture.noisy), np.fft.rfft(mixture.clean)
    np.testing.assert_allclose(spectrum[freqs < 850], noisy[freqs < 850], atol=1e-6)
    np.testing.assert_allclose(spectrum[freqs > 1150], clean[freqs > 1150], atol=1e-6)


def test_the_crossover_of_a_signal_with_itself_is_that_signal() -> None:
    from model.audio_finetune import crossover

    signal = np.random.default_rng(0).standard_normal(RATE // 4)
    np.testing.assert_allclose(crossover(signal, signal, 1000.0), signal, atol=1e-12)


def test_a_teacher_blend_outside_zero_to_one_and_negative_weights_are_refused(tmp_path) -> None:
    from model.audio_finetune import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--teacher-blend", "1.5"])
    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--spectral-weight", "-1"])
    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--teacher-below-hz", "-5"])
    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--snr-db", "10", "-5"])
    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--mel-active-db", "-1"])
    with pytest.raises(SystemExit):
        parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--mel-floor-db", "0"])
    for speeds in (["1.2", "0.9"], ["0.3", "1.0"]):
        with pytest.raises(SystemExit):
            parse_args(["--init-from", "x.onnx", "--out", str(tmp_path), "--speech-speed", *speeds])
    for shifts in (["1.2", "0.9"], ["0.6", "1.0"], ["1.0", "1.5"]):
        with pytest.raises(SystemExit):
            parse_args(
                ["--init-from", "x.onnx", "--out", str(tmp_path), "--formant-shift", *shifts]
            )


def test_the_run_records_its_training_and_the_export_and_card_keep_it(tmp_path) -> None:
    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    from model import audio_finetune
    from model.export import main as export_main
    from model.model_card import _training_section
    from model.runtime import sha256_of
    from model.splits import split_named
    from model.training_record import find_record, read_record

    argv = one_step_argv(tmp_path / "run", data_dir)
    first = torch.load(audio_finetune.finetune(audio_finetune.parse_args(argv)), weights_only=False)
    assert first["trainer"] == "model.audio_finetune"
    assert first["loss"]["quality_predictors"] == []
    *_, spectral_term, mel_term = first["loss"]["terms"]
    assert "DeepFilterNet3's output" in spectral_term  # the default reference
    assert mel_term.startswith("1.5 × the mean absolute difference of log mel")  # the default
    assert mel_term.endswith("DeepFilterNet3's output on the clean speech alone")
    files, dev = first["data"]["files"], split_named(data_dir, "dev")
    assert files["speech"] and files["noise"] and files["rooms"] == []
    assert not set(files["speech"]) & {f.relative_path for f in dev.speech}
    assert not set(files["noise"]) & {f.relative_path for f in dev.noise}
    shipped = Path(argv[1])
    assert first["init_from"]["sha256"] == sha256_of(shipped)
    assert first["init_from"]["record"] == find_record(shipped) is not None
    assert first["hardware"]["threads"] == 1 and first["args"]["data_dir"] == "<data>"
    # resumed one step further at a lower lr: the change is on record, the threads' is not
    argv[5] = str(first["elapsed"] / 60.0 + 0.001)
    argv[-1] = "2"
    path = audio_finetune.finetune(audio_finetune.parse_args(argv + ["--lr", "1e-5"]))
    resumed = torch.load(path, weights_only=False)
    assert resumed["step"] == 2 and len(resumed["resumes"]) == 1
    assert set(resumed["resumes"][0]["changed"]) == {"minutes", "lr"}
    assert resumed["resumes"][0]["changed"]["lr"] == {"before": 5e-5, "after": 1e-5}

    weights = tmp_path / "weights"
    export_main(["--checkpoint", str(path), "--out", str(weights)])
    record = read_record(weights)
    assert record["trainer"] == "model.audio_finetune" and record["steps"] == 2
    assert record["loss"] == first["loss"]  # kept as trained, not re-derived as model.train's
    assert record["stages"] == [] and record["init_from"]["record"] is not None
    section = _training_section(record)
    assert "`python -m model.audio_finetune --out runs/default --init-from " in section
    assert "--lr 5e-05" in section and "(step 1) with --minutes" in section
    assert "--lr 1e-05" in section.split("Resumed")[1]
    assert "No quality-predictor network" in section
    # the run it started from follows, as that run's own trainer describes it
    parent = section.split("### The run the fine-tune started from\n", 1)[1]
    parent_trainer = record["init_from"]["record"].get("trainer", "model.train")
    assert parent.startswith(f"- Command{'s' * (parent_trainer != 'model.train')}: `python -m ")
    assert parent.split("`")[1].startswith(f"python -m {parent_trainer} ")


def test_an_unknown_speech_corpus_is_one_error_line(tmp_path, capsys) -> None:
    from model.audio_finetune import main

    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    argv = ["--init-from", "x.onnx", "--out", str(tmp_path), "--data-dir", str(data_dir)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--speech-sources", "vctk_p239", "no_such_corpus"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: no training speech from no_such_corpus;")
    assert "vctk_p239" in error and error.count("\n") == 1


def test_the_run_records_only_the_speech_corpora_it_draws_from() -> None:
    from model.devset import speech_from_corpora
    from model.splits import AudioFile

    def row(path: str) -> AudioFile:
        return AudioFile(Path("/data") / path, path, "clean", "s", 48_000, 1.0, "CC0", "")

    speech = [row("clean/ravdess/a.flac"), row("clean/vctk_p239/b.flac"), row("clean/c.flac")]
    assert speech_from_corpora(speech, None, "training") == tuple(speech)
    assert speech_from_corpora(speech, ["vctk_p239"], "training") == (speech[1],)
