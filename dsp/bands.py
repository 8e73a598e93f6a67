"""34 ERB-spaced triangular bands with 50 % overlap over 0–20 kHz.

Band b is a triangle rising from centre b−1 to centre b and falling to centre b+1, so at every
bin the two neighbouring bands' weights sum to one. Bins above the last centre (20 kHz) belong
wholly to the last band. Each bin is described by the band whose centre lies at or below it
(``bin_band``) and its fractional position towards the next centre (``bin_frac``), which is
all the kernels need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from dsp.constants import MAX_BAND_HZ, NUM_BANDS, NUM_BINS, SAMPLE_RATE_HZ, WINDOW_SAMPLES

BIN_HZ = SAMPLE_RATE_HZ / WINDOW_SAMPLES  # 50 Hz
MIN_BAND_SPACING_BINS = 2


def hz_to_erb_rate(freq_hz: np.ndarray | float) -> np.ndarray:
    """Glasberg & Moore ERB-rate scale (number of ERBs below ``freq_hz``)."""
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(freq_hz, dtype=np.float64))


def erb_rate_to_hz(erb_rate: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_erb_rate`."""
    return (10.0 ** (np.asarray(erb_rate, dtype=np.float64) / 21.4) - 1.0) / 0.00437


def band_centre_bins() -> np.ndarray:
    """Centre bin of each band: 0 and 20 kHz at the ends, ERB-uniform between, ≥ 2 bins apart."""
    last_bin = int(round(MAX_BAND_HZ / BIN_HZ))
    centres = [0]
    for band in range(1, NUM_BANDS):
        remaining = NUM_BANDS - band
        start_erb = float(hz_to_erb_rate(centres[-1] * BIN_HZ))
        step_erb = (float(hz_to_erb_rate(MAX_BAND_HZ)) - start_erb) / remaining
        ideal = int(round(float(erb_rate_to_hz(start_erb + step_erb)) / BIN_HZ))
        centres.append(max(ideal, centres[-1] + MIN_BAND_SPACING_BINS))
    centres[-1] = last_bin
    return np.array(centres, dtype=np.int64)


@dataclass(frozen=True)
class BandLayout:
    """Per-bin description of the triangular bands."""

    centres: np.ndarray  # int64[NUM_BANDS]
    bin_band: np.ndarray  # int64[NUM_BINS]: lower of the two bands covering the bin
    bin_frac: np.ndarray  # float64[NUM_BINS]: weight of band bin_band+1 (1 − weight of bin_band)


def make_band_layout() -> BandLayout:
    """Build the band layout used by every kernel."""
    centres = band_centre_bins()
    bin_band = np.zeros(NUM_BINS, dtype=np.int64)
    bin_frac = np.zeros(NUM_BINS, dtype=np.float64)
    for band in range(NUM_BANDS - 1):
        lo, hi = centres[band], centres[band + 1]
        bins = np.arange(lo, hi)
        bin_band[bins] = band
        bin_frac[bins] = (bins - lo) / (hi - lo)
    # At and above the last centre: all weight on the last band (band NUM_BANDS-2, frac 1).
    bin_band[centres[-1] :] = NUM_BANDS - 2
    bin_frac[centres[-1] :] = 1.0
    return BandLayout(centres=centres, bin_band=bin_band, bin_frac=bin_frac)


def band_weight_matrix(layout: BandLayout) -> np.ndarray:
    """Dense [NUM_BANDS, NUM_BINS] weights (for tests, plots and training code)."""
    weights = np.zeros((NUM_BANDS, NUM_BINS), dtype=np.float64)
    bins = np.arange(NUM_BINS)
    weights[layout.bin_band, bins] += 1.0 - layout.bin_frac
    weights[layout.bin_band + 1, bins] += layout.bin_frac
    return weights


@njit(cache=True, nogil=True)
def band_energy(
    spectrum: np.ndarray, bin_band: np.ndarray, bin_frac: np.ndarray, out: np.ndarray
) -> None:
    """out[b] = Σ_k w_b(k)·|X(k)|²."""
    out[:] = 0.0
    for k in range(spectrum.shape[0]):
        power = spectrum[k].real * spectrum[k].real + spectrum[k].imag * spectrum[k].imag
        b = bin_band[k]
        out[b] += (1.0 - bin_frac[k]) * power
        out[b + 1] += bin_frac[k] * power


@njit(cache=True, nogil=True)
def band_cross(
    spectrum_a: np.ndarray,
    spectrum_b: np.ndarray,
    bin_band: np.ndarray,
    bin_frac: np.ndarray,
    out: np.ndarray,
) -> None:
    """out[b] = Σ_k w_b(k)·Re(A(k)·conj(B(k)))."""
    out[:] = 0.0
    for k in range(spectrum_a.shape[0]):
        a = spectrum_a[k]
        c = spectrum_b[k]
        cross = a.real * c.real + a.imag * c.imag
        b = bin_band[k]
        out[b] += (1.0 - bin_frac[k]) * cross
        out[b + 1] += bin_frac[k] * cross


@njit(cache=True, nogil=True)
def interpolate_band_gains(
    band_values: np.ndarray, bin_band: np.ndarray, bin_frac: np.ndarray, out: np.ndarray
) -> None:
    """Per-bin values from per-band values by the same triangular weights."""
    for k in range(out.shape[0]):
        b = bin_band[k]
        out[k] = (1.0 - bin_frac[k]) * band_values[b] + bin_frac[k] * band_values[b + 1]
