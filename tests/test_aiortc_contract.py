"""The contract between ``service/aiortc_patches.py`` and the aiortc/aioice it patches: each test
fails when upstream moves or changes what the relay replaces or relies on."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from importlib.metadata import version

import aioice.ice
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender, rtcrtpreceiver
from aiortc.codecs.opus import OpusEncoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from service import aiortc_patches
from service.jitter import AudioJitterBuffer


class _OpenTransport:
    """Stands in for an RTCDtlsTransport: the receiver's constructor reads only its state."""

    state = "new"


def _receiver_buffer(kind: str) -> object:
    receiver = RTCRtpReceiver(kind, _OpenTransport())  # type: ignore[arg-type]
    return getattr(receiver, "_RTCRtpReceiver__jitter_buffer")  # noqa: B009 (name-mangled)


@pytest.fixture
def patched():
    saved = (
        aiortc_patches._receive_buffer_depth,
        list(aiortc_patches._host_addresses),
        aiortc_patches._gather_timeout_seconds,
    )
    aiortc_patches.apply()
    yield
    (
        aiortc_patches._receive_buffer_depth,
        aiortc_patches._host_addresses,
        aiortc_patches._gather_timeout_seconds,
    ) = saved


def test_installed_versions_are_the_pinned_series() -> None:
    assert version("aiortc").startswith(aiortc_patches.AIORTC_SERIES + ".")
    assert version("aioice").startswith(aiortc_patches.AIOICE_SERIES + ".")


def test_the_receiver_builds_its_buffer_through_the_replaced_name(patched) -> None:
    aiortc_patches.use_receive_buffer(2)
    audio = _receiver_buffer("audio")
    assert isinstance(audio, AudioJitterBuffer) and audio.depth == 2
    assert audio.capacity == 16  # the capacity aiortc asks for, passed through
    assert type(_receiver_buffer("video")) is JitterBuffer
    aiortc_patches.use_receive_buffer(None)
    assert type(_receiver_buffer("audio")) is JitterBuffer


def test_the_replaced_names_keep_the_signatures_the_wrappers_forward() -> None:
    assert rtcrtpreceiver.JitterBuffer in (JitterBuffer, aiortc_patches._jitter_buffer)
    assert aiortc_patches._AIORTC_JITTER_BUFFER is JitterBuffer
    assert list(inspect.signature(JitterBuffer).parameters) == ["capacity", "prefetch", "is_video"]
    assert list(inspect.signature(JitterBuffer.add).parameters) == ["self", "packet"]
    assert list(inspect.signature(JitterFrame).parameters) == ["data", "timestamp"]
    original = aiortc_patches._AIOICE_GET_HOST_ADDRESSES
    assert original.__module__ == "aioice.ice" and original.__name__ == "get_host_addresses"
    assert list(inspect.signature(original).parameters) == ["use_ipv4", "use_ipv6"]


def test_the_receiver_hands_the_buffer_depayloaded_packets_in_data() -> None:
    # AudioJitterBuffer returns ``packet._data``, which the receiver sets before ``add``.
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert source.index("packet._data = depayload(") < source.index("__jitter_buffer.add(packet)")
    buffer = AudioJitterBuffer(depth=1)
    packet = RtpPacket(payload_type=111, sequence_number=7, timestamp=960)
    packet._data = b"opus"  # type: ignore[attr-defined]
    _, frame = buffer.add(packet)
    assert frame is not None and frame.data == b"opus" and frame.timestamp == 960


def test_host_candidates_are_gathered_only_on_the_chosen_addresses(patched) -> None:
    aiortc_patches.restrict_host_addresses(["127.0.0.1"])
    assert aioice.ice.get_host_addresses is aiortc_patches._get_host_addresses

    async def gather() -> list[str]:
        connection = aioice.ice.Connection(ice_controlling=True)
        try:
            await connection.gather_candidates()
            return [candidate.host for candidate in connection.local_candidates]
        finally:
            await connection.close()

    hosts = asyncio.run(gather())
    assert hosts and set(hosts) == {"127.0.0.1"}


def test_the_sender_packetises_ready_opus_packets_through_the_public_hook() -> None:
    # MixedAudioTrack hands aiortc av.Packets; aiortc's sender passes them to Encoder.pack.
    source = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "isinstance(data, Frame)" in source and ".pack(data)" in source
    assert list(inspect.signature(OpusEncoder.pack).parameters) == ["self", "packet"]


