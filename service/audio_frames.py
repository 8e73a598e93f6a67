"""Conversion between aiortc's audio frames and the enhancer's mono float samples."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # one 20 ms Opus packet
TIME_BASE = Fraction(1, SAMPLE_RATE)
S16_SCALE = np.float32(1.0 / 32768.0)  # s16 samples to float in [-1, 1)


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """The frame's channels averaged into float32 samples in [-1, 1).

    Accepts packed or planar s16, s32 and float frames; the rate must be 48 kHz (aiortc's Opus
    decoder always delivers 48 kHz).
    """
    if frame.sample_rate != SAMPLE_RATE:
        raise ValueError(f"expected {SAMPLE_RATE} Hz audio, got {frame.sample_rate} Hz")
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        planes = data.reshape(channels, -1)
    else:
        planes = data.reshape(-1, channels).T
    if planes.dtype == np.int16:
        scale = float(S16_SCALE)
    elif planes.dtype == np.int32:
        scale = 1.0 / 2147483648.0
    else:
        scale = 1.0
    mono = planes[0].astype(np.float32)
    for plane in planes[1:]:  # summing planes: several times cheaper than .mean(axis=0)
        mono += plane
    mono *= np.float32(scale / channels)
    return mono


def mono_to_frame(samples: np.ndarray, pts: int | None, channels: int = 1) -> av.AudioFrame:
    """An s16 48 kHz frame from float mono samples (clipped to [-1, 1], NaN as silence);
    ``channels=2`` puts the same samples on both channels."""
    scaled = np.asarray(samples, dtype=np.float32) * np.float32(32767.0)  # a new array
    scaled[np.isnan(scaled)] = 0.0
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    pcm = np.rint(scaled, out=scaled).astype(np.int16)
    data = pcm[None, :] if channels == 1 else np.repeat(pcm, channels)[None, :]
    layout = "mono" if channels == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
    frame.sample_rate = SAMPLE_RATE
    frame.time_base = TIME_BASE
    frame.pts = pts
    return frame
