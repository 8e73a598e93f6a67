"""Dev mixtures for evaluation, from the fixed dev split only.

Seed 0's are pinned in ``model/dev_split.json`` (speech, noise, SNR, noise offset, level), so
data additions never move them; other seeds draw, each mixture seeded by
``(seed, snr_db, index)``, so the first N of an SNR are the same whatever ``per_snr`` is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from model.splits import (
    MANIFEST_FILE,
    AudioFile,
    Split,
    has_manifest,
    load_dev_list,
    read_manifest,
    split_named,
)

SAMPLE_RATE = 48_000
DEV_SNRS_DB: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0)
LEVEL_DBFS_RANGE = (-35.0, -15.0)  # RMS of the noisy mixture, re a full-scale ±1 amplitude
PEAK_LIMIT = 0.99  # mixtures above this peak are turned down, never clipped
DATA_DIR_ENV = "PNR_DATA_DIR"
PINNED_SEED = 0  # the dev list pins this seed's mixtures; other seeds draw
DRAWN_PER_SNR = 8


@dataclass(frozen=True)
class DevMixture:
    """One dev example at 48 kHz: ``noisy == clean + noise`` exactly (float64)."""

    name: str
    clean: np.ndarray
    noisy: np.ndarray
    snr_db: float
    speech_path: Path
    noise_path: Path
    source_rate: int  # the manifest's rate: 16 kHz speech has nothing above 8 kHz
    source: str = ""  # the speech's corpus (``speech_source``)


def default_data_dir() -> Path:
    """``$PNR_DATA_DIR``, else ``../shared/data`` beside the checkout."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def require_data_dir(option: Path | None) -> Path:
    """``option``, else the default data folder; FileNotFoundError if it holds no manifest."""
    data_dir = option if option is not None else default_data_dir()
    if not has_manifest(data_dir):
        raise FileNotFoundError(f"no {MANIFEST_FILE} under {data_dir}")
    return data_dir


def read_mono_48k(path: Path) -> np.ndarray:
    """A file as mono float64 at 48 kHz (channels averaged, resampled with soxr)."""
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float64)


def noise_start(noise_samples: int, num_samples: int, rng: np.random.Generator) -> int:
    """A random start for a ``num_samples`` stretch of a ``noise_samples`` recording (any
    sample when the recording is shorter and will be looped)."""
    if noise_samples == 0:
        raise ValueError("empty noise recording")
    if noise_samples >= num_samples:
        return int(rng.integers(0, noise_samples - num_samples + 1))
    return int(rng.integers(0, noise_samples))


