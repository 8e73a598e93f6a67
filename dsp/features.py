"""The 70 network inputs of one hop, normalised to roughly unit range.

Layout: 34 log band energies, 34 pitch coherences (normalised correlation per band between the
frame and its causal comb-filtered version), log2 of the pitch period relative to 5 ms, and the
pitch correlation.
"""

import numpy as np
from numba import njit

from dsp.constants import NUM_BANDS

# Band energies of float audio in [−1, 1] through the 960-point window: a full-scale tone is
# near 1e5, −90 dBFS noise near 1e-6. Map log10 energy to about [−2.5, 2.5].
LOG_ENERGY_FLOOR = 1e-9
LOG_ENERGY_CENTRE = -1.5
LOG_ENERGY_SCALE = 3.0
PERIOD_REFERENCE_SAMPLES = 240.0  # 200 Hz

FEATURE_ENERGY = slice(0, NUM_BANDS)
FEATURE_COHERENCE = slice(NUM_BANDS, 2 * NUM_BANDS)
FEATURE_PERIOD = 2 * NUM_BANDS
FEATURE_CORRELATION = 2 * NUM_BANDS + 1


@njit(cache=True, nogil=True)
def coherence(cross: float, energy_a: float, energy_b: float) -> float:
    """Normalised correlation in [−1, 1]; 0 when either side is silent."""
    denom = np.sqrt(energy_a * energy_b)
    if denom <= 1e-12:
        return 0.0
    return max(-1.0, min(1.0, cross / denom))


@njit(cache=True, nogil=True)
def write_features(
    energy_x: np.ndarray,
    energy_p: np.ndarray,
    cross_xp: np.ndarray,
    period: int,
    correlation: float,
    out: np.ndarray,
) -> None:
    """Fill ``out`` (70 values) from one frame's band statistics and pitch."""
    for b in range(NUM_BANDS):
        log_energy = np.log10(energy_x[b] + LOG_ENERGY_FLOOR)
        out[b] = (log_energy - LOG_ENERGY_CENTRE) / LOG_ENERGY_SCALE
        out[NUM_BANDS + b] = coherence(cross_xp[b], energy_x[b], energy_p[b])
    out[FEATURE_PERIOD] = np.log2(period / PERIOD_REFERENCE_SAMPLES)
    out[FEATURE_CORRELATION] = correlation
