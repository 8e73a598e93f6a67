"""Bounds on what one client can make the relay hold: the token bucket and the pending-peer
caps on a fake clock, the fd headroom check, room names, and the empty-room expiry."""

from __future__ import annotations

import time

import pytest

from service.errors import RelayError
from service.limits import (
    PendingPeers,
    RateLimiter,
    TokenBucket,
    address_key,
    check_fd_headroom,
    open_fd_count,
)
from service.relay import Relay, check_room_name
from service.settings import Settings


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(call: object, *args: object) -> RelayError:
    with pytest.raises(RelayError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_a_bucket_grants_its_burst_then_one_request_per_refill() -> None:
    bucket = TokenBucket(rate_per_second=2.0, burst=3, tokens=3, updated_at=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)  # half a token accrued
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == 2  # refills to the burst, no further


def test_the_rate_limiter_refuses_per_address_with_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=0.5, burst=2, clock=clock)
    limiter.check("10.0.0.1")
    limiter.check("10.0.0.1")
    error = refusal(limiter.check, "10.0.0.1")
    assert (error.status, error.reason) == (429, "rate_limited")
    assert error.headers["Retry-After"] == "2"  # one token per 2 s
    limiter.check("10.0.0.2")  # another address has its own bucket
    clock.now += 1.0
    assert refusal(limiter.check, "10.0.0.1").headers["Retry-After"] == "1"
    clock.now += 1.0
    limiter.check("10.0.0.1")
    assert refusal(limiter.check, "10.0.0.1").status == 429


def test_a_zero_rate_means_no_limit() -> None:
    limiter = RateLimiter(rate_per_second=0, burst=1, clock=FakeClock())
    for _ in range(1000):
        limiter.check("10.0.0.1")
    assert not limiter.buckets


def test_the_rate_limiter_forgets_refilled_addresses_when_it_tracks_too_many() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=1.0, burst=2, clock=clock, max_addresses=3)
    for address in ("a", "b", "c"):
        limiter.check(address)
    clock.now += 0.5  # "a".."c" half refilled: none is full, so the oldest goes
    limiter.check("d")
    assert set(limiter.buckets) == {"b", "c", "d"}
    clock.now += 1.0  # all full again: forgotten when the next new address comes
    limiter.check("e")
    assert set(limiter.buckets) == {"e"}


def test_ipv6_clients_are_limited_per_64() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1, clock=FakeClock())
    limiter.check("2001:db8:1:2::1")
    assert refusal(limiter.check, "2001:db8:1:2:ffff::9").reason == "rate_limited"
    limiter.check("2001:db8:1:3::1")  # another /64
    limiter.check("::ffff:192.0.2.1")
    assert refusal(limiter.check, "192.0.2.1").reason == "rate_limited"  # the same IPv4 host
    pending = PendingPeers(max_total=10, max_per_address=1)
    pending.admit("p1", "2001:db8:1:2::1")
    assert refusal(pending.admit, "p2", "2001:db8:1:2::2").reason == "too_many_pending"
    assert address_key("unknown") == "unknown"


def test_pending_peers_are_capped_per_address_and_in_all() -> None:
    pending = PendingPeers(max_total=3, max_per_address=2)
    pending.admit("p1", "10.0.0.1")
    pending.admit("p2", "10.0.0.1")
    error = refusal(pending.admit, "p3", "10.0.0.1")
    assert (error.status, error.reason) == (429, "too_many_pending")
    assert error.headers["Retry-After"].isdigit()
    pending.admit("p3", "10.0.0.2")
    error = refusal(pending.admit, "p4", "10.0.0.3")
    assert (error.status, error.reason) == (503, "pending_full")
    pending.release("p1")
    pending.release("p1")  # idempotent
    assert len(pending) == 2 and pending.count("10.0.0.1") == 1
    pending.admit("p4", "10.0.0.1")
    for peer in ("p2", "p3", "p4"):
        pending.release(peer)
    assert len(pending) == 0 and pending.count("10.0.0.1") == 0 and not pending._per_address


def test_joins_are_refused_near_the_fd_limit() -> None:
    check_fd_headroom(reserve=64, open_fds=900, limit=1024)
    error = refusal(check_fd_headroom, 64, 961, 1024)
    assert (error.status, error.reason) == (503, "too_many_open_files")
    assert "Retry-After" in error.headers
    check_fd_headroom(reserve=64, open_fds=None, limit=1024)  # unknown: no refusal
    check_fd_headroom(reserve=64, open_fds=10**6, limit=None)  # unlimited


def test_open_fds_are_counted(tmp_path: object) -> None:
    before = open_fd_count()
    if before is None:
        pytest.skip("no /proc/self/fd here")
    with open(__file__, "rb"), open(__file__, "rb"):
        assert open_fd_count() == before + 2


@pytest.mark.parametrize("name", [".", "..", ".hidden", "-x", "_x", "a/b", "..%2F", "x" * 65])
def test_room_names_that_could_be_paths_are_refused(name: str) -> None:
    assert refusal(check_room_name, name).reason == "invalid_room"


@pytest.mark.parametrize("name", ["r", "R2", "team-42_x.y", "a..b", "x" * 64])
def test_room_names_in_the_pattern_pass(name: str) -> None:
    assert check_room_name(name) == name


def test_rooms_nobody_is_in_expire_after_the_ttl() -> None:
    relay = Relay(Settings(empty_room_ttl_seconds=30, auto_create_rooms=False))
    try:
        opened = relay.create_room("opened")
        emptied = relay.create_room("emptied")
        joining = relay.create_room("joining")
        assert relay._expired_rooms() == []
        long_ago = time.monotonic() - 31
        opened.empty_since = emptied.empty_since = joining.empty_since = long_ago
        relay._pending_joins["joining"] = 1  # a join still negotiating keeps its room
        assert {room.name for room in relay._expired_rooms()} == {"opened", "emptied"}
        emptied.empty_since = time.monotonic() - 29
        assert [room.name for room in relay._expired_rooms()] == ["opened"]
    finally:
        relay.pool.close()
