"""A low-delay receive buffer for Opus audio, in place of aiortc's.

aiortc's audio jitter buffer waits for 4 packets (about 80 ms) before it releases one, and after
a lost packet it waits until its 16-slot ring overflows, then keeps that backlog for good.
Here every Opus packet is a whole frame, so a packet is released as soon as it is next in order;
a missing packet is given up once ``depth`` newer packets wait behind it, and the packet
released next says how many were given up, so that the decoder
(:class:`service.concealment.ConcealingOpusDecoder`) fills them with Opus's concealment: no
stall, no silence, no burst; packets that arrive after their turn are dropped; and a backlog
that persists while nothing is missing is trimmed one packet at a time, so the delay returns to
its minimum. Receivers use it, and the decoder, through :mod:`service.aiortc_patches`.
"""

from __future__ import annotations

from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from service.concealment import ReleasedFrame

TRIM_AFTER_PACKETS = 50  # 1 s of a standing backlog with no loss: drop one packet


class AudioJitterBuffer:
    """In-order release of single-packet audio frames with bounded waiting for gaps."""

    def __init__(self, capacity: int = 16, depth: int = 1) -> None:
        self._capacity = capacity
        self.depth = depth
        self._packets: dict[int, RtpPacket] = {}
        self._next: int | None = None
        self._calm_packets = 0
        self.lost = 0  # given up after waiting
        self.late = 0  # arrived after their turn (or duplicates)
        self.trimmed = 0  # dropped to shrink a standing backlog

    @property
    def capacity(self) -> int:
        """Largest jump ahead (packets) treated as reordering rather than a new stream."""
        return self._capacity

    def add(self, packet: RtpPacket) -> tuple[bool, ReleasedFrame | None]:
        """Take one packet; return at most one frame ready for the decoder."""
        sequence = packet.sequence_number
        if self._next is None:
            self._next = sequence
        ahead = uint16_add(sequence, -self._next)
        if ahead >= 0x8000 or sequence in self._packets:
            self.late += 1
            return False, None
        if ahead >= self._capacity:  # a jump: the sender restarted or a long outage
            self.lost += len(self._packets)
            self._packets.clear()
            self._next = sequence
        self._packets[sequence] = packet
        return False, self._release()

    def _release(self) -> ReleasedFrame | None:
        assert self._next is not None
        given_up = 0
        while self._next not in self._packets and len(self._packets) > self.depth:
            self._next = uint16_add(self._next, 1)  # give the missing packet up
            given_up += 1
            self._calm_packets = 0
        self.lost += given_up
        packet = self._packets.pop(self._next, None)
        if packet is None:
            return None
        self._next = uint16_add(self._next, 1)
        if self._packets:
            self._calm_packets += 1
            if self._calm_packets >= TRIM_AFTER_PACKETS and self._next in self._packets:
                del self._packets[self._next]  # shrink the backlog by one frame
                self._next = uint16_add(self._next, 1)
                self.trimmed += 1
                self._calm_packets = 0
        else:
            self._calm_packets = 0
        data = packet._data  # type: ignore[attr-defined]
        return ReleasedFrame(data=data, timestamp=packet.timestamp, lost_before=given_up)
