"""Training: the loss (zero at the target, masked bands ignored, the pause and onset weights
applied exactly where their docstrings say and nowhere else) and the three-stage schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import torch
else:
    torch = pytest.importorskip("torch")

from dsp.constants import NUM_BANDS, NUM_FEATURES  # noqa: E402
from model.network import NetworkConfig, PercepNet  # noqa: E402
from model.train import (  # noqa: E402
    FULL_SEQUENCE_LR_FACTOR,
    GAMMA,
    PAUSE_STAGE_LR_FACTOR,
    QUARTIC_WEIGHT,
    batches,
    batches_per_epoch,
    changed_options,
    onset_frames,
    parse_args,
    percepnet_loss,
    portable_path,
    predict,
    training_stage,
)

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 2


def targets(level: float) -> torch.Tensor:
    """[1, FRAMES, 34] target gains, every band at ``level``."""
    return torch.full((1, FRAMES, NUM_BANDS), level)


def loss(gains: torch.Tensor, target: torch.Tensor, **weights: float) -> float:
    strengths = torch.zeros_like(gains)
    mask = torch.ones(1, NUM_BANDS)
    return float(percepnet_loss(gains, strengths, target, strengths, mask, **weights))


def one_band_error(target: torch.Tensor, predicted: float, band: int = 5) -> torch.Tensor:
    gains = target.clone()
    gains[0, 0, band] = predicted
    return gains


def per_band_term(target: float, predicted: float, weight: float = 0.0) -> float:
    """The loss of one band with a weight of 1 + ``weight`` on its error, averaged as the
    loss averages (over every band of every frame)."""
    d2 = (1 + weight) * (predicted**GAMMA - target**GAMMA) ** 2
    return (d2 + QUARTIC_WEIGHT * d2**2) / (FRAMES * NUM_BANDS)


def costs_as_unweighted(gains: torch.Tensor, target: torch.Tensor, **weights: float) -> bool:
    """Whether ``weights`` leave this error's loss as it is without them."""
    return loss(gains, target, **weights) == pytest.approx(loss(gains, target))


def test_the_loss_is_zero_at_the_target() -> None:
    target = torch.rand(1, FRAMES, NUM_BANDS)
    assert loss(target.clone(), target) == pytest.approx(0.0, abs=1e-9)


def test_masked_bands_cost_nothing() -> None:
    target = targets(0.5)
    gains = one_band_error(target, 1.0, band=NUM_BANDS - 1)
    mask = torch.ones(1, NUM_BANDS)
    mask[0, NUM_BANDS - 1] = 0
    strengths = torch.zeros_like(gains)
    masked = float(percepnet_loss(gains, strengths, target, strengths, mask))
    assert masked == pytest.approx(0.0, abs=1e-9)
    assert loss(gains, target) > 0


def test_the_unweighted_loss_is_the_compressed_error_plus_its_fourth_power() -> None:
    target = targets(0.25)
    assert loss(one_band_error(target, 0.81), target) == pytest.approx(per_band_term(0.25, 0.81))


def test_pause_weight_only_counts_frames_without_speech() -> None:
    pause = targets(0.02)
    gains = one_band_error(pause, 0.2)
    assert loss(gains, pause, pause_weight=4.0) == pytest.approx(
        per_band_term(0.02, 0.2, 4.0), rel=1e-5
    )
    speech = targets(0.02)
    speech[0, 0, 20] = 0.8  # frame 0 holds speech: its noise bands are not a pause
    gains = one_band_error(speech, 0.2)
    assert costs_as_unweighted(gains, speech, pause_weight=4.0)


def test_onset_frames_open_speech_after_a_pause_and_at_the_start() -> None:
    pause = torch.zeros(1, 130, 1, dtype=torch.bool)
    pause[0, :40] = True  # 400 ms of pause, then speech
    pause[0, 80:100] = True  # a 200-ms pause
    pause[0, 115:125] = True  # a 100-ms gap between words
    onsets = onset_frames(pause)[0, :, 0].nonzero().flatten().tolist()
    # speech frames with at least 15 of the 30 frames before them in pause: 160 ms after the
    # long pause, 150 ms after the 200-ms one, and the gap's first frame only (5 + 10 of 30)
    assert onsets == [*range(40, 56), *range(100, 115), 125]
    opening = torch.zeros(1, 40, 1, dtype=torch.bool)  # speech from the first frame
    assert onset_frames(opening)[0, :, 0].nonzero().flatten().tolist() == list(range(16))


