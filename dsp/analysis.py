"""Per-hop analysis: push 10 ms of input, track pitch, compute the newest frame's features and
prepare the synthesis frame (two hops back) for gain application.

Frame τ is the 960-sample window ending with the newest hop. Its features are causal. The
synthesis frame t = τ − 2 gets its pitch decided with frames t+1 and t+2 in view and a
symmetric comb filter whose future taps end at the newest sample.
"""

import numpy as np
from numba import njit

from dsp.bands import band_cross, band_energy
from dsp.comb import comb_filter, comb_side_taps
from dsp.constants import HOP_SAMPLES, LOOKAHEAD_SAMPLES, WINDOW_SAMPLES
from dsp.features import write_features
from dsp.fft import forward_fft
from dsp.pitch import (
    DECIMATION,
    MIN_LAG,
    dc_block,
    decimate,
    hop_correlations,
    normalised_correlations,
    refine_period,
    viterbi_step,
)
from dsp.state import (
    F_RHO_NOW,
    F_RHO_SYNTH,
    HISTORY_FRAMES,
    I_FRAME,
    I_NONFINITE,
    I_PERIOD_NOW,
    I_PERIOD_SYNTH,
    I_SIDE_TAPS_SYNTH,
    PITCH_WINDOW_DECIMATED,
    SPECTRUM_RING,
    EnhancerState,
)

# Input samples are clamped to ±SAMPLE_LIMIT (well above full scale) so energies stay finite.
SAMPLE_LIMIT = 8.0


@njit(cache=True, nogil=True)
def shift_in(buffer: np.ndarray, count: int) -> None:
    """Drop the oldest ``count`` samples; the newest ``count`` slots are then overwritten."""
    n = buffer.shape[0]
    for i in range(n - count):  # forward copy: safe for this overlap, and allocates nothing
        buffer[i] = buffer[i + count]


@njit(cache=True, nogil=True)
def windowed_spectrum(
    state: EnhancerState, signal: np.ndarray, start: int, out: np.ndarray
) -> None:
    """out = FFT of window · signal[start : start + 960]."""
    frame = state.frame
    window = state.window
    for i in range(WINDOW_SAMPLES):
        frame[i] = window[i] * signal[start + i]
    forward_fft(state, frame, out)


@njit(cache=True, nogil=True)
def comb_spectrum(
    state: EnhancerState,
    signal: np.ndarray,
    start: int,
    period: int,
    side_taps: int,
    delay: int,
    out: np.ndarray,
) -> None:
    """Spectrum of the windowed comb-filtered frame that starts at signal[start]."""
    comb_filter(
        signal,
        start,
        WINDOW_SAMPLES,
        period,
        side_taps,
        state.comb_weights,
        delay,
        state.comb_frame,
    )
    windowed_spectrum(state, state.comb_frame, 0, out)


@njit(cache=True, nogil=True)
def push_samples(history: np.ndarray, hop: np.ndarray) -> int:
    """Append a sanitised hop (non-finite → 0, clamped); returns how many were non-finite."""
    n = history.shape[0]
    shift_in(history, HOP_SAMPLES)
    bad = 0
    for i in range(HOP_SAMPLES):
        x = float(hop[i])
        if not np.isfinite(x):
            x = 0.0
            bad += 1
        history[n - HOP_SAMPLES + i] = max(-SAMPLE_LIMIT, min(SAMPLE_LIMIT, x))
    return bad


@njit(cache=True, nogil=True)
def push_input(state: EnhancerState, hop: np.ndarray) -> None:
    """Append a sanitised hop to the history and its DC-blocked copy."""
    history = state.history
    n = history.shape[0]
    state.ints[I_NONFINITE] += push_samples(history, hop)
    shift_in(state.highpassed, HOP_SAMPLES)
    dc_block(history[n - HOP_SAMPLES :], state.dc_state, state.highpassed, n - HOP_SAMPLES)


