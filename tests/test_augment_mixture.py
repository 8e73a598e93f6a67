"""``model.augment_mixture``: a training mixture remade with another voice and another noise,
at its own SNR and level; and ``model.audio_finetune --augment`` training on such mixtures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from model.augment_mixture import MixtureAugmentation, augment_mixture
from model.devset import DevMixture, measured_snr_db
from model.mixtures import SAMPLE_RATE, NoiseAugmentation, NoiseEvents, formants_shifted
from model.splits import AudioFile

# the noise left as it is and no event added, so that only the speech changes
PLAIN_NOISE = NoiseAugmentation(
    speed_share=0.0, eq_share=0.0, reverse_share=0.0, second_noise_share=0.0
)
NO_EVENTS = NoiseEvents(share=0.0)


def _tone(hz: float, seconds: float, amplitude: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return amplitude * np.sin(2 * np.pi * hz * t)


def _mixture(source_rate: int = 16_000, snr_db: float = 5.0) -> DevMixture:
    """1 kHz 'speech' in white noise at ``snr_db``."""
    clean = _tone(1_000.0, 1.0)
    noise = np.random.default_rng(0).standard_normal(clean.shape[0])
    noise *= np.sqrt(np.sum(clean**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    return DevMixture(
        name="tone",
        clean=clean,
        noisy=clean + noise,
        snr_db=snr_db,
        speech_path=Path("speech.wav"),
        noise_path=Path("noise.wav"),
        source_rate=source_rate,
    )


def _peak_hz(signal: np.ndarray) -> float:
    magnitudes = np.abs(np.fft.rfft(signal * np.hanning(signal.shape[0])))
    return float(np.fft.rfftfreq(signal.shape[0], 1 / SAMPLE_RATE)[np.argmax(magnitudes)])


def _rms_dbfs(signal: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(signal**2)))


def _assert_proportional(signal: np.ndarray, expected: np.ndarray) -> None:
    """``signal`` is ``expected`` times a positive gain (the remix sets the level)."""
    gain = np.dot(signal, expected) / np.dot(expected, expected)
    assert gain > 0
    np.testing.assert_allclose(signal, gain * expected, atol=1e-9)


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_the_speech_moves_in_pitch_and_bandwidth_together(speed: float) -> None:
    mixture = _mixture()
    only_speed = MixtureAugmentation(
        speech_speed_range=(speed, speed), speech_eq_share=0.0, noise=PLAIN_NOISE, events=NO_EVENTS
    )
    remade = augment_mixture(mixture, np.random.default_rng(1), [], only_speed)
    assert _peak_hz(remade.clean) == pytest.approx(1_000.0 * speed, abs=3.0)
    assert remade.clean.shape[0] == pytest.approx(mixture.clean.shape[0] / speed, abs=2)
    assert remade.source_rate == round(16_000 * speed)
    assert remade.name == mixture.name and remade.snr_db == mixture.snr_db


def _vowel(
    pitch_hz: float = 120.0, formants_hz: tuple[float, ...] = (700.0, 1_200.0)
) -> np.ndarray:
    """Two seconds of a pulse train at ``pitch_hz`` through one resonance per formant."""
    source = np.zeros(2 * SAMPLE_RATE)
    source[:: int(SAMPLE_RATE / pitch_hz)] = 1.0
    for centre in formants_hz:
        radius = np.exp(-np.pi * 80.0 / SAMPLE_RATE)
        angle = 2 * np.pi * centre / SAMPLE_RATE
        source = lfilter([1 - radius], [1, -2 * radius * np.cos(angle), radius**2], source)
    return 0.1 * source / np.std(source)


def _harmonic_levels_db(signal: np.ndarray, pitch_hz: float, count: int) -> np.ndarray:
    """The level of each of the first ``count`` harmonics over the signal's middle second."""
    middle = signal[SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + SAMPLE_RATE]
    magnitudes = np.abs(np.fft.rfft(middle * np.hanning(middle.shape[0])))  # 1-Hz bins
    return 20 * np.log10([magnitudes[round(k * pitch_hz)] for k in range(1, count + 1)])


