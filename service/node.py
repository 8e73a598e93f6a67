"""This relay as one node of a cluster: its heartbeat into the directory, and where a room lives.

Every node is the same: it serves media for the rooms it owns and answers signaling for every
room, sending requests for other nodes' rooms on (``service/routing.py``). A new room goes to
the least-loaded node (``service/placement.py``) through a lease in the directory; the owner
renews it every heartbeat while the room is open and releases it when the room closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

import httpx

from service.directory import Directory, DirectoryUnavailable, NodeStats, open_directory
from service.errors import RelayError
from service.placement import choose_node
from service.relay import RETRY_AFTER_SECONDS, Relay
from service.settings import Settings

log = logging.getLogger(__name__)
TICK_SECONDS = 0.1  # how soon a change (a join, a drain) reaches the directory
CPU_WINDOW_SECONDS = 1.0  # shortest span a CPU figure is measured over
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
PROXY_TIMEOUT_SECONDS = 30.0  # a proxied join waits for the owner's SDP answer


def public_url(settings: Settings) -> str:
    """The node's signaling base URL as the cluster sees it."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert_file is not None else "http"
    return f"{scheme}://{host}:{settings.port}"


def directory_unavailable(error: DirectoryUnavailable) -> RelayError:
    """The 503 a request gets when it needs the directory and the directory is gone."""
    return RelayError(
        503,
        "directory_unavailable",
        f"the room directory is unreachable, so no new room can be placed: {error}",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


class ClusterNode:
    """Publishes this relay's stats and leases, and answers where a room lives."""

    def __init__(self, settings: Settings, relay: Relay, directory: Directory | None = None):
        self.settings = settings
        self.relay = relay
        self.directory = directory or open_directory(
            settings.redis_url.get_secret_value() if settings.redis_url else None,
            settings.shared_directory.get_secret_value() if settings.shared_directory else None,
        )
        self.shared = settings.redis_url is not None or settings.shared_directory is not None
        self.node_id = settings.node_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
        self.url = public_url(settings)
        self.lease_seconds = settings.directory_lease_seconds
        self.directory_up = True
        self._owned: set[str] = set()  # rooms whose leases this node holds
        self._cpu_percent = 0.0
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._task: asyncio.Task[None] | None = None
        self.http = httpx.AsyncClient(timeout=PROXY_TIMEOUT_SECONDS)  # to proxy to other nodes

    # ---- heartbeat -------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin publishing (the first beat goes out at once)."""
        self._task = asyncio.create_task(self._heartbeat(), name="node-heartbeat")

    async def close(self) -> None:
        """Stop publishing and leave the directory (others then place this node's rooms)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.directory.withdraw(self.node_id, self._owned)
        except DirectoryUnavailable as error:
            log.warning("could not leave the directory (leases will lapse): %s", error)
        await self.directory.close()
        await self.http.aclose()

    def stats(self) -> NodeStats:
        """This node as the directory shows it."""
        now, cpu = time.monotonic(), time.process_time()
        if now - self._cpu_mark[0] >= CPU_WINDOW_SECONDS:
            self._cpu_percent = 100.0 * (cpu - self._cpu_mark[1]) / (now - self._cpu_mark[0])
            self._cpu_mark = (now, cpu)
        rooms = list(self.relay.rooms.values())
        return NodeStats(
            node_id=self.node_id,
            url=self.url,
            state=self.relay.state,
            cpu_percent=round(self._cpu_percent, 1),
            participants=sum(len(room.participants) for room in rooms),
            speakers=sum(p.has_inbound_audio for room in rooms for p in room.participants.values()),
            max_rooms=self.settings.max_rooms,
            max_cpu_percent=self.settings.node_max_cpu_percent,
            rooms=[room.describe() | {"node": self.node_id} for room in rooms],
        )

    def _signature(self) -> tuple[object, ...]:
        return (
            self.relay.state,
            tuple((name, len(room.participants)) for name, room in self.relay.rooms.items()),
        )

    async def beat(self) -> None:
        """Renew this node's rooms, release the rooms it closed, publish stats (last, so that
        a node listed again after the directory came back holds its rooms again)."""
        rooms = set(self.relay.rooms)
        await self.directory.renew(self.node_id, rooms, self.lease_seconds)
        await self.directory.release(self.node_id, self._owned - rooms)
        self._owned = rooms
        await self.directory.publish(self.stats(), self.lease_seconds)

    async def _heartbeat(self) -> None:
        period = self.settings.directory_heartbeat_seconds
        last_signature: tuple[object, ...] | None = None
        last_attempt = -period
        while True:
            signature = self._signature()
            now = time.monotonic()
            due = now - last_attempt >= period
            if due or (signature != last_signature and self.directory_up):
                last_attempt = now
                try:
                    await self.beat()
                except DirectoryUnavailable as error:
                    if self.directory_up:
                        log.warning("directory unavailable; existing calls go on: %s", error)
                    self.directory_up = False
                except Exception:  # a heartbeat that stopped would let this node's rooms lapse
                    log.exception("heartbeat failed; trying again")
                    self.directory_up = False
                else:
                    if not self.directory_up:
                        log.info("directory back; %d rooms renewed", len(self._owned))
                    self.directory_up = True
                    last_signature = signature
            await asyncio.sleep(TICK_SECONDS)

    # ---- where rooms live ------------------------------------------------------------------
    async def owner_url(self, room: str, create: bool) -> str | None:
        """The base URL of the node that serves ``room``, None when it is this one.

        A room open here is served here. Otherwise the directory's owner serves it while its
        node is alive; with no live owner, ``create`` places the room on the least-loaded node
        (and without ``create`` this node answers, with a 404)."""
        if room in self.relay.rooms:
            return None
        try:
            owner = await self.directory.owner(room)
            if owner == self.node_id:
                return None
            nodes = {node.node_id: node for node in await self.directory.nodes()}
            nodes[self.node_id] = self.stats()  # this node as it is now (draining, say)
            if owner is not None and owner in nodes:
                return nodes[owner].url
            if not create:
                return None
            chosen = choose_node(list(nodes.values()), await self.directory.room_counts())
            if chosen is None:
                raise RelayError(
                    503,
                    "cluster_full",
                    "every relay node is busy or draining; try again shortly",
                    {"Retry-After": RETRY_AFTER_SECONDS},
                )
            winner = await self.directory.claim(room, chosen.node_id, self.lease_seconds, owner)
        except DirectoryUnavailable as error:
            raise directory_unavailable(error) from error
        if winner == self.node_id:
            return None
        if winner not in nodes:  # claimed a moment ago by a node this one has not heard of
            raise RelayError(
                503, "node_unavailable", "the room's node is not known yet", {"Retry-After": "1"}
            )
        return nodes[winner].url

    async def cluster_rooms(self) -> list[dict[str, Any]]:
        """Every room of every live node: this node's as they are now, the others' as of their
        last heartbeat."""
        here = [room.describe() | {"node": self.node_id} for room in self.relay.rooms.values()]
        if not self.shared:
            return here
        try:
            nodes = await self.directory.nodes()
        except DirectoryUnavailable as error:
            raise directory_unavailable(error) from error
        others = [room for node in nodes if node.node_id != self.node_id for room in node.rooms]
        return sorted(here + others, key=lambda room: str(room["room"]))

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        """Every live node's stats (this node's as they are now), rooms left out."""
        nodes = {self.node_id: self.stats()}
        if self.shared:
            try:
                found = await self.directory.nodes()
            except DirectoryUnavailable as error:
                raise directory_unavailable(error) from error
            nodes = {node.node_id: node for node in found} | nodes
        return [
            {k: v for k, v in asdict(node).items() if k != "rooms"} | {"rooms": len(node.rooms)}
            for node in sorted(nodes.values(), key=lambda node: node.node_id)
        ]

    async def scrape_targets(self) -> list[dict[str, Any]]:
        """Every live node's ``/metrics`` as Prometheus HTTP service discovery lists targets:
        one group per node, labelled with its id (each node keeps its own metrics)."""
        groups = []
        for node in await self.cluster_nodes():
            url = urlsplit(str(node["url"]))
            labels = {"node": str(node["node_id"]), "__scheme__": url.scheme}
            groups.append({"targets": [url.netloc], "labels": labels})
        return groups