@njit(cache=True, nogil=True)
def track_pitch(state: EnhancerState) -> None:
    """Update the pitch trajectory with the newest hop; set both frames' periods."""
    n = state.history.shape[0]
    new_decimated = HOP_SAMPLES // DECIMATION
    dec = state.decimated
    shift_in(dec, new_decimated)
    decimate(state.highpassed, n, new_decimated, state.lowpass, dec, dec.shape[0] - new_decimated)
    hop_correlations(dec, new_decimated, state.corr_now)
    for li in range(state.corr_now.shape[0]):  # 20 ms window = this hop + the previous one
        state.corr_window[li] = state.corr_now[li] + state.corr_prev[li]
        state.corr_prev[li] = state.corr_now[li]
    normalised_correlations(
        dec, PITCH_WINDOW_DECIMATED, state.corr_window, state.decimated_cumsum, state.rho
    )
    frame = state.ints[I_FRAME]
    row = frame % HISTORY_FRAMES
    best_now = viterbi_step(
        state.rho, state.log2_lags, state.scores, state.new_scores, state.backpointers[row]
    )
    # Read the best trajectory back two frames: its lag at t = τ − 2.
    lag_prev = state.backpointers[row, best_now]
    lag_synth = state.backpointers[(frame - 1) % HISTORY_FRAMES, lag_prev]
    period, rho = refine_period(state.highpassed, n, WINDOW_SAMPLES, MIN_LAG + best_now)
    state.ints[I_PERIOD_NOW] = period
    state.floats[F_RHO_NOW] = rho
    period, rho = refine_period(
        state.highpassed, n - LOOKAHEAD_SAMPLES, WINDOW_SAMPLES, MIN_LAG + lag_synth
    )
    state.ints[I_PERIOD_SYNTH] = period
    state.floats[F_RHO_SYNTH] = rho


@njit(cache=True, nogil=True)
def analyze_hop(state: EnhancerState, hop: np.ndarray) -> None:
    """Consume one hop: features of the newest frame into ``state.features``, and the synthesis
    frame's comb spectrum and band statistics into ``state.synth_*``."""
    push_input(state, hop)
    track_pitch(state)
    n = state.history.shape[0]
    frame = state.ints[I_FRAME]
    newest_start = n - WINDOW_SAMPLES
    spectrum = state.spectra[frame % SPECTRUM_RING]
    windowed_spectrum(state, state.history, newest_start, spectrum)

    # Features: causal comb (all taps in the past) on the newest frame.
    period = state.ints[I_PERIOD_NOW]
    side = comb_side_taps(period, state.comb_weights.shape[0] - 1)
    comb_spectrum(
        state, state.history, newest_start, period, side, side * period, state.comb_spectrum
    )
    band_energy(spectrum, state.bin_band, state.bin_frac, state.band_scratch_a)
    band_energy(state.comb_spectrum, state.bin_band, state.bin_frac, state.band_scratch_b)
    band_cross(spectrum, state.comb_spectrum, state.bin_band, state.bin_frac, state.band_scratch_c)
    write_features(
        state.band_scratch_a,
        state.band_scratch_b,
        state.band_scratch_c,
        period,
        state.floats[F_RHO_NOW],
        state.features,
    )

    # Synthesis frame: symmetric comb whose future taps end at the newest sample.
    synth_spectrum = state.spectra[(frame - 2) % SPECTRUM_RING]
    period = state.ints[I_PERIOD_SYNTH]
    side = comb_side_taps(period, state.comb_weights.shape[0] - 1)
    state.ints[I_SIDE_TAPS_SYNTH] = side
    comb_spectrum(
        state,
        state.history,
        newest_start - LOOKAHEAD_SAMPLES,
        period,
        side,
        0,
        state.synth_comb_spectrum,
    )
    band_energy(synth_spectrum, state.bin_band, state.bin_frac, state.synth_energy_x)
    band_energy(state.synth_comb_spectrum, state.bin_band, state.bin_frac, state.synth_energy_p)
    band_cross(
        synth_spectrum,
        state.synth_comb_spectrum,
        state.bin_band,
        state.bin_frac,
        state.synth_cross_xp,
    )
    state.ints[I_FRAME] = frame + 1
