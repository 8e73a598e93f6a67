"""A multi-resolution compressed-spectrum loss between enhanced and clean audio (torch).

At each STFT size, the mean squared difference of the magnitudes raised to ``compression``
plus the same on the complex spectra with those compressed magnitudes (phase kept), as
DeepFilterNet's spectral loss defines it. It is no acceptance metric and no quality-predictor
network: PESQ-WB, STOI, SI-SDR and DNSMOS stay outside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FFT_SIZES = (512, 1024, 2048)  # 10.7, 21.3 and 42.7 ms at 48 kHz
COMPRESSION = 0.3


def compressed_spectrum(signal: torch.Tensor, fft_size: int, compression: float) -> torch.Tensor:
    """[B, n] → complex [B, bins, frames] with magnitudes raised to ``compression``."""
    window = torch.hann_window(fft_size, device=signal.device, dtype=signal.dtype)
    spectrum = torch.stft(
        signal, fft_size, hop_length=fft_size // 4, window=window, return_complex=True
    )
    magnitude = spectrum.abs().clamp_min(1e-8)
    return spectrum * (magnitude ** (compression - 1.0))


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