def test_onset_weight_only_counts_lost_speech_where_speech_opens() -> None:
    frames = 40
    target = torch.full((1, frames, NUM_BANDS), 0.02)
    target[0, 20:, :] = 0.8  # speech from frame 20, after 200 ms of pause
    strengths, mask = torch.zeros_like(target), torch.ones(1, NUM_BANDS)

    def cost(gains: torch.Tensor, **weights: float) -> float:
        return float(percepnet_loss(gains, strengths, target, strengths, mask, **weights))

    def error_at(frame: int, predicted: float) -> torch.Tensor:
        gains = target.clone()
        gains[0, frame, 5] = predicted
        return gains

    d2 = (0.3**GAMMA - 0.8**GAMMA) ** 2
    term = (5 * d2 + QUARTIC_WEIGHT * (5 * d2) ** 2) / (frames * NUM_BANDS)
    assert cost(error_at(21, 0.3), onset_weight=4.0) == pytest.approx(term, rel=1e-5)
    # speech kept past the onset, noise let through at it, and lost speech long after it
    for gains in (error_at(21, 0.95), error_at(5, 0.3), error_at(39, 0.3)):
        assert cost(gains, onset_weight=4.0) == pytest.approx(cost(gains))
    assert cost(error_at(39, 0.3)) == pytest.approx(cost(error_at(21, 0.3)))


def test_lost_weight_counts_every_gain_under_its_target_and_nothing_over_it() -> None:
    speech = targets(0.8)
    assert loss(one_band_error(speech, 0.3), speech, lost_weight=2.0) == pytest.approx(
        per_band_term(0.8, 0.3, 2.0), rel=1e-5
    )
    pause = targets(0.02)  # lost speech in a pause or anywhere else costs the same weight
    assert loss(one_band_error(pause, 0.005), pause, lost_weight=2.0) == pytest.approx(
        per_band_term(0.02, 0.005, 2.0), rel=1e-5
    )
    for target, predicted in ((0.8, 0.95), (0.02, 0.2)):  # residual noise: as unweighted
        level = targets(target)
        assert costs_as_unweighted(one_band_error(level, predicted), level, lost_weight=2.0)


def test_a_negative_onset_weight_is_refused() -> None:
    with pytest.raises(SystemExit, match="^error: --onset-weight must be 0 or more"):
        parse_args(["--onset-weight", "-1"])


def test_training_starts_on_crops_and_ends_on_whole_sequences() -> None:
    args = parse_args(
        [
            "--budget-minutes",
            "10",
            "--full-sequence-minutes",
            "5",
            "--lr",
            "1e-3",
            "--batch",
            "96",
            "--frames",
            "100",
            "--full-sequence-batch",
            "32",
        ]
    )
    first = training_stage(0.0, args, sequence_frames=300)
    assert (first.name, first.batch, first.frames, first.ends_at_s) == ("crops", 96, 100, 600.0)
    assert first.lr == pytest.approx(1e-3)
    assert training_stage(599.0, args, 300).lr == pytest.approx(0.05e-3, rel=0.01)
    second = training_stage(600.0, args, sequence_frames=300)
    assert (second.name, second.batch, second.frames) == ("full-sequence", 32, 300)
    assert second.ends_at_s == 900.0
    assert second.lr == pytest.approx(1e-3 * FULL_SEQUENCE_LR_FACTOR)
    assert training_stage(899.0, args, 300).lr < second.lr / 10


def test_the_pause_stage_follows_on_whole_sequences_with_its_own_weight_and_decay() -> None:
    args = parse_args(
        [
            "--budget-minutes",
            "10",
            "--full-sequence-minutes",
            "5",
            "--pause-stage-minutes",
            "2",
            "--lr",
            "1e-3",
            "--pause-stage-weight",
            "20",
        ]
    )
    assert training_stage(0.0, args, 300).pause_weight == 0.0
    second = training_stage(899.0, args, 300)
    assert (second.name, second.ends_at_s, second.pause_weight) == ("full-sequence", 900.0, 0.0)
    assert second.lr == pytest.approx(1e-3 * FULL_SEQUENCE_LR_FACTOR * 0.05, rel=0.01)
    third = training_stage(900.0, args, sequence_frames=300)
    assert (third.name, third.frames, third.batch) == ("pause", 300, args.full_sequence_batch)
    assert (third.ends_at_s, third.pause_weight) == (1020.0, 20.0)
    assert third.lr == pytest.approx(1e-3 * PAUSE_STAGE_LR_FACTOR)
    assert training_stage(1019.0, args, 300).lr < third.lr / 10


