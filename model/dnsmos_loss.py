"""DNSMOS P.835 as a differentiable torch module (training only).

The ONNX network that ``speechmos`` bundles (the one the evaluation scores with) is converted
to torch by ``onnx2torch``, so a loss on its OVRL reaches the enhancer's gains. The audio is
prepared as ``speechmos`` prepares it: 16 kHz, clipped to [−1, 1], looped to at least 9.01 s,
then one 9.01-s window scored; the raw outputs go through DNSMOS's own polynomial mapping.
"""

from __future__ import annotations

from pathlib import Path

import torch

METRIC_RATE = 16_000
WINDOW_SAMPLES_16K = 144_160  # DNSMOS P.835 scores 9.01 s at a time
DITHER_RMS = 1e-6  # −120 dBFS
# speechmos's polynomial maps from the network's raw outputs to SIG, BAK and OVRL
SIG_POLY = (-0.08397278, 1.22083953, 0.0052439)
BAK_POLY = (-0.13166888, 1.60915514, -0.39604546)
OVRL_POLY = (-0.06766283, 1.11546468, 0.04602535)


def _poly(coefficients: tuple[float, float, float], x: torch.Tensor) -> torch.Tensor:
    a, b, c = coefficients
    return (a * x + b) * x + c


def dnsmos_model_path() -> Path:
    """The P.835 (SIG, BAK, OVRL) ONNX model inside the installed ``speechmos``."""
    from speechmos import dnsmos

    return Path(dnsmos.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"


def resample_48k_to_16k(signals: torch.Tensor) -> torch.Tensor:
    """[B, n] at 48 kHz → [B, n // 3] at 16 kHz by an ideal low-pass in the DFT domain."""
    n = signals.shape[-1] // 3 * 3
    spectrum = torch.fft.rfft(signals[..., :n])
    return torch.fft.irfft(spectrum[..., : n // 6 + 1], n=n // 3) / 3.0


def dnsmos_window(signal_16k: torch.Tensor, start: int = 0) -> torch.Tensor:
    """One clip's 9.01-s scoring window, looped as ``speechmos`` loops short clips."""
    audio = signal_16k
    while audio.shape[-1] < WINDOW_SAMPLES_16K:
        audio = torch.cat([audio, audio], dim=-1)
    start = min(start, audio.shape[-1] - WINDOW_SAMPLES_16K)
    return audio[..., start : start + WINDOW_SAMPLES_16K]


class DnsmosP835(torch.nn.Module):
    """[B, 144160] 16 kHz windows → (SIG, BAK, OVRL) [B] each, differentiable."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        from onnx2torch import convert

        self.network = convert(str(path or dnsmos_model_path()))
        self.network.requires_grad_(False)
        self.network.eval()

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores of each window, mapped as DNSMOS maps them."""
        # a dither far below any recording's noise floor keeps every spectrogram bin above
        # zero, where DNSMOS's magnitude (a square root) has a finite gradient
        dither = DITHER_RMS * torch.randn_like(windows) if windows.requires_grad else 0.0
        raw = self.network(windows.clamp(-1.0, 1.0) + dither)
        return _poly(SIG_POLY, raw[:, 0]), _poly(BAK_POLY, raw[:, 1]), _poly(OVRL_POLY, raw[:, 2])
