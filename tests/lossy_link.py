"""An in-memory DTLS-SRTP link that drops RTP packets on a fixed pattern (as aiortc's own tests
do), and a run of one Opus stream over it into the relay's receive path: aiortc's sender and
receiver with the relay's receive buffer and concealing decoder installed. No sockets, no
sleeps, no random drops: what arrives depends only on the pattern."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc import RTCCertificate, RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import get_capabilities
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack

from loadtest.peers import EncodedAudioTrack
from service import aiortc_patches
from service.audio_frames import frame_to_mono
from service.concealment import is_concealed
from service.settings import Settings

TAIL_PACKETS = 3
OPUS = RTCRtpCodecParameters(
    mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111, parameters={}
)
assert any(c.mimeType == OPUS.mimeType for c in get_capabilities("audio").codecs)


class _Pipe:
    """One direction of the link: RTP packets whose index ``lost(i)`` says are dropped."""

    def __init__(self, queue: asyncio.Queue[bytes | None], lost: Callable[[int], bool]) -> None:
        self.queue = queue
        self.lost = lost
        self.rtp_sent = 0
        self.rtp_dropped = 0

    async def send(self, data: bytes) -> None:
        is_rtp = len(data) > 1 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223
        if is_rtp:
            index = self.rtp_sent
            self.rtp_sent += 1
            if self.lost(index):
                self.rtp_dropped += 1
                return
        await self.queue.put(data)


class _IceTransport:
    """What RTCDtlsTransport needs of an ICE transport, over in-memory queues."""

    def __init__(self, rx: asyncio.Queue[bytes | None], tx: _Pipe, role: str) -> None:
        self._rx, self._tx, self.role = rx, tx, role

    async def _recv(self) -> bytes:
        data = await self._rx.get()
        if data is None:
            raise ConnectionError
        return data

    async def _send(self, data: bytes) -> None:
        await self._tx.send(data)

    async def stop(self) -> None:
        await self._rx.put(None)


class _FiniteTrack(EncodedAudioTrack):
    """The encoded signal once, every frame due at once (no pacing), then the end."""

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.frame_index >= len(self.packets):
            raise MediaStreamError
        self._start = -1e9
        return await super().recv()


@dataclass(repr=False)  # asyncio may repr a task's result: thousands of arrays take seconds
class LinkResult:
    """What the receiving side decoded, frame by frame."""

    frames: list[np.ndarray] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    concealed: list[bool] = field(default_factory=list)
    rtp_sent: int = 0
    rtp_dropped: int = 0

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.float32)


def _covered(result: LinkResult, frames: int) -> bool:
    """Has the receiver delivered audio up to the end of the first ``frames`` frames?"""
    return bool(result.timestamps) and result.timestamps[-1] >= (frames - 1) * 960


@contextmanager
def relay_receive_path() -> Iterator[None]:
    """The relay's receive buffer (default patience) and decoder installed in aiortc, restored
    afterwards."""
    before = aiortc_patches._receive_buffer_depth
    aiortc_patches.use_receive_buffer(Settings().jitter_buffer_packets)
    try:
        yield
    finally:
        aiortc_patches.use_receive_buffer(before)


async def send_over_lossy_link(
    signal: np.ndarray, lost: Callable[[int], bool], fec_loss_percent: int = 0
) -> LinkResult:
    """Send ``signal`` as Opus (unpaced) from an aiortc sender to an aiortc receiver over an
    in-memory DTLS-SRTP link that drops the RTP packets ``lost`` picks; collect what the
    receiver's track delivers."""
    a_to_b: asyncio.Queue[bytes | None] = asyncio.Queue()
    b_to_a: asyncio.Queue[bytes | None] = asyncio.Queue()
    uplink = _Pipe(a_to_b, lost)
    ice_a = _IceTransport(b_to_a, uplink, "controlling")
    ice_b = _IceTransport(a_to_b, _Pipe(b_to_a, lambda _: False), "controlled")
    dtls_a = RTCDtlsTransport(ice_a, [RTCCertificate.generateCertificate()])  # type: ignore[arg-type]
    dtls_b = RTCDtlsTransport(ice_b, [RTCCertificate.generateCertificate()])  # type: ignore[arg-type]
    await asyncio.gather(
        dtls_a.start(dtls_b.getLocalParameters()), dtls_b.start(dtls_a.getLocalParameters())
    )
    tail = np.zeros(TAIL_PACKETS * 960, np.float32)  # flushes the last packets of the signal
    track = _FiniteTrack(np.concatenate((signal, tail)), fec_loss_percent=fec_loss_percent)
    packets = len(track.packets)
    receiver = RTCRtpReceiver("audio", dtls_b)
    receiver._track = RemoteStreamTrack(kind="audio")
    await receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS]))
    sender = RTCRtpSender(track, dtls_a)
    result = LinkResult()
    try:
        await sender.send(RTCRtpSendParameters(codecs=[OPUS]))
        wanted = packets - TAIL_PACKETS
        while not _covered(result, wanted):
            frame = await asyncio.wait_for(receiver.track.recv(), timeout=30.0)
            assert isinstance(frame, av.AudioFrame) and frame.pts is not None
            result.frames.append(frame_to_mono(frame))
            result.timestamps.append(int(frame.pts))
            result.concealed.append(is_concealed(frame))
    except MediaStreamError:
        pass
    finally:
        result.rtp_sent, result.rtp_dropped = uplink.rtp_sent, uplink.rtp_dropped
        await sender.stop()
        await receiver.stop()
        await dtls_a.stop()
        await dtls_b.stop()
    return result