def test_a_pause_stage_may_follow_the_crops_directly() -> None:
    args = parse_args(["--budget-minutes", "10", "--pause-stage-minutes", "2"])
    assert training_stage(599.0, args, 300).name == "crops"
    assert training_stage(600.0, args, 300).name == "pause"


def test_without_a_second_stage_training_stays_on_crops() -> None:
    args = parse_args(["--budget-minutes", "10"])
    stage = training_stage(700.0, args, sequence_frames=300)
    assert stage.name == "crops"
    assert stage.frames == args.frames


def test_the_training_record_sums_epochs_and_minutes_per_stage() -> None:
    from model.model_card import _stage_text
    from model.training_record import stage_summary

    history: list[dict[str, float | str]] = [
        {"epoch": 1.0, "minutes": 2.0},  # runs from before stages were recorded
        {"epoch": 2.0, "stage": "crops", "minutes": 4.5},
        {"epoch": 3.0, "stage": "full-sequence", "minutes": 8.0},
        {"epoch": 4.0, "stage": "full-sequence", "minutes": 11.0},
    ]
    stages = stage_summary(history)
    assert _stage_text(stages) == "crops: 2 epochs, 4 min; full-sequence: 2 epochs, 6 min"


def test_a_resume_records_the_training_options_it_changes() -> None:
    defaults = vars(parse_args([]))
    before = vars(parse_args(["--budget-minutes", "85", "--out", "runs/a"]))
    del before["full_sequence_minutes"]  # a checkpoint older than the option
    after = vars(
        parse_args(
            [
                "--budget-minutes",
                "73",
                "--full-sequence-minutes",
                "35",
                "--out",
                "runs/b",
                "--threads",
                "1",
            ]
        )
    )
    assert changed_options(before, after, defaults) == {
        "budget_minutes": {"before": 85.0, "after": 73.0},
        "full_sequence_minutes": {"before": 0.0, "after": 35.0},
    }
    assert changed_options(after, after, defaults) == {}


def test_the_model_card_rebuilds_the_first_command_and_each_resume() -> None:
    from model.model_card import _training_commands

    final = vars(
        parse_args(
            [
                "--budget-minutes",
                "73",
                "--full-sequence-minutes",
                "95",
                "--train-shards",
                "160",
                "--bf16",
            ]
        )
    )
    resumes = [
        {
            "epoch": 36,
            "minutes": 72.6,
            "changed": {
                "budget_minutes": {"before": 85.0, "after": 73.0},
                "full_sequence_minutes": {"before": 0.0, "after": 35.0},
            },
        },
        {
            "epoch": 49,
            "minutes": 108.0,
            "changed": {
                "train_shards": {"before": 80, "after": 160},
                "full_sequence_minutes": {"before": 35.0, "after": 95.0},
            },
        },
    ]
    first, steps = _training_commands(final, resumes)
    assert first == "python -m model.train --out runs/default --budget-minutes 85.0 --bf16"
    assert steps == (
        "at 73 min (epoch 36) with --budget-minutes 73.0 --full-sequence-minutes 35.0; "
        "at 108 min (epoch 49) with --train-shards 160 --full-sequence-minutes 95.0"
        " --export model/weights"
    )
    older = final | {"skip_to_heads": False, "pause_weight": 0.0, "overshoot_weight": 1.0}
    command = _training_commands(older, [])[0]
    assert command.endswith(" --overshoot-weight 1.0 --export model/weights")
    alone, none = _training_commands(final, [])
    assert alone.endswith("--full-sequence-minutes 95.0 --bf16 --export model/weights")
    assert "--train-shards 160" in alone and none == ""


def test_the_model_card_refuses_an_evaluation_drawn_from_the_training_split(tmp_path) -> None:
    import json

    from model.model_card import _evaluation_config, main

    assert _evaluation_config(tmp_path) == {}  # no evaluation yet: the card says so
    (tmp_path / "results.json").write_text(json.dumps({"config": {"per_snr": 8, "seed": 0}}))
    assert _evaluation_config(tmp_path) == {"per_snr": 8, "seed": 0}  # before --split: dev
    (tmp_path / "results.json").write_text(json.dumps({"config": {"split": "train"}}))
    with pytest.raises(ValueError, match="'train' split; the card needs a dev evaluation"):
        _evaluation_config(tmp_path)
    with pytest.raises(SystemExit, match="^error: .*'train' split"):  # before reading the run
        main(["--eval", str(tmp_path), "--out", str(tmp_path)])
    narrowed = {"config": {"split": "dev", "seed": 4, "speech_sources": ["ljspeech_subset"]}}
    (tmp_path / "results.json").write_text(json.dumps(narrowed))
    with pytest.raises(ValueError, match="from ljspeech_subset only; the card needs"):
        _evaluation_config(tmp_path)


