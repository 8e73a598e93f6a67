"""Opus decoding that fills lost packets with audio instead of silence.

aiortc decodes Opus with PyAV, whose libopus wrapper has no way to ask for packet-loss
concealment (a zero-length packet means end of stream to FFmpeg) nor for in-band FEC. This
decoder calls libopus itself (through ``opuslib_next``). The receive buffer
(:mod:`service.jitter`) tells it how many packets it gave up right before the packet it
releases; for those it decodes, in order, Opus's PLC for all but the last, then the last from
the FEC (LBRR) data the sender put in the packet at hand (Chromium does, ``useinbandfec=1``;
libopus falls back to PLC when the packet carries none), then the packet itself. The
concealed frames carry the timestamps of the lost packets and a :class:`Concealed` as
``opaque`` (test with :func:`is_concealed`).
"""

from __future__ import annotations

import logging

import av
import numpy as np
import opuslib_next
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from av.frame import Frame

from service.audio_frames import FRAME_SAMPLES, SAMPLE_RATE, TIME_BASE

log = logging.getLogger(__name__)

MAX_CONCEALED_PACKETS = 2  # longer losses: the rest stays silent (bounded clumps downstream)
MAX_PACKET_SAMPLES = 5760  # 120 ms, the longest Opus packet


class Concealed:
    """``AudioFrame.opaque`` of a frame that stands in for a lost packet. One object per frame:
    PyAV files ``opaque`` under ``id(value)`` and forgets it when any frame holding that same
    object is freed, so a shared marker would vanish from the frames that still hold it."""

    __slots__ = ()


def is_concealed(frame: object) -> bool:
    """True for a frame :class:`ConcealingOpusDecoder` made up for a lost packet."""
    return isinstance(getattr(frame, "opaque", None), Concealed)


class ReleasedFrame(JitterFrame):
    """A packet released by the receive buffer, with the packets given up just before it."""

    def __init__(self, data: bytes, timestamp: int, lost_before: int = 0) -> None:
        super().__init__(data=data, timestamp=timestamp)
        self.lost_before = lost_before


class ConcealingOpusDecoder(Decoder):
    """Opus to mono s16 frames at 48 kHz, with PLC and FEC for the packets lost before each."""

    def __init__(self) -> None:
        self._opus = opuslib_next.Decoder(SAMPLE_RATE, 1)
        self._packet_samples = FRAME_SAMPLES  # duration of the last good packet
        self.concealed = 0
        self.corrupt = 0

    def decode(self, encoded_frame: JitterFrame) -> list[Frame]:
        """Frames for the lost packets before ``encoded_frame`` (if any), then for it."""
        data = encoded_frame.data
        size = self._samples_in(data)
        lost_before = encoded_frame.lost_before if isinstance(encoded_frame, ReleasedFrame) else 0
        lost = min(lost_before, MAX_CONCEALED_PACKETS)
        frames: list[Frame] = []
        for index in range(lost):
            duration = size or self._packet_samples
            use_fec = index == lost - 1 and size > 0
            timestamp = encoded_frame.timestamp - (lost - index) * duration
            frames.append(self._conceal(duration, timestamp, data if use_fec else None))
        if size == 0:
            log.debug("undecodable Opus packet of %d bytes: concealed", len(data))
            self.corrupt += 1  # not decodable: conceal it too, the stream goes on
            frames.append(self._conceal(self._packet_samples, encoded_frame.timestamp, None))
            return frames
        try:
            pcm = self._opus.decode(data, size)
        except opuslib_next.OpusError:
            self.corrupt += 1
            frames.append(self._conceal(size, encoded_frame.timestamp, None))
            return frames
        self._packet_samples = size
        frames.append(self._frame(pcm, encoded_frame.timestamp, concealed=False))
        return frames

    def _samples_in(self, data: bytes) -> int:
        """Samples per channel in the packet ``data``; 0 if it is not a valid Opus packet."""
        try:
            size = opuslib_next.api.decoder.get_nb_samples(
                self._opus.decoder_state, data, len(data)
            )
        except opuslib_next.OpusError:
            return 0
        return size if 0 < size <= MAX_PACKET_SAMPLES else 0

    def _conceal(self, samples: int, timestamp: int, next_packet: bytes | None) -> av.AudioFrame:
        """``samples`` of audio for a lost packet: FEC from ``next_packet`` if given, else PLC."""
        try:
            if next_packet is not None:
                pcm = self._opus.decode(next_packet, samples, decode_fec=True)
            else:
                pcm = self._opus.decode(b"", samples)
        except opuslib_next.OpusError:  # FEC from a damaged packet: plain PLC instead
            pcm = self._opus.decode(b"", samples)
        return self._frame(pcm, timestamp, concealed=True)

    def _frame(self, pcm: bytes, timestamp: int, concealed: bool) -> av.AudioFrame:
        data = np.frombuffer(pcm, dtype=np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = TIME_BASE
        frame.pts = timestamp
        if concealed:
            frame.opaque = Concealed()
            self.concealed += 1
        return frame
