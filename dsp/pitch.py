"""Pitch tracking: normalised autocorrelation at 12 kHz, a Viterbi-style trajectory search over
past and look-ahead frames, and refinement of the period at the full 48 kHz rate.

Per hop: the newest 10 ms is DC-blocked, low-passed and decimated by 4; the normalised
correlation of the newest 20 ms with itself T samples earlier is computed for every coarse lag
(15–192 at 12 kHz, i.e. 800–62.5 Hz). A dynamic programme accumulates, per lag, the best score
of any trajectory ending there: correlation, minus a small bias per octave of period (so a
period's multiples never win a tie), minus a cost proportional to the log-period jump from the
previous frame, capped by a fixed price for jumping anywhere. The best trajectory is read back two
frames, so the period of frame t is decided with frames t+1 and t+2 in view; the newest frame's
own best end point serves the causal features. Both are refined to one sample at 48 kHz.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsp.constants import MAX_PERIOD_SAMPLES, MIN_PERIOD_SAMPLES

DECIMATION = 4
MIN_LAG = MIN_PERIOD_SAMPLES // DECIMATION  # 15 at 12 kHz
MAX_LAG = MAX_PERIOD_SAMPLES // DECIMATION  # 192 at 12 kHz
NUM_LAGS = MAX_LAG - MIN_LAG + 1
LOWPASS_TAPS = 48
DC_BLOCK_POLE = 0.995  # one-pole high-pass at about 38 Hz
OCTAVE_BIAS = 0.04  # score removed per octave of period: prefers T over 2T on a tie
JUMP_COST_PER_OCTAVE = 1.2  # score removed per octave of change between frames
JUMP_ANYWHERE_COST = 0.35
REFINE_RADIUS = 3  # full-rate lags searched on each side of 4 × the coarse lag
HISTORY_FRAMES = 3  # DP back-pointers kept: t, t+1, t+2
# Reassociation lets LLVM vectorise the correlation sums; NaN/Inf semantics stay strict.
REDUCTION_MATH = {"reassoc", "contract", "nsz"}


@njit(cache=True, nogil=True, fastmath=REDUCTION_MATH, inline="always")
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ a·b over two equal-length contiguous views (vectorised)."""
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


def lowpass_taps(num_taps: int = LOWPASS_TAPS, cutoff_hz: float = 2_500.0) -> np.ndarray:
    """Hann-windowed sinc low-pass used before decimating 48 kHz to 12 kHz."""
    n = np.arange(num_taps) - (num_taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / 48_000.0 * n) * np.hanning(num_taps)
    return h / h.sum()


def log2_lag_table() -> np.ndarray:
    """log2 of every coarse lag, indexed by lag − MIN_LAG."""
    return np.log2(np.arange(MIN_LAG, MAX_LAG + 1, dtype=np.float64))


@njit(cache=True, nogil=True)
def dc_block(hop: np.ndarray, state: np.ndarray, out: np.ndarray, out_start: int) -> None:
    """y(n) = x(n) − x(n−1) + a·y(n−1); state = [x(n−1), y(n−1)]."""
    x_prev = state[0]
    y_prev = state[1]
    for i in range(hop.shape[0]):
        y = hop[i] - x_prev + DC_BLOCK_POLE * y_prev
        x_prev = hop[i]
        if abs(y) < 1e-30:  # keep silence from decaying into denormals
            y = 0.0
        y_prev = y
        out[out_start + i] = y
    state[0] = x_prev
    state[1] = y_prev


@njit(cache=True, nogil=True, fastmath=REDUCTION_MATH)
def decimate(
    signal: np.ndarray, end: int, count: int, taps: np.ndarray, out: np.ndarray, out_start: int
) -> None:
    """Low-pass and keep every 4th sample: ``count`` outputs ending at signal[end − 1]."""
    num_taps = taps.shape[0]  # symmetric, so the reversal of the convolution is moot
    for m in range(count):
        last = end - (count - 1 - m) * DECIMATION - 1
        out[out_start + m] = dot(taps, signal[last - num_taps + 1 : last + 1])


@njit(cache=True, nogil=True, fastmath=REDUCTION_MATH)
def hop_correlations(dec: np.ndarray, hop_len: int, corr_out: np.ndarray) -> None:
    """corr_out[L − MIN_LAG] = Σ over the newest ``hop_len`` samples of d(n)·d(n − L)."""
    end = dec.shape[0]
    newest = dec[end - hop_len : end]
    for li in range(NUM_LAGS):
        lag = MIN_LAG + li
        corr_out[li] = dot(newest, dec[end - hop_len - lag : end - lag])


