"""Whole-utterance training mixtures made new: other voices, other noises.

``model.audio_finetune`` trains on mixtures drawn as the dev mixtures are (a training-split
utterance, a training-split noise, an SNR); on its own that shows the network the same 2,330
utterances and 986 noises again and again. ``augment_mixture`` remakes one such mixture: the
speech played faster or slower (pitch, formants and tempo together, as another talker), its
formants optionally moved on their own (``model.mixtures.formants_shifted``: another vocal
tract behind the same voice) and coloured by a random microphone EQ, the noise resampled,
coloured and reversed as ``model.mixtures.NoiseAugmentation`` does, sometimes a synthetic
noise event added (``model.mixtures.NoiseEvents``), and the two mixed again at the mixture's
own SNR and level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from model.devset import DevMixture, mix_at_snr, noise_stretch
from model.mixtures import (
    SAMPLE_RATE,
    NoiseAugmentation,
    NoiseEvents,
    formants_shifted,
    log_uniform,
    noise_event,
    played_faster,
    random_eq,
    reshape_noise,
    samples_to_play,
)
from model.splits import AudioFile


@dataclass(frozen=True)
class MixtureAugmentation:
    """How far a mixture is remade; the speech's speed and formant shift are drawn
    log-uniformly (a shift range of (1, 1), the default, leaves the formants with the speed)."""

    speech_speed_range: tuple[float, float] = (0.87, 1.15)
    formant_shift_range: tuple[float, float] = (1.0, 1.0)
    speech_eq_share: float = 0.5
    noise: NoiseAugmentation = field(default_factory=NoiseAugmentation)
    events: NoiseEvents = field(default_factory=NoiseEvents)

    def as_dict(self) -> dict[str, object]:
        """For the training record."""
        return {
            "speech_speed_range": list(self.speech_speed_range),
            "formant_shift_range": list(self.formant_shift_range),
            "speech_eq_share": self.speech_eq_share,
            # the mixture's own noise is remade: no second recording is blended in
            "noise": {k: v for k, v in vars(self.noise).items() if k != "second_noise_share"},
            "events": vars(self.events),
        }


def _level_dbfs(signal: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(signal**2) + 1e-20))


def augment_mixture(
    mixture: DevMixture,
    rng: np.random.Generator,
    speech: Sequence[AudioFile],
    augmentation: MixtureAugmentation,
) -> DevMixture:
    """``mixture`` remade (see the module's docstring); ``speech`` is what babble is made of.
    The speech's bandwidth moves with its speed, so ``source_rate`` does too."""
    speed = log_uniform(rng, augmentation.speech_speed_range)
    clean = played_faster(mixture.clean, speed)
    if augmentation.formant_shift_range != (1.0, 1.0):  # drawn only when asked: older runs replay
        clean = formants_shifted(clean, log_uniform(rng, augmentation.formant_shift_range))
    if rng.random() < augmentation.speech_eq_share:
        clean = random_eq(rng, clean)
    length = clean.shape[0]
    noise_in = mixture.noisy - mixture.clean
    noise_speed = 1.0
    if rng.random() < augmentation.noise.speed_share:
        noise_speed = log_uniform(rng, augmentation.noise.speed_range)
    looped = noise_stretch(noise_in, samples_to_play(length, noise_speed), 0)
    noise = reshape_noise(rng, looped, noise_speed, length, augmentation.noise)
    if rng.random() < augmentation.events.share:
        event = noise_event(rng, list(speech), length, augmentation.events)
        noise_rms = np.sqrt(np.mean(noise**2)) + 1e-12
        event_rms = np.sqrt(np.mean(event**2)) + 1e-12
        noise = noise + event / event_rms * noise_rms * rng.uniform(0.3, 1.0)
    clean, noisy = mix_at_snr(clean, noise, mixture.snr_db, _level_dbfs(mixture.noisy))
    source_rate = int(round(min(mixture.source_rate * speed, SAMPLE_RATE)))
    return replace(mixture, clean=clean, noisy=noisy, source_rate=source_rate)
