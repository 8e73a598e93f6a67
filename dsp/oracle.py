"""Oracle targets from a clean/noisy pair: the band gains g_b and comb strengths r_b that the
network learns to predict.

g_b = sqrt(E_clean / E_noisy) clipped to [0, 1]. The strength r_b mixes the noisy spectrum X
with its comb-filtered version P (scaled to X's band energy) so that the mix reaches the clean
signal's pitch coherence q_y. Writing X = q_x·u + sqrt(1 − q_x²)·v with u along P, the mix
(1 − r)·X + r·P has coherence q_y with P when α = r / (1 − r) satisfies
q_x + α = q_y·sqrt((1 − q_x²) / (1 − q_y²)).
The comb only passes a fraction η = Σ w_k² of white noise, so it can at best raise a
periodic-energy share q_x² to q_p² = q_x² / (q_x² + η·(1 − q_x²)). Where the clean coherence
lies beyond that, r = 1 and the band gain is lowered by the fourth root of the noise-to-
harmonic excess, splitting the difference between residual noise and speech loss.
"""

import numpy as np
from numba import njit

from dsp.analysis import comb_spectrum, push_samples, windowed_spectrum
from dsp.bands import band_cross, band_energy
from dsp.constants import LOOKAHEAD_SAMPLES, NUM_BANDS, WINDOW_SAMPLES
from dsp.features import coherence
from dsp.state import I_PERIOD_SYNTH, I_SIDE_TAPS_SYNTH, EnhancerState

SILENT_BAND_ENERGY = 1e-10


@njit(cache=True, nogil=True)
def oracle_band_targets(
    energy_noisy: float,
    energy_clean: float,
    coherence_noisy: float,
    coherence_clean: float,
    comb_noise_gain: float,
) -> tuple[float, float]:
    """(g_b, r_b) for one band."""
    if energy_noisy <= SILENT_BAND_ENERGY:
        return 1.0, 0.0
    gain = min(1.0, np.sqrt(energy_clean / energy_noisy))
    q_x = max(0.0, coherence_noisy)
    q_y = max(0.0, min(0.999, coherence_clean))
    if q_y <= q_x:
        return gain, 0.0
    alpha = q_y * np.sqrt((1.0 - q_x * q_x) / (1.0 - q_y * q_y)) - q_x
    strength = min(1.0, max(0.0, alpha / (1.0 + alpha)))
    share_x = q_x * q_x
    share_reachable = share_x / (share_x + comb_noise_gain * (1.0 - share_x) + 1e-12)
    share_clean = q_y * q_y
    if share_clean > share_reachable:
        strength = 1.0
        excess = ((1.0 - share_clean) * share_reachable) / (
            share_clean * (1.0 - share_reachable) + 1e-12
        )
        gain *= np.sqrt(np.sqrt(max(0.0, min(1.0, excess))))
    return gain, strength


@njit(cache=True, nogil=True)
def oracle_hop(
    state: EnhancerState,
    clean_history: np.ndarray,
    clean_hop: np.ndarray,
    clean_spectrum: np.ndarray,
    clean_comb_spectrum: np.ndarray,
    bands: np.ndarray,
    gains_out: np.ndarray,
    strengths_out: np.ndarray,
) -> None:
    """Targets for the synthesis frame of the last ``analyze_hop`` on the noisy state.

    The clean hop is pushed in lockstep into ``clean_history``; the clean frame is comb
    filtered with the noisy signal's pitch, which is what the enhancer will use.
    ``bands`` is a [3, NUM_BANDS] scratch.
    """
    push_samples(clean_history, clean_hop)
    n = clean_history.shape[0]
    start = n - WINDOW_SAMPLES - LOOKAHEAD_SAMPLES
    period = state.ints[I_PERIOD_SYNTH]
    side = state.ints[I_SIDE_TAPS_SYNTH]
    windowed_spectrum(state, clean_history, start, clean_spectrum)
    comb_spectrum(state, clean_history, start, period, side, 0, clean_comb_spectrum)
    band_energy(clean_spectrum, state.bin_band, state.bin_frac, bands[0])
    band_energy(clean_comb_spectrum, state.bin_band, state.bin_frac, bands[1])
    band_cross(clean_spectrum, clean_comb_spectrum, state.bin_band, state.bin_frac, bands[2])
    noise_gain = state.comb_noise[side]
    for b in range(NUM_BANDS):
        q_x = coherence(state.synth_cross_xp[b], state.synth_energy_x[b], state.synth_energy_p[b])
        q_y = coherence(bands[2, b], bands[0, b], bands[1, b])
        gains_out[b], strengths_out[b] = oracle_band_targets(
            state.synth_energy_x[b], bands[0, b], q_x, q_y, noise_gain
        )
