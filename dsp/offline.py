"""Whole-signal helpers over the streaming enhancer (arrays in, arrays out; no I/O).

Signals are mono 48 kHz float arrays. Outputs are delay-compensated: sample n of the output
lines up with sample n of the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp.analysis import analyze_hop
from dsp.constants import DELAY_SAMPLES, HOP_SAMPLES, NUM_BANDS, NUM_BINS, NUM_FEATURES
from dsp.enhancer import Enhancer, GainSource, ReplayGains
from dsp.oracle import oracle_hop
from dsp.state import HISTORY_SAMPLES, make_state


def hops_for(num_samples: int) -> int:
    """Hops needed to push a signal through and flush its delayed tail."""
    return -(-(num_samples + DELAY_SAMPLES) // HOP_SAMPLES)


def padded(signal: np.ndarray, num_hops: int) -> np.ndarray:
    """Zero-pad a 1-D signal to ``num_hops`` whole hops (float64)."""
    out = np.zeros(num_hops * HOP_SAMPLES, dtype=np.float64)
    out[: signal.shape[0]] = signal
    return out


def enhance_signal(
    signal: np.ndarray,
    gain_source: GainSource | None = None,
    postfilter: bool = True,
    attenuation_limit_db: float | None = None,
) -> np.ndarray:
    """Enhance a whole mono 48 kHz signal; returns float32 of the same length, aligned."""
    if signal.ndim != 1:
        raise ValueError(f"expected a mono signal, got shape {signal.shape}")
    enhancer = Enhancer(
        gain_source, postfilter=postfilter, attenuation_limit_db=attenuation_limit_db
    )
    num_hops = hops_for(signal.shape[0])
    source = padded(signal, num_hops)
    out = np.empty(num_hops * HOP_SAMPLES, dtype=np.float32)
    # In 20 ms packets, as the relay receives them; an odd last hop goes alone.
    for i in range(0, num_hops - 1, 2):
        start = i * HOP_SAMPLES
        enhancer.process_pair(
            source[start : start + HOP_SAMPLES],
            source[start + HOP_SAMPLES : start + 2 * HOP_SAMPLES],
            out[start : start + 2 * HOP_SAMPLES],
        )
    if num_hops % 2:
        last = slice((num_hops - 1) * HOP_SAMPLES, num_hops * HOP_SAMPLES)
        enhancer.process_hop(source[last], out[last])
    return out[DELAY_SAMPLES : DELAY_SAMPLES + signal.shape[0]]


@dataclass(frozen=True)
class OracleTargets:
    """Per-frame network inputs and targets of one clean/noisy pair.

    Row i of every array is frame i (the window ending with hop i). The network reads features
    up to frame i + 2 to predict gains[i] and strengths[i].
    """

    features: np.ndarray  # float32[frames, NUM_FEATURES]
    gains: np.ndarray  # float32[frames, NUM_BANDS]
    strengths: np.ndarray  # float32[frames, NUM_BANDS]


def compute_oracle_targets(noisy: np.ndarray, clean: np.ndarray) -> OracleTargets:
    """Features of ``noisy`` and the oracle gains/strengths that would turn it into ``clean``."""
    if noisy.shape != clean.shape or noisy.ndim != 1:
        raise ValueError(
            f"noisy and clean must be equal-length mono signals, got "
            f"{noisy.shape} and {clean.shape}"
        )
    state, _arrays = make_state()
    features_now = _arrays["features"]
    # Frame i spans hops i − 1 and i, so the last input hop also lives in the frame after it.
    num_frames = -(-noisy.shape[0] // HOP_SAMPLES) + 1
    num_hops = num_frames + 2  # targets of frame i are known once hop i + 2 is in
    noisy_hops = padded(noisy, num_hops)
    clean_hops = padded(clean, num_hops)
    features = np.zeros((num_hops, NUM_FEATURES), dtype=np.float32)
    gains = np.ones((num_hops, NUM_BANDS), dtype=np.float32)
    strengths = np.zeros((num_hops, NUM_BANDS), dtype=np.float32)
    clean_history = np.zeros(HISTORY_SAMPLES)
    clean_spectrum = np.zeros(NUM_BINS, dtype=np.complex128)
    clean_comb = np.zeros(NUM_BINS, dtype=np.complex128)
    band_scratch = np.zeros((3, NUM_BANDS))
    gains_now = np.zeros(NUM_BANDS)
    strengths_now = np.zeros(NUM_BANDS)
    for i in range(num_hops):
        hop = slice(i * HOP_SAMPLES, (i + 1) * HOP_SAMPLES)
        analyze_hop(state, noisy_hops[hop])
        features[i] = features_now
        oracle_hop(
            state,
            clean_history,
            clean_hops[hop],
            clean_spectrum,
            clean_comb,
            band_scratch,
            gains_now,
            strengths_now,
        )
        if i >= 2:
            gains[i - 2] = gains_now
            strengths[i - 2] = strengths_now
    return OracleTargets(
        features=features[:num_frames], gains=gains[:num_frames], strengths=strengths[:num_frames]
    )


def enhance_with_oracle(
    noisy: np.ndarray,
    clean: np.ndarray,
    postfilter: bool = True,
    use_comb: bool = True,
) -> np.ndarray:
    """Enhance ``noisy`` with the oracle targets computed from ``clean`` (the quality ceiling).

    ``use_comb=False`` zeroes the strengths (ablation of the comb filter).
    """
    targets = compute_oracle_targets(noisy, clean)
    strengths = targets.strengths if use_comb else np.zeros_like(targets.strengths)
    return enhance_signal(noisy, ReplayGains(targets.gains, strengths), postfilter=postfilter)
