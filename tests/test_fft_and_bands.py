"""FFT exactness and the band layout's invariants."""

import numpy as np

from dsp.bands import (
    BIN_HZ,
    band_cross,
    band_energy,
    band_weight_matrix,
    interpolate_band_gains,
    make_band_layout,
)
from dsp.constants import MAX_BAND_HZ, NUM_BANDS, NUM_BINS
from dsp.fft import irfft960, make_fft_plan, rfft960
from dsp.window import vorbis_window


def _fft_args():
    p = make_fft_plan()
    return (
        p.work_a,
        p.work_b,
        p.radices,
        p.stage_twiddle_offsets,
        p.stage_twiddles,
        p.split_twiddles,
    )


def test_rfft_matches_numpy_and_inverts() -> None:
    rng = np.random.default_rng(0)
    args = _fft_args()
    spectrum = np.zeros(NUM_BINS, dtype=np.complex128)
    back = np.zeros(960)
    for _ in range(5):
        frame = rng.standard_normal(960)
        rfft960(frame, spectrum, *args)
        np.testing.assert_allclose(spectrum, np.fft.rfft(frame), atol=1e-9)
        irfft960(spectrum, back, *args)
        np.testing.assert_allclose(back, frame, atol=1e-12)


def test_window_is_power_complementary() -> None:
    w = vorbis_window()
    np.testing.assert_allclose(w[:480] ** 2 + w[480:] ** 2, 1.0, atol=1e-12)


def test_band_weights_sum_to_one_inside_0_to_20_khz() -> None:
    layout = make_band_layout()
    weights = band_weight_matrix(layout)
    assert weights.shape == (NUM_BANDS, NUM_BINS)
    inside = np.arange(NUM_BINS) * BIN_HZ <= MAX_BAND_HZ
    np.testing.assert_allclose(weights[:, inside].sum(axis=0), 1.0, atol=1e-12)
    assert weights.min() >= 0.0


def test_bands_are_erb_spaced_and_at_least_two_bins_wide() -> None:
    centres = make_band_layout().centres
    assert centres[0] == 0 and centres[-1] * BIN_HZ == MAX_BAND_HZ
    spacing = np.diff(centres)
    assert spacing.min() >= 2
    assert np.all(np.diff(spacing) >= -1)  # widths never shrink with frequency (ERB-like)
    assert spacing[-1] > 10 * spacing[0]


def test_constant_band_gains_interpolate_to_constant() -> None:
    layout = make_band_layout()
    out = np.zeros(NUM_BINS)
    interpolate_band_gains(np.full(NUM_BANDS, 0.37), layout.bin_band, layout.bin_frac, out)
    np.testing.assert_allclose(out, 0.37, atol=1e-12)


def test_band_energy_and_cross_match_dense_weights() -> None:
    layout = make_band_layout()
    weights = band_weight_matrix(layout)
    rng = np.random.default_rng(1)
    a = rng.standard_normal(NUM_BINS) + 1j * rng.standard_normal(NUM_BINS)
    b = rng.standard_normal(NUM_BINS) + 1j * rng.standard_normal(NUM_BINS)
    energy = np.zeros(NUM_BANDS)
    cross = np.zeros(NUM_BANDS)
    band_energy(a, layout.bin_band, layout.bin_frac, energy)
    band_cross(a, b, layout.bin_band, layout.bin_frac, cross)
    np.testing.assert_allclose(energy, weights @ np.abs(a) ** 2, rtol=1e-12)
    np.testing.assert_allclose(cross, weights @ np.real(a * np.conj(b)), rtol=1e-10, atol=1e-12)
