"""Seeded synthesis of training mixtures from real speech, real and synthetic noise, and real
and simulated rooms.

Each example is a fixed-length segment at 48 kHz: ``noisy`` (what the enhancer hears) and
``target`` (speech convolved with the early part of the room response: early reflections are
kept, late reverberation is to be removed), plus the highest frequency the example's speech
really contains, so the loss can ignore bands above it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import fftconvolve, istft, lfilter, stft

from model.splits import AudioFile

SAMPLE_RATE = 48_000
EARLY_REFLECTIONS_SECONDS = 0.05  # kept in the target, as PercepNet does


@dataclass(frozen=True)
class NoiseAugmentation:
    """Ways to make new noises out of the few real recordings, so that the network meets noises
    it has never heard (other pitches, tempi, colours, blends) rather than memorising ours."""

    speed_share: float = 0.5  # of real noise segments: resampled (pitch and tempo together)
    speed_range: tuple[float, float] = (0.7, 1.4)  # drawn log-uniformly
    eq_share: float = 0.5  # of real noise segments: a random tilt and peaking band
    reverse_share: float = 0.2  # of real noise segments: played backwards
    second_noise_share: float = 0.3  # of noisy examples with a real noise: a second one added


NOISE_EVENT_KINDS = ("bursts", "harmonic", "babble")


@dataclass(frozen=True)
class NoiseEvents:
    """Synthetic non-stationary noises of the kinds that the recorded set has only a few of:
    bursts (knocks, clicks, drums), harmonic sounds (calls, hums, instruments) and babble made of
    training talkers. One is added to this share of the noisy examples."""

    share: float = 0.4
    kinds: tuple[str, ...] = NOISE_EVENT_KINDS
    bursts_per_second: tuple[float, float] = (0.5, 10.0)  # drawn log-uniformly
    burst_decay_s: tuple[float, float] = (0.003, 0.2)  # drawn log-uniformly per burst
    harmonic_f0_hz: tuple[float, float] = (70.0, 2_000.0)  # drawn log-uniformly per sound
    babble_talkers: tuple[int, int] = (3, 7)  # inclusive range

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in NOISE_EVENT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(
                f"noise event kinds must be a non-empty subset of {NOISE_EVENT_KINDS}, "
                f"got {self.kinds}"
            )


@dataclass(frozen=True)
class MixtureRecipe:
    """Every knob of the augmentation; its hash keys the feature cache."""

    segment_seconds: float = 3.0
    snr_db_range: tuple[float, float] = (-5.0, 30.0)
    noise_free_share: float = 0.08
    synthetic_noise_share: float = 0.35  # of noisy examples: a shaped synthetic noise is added
    real_noise_share: float = 0.85  # of noisy examples: a real noise recording is used
    room_share: float = 0.35
    simulated_room_share: float = 0.5  # of reverberant examples
    rt60_range_s: tuple[float, float] = (0.15, 1.0)
    level_dbfs_range: tuple[float, float] = (-45.0, -12.0)
    eq_share: float = 0.5
    lowpass_share: float = 0.15
    lowpass_hz_range: tuple[float, float] = (3_500.0, 16_000.0)
    fullband_speech_share: float = 0.6  # sample 48/44.1 kHz speech this often
    speed_range: tuple[float, float] = (0.92, 1.08)
    noise_augmentation: NoiseAugmentation | None = None
    noise_events: NoiseEvents | None = None
    # of examples: the segment opens inside an utterance, past its leading pause, so speech is
    # there from the first frame (files and streams can start mid-speech; without this every
    # example opens on 0.25-0.5 s of noise alone and the network learns to mute its first frames)
    mid_speech_start_share: float | None = None

    def __post_init__(self) -> None:
        share = self.mid_speech_start_share
        if share is not None and not 0.0 < share <= 1.0:
            raise ValueError(f"the mid-speech start share must be in (0, 1], got {share:g}")

    def as_dict(self) -> dict[str, object]:
        """Plain dict (for hashing and for the model card). An optional knob left unset is left
        out, so a recipe without it keys the same cache as before the knob existed."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Mixture:
    """One training example at 48 kHz."""

    noisy: np.ndarray  # float64
    target: np.ndarray  # float64
    speech_max_hz: float  # bands above this carry no speech information


