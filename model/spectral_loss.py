"""Spectral losses between enhanced audio and a reference (torch).

``multi_resolution_loss``: at each STFT size, the mean squared difference of the magnitudes
raised to ``compression`` plus the same on the complex spectra with those compressed magnitudes
(phase kept), as DeepFilterNet's spectral loss defines it. ``log_mel_loss``: the mean absolute
difference of log mel power spectrograms below 8 kHz, each clip's floor set relative to its
reference's mean, so residual noise well under the speech weighs by its level in dB, not by its
small share of the energy.
Neither is an acceptance metric or a quality-predictor network: PESQ-WB, STOI, SI-SDR and
DNSMOS stay outside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

from dsp.constants import SAMPLE_RATE_HZ

FFT_SIZES = (512, 1024, 2048)  # 10.7, 21.3 and 42.7 ms at 48 kHz
COMPRESSION = 0.3
MEL_FFT_SIZE = 1024  # 21.3 ms at 48 kHz, a quarter of it between frames
MEL_BANDS = 64
MEL_MAX_HZ = 8_000.0
MEL_FLOOR_DB = -30.0  # each clip's floor, re its reference's mean mel power


def spectrum(signal: torch.Tensor, fft_size: int) -> torch.Tensor:
    """[B, n] → complex STFT [B, bins, frames]: Hann window, a quarter of it between frames."""
    window = torch.hann_window(fft_size, device=signal.device, dtype=signal.dtype)
    return torch.stft(
        signal, fft_size, hop_length=fft_size // 4, window=window, return_complex=True
    )


def compressed_spectrum(signal: torch.Tensor, fft_size: int, compression: float) -> torch.Tensor:
    """[B, n] → complex [B, bins, frames] with magnitudes raised to ``compression``."""
    stft = spectrum(signal, fft_size)
    magnitude = stft.abs().clamp_min(1e-8)
    return stft * (magnitude ** (compression - 1.0))


def multi_resolution_loss(
    enhanced: torch.Tensor,
    clean: torch.Tensor,
    fft_sizes: Sequence[int] = FFT_SIZES,
    compression: float = COMPRESSION,
) -> torch.Tensor:
    """Mean over ``fft_sizes`` of the compressed magnitude and complex spectral errors; both
    signals [B, n], aligned, zero where a clip has ended."""
    total = enhanced.new_zeros(())
    for fft_size in fft_sizes:
        estimate = compressed_spectrum(enhanced, fft_size, compression)
        reference = compressed_spectrum(clean, fft_size, compression)
        magnitude = (estimate.abs() - reference.abs()).pow(2).mean()
        complex_error = (estimate - reference).abs().pow(2).mean()
        total = total + magnitude + complex_error
    return total / len(fft_sizes)


@cache
def mel_filterbank() -> torch.Tensor:
    """[MEL_BANDS, bins] Slaney mel filters over 0–``MEL_MAX_HZ`` for ``MEL_FFT_SIZE``."""
    import librosa

    weights = librosa.filters.mel(
        sr=SAMPLE_RATE_HZ, n_fft=MEL_FFT_SIZE, n_mels=MEL_BANDS, fmin=0.0, fmax=MEL_MAX_HZ
    )
    return torch.from_numpy(weights.astype(np.float32))


def mel_power(signal: torch.Tensor) -> torch.Tensor:
    """[B, n] → mel power spectrogram [B, MEL_BANDS, frames]."""
    return mel_filterbank().to(signal.dtype) @ spectrum(signal, MEL_FFT_SIZE).abs().pow(2)


def log_mel_loss(
    enhanced: torch.Tensor,
    reference: torch.Tensor,
    floor_db: float = MEL_FLOOR_DB,
    active_db: float | None = None,
    lost_weight: float = 0.0,
) -> torch.Tensor:
    """Mean |log10(M_e + f) − log10(M_r + f)| over mel bands and frames, f per clip
    ``floor_db`` under its reference's mean mel power; both signals [B, n], aligned, zero where
    a clip has ended. With ``active_db`` the mean runs only over the frames whose reference
    power is within that many dB of the clip's loudest frame (where the reference is active).
    ``lost_weight`` makes a band under its reference (speech taken away, as opposed to noise
    left in) cost ``1 + lost_weight`` times more."""
    estimate, target = mel_power(enhanced), mel_power(reference.to(enhanced.dtype))
    floor = target.mean(dim=(1, 2), keepdim=True) * 10.0 ** (floor_db / 10.0) + 1e-12
    error = torch.log10(estimate + floor) - torch.log10(target + floor)
    error = error.abs() * (1.0 + lost_weight * (error < 0).to(error.dtype))
    if active_db is None:
        return error.mean()
    frame_power = target.sum(dim=1)  # [B, frames]
    loudest = frame_power.amax(dim=1, keepdim=True)
    active = (frame_power > loudest * 10.0 ** (-active_db / 10.0)).to(error.dtype)
    return (error.mean(dim=1) * active).sum() / active.sum().clamp_min(1.0)
