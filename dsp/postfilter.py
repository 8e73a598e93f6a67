"""PercepNet's envelope postfilter: deepen the attenuation of bands that stay noisy.

g_w = g·sin(π·g/2) lowers small gains much more than large ones; a global factor then
restores the frame energy, (1 + β)·E0 / (β·E0 + E1), so the postfilter reshapes the envelope
without making the output quieter.
"""

import numpy as np
from numba import njit

POSTFILTER_BETA = 0.02


@njit(cache=True, nogil=True)
def postfilter_gains(gains: np.ndarray, band_energy: np.ndarray, out: np.ndarray) -> None:
    """Write the postfiltered, energy-renormalised band gains into ``out``."""
    energy_before = 0.0
    energy_after = 0.0
    for b in range(gains.shape[0]):
        g = gains[b]
        warped = g * np.sin(0.5 * np.pi * g)
        out[b] = warped
        energy_before += g * g * band_energy[b]
        energy_after += warped * warped * band_energy[b]
    denom = POSTFILTER_BETA * energy_before + energy_after
    if denom <= 1e-20:
        return
    scale = np.sqrt((1.0 + POSTFILTER_BETA) * energy_before / denom)
    for b in range(gains.shape[0]):
        out[b] *= scale
