"""Speech presence from the gains: the energy they keep against the noise they remove.

The model's gains split a frame's band energies into what it keeps (g²·E) and what it removes
((1 − g²)·E). The removed part, averaged over about a second, tracks the background noise even
while someone talks (the model removes noise under speech too). A hop whose kept energy comes
near that average holds something the model keeps at the level of the noise or louder: speech,
or a burst of noise the model mistook for it; a silent speaker's residual noise stays 20–40 dB
under it.
"""

import numpy as np
from numba import njit

NOISE_SMOOTHING = 0.99  # per 10 ms hop: the noise average forgets with a 1 s time constant
FLOOR_DB = -100.0  # kept-to-noise ratio reported for a hop that keeps nothing
ENERGY_EPSILON = 1e-20

TRACKER_NOISE = 0  # tracker[0]: running mean of the removed energy
TRACKER_HOPS = 1  # tracker[1]: hops seen since reset (0: the next hop starts the mean)
TRACKER_SIZE = 2


def new_tracker() -> np.ndarray:
    """A reset tracker state for :func:`kept_to_noise_db`."""
    return np.zeros(TRACKER_SIZE, dtype=np.float64)


@njit(cache=True, nogil=True)
def kept_to_noise_db(gains: np.ndarray, band_energy: np.ndarray, tracker: np.ndarray) -> float:
    """Energy the gains keep of one frame, in dB against the running mean of the energy they
    removed up to and including this frame; updates ``tracker``. Gains are read as the
    synthesis reads them: clamped to [0, 1], a non-finite gain passes its band (1)."""
    kept = 0.0
    removed = 0.0
    for b in range(gains.shape[0]):
        g = gains[b]
        if not np.isfinite(g):
            g = 1.0
        g = max(0.0, min(1.0, g))
        energy = band_energy[b]
        kept += g * g * energy
        removed += (1.0 - g * g) * energy
    if tracker[TRACKER_HOPS] == 0.0:
        tracker[TRACKER_NOISE] = removed
    else:
        tracker[TRACKER_NOISE] = (
            NOISE_SMOOTHING * tracker[TRACKER_NOISE] + (1.0 - NOISE_SMOOTHING) * removed
        )
    tracker[TRACKER_HOPS] += 1.0
    if kept <= ENERGY_EPSILON:
        return FLOOR_DB
    return max(FLOOR_DB, 10.0 * np.log10(kept / (tracker[TRACKER_NOISE] + ENERGY_EPSILON)))