@njit(cache=True, nogil=True)
def normalised_correlations(
    dec: np.ndarray,
    window_len: int,
    corr_window: np.ndarray,
    cumsum: np.ndarray,
    rho_out: np.ndarray,
) -> None:
    """ρ(L) = c(L) / sqrt(E_now · E_lagged) over the newest ``window_len`` decimated samples."""
    end = dec.shape[0]
    cumsum[0] = 0.0
    for n in range(end):
        cumsum[n + 1] = cumsum[n] + dec[n] * dec[n]
    energy_now = cumsum[end] - cumsum[end - window_len]
    for li in range(NUM_LAGS):
        lag = MIN_LAG + li
        energy_lag = cumsum[end - lag] - cumsum[end - lag - window_len]
        denom = np.sqrt(energy_now * energy_lag)
        rho_out[li] = corr_window[li] / denom if denom > 1e-12 else 0.0


@njit(cache=True, nogil=True)
def viterbi_step(
    rho: np.ndarray,
    log2_lags: np.ndarray,
    scores: np.ndarray,
    new_scores: np.ndarray,
    backpointers: np.ndarray,
) -> int:
    """Advance the trajectory scores by one frame; returns the best lag index now.

    ``backpointers`` is this frame's row: the best predecessor of each lag. The best
    predecessor under a cost linear in |Δ log2 period| is found for all lags at once by a
    forward and a backward sweep (a 1-D distance transform), in O(lags).
    """
    n = rho.shape[0]
    # Forward sweep: best predecessor at or below each lag.
    new_scores[0] = scores[0]
    backpointers[0] = 0
    for li in range(1, n):
        carried = new_scores[li - 1] - JUMP_COST_PER_OCTAVE * (log2_lags[li] - log2_lags[li - 1])
        if carried > scores[li]:
            new_scores[li] = carried
            backpointers[li] = backpointers[li - 1]
        else:
            new_scores[li] = scores[li]
            backpointers[li] = li
    # Backward sweep: best predecessor above each lag.
    above = -1e30
    above_arg = n - 1
    for li in range(n - 1, -1, -1):
        if li < n - 1:
            above -= JUMP_COST_PER_OCTAVE * (log2_lags[li + 1] - log2_lags[li])
        if scores[li] > above:
            above = scores[li]
            above_arg = li
        if above > new_scores[li]:
            new_scores[li] = above
            backpointers[li] = above_arg
    best_prev = 0
    for li in range(n):
        if scores[li] > scores[best_prev]:
            best_prev = li
    anywhere = scores[best_prev] - JUMP_ANYWHERE_COST
    best_now = 0
    for li in range(n):
        if anywhere > new_scores[li]:
            new_scores[li] = anywhere
            backpointers[li] = best_prev
        new_scores[li] += rho[li] - OCTAVE_BIAS * (log2_lags[li] - log2_lags[0])
        if new_scores[li] > new_scores[best_now]:
            best_now = li
    top = new_scores[best_now]
    for li in range(n):
        scores[li] = new_scores[li] - top  # keep scores bounded
    return best_now


@njit(cache=True, nogil=True, fastmath=REDUCTION_MATH)
def refine_period(
    signal: np.ndarray, end: int, window_len: int, coarse_lag: int
) -> tuple[int, float]:
    """Best full-rate period near 4 × ``coarse_lag`` and its normalised correlation."""
    centre = coarse_lag * DECIMATION
    lo = max(MIN_PERIOD_SAMPLES, centre - REFINE_RADIUS)
    hi = min(MAX_PERIOD_SAMPLES, centre + REFINE_RADIUS)
    start = end - window_len
    now = signal[start:end]
    energy_now = dot(now, now)
    best_period = centre
    best_rho = -2.0
    for period in range(lo, hi + 1):
        lagged = signal[start - period : end - period]
        cross = dot(now, lagged)
        energy_lag = dot(lagged, lagged)
        denom = np.sqrt(energy_now * energy_lag)
        rho = cross / denom if denom > 1e-12 else 0.0
        if rho > best_rho:
            best_rho = rho
            best_period = period
    return best_period, max(0.0, min(1.0, best_rho))