def _formant_centre_hz(vowel: np.ndarray, pitch_hz: float = 120.0) -> float:
    """The power-weighted mean frequency of ``vowel``'s harmonics under 3 kHz."""
    count = int(3_000 / pitch_hz)
    power = 10 ** (_harmonic_levels_db(vowel, pitch_hz, count) / 10)
    return float(np.sum(power * pitch_hz * np.arange(1, count + 1)) / np.sum(power))


@pytest.mark.parametrize("factor", [0.85, 1.2])
def test_a_formant_shift_moves_the_envelope_and_keeps_the_pitch_and_length(factor: float) -> None:
    vowel = _vowel(pitch_hz=120.0, formants_hz=(700.0,))
    shifted = formants_shifted(vowel, factor)
    assert shifted.shape == vowel.shape and shifted.dtype == vowel.dtype
    assert formants_shifted(vowel, 1.0) is vowel
    # the energy stays on the voice's harmonics (the same pitch): between them it is far lower
    middle = shifted[SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + SAMPLE_RATE]
    magnitudes = np.abs(np.fft.rfft(middle * np.hanning(middle.shape[0])))
    on = magnitudes[[round(k * 120.0) for k in range(1, 20)]]
    between = magnitudes[[round((k + 0.5) * 120.0) for k in range(1, 20)]]
    assert np.median(on) > 30 * np.median(between)
    # the formant moves by about the factor: the centre of the harmonics' power under 3 kHz
    # moves by at least 0.6 of it on a log scale (a 1-ms lifter moved it 0.4-0.5 of the way)
    moved = _formant_centre_hz(shifted) / _formant_centre_hz(vowel)
    assert 0.6 < np.log(moved) / np.log(factor) < 1.3


def test_the_remade_speech_has_its_formants_moved_only_when_asked() -> None:
    mixture = dataclasses.replace(_mixture(), clean=_vowel(), noisy=_vowel() + 0.01)
    moved = MixtureAugmentation(
        speech_speed_range=(1.0, 1.0),
        formant_shift_range=(1.15, 1.15),
        speech_eq_share=0.0,
        noise=PLAIN_NOISE,
        events=NO_EVENTS,
    )
    remade = augment_mixture(mixture, np.random.default_rng(6), [], moved)
    _assert_proportional(remade.clean, formants_shifted(mixture.clean, 1.15))
    assert remade.source_rate == mixture.source_rate  # the bandwidth stays the recording's
    kept = dataclasses.replace(moved, formant_shift_range=(1.0, 1.0))
    _assert_proportional(
        augment_mixture(mixture, np.random.default_rng(6), [], kept).clean, mixture.clean
    )


def test_a_full_band_source_stays_at_most_full_band() -> None:
    fast = MixtureAugmentation(speech_speed_range=(1.1, 1.1), events=NO_EVENTS)
    remade = augment_mixture(_mixture(source_rate=SAMPLE_RATE), np.random.default_rng(2), [], fast)
    assert remade.source_rate == SAMPLE_RATE


@pytest.mark.parametrize("seed", range(4))
def test_the_remade_mixture_keeps_its_snr_and_level_and_adds_only_noise(seed: int) -> None:
    mixture = _mixture(snr_db=-3.0)
    remade = augment_mixture(
        mixture,
        np.random.default_rng(seed),
        [],
        MixtureAugmentation(events=NoiseEvents(kinds=("bursts", "harmonic"))),
    )
    assert measured_snr_db(remade) == pytest.approx(-3.0, abs=1e-6)
    assert _rms_dbfs(remade.noisy) == pytest.approx(_rms_dbfs(mixture.noisy), abs=1e-6)
    assert remade.noisy.shape == remade.clean.shape


def test_a_plain_noise_is_the_mixture_s_own_noise_looped() -> None:
    mixture = _mixture()
    slow = MixtureAugmentation(
        speech_speed_range=(0.8, 0.8), speech_eq_share=0.0, noise=PLAIN_NOISE, events=NO_EVENTS
    )
    remade = augment_mixture(mixture, np.random.default_rng(3), [], slow)
    noise_out = remade.noisy - remade.clean
    looped = np.tile(mixture.noisy - mixture.clean, 2)[: noise_out.shape[0]]
    _assert_proportional(noise_out, looped)


