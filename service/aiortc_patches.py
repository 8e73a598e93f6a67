"""Every replacement of an aiortc or aioice internal, in one place.

aiortc has no hook for the audio jitter buffer its receivers build nor for the decoder they
decode with, and aioice none for the addresses it gathers host candidates on nor for how long
it waits for STUN and TURN servers (5 s per join while a TURN server is down), so these are
module attributes replaced here, once per process, by wrappers that read this module's current
choice (a process may host relays with different settings, as the tests do). The decoder goes
with the buffer: :class:`ConcealingOpusDecoder` conceals the packets the buffer gave up.
aiortc decodes every track in a thread of its own; :func:`take_encoded_frames` has a receiver
hand its encoded frames to the relay instead (which decodes them where it enhances them), and
its decoder thread then ends at once.
Written against aiortc 1.16 and aioice 0.13, the versions pyproject pins;
``tests/test_aiortc_contract.py`` fails when either moves what is replaced here.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

import aioice.ice
from aiortc import RTCRtpReceiver, rtcrtpreceiver
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from service.concealment import ConcealingOpusDecoder
from service.jitter import AudioJitterBuffer

AIORTC_SERIES = "1.16"  # the aiortc minor version these patches were written against
AIOICE_SERIES = "0.13"

_AIORTC_JITTER_BUFFER = JitterBuffer
_AIORTC_GET_DECODER = get_decoder
_AIORTC_DECODER_WORKER = rtcrtpreceiver.decoder_worker
_AIOICE_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses
_AIOICE_GET_COMPONENT_CANDIDATES = aioice.ice.Connection.get_component_candidates

_receive_buffer_depth: int | None = None  # None: aiortc's own audio jitter buffer
_host_addresses: list[str] = []  # empty: every interface, as aioice gathers them
_gather_timeout_seconds: float | None = None  # None: aioice's own 5 s
_applied = False


def _jitter_buffer(
    capacity: int, prefetch: int = 0, is_video: bool = False
) -> JitterBuffer | AudioJitterBuffer:
    """What ``RTCRtpReceiver`` builds for ``JitterBuffer(...)``: ours for audio, when chosen."""
    if is_video or _receive_buffer_depth is None:
        return _AIORTC_JITTER_BUFFER(capacity, prefetch, is_video)
    return AudioJitterBuffer(capacity, _receive_buffer_depth)


def _get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    """What the receiver's decoder thread calls ``get_decoder(codec)``: the concealing Opus
    decoder along with our buffer, aiortc's own otherwise."""
    if _receive_buffer_depth is not None and codec.mimeType.lower() == "audio/opus":
        return ConcealingOpusDecoder()
    return _AIORTC_GET_DECODER(codec)


class EncodedFrameTap:
    """Stands in for a receiver's decoder queue: each ``put((codec, frame))`` of the receiver
    (on the event loop) hands ``frame`` to ``on_frame``; ``put(None)``, the receiver stopping,
    hands ``None``."""

    def __init__(self, on_frame: Callable[[JitterFrame | None], None]) -> None:
        self.on_frame = on_frame

    def put(self, item: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        """What the receiver calls for each encoded frame it reassembled."""
        self.on_frame(None if item is None else item[1])


def _decoder_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue | EncodedFrameTap,
    output_q: asyncio.Queue,
    decode_error: threading.Event,
) -> None:
    """What the receiver's decoder thread runs: nothing for a tapped receiver, else aiortc's."""
    if isinstance(input_q, EncodedFrameTap):
        return
    _AIORTC_DECODER_WORKER(loop, input_q, output_q, decode_error)


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """What aioice's candidate gathering calls: the chosen addresses, else aioice's own."""
    if _host_addresses:
        return list(_host_addresses)
    return _AIOICE_GET_HOST_ADDRESSES(use_ipv4, use_ipv6)


async def _get_component_candidates(
    self: aioice.ice.Connection,
    component: int,
    addresses: list[str],
    timeout: float | None = None,
) -> list[aioice.Candidate]:
    """What ``Connection.gather_candidates`` calls per component: aioice's own, waiting for
    STUN and TURN servers for the chosen time unless the caller names one."""
    if timeout is None:
        timeout = 5 if _gather_timeout_seconds is None else _gather_timeout_seconds
    return await _AIOICE_GET_COMPONENT_CANDIDATES(self, component, addresses, timeout)  # type: ignore[arg-type]


def apply() -> None:
    """Install the replacements (once per process; later calls do nothing)."""
    global _applied
    if _applied:
        return
    rtcrtpreceiver.JitterBuffer = _jitter_buffer  # type: ignore[assignment,misc]
    rtcrtpreceiver.get_decoder = _get_decoder
    rtcrtpreceiver.decoder_worker = _decoder_worker
    aioice.ice.get_host_addresses = _get_host_addresses
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]
    _applied = True


def use_receive_buffer(depth: int | None) -> None:
    """Receivers created from now on buffer audio in :class:`AudioJitterBuffer` with ``depth``
    packets of patience and decode Opus with :class:`ConcealingOpusDecoder`; ``None``: in
    aiortc's own jitter buffer and decoder."""
    global _receive_buffer_depth
    apply()
    _receive_buffer_depth = depth


def restrict_host_addresses(addresses: list[str]) -> None:
    """ICE gathers host candidates on ``addresses`` only, process-wide (aioice has no option);
    an empty list leaves the current choice as it is."""
    global _host_addresses
    apply()
    if addresses:
        _host_addresses = list(addresses)


def limit_gathering(timeout_seconds: float) -> None:
    """ICE waits at most ``timeout_seconds`` for STUN and TURN servers' candidates, process-wide
    (a server that is down then delays a join by that much, not aioice's 5 s)."""
    global _gather_timeout_seconds
    apply()
    _gather_timeout_seconds = timeout_seconds


def count_packets_only(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> None:
    """``receiver`` hands each RTP packet (already decrypted) to ``on_packet`` and nothing
    else: no jitter buffer, no decoding, no RTCP reports (a cheap load-test listener; aiortc
    has no option to receive without decoding)."""

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_packet(packet)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def take_encoded_frames(
    receiver: RTCRtpReceiver, on_frame: Callable[[JitterFrame | None], None]
) -> None:
    """``receiver`` hands ``on_frame`` each encoded frame its jitter buffer releases (on the
    event loop, timestamps mapped from 0, as its decoder would get them) and ``None`` when it
    stops; it decodes nothing and its track delivers nothing. Call it before the receiver
    starts (on the peer connection's ``track`` event)."""
    apply()
    if getattr(receiver, "_RTCRtpReceiver__decoder_thread") is not None:  # noqa: B009
        raise RuntimeError("the receiver has started: its decoder thread has the frames")
    setattr(receiver, "_RTCRtpReceiver__decoder_queue", EncodedFrameTap(on_frame))  # noqa: B010
