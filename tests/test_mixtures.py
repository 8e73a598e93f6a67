"""Training-mixture recipe: the optional noise augmentation and synthetic noise events, and
what they do to the noises."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from model.mixtures import (
    SAMPLE_RATE,
    MixtureRecipe,
    NoiseAugmentation,
    NoiseEvents,
    babble_noise,
    burst_noise,
    harmonic_noise,
    make_mixture,
    speech_max_hz,
    speech_onset,
    synthetic_noise,
)
from model.mixtures import _noise_segment as noise_segment
from model.splits import AudioFile

NO_AUGMENTATION = NoiseAugmentation(
    speed_share=0.0, eq_share=0.0, reverse_share=0.0, second_noise_share=0.0
)


def _audio_file(path: Path, signal: np.ndarray, kind: str) -> AudioFile:
    sf.write(path, signal.astype(np.float32), SAMPLE_RATE)
    return AudioFile(
        path=path,
        relative_path=path.name,
        kind=kind,
        speaker_id="s" if kind == "clean" else "",
        sample_rate=SAMPLE_RATE,
        seconds=signal.shape[0] / SAMPLE_RATE,
        license="test",
        label="",
    )


# 1-s examples whose only noise is one real recording, with nothing else that varies
ONE_REAL_NOISE = MixtureRecipe(
    segment_seconds=1.0,
    noise_free_share=0.0,
    synthetic_noise_share=0.0,
    real_noise_share=1.0,
    room_share=0.0,
    eq_share=0.0,
    lowpass_share=0.0,
    speed_range=(1.0, 1.0),
)


def _hum_speech(tmp_path: Path) -> AudioFile:
    """A 1-s 150 Hz stand-in for a clean utterance."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return _audio_file(tmp_path / "speech.flac", 0.2 * np.sin(2 * np.pi * 150 * t), "clean")


def _tone(tmp_path: Path, hz: float, seconds: float = 2.0) -> AudioFile:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return _audio_file(tmp_path / f"tone{hz:.0f}.flac", 0.3 * np.sin(2 * np.pi * hz * t), "noise")


def _spectrum(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, Hann-windowed magnitudes)."""
    magnitudes = np.abs(np.fft.rfft(signal * np.hanning(signal.shape[0])))
    return np.fft.rfftfreq(signal.shape[0], 1 / SAMPLE_RATE), magnitudes


def _peak_hz(signal: np.ndarray) -> float:
    freqs, magnitudes = _spectrum(signal)
    return float(freqs[np.argmax(magnitudes)])


def _level_at(signal: np.ndarray, hz: float) -> float:
    freqs, magnitudes = _spectrum(signal)
    return float(magnitudes[np.abs(freqs - hz) < 20].max() / magnitudes.max())


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("noise_augmentation", NoiseAugmentation()),
        ("noise_events", NoiseEvents()),
        ("mid_speech_start_share", 0.5),
    ],
)
def test_a_recipe_without_an_optional_knob_keys_the_cache_as_before_the_knob_existed(
    knob: str, value: Any
) -> None:
    plain = MixtureRecipe().as_dict()
    assert knob not in plain
    with_knob = MixtureRecipe(**{knob: value}).as_dict()
    assert with_knob[knob] == (value if isinstance(value, float) else dataclasses.asdict(value))
    assert {k: v for k, v in with_knob.items() if k != knob} == plain


def test_unknown_noise_event_kinds_are_refused_when_the_recipe_is_made() -> None:
    with pytest.raises(ValueError, match="non-empty subset"):
        NoiseEvents(kinds=("bursts", "thunder"))
    with pytest.raises(ValueError, match="non-empty subset"):
        NoiseEvents(kinds=())


def _frame_levels_db(signal: np.ndarray) -> np.ndarray:
    frames = signal[: signal.shape[0] // 480 * 480].reshape(-1, 480)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def _spectral_flatness(signal: np.ndarray) -> float:
    power = _spectrum(signal)[1][1:] ** 2 + 1e-20
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


def test_bursts_are_short_loud_events_over_near_silence() -> None:
    sparse = NoiseEvents(bursts_per_second=(1.0, 1.0), burst_decay_s=(0.005, 0.005))
    bursts = burst_noise(np.random.default_rng(3), 2 * SAMPLE_RATE, sparse)
    assert bursts.shape == (2 * SAMPLE_RATE,) and np.all(np.isfinite(bursts))
    levels = _frame_levels_db(bursts)
    assert np.mean(levels > levels.max() - 20) < 0.1  # a few 10-ms frames carry the energy
    steady = _frame_levels_db(synthetic_noise(np.random.default_rng(3), 2 * SAMPLE_RATE))
    assert np.mean(steady > steady.max() - 20) > 0.5


def test_harmonic_sounds_are_tonal_and_babble_is_several_talkers(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    tonal = [_spectral_flatness(harmonic_noise(rng, SAMPLE_RATE, NoiseEvents())) for _ in range(4)]
    white = _spectral_flatness(rng.standard_normal(SAMPLE_RATE))
    assert np.median(tonal) < 0.05 * white and max(tonal) < 0.3 * white  # short calls: a floor
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    talkers = [
        _audio_file(tmp_path / f"talker{hz}.flac", 0.2 * np.sin(2 * np.pi * hz * t), "clean")
        for hz in (200, 300, 500, 700, 1100)
    ]
    three_talkers = NoiseEvents(babble_talkers=(3, 3))
    crowd = babble_noise(np.random.default_rng(5), talkers, SAMPLE_RATE, three_talkers)
    present = [_level_at(crowd, hz) > 0.05 for hz in (200, 300, 500, 700, 1100)]
    assert 2 <= sum(present) <= 3  # three draws from five talkers: two or three distinct


def test_noise_events_are_added_only_when_asked(tmp_path: Path) -> None:
    speech = [_hum_speech(tmp_path)]
    noises = [_tone(tmp_path, 700.0)]

    def off_tone_share(events: NoiseEvents | None) -> float:
        """Mean share of the noise's energy away from the recorded 700 Hz tone."""
        rng = np.random.default_rng(6)
        shares = []
        for _ in range(6):
            with_events = dataclasses.replace(ONE_REAL_NOISE, noise_events=events)
            mixture = make_mixture(rng, speech, noises, [], with_events)
            freqs, magnitudes = _spectrum(mixture.noisy - mixture.target)
            power = magnitudes**2
            shares.append(power[np.abs(freqs - 700) > 30].sum() / power.sum())
        return float(np.mean(shares))

    assert off_tone_share(None) < 0.01
    assert off_tone_share(NoiseEvents(share=0.0)) < 0.01
    assert off_tone_share(NoiseEvents(share=1.0, kinds=("bursts", "harmonic"))) > 0.05