def noise_stretch(noise: np.ndarray, num_samples: int, start: int) -> np.ndarray:
    """``num_samples`` of ``noise`` from ``start``, looped when the recording is shorter."""
    if noise.shape[0] == 0:
        raise ValueError("empty noise recording")
    repeats = -(-(start + num_samples) // noise.shape[0])
    return np.tile(noise, repeats)[start : start + num_samples].copy()


class SilentSignalError(ValueError):
    """A mixture's speech or noise stretch is all zeros, so no SNR can be set."""


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, level_dbfs: float
) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) with the noise scaled to ``snr_db`` by total energy, the mixture at
    ``level_dbfs`` RMS, and both turned down together if the mixture would peak above 0.99."""
    clean_energy = float(np.sum(clean**2))
    noise_energy = float(np.sum(noise**2))
    if clean_energy <= 0.0 or noise_energy <= 0.0:
        raise SilentSignalError("speech and noise must both carry energy")
    noise_gain = np.sqrt(clean_energy / noise_energy / 10.0 ** (snr_db / 10.0))
    noisy = clean + noise_gain * noise
    gain = 10.0 ** (level_dbfs / 20.0) / np.sqrt(np.mean(noisy**2))
    peak = gain * max(float(np.max(np.abs(noisy))), float(np.max(np.abs(clean))))
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return gain * clean, gain * noisy


@dataclass(frozen=True)
class MixtureSpec:
    """Everything that makes one dev mixture, by manifest path: what the dev list pins."""

    name: str
    snr_db: float
    speech: str
    noise: str
    noise_start: int  # first sample of the noise stretch, at 48 kHz
    level_dbfs: float


def speech_source(relative_path: str) -> str:
    """The corpus of a speech file: its folder under ``clean/`` (``ravdess``, ``misc``...)."""
    parts = relative_path.split("/")
    return parts[1] if len(parts) > 2 else parts[0]


def speech_from_corpora(
    speech: Sequence[AudioFile], corpora: Sequence[str] | None, side: str
) -> tuple[AudioFile, ...]:
    """The files of ``speech`` from the named corpora (``speech_source`` names; all when None);
    ValueError naming any corpus with no speech on this ``side`` of the split."""
    if corpora is None:
        return tuple(speech)
    if not corpora:
        raise ValueError("no speech source named")
    present = {speech_source(f.relative_path) for f in speech}
    missing = sorted(set(corpora) - present)
    if missing:
        raise ValueError(
            f"no {side} speech from {', '.join(missing)}; "
            f"the {side} corpora are {', '.join(sorted(present))}"
        )
    return tuple(f for f in speech if speech_source(f.relative_path) in corpora)


def speech_pools(speech: Sequence[AudioFile]) -> list[list[AudioFile]]:
    """48 kHz fullband RAVDESS, 16 kHz, and every other speech, each sorted so that draws
    are reproducible: drawn mixtures rotate through them."""

    def pool_of(f: AudioFile) -> int:
        if f.sample_rate == SAMPLE_RATE and f.speaker_id.startswith("ravdess"):
            return 0
        return 1 if f.sample_rate == 16_000 else 2

    ordered = sorted(speech, key=lambda f: f.relative_path)
    return [[f for f in ordered if pool_of(f) == i] for i in range(3)]


def pick_by_speaker(pool: Sequence[AudioFile], rng: np.random.Generator) -> AudioFile:
    """Speaker first, then one of their files, so prolific speakers do not dominate."""
    speakers = sorted({f.speaker_id for f in pool})
    speaker = speakers[int(rng.integers(0, len(speakers)))]
    files = [f for f in pool if f.speaker_id == speaker]
    return files[int(rng.integers(0, len(files)))]


def snr_key(snr_db: float) -> int:
    """A non-negative integer for seeding (SNRs to 0.1 dB, down to −100 dB)."""
    return int(round((snr_db + 100.0) * 10.0))


class AudioCache:
    """Files read once, as mono float64 at 48 kHz."""

    def __init__(self) -> None:
        self._audio: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self._audio:
            self._audio[path] = read_mono_48k(path)
        return self._audio[path]


def draw_spec(
    rng: np.random.Generator,
    speech_pool: Sequence[AudioFile],
    noises: Sequence[AudioFile],
    snr_db: float,
    index: int,
    load: AudioCache,
) -> MixtureSpec:
    """One mixture drawn from ``rng``: speaker, their file, noise file, stretch, level."""
    speech_file = pick_by_speaker(speech_pool, rng)
    noise_file = noises[int(rng.integers(0, len(noises)))]
    start = noise_start(load(noise_file.path).shape[0], load(speech_file.path).shape[0], rng)
    level_dbfs = float(rng.uniform(*LEVEL_DBFS_RANGE))
    return MixtureSpec(
        name=f"snr{snr_db:+05.1f}_{index:02d}_{speech_file.speaker_id}_{noise_file.path.stem}",
        snr_db=float(snr_db),
        speech=speech_file.relative_path,
        noise=noise_file.relative_path,
        noise_start=start,
        level_dbfs=level_dbfs,
    )


def draw_specs(
    split: Split,
    per_snr: int,
    snrs_db: Sequence[float],
    seed: int,
    load: AudioCache,
) -> list[MixtureSpec]:
    """``per_snr`` mixtures at each SNR seeded by ``(seed, snr, index)``, rotating through
    ``speech_pools`` (skipping empty ones): the first N of an SNR do not depend on
    ``per_snr``."""
    pools = [p for p in speech_pools(split.speech) if p]
    noises = sorted(split.noise, key=lambda f: f.relative_path)
    if not pools or not noises:
        raise ValueError("no speech or noise to draw from")
    return [
        draw_spec(
            np.random.default_rng([seed, snr_key(snr_db), index]),
            pools[(position + index) % len(pools)],
            noises,
            snr_db,
            index,
            load,
        )
        for position, snr_db in enumerate(snrs_db)
        for index in range(per_snr)
    ]


def pinned_specs(per_snr: int | None, snrs_db: Sequence[float]) -> list[MixtureSpec]:
    """The dev list's mixtures at ``snrs_db``: the first ``per_snr`` of each (all: None)."""
    pinned = [MixtureSpec(**m) for m in load_dev_list().mixtures]
    chosen = []
    for snr_db in snrs_db:
        at_snr = [m for m in pinned if m.snr_db == snr_db]
        if not at_snr:
            raise ValueError(f"the dev list pins no mixtures at {snr_db:g} dB; draw with --seed")
        if per_snr is not None and per_snr > len(at_snr):
            raise ValueError(
                f"the dev list pins {len(at_snr)} mixtures at {snr_db:g} dB, not {per_snr}; "
                "draw more with --seed"
            )
        chosen += at_snr[:per_snr]
    return chosen


