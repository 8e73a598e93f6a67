"""Classic STOI (Taal et al. 2011) in torch, differentiable in the processed signal (training
only): the intelligibility term of ``model.research.dnsmos_finetune``.

It follows ``pystoi`` step by step (the evaluation's STOI) and takes its constants and its
one-third-octave band matrix from it; only the resampling to 10 kHz differs (an ideal low-pass
in the DFT domain instead of a polyphase filter), so scores agree to about 0.01. Silent frames
are chosen on the clean signal, as in STOI.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from pystoi.utils import thirdoct

from model.differentiable_synthesis import resample_ideal

# the module itself (the package re-exports its function under the same name)
pystoi_stoi = importlib.import_module("pystoi.stoi")

STOI_RATE = pystoi_stoi.FS
FRAME = pystoi_stoi.N_FRAME
HOP = FRAME // 2
EPS = float(np.finfo(np.float64).eps)
CLIP = 10 ** (-pystoi_stoi.BETA / 20)
SEGMENT = pystoi_stoi.N


def _frames(signal: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """pystoi's framing: frames starting at 0, HOP, … while a whole frame and one more sample
    fit (``range(0, len − FRAME, HOP)``)."""
    count = len(range(0, signal.shape[-1] - FRAME, HOP))
    return signal[: (count - 1) * HOP + FRAME].unfold(-1, FRAME, HOP) * window


def _overlap_add(frames: torch.Tensor) -> torch.Tensor:
    out = frames.new_zeros((frames.shape[0] - 1) * HOP + FRAME)
    out[: frames.shape[0] * HOP] += frames[:, :HOP].reshape(-1)
    out[HOP : HOP + frames.shape[0] * HOP] += frames[:, HOP:].reshape(-1)
    return out


class Stoi(torch.nn.Module):
    """``stoi(clean, processed, rate)`` for one pair of 1-D signals; differentiable in
    ``processed``."""

    bands: torch.Tensor  # one-third octave band matrix (a buffer)
    window: torch.Tensor  # pystoi's analysis window (a buffer)

    def __init__(self) -> None:
        super().__init__()
        bands, _ = thirdoct(STOI_RATE, pystoi_stoi.NFFT, pystoi_stoi.NUMBAND, pystoi_stoi.MINFREQ)
        self.register_buffer("bands", torch.from_numpy(bands))
        window = np.hanning(FRAME + 2)[1:-1]
        self.register_buffer("window", torch.from_numpy(window))

    def forward(self, clean: torch.Tensor, processed: torch.Tensor, rate: int) -> torch.Tensor:
        """The STOI of ``processed`` against ``clean`` (both at ``rate``)."""
        x = resample_ideal(clean.double(), rate, STOI_RATE)
        y = resample_ideal(processed.double(), rate, STOI_RATE)
        x_frames, y_frames = _frames(x, self.window), _frames(y, self.window)
        energy_db = 20 * torch.log10(torch.linalg.norm(x_frames, dim=1) + EPS)
        speech = (energy_db.max() - pystoi_stoi.DYN_RANGE - energy_db) < 0
        if int(speech.sum()) <= SEGMENT:
            raise ValueError(f"too little speech for STOI (needs over {SEGMENT} speech frames)")
        x = _overlap_add(x_frames[speech])
        y = _overlap_add(y_frames[speech])
        x_bands = self._band_magnitudes(x)
        y_bands = self._band_magnitudes(y)
        # segments of SEGMENT frames: [segments, bands, SEGMENT]
        x_seg = x_bands.unfold(1, SEGMENT, 1).transpose(0, 1)
        y_seg = y_bands.unfold(1, SEGMENT, 1).transpose(0, 1)
        scale = torch.linalg.norm(x_seg, dim=2, keepdim=True) / (
            torch.linalg.norm(y_seg, dim=2, keepdim=True) + EPS
        )
        y_seg = torch.minimum(y_seg * scale, x_seg * (1 + CLIP))
        y_seg = y_seg - y_seg.mean(dim=2, keepdim=True)
        x_seg = x_seg - x_seg.mean(dim=2, keepdim=True)
        y_seg = y_seg / (torch.linalg.norm(y_seg, dim=2, keepdim=True) + EPS)
        x_seg = x_seg / (torch.linalg.norm(x_seg, dim=2, keepdim=True) + EPS)
        return (x_seg * y_seg).sum() / (x_seg.shape[0] * x_seg.shape[1])

    def _band_magnitudes(self, signal: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(_frames(signal, self.window), n=pystoi_stoi.NFFT)
        power = spectrum.real**2 + spectrum.imag**2
        return torch.sqrt(self.bands @ power.T + 1e-20)  # [bands, frames]