def test_events_and_noise_augmentation_change_the_noise() -> None:
    mixture = _mixture()
    plain = MixtureAugmentation(
        speech_speed_range=(1.0, 1.0), speech_eq_share=0.0, noise=PLAIN_NOISE, events=NO_EVENTS
    )
    reversed_noise = dataclasses.replace(
        plain, noise=dataclasses.replace(PLAIN_NOISE, reverse_share=1.0)
    )
    with_bursts = dataclasses.replace(plain, events=NoiseEvents(share=1.0, kinds=("bursts",)))
    noise_of = {
        name: (lambda m: m.noisy - m.clean)(
            augment_mixture(mixture, np.random.default_rng(4), [], augmentation)
        )
        for name, augmentation in [
            ("plain", plain),
            ("reversed", reversed_noise),
            ("bursts", with_bursts),
        ]
    }
    plain_noise = noise_of["plain"]
    _assert_proportional(plain_noise, mixture.noisy - mixture.clean)
    _assert_proportional(noise_of["reversed"], plain_noise[::-1])
    # the bursts are in the noise: what the plain noise, scaled, cannot explain of it
    bursts = noise_of["bursts"]
    gain = np.dot(bursts, plain_noise) / np.dot(plain_noise, plain_noise)
    assert np.sum((bursts - gain * plain_noise) ** 2) > 0.1 * np.sum(bursts**2)


def test_babble_is_made_of_the_speech_given(tmp_path: Path) -> None:
    path = tmp_path / "talker.flac"
    sf.write(path, _tone(300.0, 2.0).astype(np.float32), SAMPLE_RATE)
    talker = AudioFile(path, path.name, "clean", "t", SAMPLE_RATE, 2.0, "test", "")
    babble = MixtureAugmentation(
        speech_speed_range=(1.0, 1.0),
        speech_eq_share=0.0,
        noise=PLAIN_NOISE,
        events=NoiseEvents(share=1.0, kinds=("babble",)),
    )
    remade = augment_mixture(_mixture(), np.random.default_rng(5), [talker], babble)
    noise = remade.noisy - remade.clean
    magnitudes = np.abs(np.fft.rfft(noise))
    freqs = np.fft.rfftfreq(noise.shape[0], 1 / SAMPLE_RATE)
    near = (freqs > 250) & (freqs < 350)
    assert magnitudes[near].max() > 5 * np.median(magnitudes)


def test_the_fine_tune_trains_on_remade_mixtures_only_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from finetune_inputs import one_step_runs
    from shared_data import find_shared_data

    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs ../shared/data")
    formants = ["--augment", "--formant-shift", "0.9", "1.1"]
    runs = one_step_runs(
        tmp_path, data_dir, {"augmented": ["--augment"], "plain": [], "formants": formants}
    )
    assert runs["augmented"]["data"]["augmentation"] == MixtureAugmentation().as_dict()
    assert runs["formants"]["data"]["augmentation"]["formant_shift_range"] == [0.9, 1.1]
    assert "augmentation" not in runs["plain"]["data"]
    assert "second_noise_share" not in runs["augmented"]["data"]["augmentation"]["noise"]
    # exported, the record keeps it and the card says how the mixtures were remade
    from model.export import main as export_main
    from model.model_card import _training_section
    from model.training_record import read_record

    cards = {}
    for name in runs:
        export_main(
            [
                "--checkpoint",
                str(tmp_path / name / "checkpoint.pt"),
                "--out",
                str(tmp_path / f"w-{name}"),
            ]
        )
        record = read_record(tmp_path / f"w-{name}")
        cards[name] = _training_section(record).split("### The run the fine-tune started from")[0]
    assert "--augment" in cards["augmented"] and "--augment" not in cards["plain"]
    assert (
        "remade by `model/augment_mixture.py` (the speech played 0.87–1.15× as fast"
        in (cards["augmented"])
    )
    assert "augment_mixture" not in cards["plain"]
    assert "formants" not in cards["augmented"]
    assert "1.15× as fast, its formants moved 0.9–1.1× on their own and EQ'd" in cards["formants"]
