"""What a request for a room on another node costs: the same requests sent to the room's own
node and to another node of a two-node cluster (a real redis-server, two ``serve`` processes on
loopback), interleaved, and the difference of the medians.

``python -m loadtest.signaling_hop --requests 40``: a control request (``GET /rooms/{room}``,
proxied), a WHIP join (``307`` to the owner, followed) and an ``/offer`` join (proxied).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from loadtest.peers import Peer
from loadtest.redis_server import RedisServer
from loadtest.server import ServedRelay, serve_on_loopback

ROOM = "hop"
NODE_ENV = {
    "PNR_SIGNALING_RATE_PER_SECOND": "0",  # every request comes from 127.0.0.1
    "PNR_MAX_PENDING_PER_ADDRESS": "1000",
    "PNR_MAX_PENDING_PEERS": "1000",
    "PNR_MAX_PARTICIPANTS_PER_ROOM": "1000",
    "PNR_LOG_LEVEL": "WARNING",
}


async def offer_sdp() -> str:
    """One audio offer, reused for every join (the relay makes a new connection each time)."""
    peer = Peer(None)
    sdp = await peer.offer_sdp()
    await peer.pc.close()
    return sdp


async def timed(
    request: Callable[[str], Awaitable[str | None]], base: str
) -> tuple[float, str | None]:
    """Milliseconds the request took, and what it left to clean up."""
    start = time.perf_counter()
    left = await request(base)
    return (time.perf_counter() - start) * 1000.0, left


async def measure(owner: str, other: str, requests: int) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per request kind, sent to the owner ("direct") and to the other node."""
    sdp = await offer_sdp()
    results: dict[str, dict[str, list[float]]] = {}
    async with httpx.AsyncClient(follow_redirects=True, timeout=30.0) as client:

        async def control(base: str) -> str | None:
            answer = await client.get(f"{base}/rooms/{ROOM}")
            answer.raise_for_status()
            return None

        async def whip(base: str) -> str | None:
            answer = await client.post(
                f"{base}/whip/{ROOM}", content=sdp, headers={"content-type": "application/sdp"}
            )
            assert answer.status_code == 201, answer.text
            return str(answer.headers["location"].rsplit("/", 1)[1])

        async def offer(base: str) -> str | None:
            answer = await client.post(f"{base}/offer", json={"sdp": sdp, "room": ROOM})
            answer.raise_for_status()
            return str(answer.json()["participant_id"])

        async def run(request: Callable[[str], Awaitable[str | None]], base: str) -> float:
            milliseconds, participant = await timed(request, base)
            if participant is not None:  # not timed: the next join finds an empty room again
                await client.delete(f"{owner}/rooms/{ROOM}/participants/{participant}")
            return milliseconds

        for name, request in (("GET /rooms/{room}", control), ("WHIP", whip), ("/offer", offer)):
            kind = results.setdefault(name, {"direct": [], "via other node": []})
            for base in (owner, other):  # warm both paths (connections, first-call costs)
                await run(request, base)
            for index in range(requests):  # alternate which path goes first
                order = [("direct", owner), ("via other node", other)][:: 1 - 2 * (index % 2)]
                for path, base in order:
                    kind[path].append(await run(request, base))
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="of each kind and path")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(Path(scratch)).start()
        nodes: list[ServedRelay] = []
        try:
            env = NODE_ENV | {"PNR_REDIS_URL": redis.url}
            nodes = [serve_on_loopback(env | {"PNR_NODE_ID": f"node{i}"}) for i in range(2)]
            while len(httpx.get(nodes[0].url + "/nodes").json()) < 2:
                time.sleep(0.1)
            assert httpx.put(f"{nodes[0].url}/rooms/{ROOM}").status_code == 200
            listing = {r["room"]: r["node"] for r in httpx.get(nodes[1].url + "/rooms").json()}
            index = int(listing[ROOM].removeprefix("node"))
            owner, other = nodes[index].url, nodes[1 - index].url
            results = asyncio.run(measure(owner, other, args.requests))
        finally:
            for node in nodes:
                node.stop()
            redis.stop()
    print(f"{args.requests} requests of each kind and path, interleaved, loopback")
    print("| request | direct: median / p95 ms | via the other node | added: median of pairs |")
    print("|---|---|---|---|")
    for name, paths in results.items():
        direct, via = paths["direct"], paths["via other node"]
        added = statistics.median(v - d for d, v in zip(direct, via, strict=True))
        print(
            f"| {name} | {statistics.median(direct):.1f} / {percentile(direct, 0.95):.1f} "
            f"| {statistics.median(via):.1f} / {percentile(via, 0.95):.1f} | {added:+.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