def test_the_decoder_thread_gets_its_decoder_through_the_replaced_name(patched) -> None:
    from aiortc.codecs import get_decoder
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from service.concealment import ConcealingOpusDecoder

    source = inspect.getsource(aiortc_patches._AIORTC_DECODER_WORKER)
    assert "decoder = get_decoder(codec)" in source
    assert "frames = decoder.decode(encoded_frame)" in source and "for frame in frames" in source
    assert aiortc_patches._AIORTC_GET_DECODER is get_decoder
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    aiortc_patches.use_receive_buffer(0)
    assert isinstance(rtcrtpreceiver.get_decoder(opus), ConcealingOpusDecoder)
    aiortc_patches.use_receive_buffer(None)
    assert isinstance(rtcrtpreceiver.get_decoder(opus), OpusDecoder)


def test_gathering_waits_for_a_dead_turn_server_only_as_long_as_chosen(patched) -> None:
    original = aiortc_patches._AIOICE_GET_COMPONENT_CANDIDATES
    parameters = inspect.signature(original).parameters
    assert list(parameters) == ["self", "component", "addresses", "timeout"]
    assert parameters["timeout"].default == 5
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "self.get_component_candidates(" in source and "timeout" not in source
    aiortc_patches.restrict_host_addresses(["127.0.0.1"])
    aiortc_patches.limit_gathering(0.2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # nothing listens there once the socket closes

    async def gather() -> tuple[float, list[str]]:
        connection = aioice.ice.Connection(
            ice_controlling=True,
            turn_server=("127.0.0.1", dead_port),
            turn_username="relay",
            turn_password="secret",
        )
        start = time.monotonic()
        try:
            await connection.gather_candidates()
            return time.monotonic() - start, [c.type for c in connection.local_candidates]
        finally:
            await connection.close()

    seconds, kinds = asyncio.run(gather())
    assert kinds == ["host"]
    assert seconds < 3.0  # aioice alone: 5 s


def test_the_dtls_transport_routes_rtp_through_the_receivers_replaced_handler() -> None:
    # count_packets_only replaces the receiver's per-instance handler the transport awaits
    from aiortc import rtcdtlstransport

    source = inspect.getsource(rtcdtlstransport.RTCDtlsTransport)
    assert "await receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)" in source
    receiver = RTCRtpReceiver("audio", _OpenTransport())  # type: ignore[arg-type]
    seen: list[int] = []
    aiortc_patches.count_packets_only(receiver, lambda p: seen.append(p.sequence_number))
    packet = RtpPacket(payload_type=111, sequence_number=9, timestamp=960)
    asyncio.run(receiver._handle_rtp_packet(packet, arrival_time_ms=0))
    assert seen == [9]


def test_a_tapped_receiver_hands_its_encoded_frames_over_and_starts_no_decoding(
    patched,
) -> None:
    # the receiver puts (codec, frame) on its decoder queue, None when it stops, and its thread
    # runs the module's decoder_worker with that queue: the tap replaces the queue
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    assert rtcrtpreceiver.decoder_worker is aiortc_patches._decoder_worker
    handler = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in handler
    assert "self.__timestamp_mapper.map(" in handler
    receive = inspect.getsource(RTCRtpReceiver.receive)
    assert "target=decoder_worker" in receive and "self.__decoder_queue," in receive
    stop = inspect.getsource(getattr(RTCRtpReceiver, "_RTCRtpReceiver__stop_decoder"))  # noqa: B009
    assert "self.__decoder_queue.put(None)" in stop
    assert list(inspect.signature(aiortc_patches._AIORTC_DECODER_WORKER).parameters) == [
        "loop", "input_q", "output_q", "decode_error"
    ]  # fmt: skip
    aiortc_patches.use_receive_buffer(0)
    receiver = RTCRtpReceiver("audio", _OpenTransport())  # type: ignore[arg-type]
    seen: list[JitterFrame | None] = []
    aiortc_patches.take_encoded_frames(receiver, seen.append)
    opus = RTCRtpCodecParameters(
        mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111
    )
    getattr(receiver, "_RTCRtpReceiver__codecs")[111] = opus  # noqa: B009 (what receive() sets)
    setattr(receiver, "_RTCRtpReceiver__decoder_thread", object())  # noqa: B010 (started)
    for sequence in (5, 6):
        packet = RtpPacket(
            payload_type=111, sequence_number=sequence, timestamp=1000 + 960 * sequence
        )
        packet.payload = bytes([0xF8, sequence])
        asyncio.run(receiver._handle_rtp_packet(packet, arrival_time_ms=0))
    queue = getattr(receiver, "_RTCRtpReceiver__decoder_queue")  # noqa: B009
    queue.put(None)  # as the receiver stopping puts it
    assert [f.data if f else None for f in seen] == [bytes([0xF8, 5]), bytes([0xF8, 6]), None]
    assert [f.timestamp for f in seen if f] == [0, 960]  # mapped from 0, as a decoder gets them
    aiortc_patches._decoder_worker(None, queue, None, None)  # type: ignore[arg-type]  # returns
    with pytest.raises(RuntimeError):  # too late once its decoder thread runs
        aiortc_patches.take_encoded_frames(receiver, seen.append)
