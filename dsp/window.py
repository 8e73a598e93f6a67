"""The 20 ms power-complementary analysis/synthesis window."""

import numpy as np

from dsp.constants import WINDOW_SAMPLES


def vorbis_window(length: int = WINDOW_SAMPLES) -> np.ndarray:
    """Vorbis window: w[n]² + w[n + length/2]² = 1, so analysis·synthesis overlap-adds to one."""
    phase = np.pi * (np.arange(length) + 0.5) / length
    return np.sin(0.5 * np.pi * np.sin(phase) ** 2).astype(np.float64)
