"""The cluster's directory: which node owns each room, and how loaded each node is.

Both are leases. A node publishes its stats and renews its rooms every heartbeat; a node that
stops (killed, cut off) stops renewing, and its entries lapse after ``lease_seconds``, so the
next join places the room again. Two implementations of one interface:

- :class:`MemoryDirectory`: a process's own (one node, no external service), or one shared by
  the nodes of ``serve --processes N`` through a :mod:`multiprocessing.managers` server;
- :class:`RedisDirectory` (``PNR_REDIS_URL``): nodes on any number of machines.

Every call either succeeds or raises :class:`DirectoryUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing.managers import BaseManager
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

REDIS_TIMEOUT_SECONDS = 1.0  # a directory call that takes longer counts as the directory gone
_PREFIX = "pnr:"

# Claim ``KEYS[1]`` for ``ARGV[1]`` (lease ``ARGV[2]`` ms) when it is free, already ours, or
# held by ``ARGV[3]`` (a node known to be gone); returns the owner afterwards.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] or owner == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return owner
"""
# Delete ``KEYS[1]`` only while ``ARGV[1]`` holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DirectoryUnavailable(Exception):
    """The directory did not answer (Redis down or unreachable)."""


@dataclass(frozen=True)
class NodeStats:
    """What a node tells the cluster about itself every heartbeat."""

    node_id: str
    url: str  # its signaling base URL, as other nodes and redirected clients reach it
    state: str  # starting, ready, draining
    cpu_percent: float  # process CPU over the last few seconds, % of one core
    participants: int
    speakers: int  # participants sending audio (each costs an enhancer)
    max_rooms: int
    max_cpu_percent: float | None  # above it the node takes no new rooms
    rooms: list[dict[str, Any]] = field(default_factory=list)  # as GET /rooms shows them

    def to_json(self) -> str:
        """The stats as one JSON object."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeStats:
        """Stats from :meth:`to_json`'s output."""
        return cls(**json.loads(text))


class Directory(ABC):
    """Room → node leases and the live nodes' stats."""

    @abstractmethod
    async def publish(self, stats: NodeStats, lease_seconds: float) -> None:
        """Announce (or refresh) a node's stats for ``lease_seconds``."""

    @abstractmethod
    async def withdraw(self, node_id: str, rooms: Iterable[str]) -> None:
        """A node leaves: its stats go, and so do its leases on ``rooms``."""

    @abstractmethod
    async def nodes(self) -> list[NodeStats]:
        """Every node whose stats have not lapsed."""

    @abstractmethod
    async def owner(self, room: str) -> str | None:
        """The node holding ``room``'s lease, if any."""

    @abstractmethod
    async def claim(
        self, room: str, node_id: str, lease_seconds: float, replacing: str | None = None
    ) -> str:
        """Give ``room`` to ``node_id`` unless another node than ``replacing`` holds it;
        returns the owner afterwards (``node_id`` when the claim won)."""

    @abstractmethod
    async def renew(self, node_id: str, rooms: Iterable[str], lease_seconds: float) -> None:
        """Extend (or take back, when free) ``node_id``'s leases on ``rooms``."""

    @abstractmethod
    async def release(self, node_id: str, rooms: Iterable[str]) -> None:
        """Drop ``node_id``'s leases on ``rooms`` (others' leases are left alone)."""

    @abstractmethod
    async def room_counts(self) -> dict[str, int]:
        """How many room leases each node holds."""

    @abstractmethod
    async def close(self) -> None:
        """Let go of connections."""


