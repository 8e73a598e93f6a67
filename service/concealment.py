"""Opus decoding that fills lost packets with audio instead of silence.

aiortc decodes Opus with PyAV, whose libopus wrapper has no way to ask for packet-loss
concealment (a zero-length packet means end of stream to FFmpeg) nor for in-band FEC. This
decoder calls libopus itself (through ``opuslib_next``). The receive buffer
(:mod:`service.jitter`) tells it how many packets it gave up right before the packet it
releases; for those it decodes, in order, Opus's PLC for all but the last, then the last from
the FEC (LBRR) data the sender put in the packet at hand (Chromium does, ``useinbandfec=1``;
libopus falls back to PLC when the packet carries none), then the packet itself. The
concealed frames carry the timestamps of the lost packets and a :class:`Concealed` as
``opaque`` (test with :func:`is_concealed`). The relay itself decodes where it enhances, with
:meth:`ConcealingOpusDecoder.decode_pcm` (samples, no frames); aiortc's decoder thread uses
:meth:`ConcealingOpusDecoder.decode`.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import av
import numpy as np
import opuslib_next
import opuslib_next.api
import opuslib_next.api.decoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from av.frame import Frame

from service.audio_frames import FRAME_SAMPLES, SAMPLE_RATE, TIME_BASE

log = logging.getLogger(__name__)

MAX_CONCEALED_PACKETS = 2  # longer losses: the rest stays silent (bounded clumps downstream)
MAX_PACKET_SAMPLES = 5760  # 120 ms, the longest Opus packet
# libopus itself (opuslib_next's ``decode`` copies its output through a Python list of ints),
# holding the GIL: on a busy core, a 20 µs call costs less than handing the GIL to the event
# loop and waiting up to the switch interval (5 ms) to get it back
_LIBOPUS = ctypes.PyDLL(opuslib_next.api.libopus._name)
_LIBOPUS_DECODE = _LIBOPUS.opus_decode
_LIBOPUS_DECODE.argtypes = opuslib_next.api.decoder.libopus_decode.argtypes
_LIBOPUS_DECODE.restype = opuslib_next.api.decoder.libopus_decode.restype
_LIBOPUS_SAMPLES = _LIBOPUS.opus_decoder_get_nb_samples
_LIBOPUS_SAMPLES.argtypes = opuslib_next.api.decoder.libopus_get_nb_samples.argtypes
_LIBOPUS_SAMPLES.restype = opuslib_next.api.decoder.libopus_get_nb_samples.restype


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


@dataclass(frozen=True)
class DecodedAudio:
    """One packet's (or one lost packet's) mono 48 kHz samples."""

    pcm: np.ndarray  # int16
    timestamp: int
    concealed: bool


class ConcealingOpusDecoder(Decoder):
    """Opus to mono s16 at 48 kHz, with PLC and FEC for the packets lost before each."""

    def __init__(self) -> None:
        self._opus = opuslib_next.Decoder(SAMPLE_RATE, 1)
        self._pcm = np.empty(MAX_PACKET_SAMPLES, dtype=np.int16)
        self._pcm_pointer = self._pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))
        self._packet_samples = FRAME_SAMPLES  # duration of the last good packet
        self.concealed = 0
        self.corrupt = 0

    def decode(self, encoded_frame: JitterFrame) -> list[Frame]:
        """Frames for the lost packets before ``encoded_frame`` (if any), then for it."""
        return [self._frame(audio) for audio in self.decode_pcm(encoded_frame)]

    def decode_pcm(self, encoded_frame: JitterFrame) -> list[DecodedAudio]:
        """Audio for the lost packets before ``encoded_frame`` (if any), then for it."""
        data = encoded_frame.data
        size = self._samples_in(data)
        lost_before = encoded_frame.lost_before if isinstance(encoded_frame, ReleasedFrame) else 0
        lost = min(lost_before, MAX_CONCEALED_PACKETS)
        decoded: list[DecodedAudio] = []
        for index in range(lost):
            duration = size or self._packet_samples
            use_fec = index == lost - 1 and size > 0
            timestamp = encoded_frame.timestamp - (lost - index) * duration
            decoded.append(self._conceal(duration, timestamp, data if use_fec else None))
        if size == 0:
            log.debug("undecodable Opus packet of %d bytes: concealed", len(data))
            self.corrupt += 1  # not decodable: conceal it too, the stream goes on
            decoded.append(self._conceal(self._packet_samples, encoded_frame.timestamp, None))
            return decoded
        try:
            pcm = self._decode(data, size, fec=False)
        except opuslib_next.OpusError:
            self.corrupt += 1
            decoded.append(self._conceal(size, encoded_frame.timestamp, None))
            return decoded
        self._packet_samples = size
        decoded.append(DecodedAudio(pcm, encoded_frame.timestamp, concealed=False))
        return decoded

    def _decode(self, data: bytes, samples: int, fec: bool) -> np.ndarray:
        """libopus's ``opus_decode`` into the reused buffer; a copy of its output (b"": PLC)."""
        result = _LIBOPUS_DECODE(
            self._opus.decoder_state, data, len(data), self._pcm_pointer, samples, int(fec)
        )
        if result < 0:
            raise opuslib_next.OpusError(result)
        return self._pcm[:result].copy()

    def _samples_in(self, data: bytes) -> int:
        """Samples per channel in the packet ``data``; 0 if it is not a valid Opus packet."""
        size = _LIBOPUS_SAMPLES(self._opus.decoder_state, data, len(data))  # < 0: an error
        return size if 0 < size <= MAX_PACKET_SAMPLES else 0

    def _conceal(self, samples: int, timestamp: int, next_packet: bytes | None) -> DecodedAudio:
        """``samples`` of audio for a lost packet: FEC from ``next_packet`` if given, else PLC."""
        try:
            if next_packet is not None:
                pcm = self._decode(next_packet, samples, fec=True)
            else:
                pcm = self._decode(b"", samples, fec=False)
        except opuslib_next.OpusError:  # FEC from a damaged packet: plain PLC instead
            pcm = self._decode(b"", samples, fec=False)
        self.concealed += 1
        return DecodedAudio(pcm, timestamp, concealed=True)

    @staticmethod
    def _frame(audio: DecodedAudio) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(audio.pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = TIME_BASE
        frame.pts = audio.timestamp
        if audio.concealed:
            frame.opaque = Concealed()
        return frame