def realise(
    spec: MixtureSpec, data_dir: Path, load: AudioCache, rates: dict[str, int]
) -> DevMixture:
    """The mixture ``spec`` describes, from the files under ``data_dir``."""
    speech = load(data_dir / spec.speech)
    noise = noise_stretch(load(data_dir / spec.noise), speech.shape[0], spec.noise_start)
    clean, noisy = mix_at_snr(speech, noise, spec.snr_db, spec.level_dbfs)
    return DevMixture(
        name=spec.name,
        clean=clean,
        noisy=noisy,
        snr_db=spec.snr_db,
        speech_path=data_dir / spec.speech,
        noise_path=data_dir / spec.noise,
        source_rate=rates[spec.speech],
        source=speech_source(spec.speech),
    )


def build_dev_mixtures(
    data_dir: Path | None = None,
    per_snr: int | None = None,
    snrs_db: Sequence[float] = DEV_SNRS_DB,
    seed: int = PINNED_SEED,
    split: str = "dev",
    speech_sources: Sequence[str] | None = None,
) -> list[DevMixture]:
    """Dev mixtures at 48 kHz. With ``seed`` 0 on the dev split, the first ``per_snr`` (all
    when None) mixtures that ``model/dev_split.json`` pins at each SNR; any other seed (or
    ``split="train"``, a diagnostic that tells a generalisation gap from a fitting gap, never
    a reported score) draws ``per_snr`` (default 8) fresh ones from that side of the split,
    with ``speech_sources`` only from those corpora (``speech_source`` names)."""
    if per_snr is not None and per_snr < 1:
        raise ValueError(f"per_snr must be at least 1, got {per_snr}")
    root = data_dir if data_dir is not None else default_data_dir()
    chosen = split_named(root, split)
    if speech_sources is not None:
        if split == "dev" and seed == PINNED_SEED:
            raise ValueError("the pinned dev mixtures cannot be narrowed to speech sources")
        chosen = replace(chosen, speech=speech_from_corpora(chosen.speech, speech_sources, split))
    load = AudioCache()
    if split == "dev" and seed == PINNED_SEED:
        specs = pinned_specs(per_snr, snrs_db)
    else:
        specs = draw_specs(chosen, per_snr or DRAWN_PER_SNR, snrs_db, seed, load)
    rates = {f.relative_path: f.sample_rate for f in read_manifest(root)}
    return [realise(spec, root, load, rates) for spec in specs]


def measured_snr_db(mixture: DevMixture) -> float:
    """SNR of a mixture by total energy, from its clean and noisy signals."""
    noise = mixture.noisy - mixture.clean
    return float(10.0 * np.log10(np.sum(mixture.clean**2) / np.sum(noise**2)))
