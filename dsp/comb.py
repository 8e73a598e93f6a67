"""Time-domain comb filter tuned to the pitch period.

p(n) = Σ_{k=−M..M} w_k · x(n − k·T), with Hann-shaped tap weights that sum to one, so every
harmonic of 1/T passes with unit gain while noise between harmonics is cancelled. The number
of taps per side M is as large as the 20 ms look-ahead allows (M·T ≤ 960 samples) and at most
``COMB_MAX_SIDE_TAPS``: the future taps of the synthesis frame never reach past the newest
sample, so the filter adds no delay beyond the look-ahead already budgeted.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsp.constants import LOOKAHEAD_SAMPLES

COMB_MAX_SIDE_TAPS = 4


def comb_weight_table(max_side_taps: int = COMB_MAX_SIDE_TAPS) -> np.ndarray:
    """Row M (1 ≤ M ≤ max) holds the 2M+1 tap weights for k = −M..M, zero-padded."""
    table = np.zeros((max_side_taps + 1, 2 * max_side_taps + 1), dtype=np.float64)
    for side in range(1, max_side_taps + 1):
        k = np.arange(-side, side + 1)
        w = 0.5 + 0.5 * np.cos(np.pi * k / (side + 1))
        table[side, : 2 * side + 1] = w / w.sum()
    table[0, 0] = 1.0  # M = 0: identity
    return table


def comb_noise_gains(weights: np.ndarray) -> np.ndarray:
    """Power gain Σ w_k² of each row: how much white noise survives the filter."""
    return np.sum(weights**2, axis=1)


@njit(cache=True, nogil=True)
def comb_side_taps(period: int, max_side_taps: int) -> int:
    """Taps per side that fit in the look-ahead for this period."""
    side = LOOKAHEAD_SAMPLES // max(period, 1)
    return max(1, min(side, max_side_taps))


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def comb_filter(
    signal: np.ndarray,
    start: int,
    length: int,
    period: int,
    side_taps: int,
    weights: np.ndarray,
    delay: int,
    out: np.ndarray,
) -> None:
    """out[i] = Σ_k w_k · signal[start + i − k·period − delay] for k = −M..M.

    ``delay`` shifts every tap into the past; with delay = M·period the filter is causal
    (used for features, where no future is available). The caller guarantees indices are
    inside ``signal``.
    """
    target = out[:length]
    target[:] = 0.0
    for j in range(2 * side_taps + 1):
        k = j - side_taps
        w = weights[side_taps, j]
        offset = start - k * period - delay
        source = signal[offset : offset + length]
        for i in range(length):
            target[i] += w * source[i]