@lru_cache(maxsize=4096)
def load_audio_48k(path: Path) -> np.ndarray:
    """Mono float32 at 48 kHz (cached: the whole corpus fits in memory)."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    return mono


def speech_max_hz(sample_rate: float) -> float:
    """The highest frequency a recording at ``sample_rate`` is taken to carry speech in."""
    return min(sample_rate / 2.0, 24_000.0) * 0.95


FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms


def frame_powers(signal: np.ndarray) -> np.ndarray:
    """Mean power of each whole 10 ms frame (a signal shorter than a frame is repeated to
    fill one)."""
    frames = max(1, signal.shape[0] // FRAME_SAMPLES)
    return np.mean(np.resize(signal, frames * FRAME_SAMPLES).reshape(frames, -1) ** 2, axis=1)


def speech_onset(utterance: np.ndarray, floor_db: float = 25.0) -> int:
    """First sample of the first 10 ms frame within ``floor_db`` of the utterance's loudest."""
    energy = frame_powers(utterance)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-floor_db / 10))
    return int(loud[0]) * FRAME_SAMPLES


def _speech_segment(
    rng: np.random.Generator,
    speech: list[AudioFile],
    length: int,
    fullband_share: float,
    mid_start_share: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Concatenate random utterances (with short pauses) into ``length`` samples; also the
    highest frequency they all carry speech in. A ``mid_start_share`` of segments open inside
    their first utterance, between its onset and its middle, instead of before it."""
    fullband = [f for f in speech if f.sample_rate >= 44_100]
    narrow = [f for f in speech if f.sample_rate < 44_100]
    pool = fullband if (rng.random() < fullband_share and fullband) or not narrow else narrow
    out = np.zeros(length)
    position = int(rng.integers(0, SAMPLE_RATE // 4))
    mid_start = mid_start_share > 0.0 and rng.random() < mid_start_share
    max_hz = 24_000.0
    while position < length:
        file = pool[int(rng.integers(len(pool)))]
        utterance = load_audio_48k(file.path).astype(np.float64)
        rms = np.sqrt(np.mean(utterance**2)) + 1e-9
        level = 10 ** (rng.uniform(-6, 6) / 20)
        if mid_start:  # open inside this utterance: drop its pause and up to half of it
            onset = speech_onset(utterance)
            cut = int(rng.integers(onset, max(onset + 1, (onset + utterance.shape[0]) // 2)))
            utterance, position, mid_start = utterance[cut:], 0, False
        take = min(utterance.shape[0], length - position)
        out[position : position + take] = (utterance / rms * level)[:take]
        max_hz = min(max_hz, speech_max_hz(file.sample_rate))
        position += take + int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
    return out, max_hz


def _noise_segment(
    rng: np.random.Generator,
    noise: list[AudioFile],
    length: int,
    augmentation: NoiseAugmentation | None = None,
) -> np.ndarray:
    file = noise[int(rng.integers(len(noise)))]
    audio = load_audio_48k(file.path).astype(np.float64)
    speed = 1.0
    if augmentation is not None and rng.random() < augmentation.speed_share:
        speed = log_uniform(rng, augmentation.speed_range)
    needed = samples_to_play(length, speed)
    if audio.shape[0] < needed:
        audio = np.tile(audio, int(np.ceil(needed / audio.shape[0])) + 1)
    start = int(rng.integers(0, audio.shape[0] - needed + 1))
    segment = audio[start : start + needed]
    if augmentation is None:
        return segment
    return reshape_noise(rng, segment, speed, length, augmentation)


def samples_to_play(length: int, speed: float) -> int:
    """How many samples ``played_faster(·, speed)`` needs to give ``length``: one more than
    ``length · speed`` where it resamples, so it still fills ``length`` (checked over the whole
    speed range)."""
    return length if speed == 1.0 else int(np.ceil(length * speed)) + 1


SPEECH_SPEED_BOUNDS = (0.5, 2.0)
"""The widest ``--speech-speed`` range the training commands accept (an octave either way of
the recorded voice)."""
FORMANT_SHIFT_BOUNDS = (0.7, 1.4)
"""The widest ``--formant-shift`` range (a child's vocal tract is about 0.7 of a man's length)."""


def check_factor_range(
    option: str, low: float, high: float, bounds: tuple[float, float] = SPEECH_SPEED_BOUNDS
) -> None:
    """ValueError unless ``low`` ≤ ``high`` within ``bounds``: the ranges a training command's
    ``option`` (``--speech-speed`` by its default bounds, ``--formant-shift``) accepts."""
    if not bounds[0] <= low <= high <= bounds[1]:
        raise ValueError(
            f"{option} must be LOW ≤ HIGH within [{bounds[0]:g}, {bounds[1]:g}], "
            f"got {low:g} {high:g}"
        )


def played_faster(signal: np.ndarray, speed: float) -> np.ndarray:
    """``signal`` played ``speed`` times faster (resampled): every frequency, the highest a
    recording carries too, times ``speed``, and the length divided by it."""
    if speed == 1.0:
        return signal
    return soxr.resample(signal, SAMPLE_RATE, SAMPLE_RATE / speed)


_ENVELOPE_FRAME = 1024  # 21 ms at 48 kHz: two pitch periods of a low voice
# quefrencies under 2.5 ms: the envelope, not the harmonics of a voice pitched under 400 Hz
# (at 1 ms the envelope is smoothed over about 1 kHz and a formant moves half as far)
_ENVELOPE_LIFTER_S = 0.0025
_ENVELOPE_MAX_DB = 18.0


def formants_shifted(signal: np.ndarray, factor: float) -> np.ndarray:
    """``signal`` with its spectral envelope (the formants) moved ``factor`` times up in
    frequency and its pitch, tempo and bandwidth kept: another vocal tract with the same
    voice source. Each 21-ms frame is filtered by the ratio of its cepstrally smoothed log
    envelope (quefrencies under 2.5 ms) read at ``f / factor`` to the one at ``f`` (limited to
    ±18 dB), then overlap-added."""
    if factor == 1.0:
        return signal
    _, _, spectra = stft(signal, nperseg=_ENVELOPE_FRAME, noverlap=3 * _ENVELOPE_FRAME // 4)
    log_magnitude = np.log(np.abs(spectra) + 1e-9)
    cepstrum = np.fft.irfft(log_magnitude, n=_ENVELOPE_FRAME, axis=0)
    keep = int(_ENVELOPE_LIFTER_S * SAMPLE_RATE)
    cepstrum[keep : _ENVELOPE_FRAME - keep + 1] = 0.0
    envelope = np.fft.rfft(cepstrum, axis=0).real
    bins = np.arange(envelope.shape[0], dtype=np.float64)
    warped = np.stack([np.interp(bins / factor, bins, column) for column in envelope.T], axis=1)
    limit = _ENVELOPE_MAX_DB / 20.0 * np.log(10.0)
    gain = np.exp(np.clip(warped - envelope, -limit, limit))
    _, shifted = istft(spectra * gain, nperseg=_ENVELOPE_FRAME, noverlap=3 * _ENVELOPE_FRAME // 4)
    return np.asarray(shifted[: signal.shape[0]], dtype=signal.dtype)


def reshape_noise(
    rng: np.random.Generator,
    segment: np.ndarray,
    speed: float,
    length: int,
    augmentation: NoiseAugmentation,
) -> np.ndarray:
    """``segment`` played ``speed`` times faster (pitch and tempo; it must hold at least
    ``length · speed`` samples), then cut to ``length``, EQ'd and reversed as often as
    ``augmentation`` says."""
    segment = played_faster(segment, speed)[:length]
    if rng.random() < augmentation.eq_share:
        segment = random_eq(rng, segment)
    if rng.random() < augmentation.reverse_share:
        segment = segment[::-1].copy()
    return segment


def _random_spectral_shape(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """``signal`` filtered by a random smooth spectral shape over 0–24 kHz."""
    length = signal.shape[0]
    freqs = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)
    anchors_hz = np.geomspace(50, 24_000, 12)
    anchors_db = rng.uniform(-30, 10, anchors_hz.shape[0]) + rng.uniform(-6, 3) * np.log2(
        anchors_hz / 1000
    )
    shape_db = np.interp(np.log(np.maximum(freqs, 50)), np.log(anchors_hz), anchors_db)
    return np.fft.irfft(np.fft.rfft(signal) * 10 ** (shape_db / 20), n=length)


def synthetic_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    """Gaussian noise with a random smooth spectral shape over 0–24 kHz, optionally amplitude
    modulated: covers the high bands that the recorded noises rarely reach."""
    noise = _random_spectral_shape(rng, rng.standard_normal(length))
    if rng.random() < 0.4:
        rate_hz = rng.uniform(0.3, 8.0)
        depth = rng.uniform(0.3, 1.0)
        t = np.arange(length) / SAMPLE_RATE
        noise *= 1 - depth * 0.5 * (1 + np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 6.3)))
    return noise


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def burst_noise(rng: np.random.Generator, length: int, events: NoiseEvents) -> np.ndarray:
    """Decaying bursts of shaped noise, some with a pitched resonance, at random or at regular
    (beat-like) onsets: knocks, clicks, footsteps, drums."""
    rate = log_uniform(rng, events.bursts_per_second)
    if rng.random() < 0.5:  # regular onsets with a little jitter, as in loops and clocks
        period = SAMPLE_RATE / rate
        onsets = np.arange(rng.uniform(0, period), length, period)
        onsets = onsets + rng.normal(0, 0.01 * period, onsets.shape[0])
    else:
        onsets = np.sort(rng.uniform(0, length, rng.poisson(rate * length / SAMPLE_RATE) + 1))
    out = np.zeros(length)
    colour = _random_spectral_shape(rng, rng.standard_normal(length))
    for onset in onsets.astype(np.int64):
        if not 0 <= onset < length:
            continue
        decay_s = log_uniform(rng, events.burst_decay_s)
        span = min(int(5 * decay_s * SAMPLE_RATE) + 1, length - int(onset))
        t = np.arange(span) / SAMPLE_RATE
        envelope = np.exp(-t / decay_s) * np.minimum(1.0, t / 0.0005 + 1e-3)
        start = int(rng.integers(0, length - span + 1))
        burst = colour[start : start + span] * envelope
        if rng.random() < 0.4:  # a resonance: drums, tabla, wood blocks
            frequency = log_uniform(rng, (80.0, 5_000.0))
            ring = np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)) * envelope
            burst += ring * np.std(burst) / (np.std(ring) + 1e-12) * rng.uniform(0.5, 3.0)
        out[onset : onset + span] += burst * 10 ** (rng.uniform(-20, 0) / 20)
    return out


def harmonic_noise(rng: np.random.Generator, length: int, events: NoiseEvents) -> np.ndarray:
    """Harmonic sounds with a gliding, vibrating pitch and a random spectral envelope, either
    one sustained tone or separate calls: animals, sirens, hums, instruments."""
    out = np.zeros(length)
    sustained = rng.random() < 0.3
    for _ in range(1 if sustained else int(rng.integers(1, 7))):
        span = length if sustained else int(rng.uniform(0.08, 1.5) * SAMPLE_RATE)
        span = min(span, length)
        start = int(rng.integers(0, length - span + 1))
        t = np.arange(span) / SAMPLE_RATE
        f0 = log_uniform(rng, events.harmonic_f0_hz) * 2 ** (
            rng.uniform(-1, 1) * t / max(t[-1], 1e-3) * rng.uniform(0, 1)
        )
        f0 = f0 * (1 + rng.uniform(0, 0.03) * np.sin(2 * np.pi * rng.uniform(3, 8) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        tilt = rng.uniform(0.3, 2.0)
        tone = np.zeros(span)
        for k in range(1, int(min(40, 20_000 // f0.max())) + 1):
            tone += k**-tilt * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        fade = min(int(0.01 * SAMPLE_RATE), span // 2)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade)
            tone[:fade] *= ramp
            tone[-fade:] *= ramp[::-1]
        out[start : start + span] += tone * 10 ** (rng.uniform(-10, 0) / 20)
    out = random_eq(rng, out)
    return out + 0.03 * np.std(out) * rng.standard_normal(length)


def babble_noise(
    rng: np.random.Generator, speech: list[AudioFile], length: int, events: NoiseEvents
) -> np.ndarray:
    """Several training talkers at once (drawn from the same pool as the target speech, so one
    may share its voice): the crowd behind the speaker."""
    low, high = events.babble_talkers
    out = np.zeros(length)
    for _ in range(int(rng.integers(low, high + 1))):
        talker, _ = _speech_segment(rng, speech, length, fullband_share=0.5)
        out += talker * 10 ** (rng.uniform(-6, 0) / 20)
    return out


def noise_event(
    rng: np.random.Generator, speech: list[AudioFile], length: int, events: NoiseEvents
) -> np.ndarray:
    kind = events.kinds[int(rng.integers(len(events.kinds)))]
    if kind == "bursts":
        return burst_noise(rng, length, events)
    if kind == "harmonic":
        return harmonic_noise(rng, length, events)
    return babble_noise(rng, speech, length, events)


def simulated_room(rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """Statistical room response: direct path, sparse early reflections, then exponentially
    decaying noise with the given RT60 and a high-frequency damping that grows with time."""
    length = int(min(rt60_s * 1.2, 1.5) * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    decay = np.exp(-6.9 * t / rt60_s)  # −60 dB at RT60
    tail = rng.standard_normal(length) * decay
    tail = lfilter([0.6], [1, -0.4], tail)  # darker tail
    rir = 0.3 * tail
    rir[0] = 1.0
    for _ in range(int(rng.integers(4, 12))):
        delay = int(rng.uniform(0.002, EARLY_REFLECTIONS_SECONDS) * SAMPLE_RATE)
        rir[delay] += rng.uniform(-0.6, 0.6) * np.exp(-6.9 * delay / SAMPLE_RATE / rt60_s)
    return rir


def _room_response(
    rng: np.random.Generator, rooms: list[AudioFile], recipe: MixtureRecipe
) -> np.ndarray:
    if rooms and rng.random() >= recipe.simulated_room_share:
        rir = load_audio_48k(rooms[int(rng.integers(len(rooms)))].path).astype(np.float64)
        peak = int(np.argmax(np.abs(rir)))
        rir = rir[max(0, peak - 48) :][: int(1.5 * SAMPLE_RATE)]
    else:
        rir = simulated_room(rng, rng.uniform(*recipe.rt60_range_s))
    return rir / (np.max(np.abs(rir)) + 1e-9)


def random_eq(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """A random tilt and a random peaking band, as microphones and rooms colour speech (the
    same filter along the last axis of every row)."""
    tilt = rng.uniform(-0.6, 0.6)
    signal = lfilter([1.0, -tilt * 0.5], [1.0], signal)
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(signal.shape[-1], 1 / SAMPLE_RATE)
    centre = np.exp(rng.uniform(np.log(200), np.log(8000)))
    gain_db = rng.uniform(-9, 9)
    width_octaves = rng.uniform(0.3, 2.0)
    bump = gain_db * np.exp(-0.5 * (np.log2(np.maximum(freqs, 1) / centre) / width_octaves) ** 2)
    return np.fft.irfft(spectrum * 10 ** (bump / 20), n=signal.shape[-1])


def _lowpass(signal: np.ndarray, cutoff_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(signal.shape[0], 1 / SAMPLE_RATE)
    rolloff = 1.0 / (1.0 + (freqs / cutoff_hz) ** 16)
    return np.fft.irfft(spectrum * rolloff, n=signal.shape[0])


def make_mixture(
    rng: np.random.Generator,
    speech: list[AudioFile],
    noise: list[AudioFile],
    rooms: list[AudioFile],
    recipe: MixtureRecipe,
) -> Mixture:
    """Draw one example."""
    length = int(recipe.segment_seconds * SAMPLE_RATE)
    speed = rng.uniform(*recipe.speed_range)
    raw, speech_max_hz = _speech_segment(
        rng,
        speech,
        int(length * speed) + 1,
        recipe.fullband_speech_share,
        recipe.mid_speech_start_share or 0.0,
    )
    sources = raw[None, :]  # one row: the speech
    if abs(speed - 1.0) > 1e-3:
        sources = np.stack([played_faster(row, speed) for row in sources])
        # played ``speed`` times faster: every frequency, the highest too, times ``speed``
        speech_max_hz = min(speech_max_hz * speed, 23_000.0)
    sources = sources[:, :length]
    if sources.shape[1] < length:
        sources = np.pad(sources, ((0, 0), (0, length - sources.shape[1])))
    if rng.random() < recipe.eq_share:
        sources = random_eq(rng, sources)
    raw = sources[0]

    if rng.random() < recipe.room_share:
        rir = _room_response(rng, rooms, recipe)
        early = rir[: int(EARLY_REFLECTIONS_SECONDS * SAMPLE_RATE)].copy()
        fade = np.hanning(2 * 96)[96:]  # 2 ms fade so the cut adds no click
        early[-96:] *= fade
        reverberant = fftconvolve(raw, rir)[:length]
        target = fftconvolve(raw, early)[:length]
    else:
        reverberant = raw
        target = raw.copy()

    speech_power = np.mean(reverberant**2) + 1e-12
    noise_total = np.zeros(length)
    if rng.random() >= recipe.noise_free_share:
        parts = []
        augmentation = recipe.noise_augmentation
        if rng.random() < recipe.real_noise_share and noise:
            parts.append(_noise_segment(rng, noise, length, augmentation))
            if augmentation is not None and rng.random() < augmentation.second_noise_share:
                parts.append(_noise_segment(rng, noise, length, augmentation))
        events = recipe.noise_events
        if events is not None and rng.random() < events.share:
            parts.append(noise_event(rng, speech, length, events))
        if rng.random() < recipe.synthetic_noise_share or not parts:
            parts.append(synthetic_noise(rng, length))
        for part in parts:
            noise_total += part / (np.sqrt(np.mean(part**2)) + 1e-12) * rng.uniform(0.3, 1.0)
        snr_db = rng.uniform(*recipe.snr_db_range)
        noise_total *= np.sqrt(
            speech_power / (np.mean(noise_total**2) + 1e-12) / 10 ** (snr_db / 10)
        )
    noisy = reverberant + noise_total

    if rng.random() < recipe.lowpass_share:
        cutoff = rng.uniform(*recipe.lowpass_hz_range)
        noisy = _lowpass(noisy, cutoff)
        target = _lowpass(target, cutoff)
        speech_max_hz = min(speech_max_hz, cutoff)

    level = 10 ** (rng.uniform(*recipe.level_dbfs_range) / 20)
    scale = level / (np.sqrt(np.mean(noisy**2)) + 1e-12)
    peak = np.max(np.abs(noisy)) * scale
    if peak > 0.99:
        scale *= 0.99 / peak
    return Mixture(noisy=noisy * scale, target=target * scale, speech_max_hz=speech_max_hz)