def test_speed_augmentation_moves_a_tone_by_the_speed_factor_and_keeps_the_length(
    tmp_path: Path,
) -> None:
    tone = _tone(tmp_path, 1000.0, seconds=0.7)  # shorter than the segment: it is looped
    faster = dataclasses.replace(NO_AUGMENTATION, speed_share=1.0, speed_range=(1.25, 1.25))
    length = SAMPLE_RATE  # 1 s
    segment = noise_segment(np.random.default_rng(0), [tone], length, faster)
    assert segment.shape == (length,)
    assert abs(_peak_hz(segment) - 1250.0) < 5.0
    unchanged = noise_segment(np.random.default_rng(0), [tone], length, NO_AUGMENTATION)
    assert abs(_peak_hz(unchanged) - 1000.0) < 5.0


def test_reversal_plays_a_stretch_of_the_recording_backwards(tmp_path: Path) -> None:
    ramp = _audio_file(tmp_path / "ramp.flac", np.linspace(-0.5, 0.5, 2 * SAMPLE_RATE), "noise")
    backwards = dataclasses.replace(NO_AUGMENTATION, reverse_share=1.0)
    segment = noise_segment(np.random.default_rng(1), [ramp], SAMPLE_RATE // 2, backwards)
    assert np.all(np.diff(segment) <= 0) and segment[0] - segment[-1] > 0.1  # 16-bit steps
    forwards = noise_segment(np.random.default_rng(1), [ramp], SAMPLE_RATE // 2, NO_AUGMENTATION)
    assert np.all(np.diff(forwards) >= 0) and forwards[-1] - forwards[0] > 0.1


def test_a_second_real_noise_is_blended_in_only_when_asked(tmp_path: Path) -> None:
    speech = [_hum_speech(tmp_path)]
    noises = [_tone(tmp_path, 700.0), _tone(tmp_path, 3000.0)]

    def blends(second_noise_share: float) -> int:
        augmentation = dataclasses.replace(NO_AUGMENTATION, second_noise_share=second_noise_share)
        augmented = dataclasses.replace(ONE_REAL_NOISE, noise_augmentation=augmentation)
        rng = np.random.default_rng(2)
        count = 0
        for _ in range(12):
            mixture = make_mixture(rng, speech, noises, [], augmented)
            noise = mixture.noisy - mixture.target
            count += min(_level_at(noise, 700.0), _level_at(noise, 3000.0)) > 0.1
        return count

    assert blends(0.0) == 0
    assert blends(1.0) >= 3  # the second draw picks the other recording about half the time


def test_the_model_card_says_how_the_noises_were_varied_only_when_they_were() -> None:
    pytest.importorskip("torch")
    from model.model_card import _noise_augmentation_note

    assert _noise_augmentation_note(MixtureRecipe().as_dict()) == ""
    note = _noise_augmentation_note(MixtureRecipe(noise_augmentation=NoiseAugmentation()).as_dict())
    assert "0.7–1.4×" in note and "`--augment-noise`" in note and "30% of examples" in note


def test_the_model_card_names_the_noise_events_only_when_they_were_used() -> None:
    pytest.importorskip("torch")
    from model.model_card import _noise_events_note

    assert _noise_events_note(MixtureRecipe().as_dict()) == ""
    note = _noise_events_note(MixtureRecipe(noise_events=NoiseEvents()).as_dict())
    assert "40% of noisy examples" in note and "3–7 training talkers" in note
    assert "`--noise-events`" in note


def _paused_hum(tmp_path: Path) -> AudioFile:
    """A 1.5-s utterance stand-in: 0.4 s of silence, then a 150 Hz hum (as recordings keep a
    pause before the speech)."""
    t = np.arange(int(1.1 * SAMPLE_RATE)) / SAMPLE_RATE
    hum = np.concatenate([np.zeros(int(0.4 * SAMPLE_RATE)), 0.2 * np.sin(2 * np.pi * 150 * t)])
    return _audio_file(tmp_path / "paused.flac", hum, "clean")


def test_the_speech_onset_is_the_first_frame_near_the_loudest() -> None:
    hum = 0.2 * np.sin(2 * np.pi * 150 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    quiet = 1e-4 * np.random.default_rng(0).standard_normal(int(0.3 * SAMPLE_RATE))
    assert speech_onset(np.concatenate([quiet, hum])) == int(0.3 * SAMPLE_RATE)
    assert speech_onset(hum) == 0
    assert speech_onset(np.zeros(100)) == 0  # shorter than a frame


def test_mid_speech_starts_put_speech_in_the_first_frames_only_when_asked(tmp_path: Path) -> None:
    speech = [_paused_hum(tmp_path)]
    noises = [_tone(tmp_path, 700.0)]

    def opening_levels_db(share: float | None) -> np.ndarray:
        """Level of each example's first 50 ms of target speech, against its loudest 10 ms."""
        recipe = dataclasses.replace(ONE_REAL_NOISE, mid_speech_start_share=share)
        rng = np.random.default_rng(7)
        levels = []
        for _ in range(12):
            target = make_mixture(rng, speech, noises, [], recipe).target
            frames = _frame_levels_db(target)
            levels.append(frames[:5].max() - frames.max())
        return np.array(levels)

    assert np.all(opening_levels_db(None) < -60)  # every example opens on the pause
    assert np.all(opening_levels_db(1.0) > -3)  # every example opens on the hum
    half = opening_levels_db(0.5)
    assert 0 < np.sum(half > -3) < half.shape[0]


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_a_mid_speech_start_share_outside_0_to_1_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match=r"mid-speech start share must be in \(0, 1\]"):
        MixtureRecipe(mid_speech_start_share=share)


def test_the_model_card_names_mid_speech_starts_only_when_they_were_used() -> None:
    pytest.importorskip("torch")
    from model.model_card import _mid_speech_start_note

    assert _mid_speech_start_note(MixtureRecipe().as_dict()) == ""
    note = _mid_speech_start_note(MixtureRecipe(mid_speech_start_share=0.5).as_dict())
    assert "50% of examples open inside an utterance" in note and "`--mid-speech-starts`" in note


@pytest.mark.parametrize("speed", [0.9, 1.08])
def test_played_faster_the_speech_s_bandwidth_rises_with_its_pitch(
    tmp_path: Path, speed: float
) -> None:
    """A 16 kHz recording played ``speed`` times faster carries speech up to ``speed`` times
    its old highest frequency, as its tone moves: the loss's band mask follows the speech."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    narrow = dataclasses.replace(
        _audio_file(tmp_path / "narrow.flac", 0.2 * np.sin(2 * np.pi * 1_000 * t), "clean"),
        sample_rate=16_000,
    )
    recipe = dataclasses.replace(
        ONE_REAL_NOISE, speed_range=(speed, speed), fullband_speech_share=0.0
    )
    mixture = make_mixture(np.random.default_rng(0), [narrow], [_tone(tmp_path, 5_000)], [], recipe)
    assert mixture.speech_max_hz == pytest.approx(speech_max_hz(16_000) * speed)
    assert _peak_hz(mixture.target) == pytest.approx(1_000 * speed, abs=3.0)


def test_the_model_card_names_a_speech_speed_only_when_it_is_not_the_recipe_s() -> None:
    from model.model_card import _speech_speed_note

    assert _speech_speed_note(MixtureRecipe().as_dict()) == ""
    assert _speech_speed_note({}) == ""  # a record from before the range was an option
    note = _speech_speed_note(MixtureRecipe(speed_range=(0.8, 1.25)).as_dict())
    assert "speech played 0.8–1.25× as fast" in note and "`--speech-speed`" in note