def test_an_epoch_crops_every_sequence_once_within_its_bounds() -> None:
    from model.feature_cache import Shard

    sequences, frames = 10, 12
    features = np.arange(sequences * frames * 70, dtype=np.float32).reshape(sequences, frames, 70)
    data = Shard(
        features=features,
        gains=np.zeros((sequences, frames, 34), np.float32),
        strengths=np.zeros((sequences, frames, 34), np.float32),
        band_mask=np.arange(sequences, dtype=np.float32)[:, None].repeat(34, axis=1),
    )
    assert batches_per_epoch(data, 4) == 2  # the partial third batch is dropped
    epoch = list(batches(data, 4, 5, np.random.default_rng(0)))
    assert len(epoch) == 2
    seen = []
    for x, g, r, mask in epoch:
        assert x.shape == (4, 5, 70) and g.shape == r.shape == (4, 5, 34)
        for row, sequence in zip(x.numpy(), mask.numpy()[:, 0].astype(int), strict=True):
            offset = int(row[0, 0] - features[sequence, 0, 0]) // 70
            assert 0 <= offset <= frames - 5
            np.testing.assert_array_equal(row, features[sequence, offset : offset + 5])
            seen.append(sequence)
    assert len(set(seen)) == 8
    again = list(batches(data, 4, 5, np.random.default_rng(0)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch, again, strict=True))


def test_bf16_training_steps_track_fp32_and_train_every_weight() -> None:
    torch.manual_seed(0)
    model = PercepNet(NetworkConfig(conv1_channels=16, conv2_channels=32, gru_size=32))
    features = torch.randn(2, 40, NUM_FEATURES)
    exact = predict(model, features)
    gains, strengths = predict(model, features, bf16=True)
    assert gains.dtype == strengths.dtype == torch.float32
    assert float((gains - exact[0]).detach().abs().max()) < 0.03
    assert float((strengths - exact[1]).detach().abs().max()) < 0.03
    (gains.sum() + strengths.sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32, name
        assert float(parameter.grad.abs().sum()) > 0, name


def test_a_training_record_names_no_machines_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "one") == "runs/one"
    assert portable_path("runs/two") == "runs/two"
    assert portable_path(tmp_path.parent / "elsewhere" / "cache") == "<elsewhere>/cache"
    assert portable_path(None) is None


def test_the_shipped_training_record_names_no_absolute_folder() -> None:
    record = json.loads((ROOT / "model" / "weights" / "training_record.json").read_text())

    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [s for item in value.values() for s in strings(item)]
        if isinstance(value, list):
            return [s for item in value for s in strings(item)]
        return [value] if isinstance(value, str) else []

    assert not [s for s in strings(record) if s.startswith("/")]


@pytest.mark.parametrize("share", ["0", "1.5", "-0.2"])
def test_a_mid_speech_start_share_outside_0_to_1_is_refused_before_anything_runs(
    tmp_path: Path, share: str
) -> None:
    with pytest.raises(SystemExit, match=r"^error: --mid-speech-starts must be in \(0, 1\]"):
        parse_args(["--out", str(tmp_path / "run"), "--mid-speech-starts", share])
    assert not (tmp_path / "run").exists()
    args = parse_args(["--out", str(tmp_path), "--mid-speech-starts", "0.5"])
    assert args.mid_speech_starts == 0.5


@pytest.mark.parametrize("speeds", [["1.1", "0.9"], ["0", "1"], ["0.9", "3"]])
def test_a_speech_speed_range_that_cannot_be_played_is_refused(speeds: list[str]) -> None:
    with pytest.raises(SystemExit, match=r"^error: --speech-speed must be LOW ≤ HIGH"):
        parse_args(["--speech-speed", *speeds])


def test_the_speech_speed_range_is_the_recipe_s_and_its_default_keys_the_cache_as_before() -> None:
    from model.mixtures import MixtureRecipe
    from model.train import training_recipe

    assert training_recipe(parse_args([])).as_dict() == MixtureRecipe().as_dict()
    wider = training_recipe(parse_args(["--speech-speed", "0.8", "1.25"]))
    assert wider.speed_range == (0.8, 1.25)
