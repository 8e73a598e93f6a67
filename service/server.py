"""Run the relay under uvicorn: logging, and SIGTERM as a drain rather than a hard stop."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
from types import FrameType
from typing import Any

import uvicorn

from model.runtime import ModelRuntime
from service.app import create_app
from service.relay import Relay
from service.settings import Settings


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, level: str) -> None:
    """Root logging in the chosen format (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM: readiness off, joins refused, calls ended, then exit."""

    def __init__(self, config: uvicorn.Config, relay: Relay, drain_seconds: float) -> None:
        super().__init__(config)
        self.relay = relay
        self.drain_seconds = drain_seconds
        self._drain_task: asyncio.Task[None] | None = None
        self.start_failed = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._drain_task is not None:
            super().handle_exit(sig, frame)
            return
        # a signal handler runs between two steps of the event loop, on its thread
        self._drain_task = asyncio.get_event_loop().create_task(self._drain_then_exit())

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = type(asyncio.get_running_loop())
        logging.getLogger(__name__).info("event loop: %s.%s", loop.__module__, loop.__name__)
        await super().startup(sockets)

    async def on_tick(self, counter: int) -> bool:
        if self.relay.state == "failed":  # the model or the kernels did not load: exit, loudly
            self.start_failed = self.should_exit = True
        return await super().on_tick(counter)

    async def _drain_then_exit(self) -> None:
        try:
            await self.relay.drain(self.drain_seconds)
        finally:
            self.should_exit = True


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS and proxy-header options from the settings (no trusted proxy: the
    client's own address counts, whatever ``X-Forwarded-For`` says)."""
    options: dict[str, Any] = {
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
    }
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        options["ssl_keyfile"] = str(settings.tls_key_file)
    return options


def serve(settings: Settings, runtime: ModelRuntime | None = None) -> bool:
    """Serve media and the control plane until SIGTERM (drain) or SIGINT; ``runtime``: the
    model already loaded (else it is loaded in the background at start-up).

    :returns: False when the relay failed to start (its log says why), True otherwise.
    """
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings, runtime)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop=settings.event_loop,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),
    )
    server = DrainingServer(config, app.state.relay, settings.drain_seconds)
    server.run()
    return not server.start_failed
