"""Several relay processes behind one address: every core for media, rooms pinned to a worker.

aiortc's RTP, SRTP and ICE handling is Python on one event loop, so one process cannot use a
second core for it. ``percepnet-relay serve --processes N`` starts N ordinary relays on
loopback ports and serves a front on the public address that routes each request to the worker
owning its room (CRC-32 of the room name modulo N; media then flows between the client and that
worker directly, over its own ICE candidates). ``GET /rooms``, ``/readyz`` and ``/metrics``
merge the workers' answers (metrics gain a ``worker`` label). SIGTERM is passed on to every
worker, each drains, then the front exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from types import FrameType

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from service.app import (
    add_body_limit,
    add_cors,
    add_page,
    client_address,
    new_app,
    read_body,
    relay_error_response,
)
from service.errors import RelayError
from service.server import configure_logging, uvicorn_options
from service.settings import Settings

log = logging.getLogger(__name__)
FORWARDED_REQUEST_HEADERS = ("content-type", "authorization", "x-participant-key")
FORWARDED_RESPONSE_HEADERS = ("content-type", "location", "retry-after", "www-authenticate")
FRONT_ONLY_VARIABLES = ("PNR_TLS_CERT_FILE", "PNR_TLS_KEY_FILE")  # workers speak HTTP on loopback
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (.*)$")


def owner_index(room: str, workers: int) -> int:
    """The worker that owns ``room``."""
    return zlib.crc32(room.encode("utf-8")) % workers


def label_metrics(text: str, worker: int) -> tuple[list[str], list[str]]:
    """A worker's exposition split into (# HELP/# TYPE lines, samples with ``worker`` added)."""
    headers, samples = [], []
    for line in text.splitlines():
        if line.startswith("#"):
            headers.append(line)
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        inner = labels[1:-1] if labels else ""
        merged = f'worker="{worker}"' + (f",{inner}" if inner else "")
        samples.append(f"{name}{{{merged}}} {value}")
    return headers, samples


def merge_metrics(texts: list[str]) -> str:
    """One exposition from several workers' (families kept together, each HELP/TYPE once)."""
    families: dict[str, list[str]] = {}
    header_of: dict[str, list[str]] = {}
    for worker, text in enumerate(texts):
        headers, samples = label_metrics(text, worker)
        for line in headers:
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                header_of.setdefault(parts[2], [])
                if line not in header_of[parts[2]]:
                    header_of[parts[2]].append(line)
        for sample in samples:
            family = _family_of(sample.split("{", 1)[0], header_of)
            families.setdefault(family, []).append(sample)
    lines = []
    for family, header in header_of.items():
        lines.extend(header)
        lines.extend(families.pop(family, []))
    for rest in families.values():
        lines.extend(rest)
    return "\n".join(lines) + "\n"


def _family_of(sample_name: str, known: dict[str, list[str]]) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created", "_info"):
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in known:
            return base
    return sample_name


def relayed(answer: httpx.Response) -> Response:
    """A worker's answer passed on as is, with the headers a client needs."""
    kept = {k: v for k, v in answer.headers.items() if k in FORWARDED_RESPONSE_HEADERS}
    return Response(answer.content, answer.status_code, headers=kept)


