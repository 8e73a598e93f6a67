"""The enhancer's synthesis written in torch, so that a loss on the output audio reaches the
network's gains and strengths (``model.audio_finetune``).

The analysis stays in ``dsp/``: :func:`synthesis_inputs` runs the streaming analysis over a
whole signal and keeps, for every frame, what ``dsp.synthesis.synthesize_hop`` reads (the noisy
spectrum, the comb-filtered spectrum and their band energies). :class:`TorchSynthesis` then does
what ``synthesize_hop`` does with them (strength r·g², comb renormalisation, band gains,
envelope postfilter, inverse FFT, window, overlap-add) over all frames at once; a test holds it
to ``dsp.offline.enhance_signal`` with the same gains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsp.analysis import analyze_hop
from dsp.constants import HOP_SAMPLES, NUM_BANDS, NUM_BINS, WINDOW_SAMPLES
from dsp.offline import padded
from dsp.postfilter import POSTFILTER_BETA
from dsp.state import SPECTRUM_RING, make_state
from dsp.synthesis import ENERGY_EPSILON


@dataclass(frozen=True)
class SynthesisInputs:
    """Per frame i (the window ending with hop i) of one signal: what synthesis reads."""

    noisy_spectrum: np.ndarray  # complex64 [frames, 481]
    comb_spectrum: np.ndarray  # complex64 [frames, 481]
    energy_noisy: np.ndarray  # float32 [frames, NUM_BANDS]
    energy_comb: np.ndarray  # float32 [frames, NUM_BANDS]
    features: np.ndarray  # float32 [frames, NUM_FEATURES], the network's inputs


def synthesis_inputs(noisy: np.ndarray) -> SynthesisInputs:
    """Analyse a mono 48 kHz signal with the streaming ``dsp`` analysis; frame i's synthesis
    inputs are ready once hop i + 2 is in, as in the enhancer."""
    if noisy.ndim != 1:
        raise ValueError(f"expected a mono signal, got shape {noisy.shape}")
    state, arrays = make_state()
    num_frames = -(-noisy.shape[0] // HOP_SAMPLES) + 1
    hops = padded(noisy, num_frames + 2)
    spectra = np.zeros((num_frames, NUM_BINS), dtype=np.complex64)
    combs = np.zeros((num_frames, NUM_BINS), dtype=np.complex64)
    energy_x = np.ones((num_frames, NUM_BANDS), dtype=np.float32)
    energy_p = np.ones((num_frames, NUM_BANDS), dtype=np.float32)
    features = np.zeros((num_frames, arrays["features"].shape[0]), dtype=np.float32)
    for hop_index in range(num_frames + 2):
        analyze_hop(state, hops[hop_index * HOP_SAMPLES : (hop_index + 1) * HOP_SAMPLES])
        if hop_index < num_frames:
            features[hop_index] = arrays["features"]
        frame = hop_index - 2
        if frame >= 0:
            spectra[frame] = arrays["spectra"][frame % SPECTRUM_RING]
            combs[frame] = arrays["synth_comb_spectrum"]
            energy_x[frame] = arrays["synth_energy_x"]
            energy_p[frame] = arrays["synth_energy_p"]
    return SynthesisInputs(spectra, combs, energy_x, energy_p, features)


class TorchSynthesis(torch.nn.Module):
    """Band gains and strengths [B, frames, NUM_BANDS] and :class:`SynthesisInputs` (stacked to
    [B, frames, …] tensors) → the enhanced signals [B, samples], delay-compensated."""

    spread: torch.Tensor  # [NUM_BANDS, bins] triangular band weights (a buffer)
    window: torch.Tensor  # the synthesis window (a buffer)

    def __init__(self) -> None:
        super().__init__()
        _, arrays = make_state()
        bins = np.arange(NUM_BINS)
        spread = np.zeros((NUM_BANDS, NUM_BINS), dtype=np.float32)  # triangular band weights
        spread[arrays["bin_band"], bins] = 1.0 - arrays["bin_frac"]
        spread[arrays["bin_band"] + 1, bins] += arrays["bin_frac"]
        self.register_buffer("spread", torch.from_numpy(spread))
        self.register_buffer("window", torch.from_numpy(arrays["window"].astype(np.float32)))

    def forward(
        self,
        gains: torch.Tensor,
        strengths: torch.Tensor,
        noisy_spectrum: torch.Tensor,
        comb_spectrum: torch.Tensor,
        energy_noisy: torch.Tensor,
        energy_comb: torch.Tensor,
        postfilter: bool = True,
    ) -> torch.Tensor:
        """The output samples of every frame overlap-added (frame i starts at hop i − 1)."""
        gains = gains.clamp(0.0, 1.0)
        strength = strengths.clamp(0.0, 1.0) * gains * gains
        comb_scale = torch.sqrt((energy_noisy + ENERGY_EPSILON) / (energy_comb + ENERGY_EPSILON))
        r_bins = strength @ self.spread
        comb_bins = r_bins * (comb_scale @ self.spread)
        mix = (1.0 - r_bins) * noisy_spectrum + comb_bins * comb_spectrum
        energy_mix = (mix.real**2 + mix.imag**2) @ self.spread.T
        if postfilter:
            warped = gains * torch.sin(0.5 * torch.pi * gains)
            before = (gains * gains * energy_noisy).sum(-1, keepdim=True)
            after = (warped * warped * energy_noisy).sum(-1, keepdim=True)
            denom = POSTFILTER_BETA * before + after
            target = ((1.0 + POSTFILTER_BETA) * before).clamp_min(1e-20)
            scale = torch.sqrt(target / denom.clamp_min(1e-20))
            gains = warped * torch.where(denom > 1e-20, scale, torch.ones_like(scale))
        renorm = torch.sqrt((energy_noisy + ENERGY_EPSILON) / (energy_mix + ENERGY_EPSILON))
        frames = torch.fft.irfft(mix * ((gains * renorm) @ self.spread), n=WINDOW_SAMPLES)
        frames = frames * self.window
        # frame i covers input samples (i − 1)·480 … (i + 1)·480: its second half meets the
        # first half of frame i + 1
        hops = frames[..., HOP_SAMPLES:][:, :-1] + frames[..., :HOP_SAMPLES][:, 1:]
        return hops.reshape(gains.shape[0], -1)


def resample_ideal(signal: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """[..., n] at ``from_rate`` → ``to_rate`` by an ideal low-pass in the DFT domain (the
    signal is cut to a whole number of the two rates' common periods first)."""
    step = from_rate // int(np.gcd(from_rate, to_rate))
    n = signal.shape[-1] // step * step
    n_out = n * to_rate // from_rate
    spectrum = torch.fft.rfft(signal[..., :n])
    return torch.fft.irfft(spectrum[..., : n_out // 2 + 1], n=n_out) * (n_out / n)


def stack_inputs(items: list[SynthesisInputs]) -> dict[str, torch.Tensor]:
    """Zero-pad a batch of :class:`SynthesisInputs` to its longest and stack them."""
    frames = max(item.features.shape[0] for item in items)

    def stacked(name: str) -> torch.Tensor:
        rows = [getattr(item, name) for item in items]
        out = np.zeros((len(rows), frames, *rows[0].shape[1:]), dtype=rows[0].dtype)
        for i, row in enumerate(rows):
            out[i, : row.shape[0]] = row
        return torch.from_numpy(out)

    batch = {
        name: stacked(name)
        for name in ("noisy_spectrum", "comb_spectrum", "energy_noisy", "energy_comb", "features")
    }
    for name in ("energy_noisy", "energy_comb"):  # padded frames: unit energies, no NaN
        for i, item in enumerate(items):
            batch[name][i, item.features.shape[0] :] = 1.0
    return batch