# ---- in memory -------------------------------------------------------------------------------
class MemoryTable:
    """The leases themselves, in one process's memory (thread-safe, monotonic clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[str, tuple[str, float]] = {}  # room → (node, expires at)
        self._nodes: dict[str, tuple[str, float]] = {}  # node → (stats JSON, expires at)

    def _live(self, table: dict[str, tuple[str, float]], key: str) -> str | None:
        entry = table.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del table[key]
            return None
        return entry[0]

    def publish(self, node_id: str, stats_json: str, lease_seconds: float) -> None:
        with self._lock:
            self._nodes[node_id] = (stats_json, time.monotonic() + lease_seconds)

    def withdraw(self, node_id: str, rooms: list[str]) -> None:
        with self._lock:
            self._nodes.pop(node_id, None)
        self.release(node_id, rooms)

    def nodes(self) -> list[str]:
        with self._lock:
            found = (self._live(self._nodes, node) for node in list(self._nodes))
            return [stats for stats in found if stats is not None]

    def owner(self, room: str) -> str | None:
        with self._lock:
            return self._live(self._rooms, room)

    def claim(self, room: str, node_id: str, lease_seconds: float, replacing: str | None) -> str:
        with self._lock:
            owner = self._live(self._rooms, room)
            if owner is None or owner in (node_id, replacing):
                self._rooms[room] = (node_id, time.monotonic() + lease_seconds)
                return node_id
            return owner

    def renew(self, node_id: str, rooms: list[str], lease_seconds: float) -> None:
        for room in rooms:
            self.claim(room, node_id, lease_seconds, None)

    def release(self, node_id: str, rooms: list[str]) -> None:
        with self._lock:
            for room in rooms:
                if self._live(self._rooms, room) == node_id:
                    del self._rooms[room]

    def room_counts(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for room in list(self._rooms):
                owner = self._live(self._rooms, room)
                if owner is not None:
                    counts[owner] = counts.get(owner, 0) + 1
            return counts


class _Table(Protocol):
    def publish(self, node_id: str, stats_json: str, lease_seconds: float) -> None: ...
    def withdraw(self, node_id: str, rooms: list[str]) -> None: ...
    def nodes(self) -> list[str]: ...
    def owner(self, room: str) -> str | None: ...
    def claim(
        self, room: str, node_id: str, lease_seconds: float, replacing: str | None
    ) -> str: ...
    def renew(self, node_id: str, rooms: list[str], lease_seconds: float) -> None: ...
    def release(self, node_id: str, rooms: list[str]) -> None: ...
    def room_counts(self) -> dict[str, int]: ...


class TableManager(BaseManager):
    """Serves one :class:`MemoryTable` to the nodes of ``serve --processes N``."""


_SHARED_TABLE = MemoryTable()
TableManager.register("table", callable=lambda: _SHARED_TABLE)


def parse_table_address(address: str) -> tuple[tuple[str, int], bytes]:
    """``AUTHKEY@HOST:PORT`` → ((host, port), authkey)."""
    authkey, _, location = address.rpartition("@")
    host, _, port = location.rpartition(":")
    if not authkey or not host or not port.isdigit():
        raise ValueError("a shared directory address is AUTHKEY@HOST:PORT")
    return (host, int(port)), authkey.encode()


class MemoryDirectory(Directory):
    """Leases in memory: this process's own table, or a manager's shared one (``address``)."""

    def __init__(self, address: str | None = None) -> None:
        self.shared = address is not None
        self._table: _Table
        if address is None:
            self._table = MemoryTable()
        else:
            location, authkey = parse_table_address(address)
            manager = TableManager(address=location, authkey=authkey)
            manager.connect()
            self._table = manager.table()  # type: ignore[attr-defined]

    async def _call(self, method: str, *args: Any) -> Any:
        function = getattr(self._table, method)
        if not self.shared:
            return function(*args)
        try:  # a proxy call is a blocking round trip to the manager process
            return await asyncio.to_thread(function, *args)
        except (OSError, EOFError) as error:
            raise DirectoryUnavailable(f"the shared directory did not answer: {error}") from error

    async def publish(self, stats: NodeStats, lease_seconds: float) -> None:
        await self._call("publish", stats.node_id, stats.to_json(), lease_seconds)

    async def withdraw(self, node_id: str, rooms: Iterable[str]) -> None:
        await self._call("withdraw", node_id, list(rooms))

    async def nodes(self) -> list[NodeStats]:
        return [NodeStats.from_json(text) for text in await self._call("nodes")]

    async def owner(self, room: str) -> str | None:
        owner: str | None = await self._call("owner", room)
        return owner

    async def claim(
        self, room: str, node_id: str, lease_seconds: float, replacing: str | None = None
    ) -> str:
        owner: str = await self._call("claim", room, node_id, lease_seconds, replacing)
        return owner

    async def renew(self, node_id: str, rooms: Iterable[str], lease_seconds: float) -> None:
        await self._call("renew", node_id, list(rooms), lease_seconds)

    async def release(self, node_id: str, rooms: Iterable[str]) -> None:
        await self._call("release", node_id, list(rooms))

    async def room_counts(self) -> dict[str, int]:
        counts: dict[str, int] = await self._call("room_counts")
        return counts

    async def close(self) -> None:
        pass  # the table lives as long as its process, or its manager


# ---- Redis -----------------------------------------------------------------------------------
class RedisDirectory(Directory):
    """Leases in Redis: ``pnr:room:NAME`` → node id and ``pnr:node:ID`` → stats JSON, each with
    a PX expiry; ``pnr:nodes`` is the set of node ids that may still be alive."""

    def __init__(self, url: str) -> None:
        # no retries: a call that fails is reported at once (new rooms get a 503), and the
        # heartbeat tries again on its next beat
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)

    async def _run(self, operation: Any) -> Any:
        try:
            return await operation
        except (TimeoutError, RedisError, OSError) as error:
            raise DirectoryUnavailable(f"Redis did not answer: {error}") from error

    async def publish(self, stats: NodeStats, lease_seconds: float) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(f"{_PREFIX}node:{stats.node_id}", stats.to_json(), px=_ms(lease_seconds))
                pipe.sadd(f"{_PREFIX}nodes", stats.node_id)
                await pipe.execute()

        await self._run(run())

    async def withdraw(self, node_id: str, rooms: Iterable[str]) -> None:
        await self._run(self._redis.delete(f"{_PREFIX}node:{node_id}"))
        await self._run(self._redis.srem(f"{_PREFIX}nodes", node_id))
        await self.release(node_id, rooms)

    async def nodes(self) -> list[NodeStats]:
        ids = sorted(await self._run(self._redis.smembers(f"{_PREFIX}nodes")))
        if not ids:
            return []
        texts = await self._run(self._redis.mget([f"{_PREFIX}node:{i}" for i in ids]))
        gone = [node for node, text in zip(ids, texts, strict=True) if text is None]
        if gone:
            await self._run(self._redis.srem(f"{_PREFIX}nodes", *gone))
        return [NodeStats.from_json(text) for text in texts if text is not None]

    async def owner(self, room: str) -> str | None:
        owner: str | None = await self._run(self._redis.get(f"{_PREFIX}room:{room}"))
        return owner

    async def claim(
        self, room: str, node_id: str, lease_seconds: float, replacing: str | None = None
    ) -> str:
        keys = [f"{_PREFIX}room:{room}"]
        args: list[str | int] = [node_id, _ms(lease_seconds), replacing or ""]
        owner: str = await self._run(self._claim(keys=keys, args=args))
        return owner

    async def renew(self, node_id: str, rooms: Iterable[str], lease_seconds: float) -> None:
        await self._per_room(self._claim, rooms, [node_id, _ms(lease_seconds), ""])

    async def release(self, node_id: str, rooms: Iterable[str]) -> None:
        await self._per_room(self._release, rooms, [node_id])

    async def _per_room(
        self, script: AsyncScript, rooms: Iterable[str], args: list[str | int]
    ) -> None:
        """Run ``script`` with ``args`` on each room's key, in one pipelined round trip."""
        rooms = list(rooms)
        if not rooms:
            return

        async def run() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    await script(keys=[f"{_PREFIX}room:{room}"], args=args, client=pipe)
                await pipe.execute()

        await self._run(run())

    async def room_counts(self) -> dict[str, int]:
        async def run() -> dict[str, int]:
            keys = [key async for key in self._redis.scan_iter(f"{_PREFIX}room:*", count=1000)]
            counts: dict[str, int] = {}
            for owner in await self._redis.mget(keys) if keys else []:
                if owner is not None:
                    counts[str(owner)] = counts.get(str(owner), 0) + 1
            return counts

        result: dict[str, int] = await self._run(run())
        return result

    async def close(self) -> None:
        await self._redis.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def open_directory(redis_url: str | None, shared_address: str | None) -> Directory:
    """Redis when a URL is given, else the shared table at ``shared_address``, else this
    process's own."""
    if redis_url:
        return RedisDirectory(redis_url)
    return MemoryDirectory(shared_address)
