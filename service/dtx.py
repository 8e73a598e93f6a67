"""Discontinuous transmission (DTX) for a listener whose mix is silent, as WebRTC puts it on
the wire for Opus.

libopus's DTX needs its SILK modes, and the relay sends the CELT-only low-delay mode, so the
relay gates the packets itself, with no look-ahead (no delay): the first silent frame goes out
as the encoded silence packet (the decoder's overlap ends at zero), the second as a DTX packet
(the TOC byte alone, a frame of no data: libwebrtc's NetEq takes a packet of two bytes or less
as DTX and plays comfort noise rather than concealing a loss), then nothing, and that pair
again every 400 ms, as libopus refreshes its own DTX (``MAX_CONSECUTIVE_DTX``). The RTP
timestamps keep running across the gap while the sequence numbers stay consecutive, so a
receiver sees a pause, not a loss; speech goes out again at once.
"""

from __future__ import annotations

REFRESH_FRAMES = 20  # 400 ms of 20 ms frames between the silence-and-DTX pairs
ONE_FRAME_CODE_MASK = 0xFC  # TOC: keep config and stereo bits, code 0 (one frame)


def dtx_packet(silence: bytes) -> bytes:
    """The DTX packet of the stream ``silence`` belongs to: its TOC byte, one empty frame."""
    return bytes([silence[0] & ONE_FRAME_CODE_MASK])


class DtxGate:
    """Per listener: which packet, if any, to send for each 20 ms frame."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.silent_frames = 0  # consecutive silent frames so far
        self.skipped_frames = 0  # frames not sent, in all

    def packet(self, payload: bytes, silent: bool) -> bytes | None:
        """What to send for a frame whose packet is ``payload`` (``silent``: the encoded
        silence of a mix of nobody); None: send nothing."""
        if not (silent and self.enabled):
            self.silent_frames = 0
            return payload
        phase = self.silent_frames % REFRESH_FRAMES
        self.silent_frames += 1
        if phase == 0:
            return payload
        if phase == 1:
            return dtx_packet(payload)
        self.skipped_frames += 1
        return None
