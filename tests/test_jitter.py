"""The low-delay audio receive buffer: in-order release at once, bounded waits for gaps, late
packets dropped, standing backlogs trimmed."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from service.jitter import TRIM_AFTER_PACKETS, AudioJitterBuffer


def packet(sequence: int) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=sequence % 65536, timestamp=960 * sequence)
    p._data = bytes([sequence % 256])  # type: ignore[attr-defined]
    return p


def feed(buffer: AudioJitterBuffer, sequences: list[int]) -> list[int | None]:
    out = []
    for sequence in sequences:
        _, frame = buffer.add(packet(sequence))
        out.append(None if frame is None else frame.timestamp // 960)
    return out


def test_in_order_packets_are_released_at_once() -> None:
    buffer = AudioJitterBuffer(depth=1)
    assert feed(buffer, [10, 11, 12, 13]) == [10, 11, 12, 13]


def test_a_reordered_pair_within_the_depth_is_put_back_in_order() -> None:
    buffer = AudioJitterBuffer(depth=1)
    assert feed(buffer, [1, 3, 2, 4]) == [1, None, 2, 3]
    assert buffer.lost == 0


def test_a_lost_packet_is_given_up_after_depth_newer_ones() -> None:
    buffer = AudioJitterBuffer(depth=1)
    assert feed(buffer, [1, 3, 4, 5]) == [1, None, 3, 4]
    assert buffer.lost == 1
    assert feed(buffer, [2]) == [None] and buffer.late == 1  # too late now


def test_depth_zero_never_waits() -> None:
    buffer = AudioJitterBuffer(depth=0)
    assert feed(buffer, [1, 3, 4]) == [1, 3, 4]
    assert buffer.lost == 1


def test_a_standing_backlog_is_trimmed_back_to_zero_delay() -> None:
    buffer = AudioJitterBuffer(depth=1)
    feed(buffer, [0, 2, 3])  # packet 1 lost: one packet now waits behind the next release
    released = feed(buffer, list(range(4, 4 + TRIM_AFTER_PACKETS + 5)))
    assert buffer.trimmed == 1
    # after the trim, each packet comes out on its own arrival again
    assert released[-1] == 4 + TRIM_AFTER_PACKETS + 4


def test_sequence_numbers_wrap_and_jumps_restart_the_stream() -> None:
    buffer = AudioJitterBuffer(depth=1)
    assert feed(buffer, [65534, 65535, 65536, 65537]) == [65534, 65535, 65536, 65537]
    assert feed(buffer, [1000]) == [1000]  # far ahead: a new stream, not 900 losses to wait for
    assert feed(buffer, [1001]) == [1001]
