"""RNNoise (pyrnnoise's C library) over a whole signal: the evaluation's baseline."""

from __future__ import annotations

import ctypes

import numpy as np

RNNOISE_FRAME_SAMPLES = 480
# Measured by cross-correlation on clicks and voiced bursts (tests/test_evaluate.py re-checks
# it): the pyrnnoise 0.4 library returns its input 960 samples (20 ms, two frames) later.
RNNOISE_DELAY_SAMPLES = 960
RNNOISE_PCM_SCALE = 32_768.0  # RNNoise expects floats on the 16-bit PCM scale


def rnnoise_enhance(noisy: np.ndarray) -> np.ndarray:
    """RNNoise (pyrnnoise's C library, called per 480-sample frame on caller buffers),
    delay-compensated; a fresh state per call."""
    from pyrnnoise.rnnoise import create, destroy, lib

    num_samples = noisy.shape[0]
    num_frames = -(-(num_samples + RNNOISE_DELAY_SAMPLES) // RNNOISE_FRAME_SAMPLES)
    source = np.zeros(num_frames * RNNOISE_FRAME_SAMPLES, dtype=np.float32)
    source[:num_samples] = noisy * RNNOISE_PCM_SCALE
    out = np.empty_like(source)
    float_ptr = ctypes.POINTER(ctypes.c_float)
    frame_bytes = RNNOISE_FRAME_SAMPLES * source.itemsize
    state = create()
    try:
        for i in range(num_frames):
            lib.rnnoise_process_frame(
                state,
                ctypes.cast(out.ctypes.data + i * frame_bytes, float_ptr),
                ctypes.cast(source.ctypes.data + i * frame_bytes, float_ptr),
            )
    finally:
        destroy(state)
    aligned = out[RNNOISE_DELAY_SAMPLES : RNNOISE_DELAY_SAMPLES + num_samples]
    return aligned.astype(np.float64) / RNNOISE_PCM_SCALE