def create_front_app(settings: Settings, workers: list[str]) -> FastAPI:
    """The public face of a cluster: routes by room to ``workers`` (their base URLs)."""
    client = httpx.AsyncClient(timeout=30.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    app = new_app(title="percepnet-relay (cluster front)", lifespan=lifespan)
    add_page(app)
    add_cors(app, settings)
    add_body_limit(app, settings.max_body_bytes)

    @app.exception_handler(RelayError)
    async def relay_error(request: Request, error: RelayError) -> JSONResponse:
        return relay_error_response(error)

    async def forward(request: Request, worker: str, body: bytes | None = None) -> Response:
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_REQUEST_HEADERS}
        headers["x-forwarded-for"] = client_address(request)  # workers' per-address limits
        if body is None:
            body = await read_body(request, settings.max_body_bytes)
        try:
            answer = await client.request(
                request.method,
                worker + request.url.path,
                params=request.query_params,
                headers=headers,
                content=body,
            )
        except httpx.HTTPError as error:
            raise RelayError(
                503,
                "worker_unavailable",
                f"the room's worker did not answer: {error}",
                {"Retry-After": "5"},
            ) from error
        return relayed(answer)

    def owner(room: str) -> str:
        return workers[owner_index(room, len(workers))]

    @app.post("/offer")
    async def offer(request: Request) -> Response:
        body = await read_body(request, settings.max_body_bytes)
        room = ""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            room = str(json.loads(body).get("room") or "")
        return await forward(request, owner(room), body)  # a bad body gets the worker's error

    @app.api_route("/whip/{room}", methods=["POST"])
    @app.api_route("/whip/{room}/{participant_id}", methods=["DELETE", "PATCH"])
    @app.api_route("/rooms/{room}", methods=["GET", "PUT", "DELETE"])
    @app.api_route("/rooms/{room}/participants/{participant_id}", methods=["PATCH", "DELETE"])
    async def by_room(room: str, request: Request) -> Response:
        return await forward(request, owner(room))

    async def gather(path: str, request: Request | None = None) -> list[httpx.Response | None]:
        headers = {}
        if request is not None and "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]

        async def one(worker: str) -> httpx.Response | None:
            try:
                return await client.get(worker + path, headers=headers, timeout=5.0)
            except httpx.HTTPError:
                return None

        return await asyncio.gather(*(one(w) for w in workers))

    @app.get("/rooms")
    async def rooms(request: Request) -> Response:
        answers = await gather("/rooms", request)
        merged: list[object] = []
        for answer in answers:
            if answer is None:
                raise RelayError(
                    503, "worker_unavailable", "a worker did not answer", {"Retry-After": "5"}
                )
            if answer.status_code != 200:
                return relayed(answer)
            merged.extend(answer.json())
        return JSONResponse(merged)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        answers = await gather("/readyz")
        states = [a.json().get("state") if a is not None else "unreachable" for a in answers]
        ready = all(a is not None and a.status_code == 200 for a in answers)
        return JSONResponse({"ready": ready, "workers": states}, 200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        answers = await gather("/metrics")
        texts = [a.text if a is not None and a.status_code == 200 else "" for a in answers]
        return Response(merge_metrics(texts), media_type="text/plain; version=0.0.4")

    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_workers(settings: Settings, count: int) -> tuple[list[subprocess.Popen], list[str]]:
    """Start ``count`` ordinary relays on loopback ports; returns them and their URLs."""
    processes, urls = [], []
    for _ in range(count):
        port = free_port()
        inherited = {k: v for k, v in os.environ.items() if k not in FRONT_ONLY_VARIABLES}
        env = inherited | {  # the rest of the settings come from the same environment
            "PNR_HOST": "127.0.0.1",
            "PNR_FORWARDED_ALLOW_IPS": "127.0.0.1",  # the front names each request's client
            "PNR_PORT": str(port),
            "PNR_PROCESSES": "1",
            "PNR_MODEL_PATH": str(settings.model_path),
            "PNR_WORKER_THREADS": str(settings.worker_threads),
            "PNR_LOG_FORMAT": settings.log_format,
        }
        command = [sys.executable, "-m", "service.cli", "serve"]
        processes.append(subprocess.Popen(command, env=env))
        urls.append(f"http://127.0.0.1:{port}")
    return processes, urls


class ClusterFront(uvicorn.Server):
    """The front's server: SIGTERM drains every worker first, then the front stops."""

    def __init__(
        self, config: uvicorn.Config, workers: list[subprocess.Popen], drain_seconds: float
    ) -> None:
        super().__init__(config)
        self.workers = workers
        self.drain_seconds = drain_seconds
        self._waiting: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM if sig == signal.SIGTERM else signal.SIGINT)
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            return
        self._waiting = asyncio.get_event_loop().create_task(self._wait_workers())

    async def _wait_workers(self) -> None:
        deadline = time.monotonic() + self.drain_seconds + 15
        while any(w.poll() is None for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self.should_exit = True


def serve_cluster(settings: Settings, processes: int) -> int:
    """Run ``processes`` workers behind a routing front until SIGTERM or SIGINT."""
    configure_logging(settings.log_format, settings.log_level)
    workers, urls = start_workers(settings, processes)
    log.info("cluster: %d workers at %s", processes, ", ".join(urls))
    try:
        config = uvicorn.Config(
            create_front_app(settings, urls),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            **uvicorn_options(settings),
        )
        ClusterFront(config, workers, settings.drain_seconds).run()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        codes = [worker.wait(30) for worker in workers]
    return 0 if all(code == 0 for code in codes) else 1
