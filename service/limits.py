"""Bounds on what one client can make the relay hold: signaling rate, pending peers, open files.

Each check raises :class:`RelayError` (429 for one address over its share, 503 when the whole
relay is short) with ``Retry-After``, so a refusal is cheap and happens before any peer
connection, socket or task is made.
"""

from __future__ import annotations

import ipaddress
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.errors import RelayError

PENDING_RETRY_AFTER_SECONDS = 5
MAX_TRACKED_ADDRESSES = 10_000  # rate-limit buckets kept before full ones are forgotten
FD_DIRECTORY = Path("/proc/self/fd")
IPV6_PREFIX_BITS = 64  # one IPv6 host usually holds a whole /64: count it as one address


def address_key(address: str) -> str:
    """What the per-address limits count by: an IPv4 address as it is, an IPv6 one by its /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX_BITS}", strict=False))
    return str(parsed)


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_second``; one request takes one."""

    rate_per_second: float
    burst: float
    tokens: float
    updated_at: float

    def refill(self, now: float) -> None:
        """Add what has accrued since the last call (never beyond ``burst``)."""
        elapsed = max(now - self.updated_at, 0.0)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_second)
        self.updated_at = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when granted, else the seconds until one will be there."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_second


class RateLimiter:
    """A token bucket per client address (``rate_per_second`` 0: no limit)."""

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.clock = clock
        self.max_addresses = max_addresses
        self.buckets: dict[str, TokenBucket] = {}

    def check(self, address: str) -> None:
        """Count one request from ``address``; 429 ``rate_limited`` when its bucket is empty."""
        if self.rate_per_second <= 0:
            return
        now = self.clock()
        key = address_key(address)
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_addresses:
                self._forget_buckets(now)
            bucket = TokenBucket(self.rate_per_second, self.burst, self.burst, now)
            self.buckets[key] = bucket
        wait_seconds = bucket.take(now)
        if wait_seconds > 0:
            raise RelayError(
                429,
                "rate_limited",
                f"too many signaling requests from {address}: "
                f"{self.rate_per_second:g}/s, bursts of {self.burst}",
                {"Retry-After": str(max(1, math.ceil(wait_seconds)))},
            )

    def _forget_buckets(self, now: float) -> None:
        """Drop buckets that have refilled (their addresses are as if never seen); when too
        many are still in use, the oldest too (they start again from a full bucket)."""
        for key, bucket in list(self.buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self.buckets[key]
        while len(self.buckets) >= self.max_addresses:
            del self.buckets[next(iter(self.buckets))]


class PendingPeers:
    """Peers admitted but not yet connected, counted in all and per client address (IPv6: per
    /64)."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._address_of: dict[str, str] = {}  # peer id → client address
        self._per_address: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._address_of)

    def count(self, address: str) -> int:
        """Pending peers from ``address`` (an IPv6 address: from its /64)."""
        return self._per_address.get(address_key(address), 0)

    def admit(self, peer_id: str, address: str) -> None:
        """Hold a place for ``peer_id``: 429 ``too_many_pending`` when its address has used its
        share, 503 ``pending_full`` when the relay has."""
        retry = {"Retry-After": str(PENDING_RETRY_AFTER_SECONDS)}
        if self.count(address) >= self.max_per_address:
            raise RelayError(
                429,
                "too_many_pending",
                f"{address} has {self.max_per_address} joins that have not connected yet",
                retry,
            )
        if len(self) >= self.max_total:
            raise RelayError(
                503, "pending_full", f"{self.max_total} joins have not connected yet", retry
            )
        key = address_key(address)
        self._address_of[peer_id] = key
        self._per_address[key] = self.count(key) + 1

    def release(self, peer_id: str) -> None:
        """Give the place back (connected, failed or gone); idempotent."""
        address = self._address_of.pop(peer_id, None)
        if address is None:
            return
        left = self._per_address.pop(address) - 1
        if left:
            self._per_address[address] = left


def open_fd_count() -> int | None:
    """File descriptors this process has open (Linux ``/proc``; None where unknown)."""
    try:
        return len(os.listdir(FD_DIRECTORY))
    except OSError:
        return None


def fd_limit() -> int | None:
    """The process's soft limit on open files (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def check_fd_headroom(reserve: int, open_fds: int | None, limit: int | None) -> None:
    """503 ``too_many_open_files`` when fewer than ``reserve`` descriptors are left under
    ``limit`` (a join needs sockets; running out mid-negotiation breaks ICE silently)."""
    if open_fds is None or limit is None:
        return
    if limit - open_fds < reserve:
        raise RelayError(
            503,
            "too_many_open_files",
            f"{open_fds} of {limit} file descriptors are open; the relay keeps {reserve} spare",
            {"Retry-After": str(PENDING_RETRY_AFTER_SECONDS)},
        )
