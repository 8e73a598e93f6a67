"""The relay's Opus encoder settings (aiortc hard-codes 96 kb/s stereo at complexity 10).

Every listener gets its own encoder, so this cost grows with participants: the relay encodes
mono (the mix is mono), at a voice bitrate and a moderate complexity, in Opus's restricted
low-delay mode (CELT only: 2.5 ms of look-ahead instead of 6.5 ms, and measured 10–20 ms less
mouth-to-ear delay than the VoIP mode through the relay). Installed process-wide
by :func:`install` (aiortc has no option for it).
"""

from __future__ import annotations

from aiortc import rtcrtpsender
from aiortc.codecs import get_encoder as aiortc_get_encoder
from aiortc.codecs.opus import SAMPLES_PER_FRAME, OpusEncoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import AudioResampler


class RelayOpusEncoder(OpusEncoder):
    """aiortc's Opus encoder with the channel count, bitrate and complexity chosen here."""

    def __init__(
        self, bitrate: int, complexity: int, channels: int, application: str = "lowdelay"
    ) -> None:
        super().__init__()
        layout = "mono" if channels == 1 else "stereo"
        self.codec.layout = layout
        self.codec.bit_rate = bitrate
        self.codec.options = {"application": application, "compression_level": str(complexity)}
        self.resampler = AudioResampler(
            format="s16", layout=layout, rate=48000, frame_size=SAMPLES_PER_FRAME
        )


def install(bitrate: int, complexity: int, channels: int, application: str = "lowdelay") -> None:
    """Make aiortc's senders in this process encode Opus with these settings."""

    def get_encoder(codec: RTCRtpCodecParameters) -> object:
        if codec.mimeType.lower() == "audio/opus":
            return RelayOpusEncoder(bitrate, complexity, channels, application)
        return aiortc_get_encoder(codec)

    rtcrtpsender.get_encoder = get_encoder  # type: ignore[assignment]
