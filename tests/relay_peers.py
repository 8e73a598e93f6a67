"""Test helpers: a relay served on 127.0.0.1 in a thread, and aiortc peers that send and record."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import uvicorn
from aiortc import RTCSessionDescription

from loadtest.peers import ArrayAudioTrack, Peer, Recorder
from loadtest.server import free_port
from service.app import create_app
from service.relay import Relay
from service.server import uvicorn_options
from service.settings import Settings

__all__ = [
    "ArrayAudioTrack",
    "Peer",
    "Recorder",
    "RunningRelay",
    "free_port",
    "emptied_after_each_test",
    "running_relay",
    "wait_until",
    "whip_join",
]


class RunningRelay:
    """A relay served by uvicorn in a background thread (its own event loop)."""

    def __init__(self, **overrides: object) -> None:
        port = free_port()
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": port,
            "ice_host_addresses": ["127.0.0.1"],
            # every test client is 127.0.0.1: tests of the rate limit turn it back on
            "signaling_rate_per_second": 0,
        }
        values.update(overrides)
        self.settings = Settings(**values)  # type: ignore[arg-type]
        self.app = create_app(self.settings)
        self.relay: Relay = self.app.state.relay
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            loop=self.settings.event_loop,  # the loop `serve` runs on (uvloop where installed)
            **uvicorn_options(self.settings),
        )
        self.loop_factory = config.get_loop_factory()
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="relay-under-test", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            runner.run(main())

    def start(self, timeout: float = 180.0) -> RunningRelay:
        """Start and wait until /readyz says ready (a fresh checkout compiles the kernels first:
        minutes on a loaded machine)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError("relay did not become ready")

    def call(self, coroutine_factory, timeout: float = 10.0):
        """Run a coroutine on the relay's own loop and return its result."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine_factory(), self.loop)
        return future.result(timeout)

    def close_every_room(self) -> None:
        """Close every room (their calls end): what one test leaves, the next does not see."""

        async def close_all() -> None:
            for name in list(self.relay.rooms):
                await self.relay.close_room(name)

        self.call(close_all, timeout=60.0)
        assert not self.relay.rooms and len(self.relay.pending) == 0

    def stop(self) -> None:
        """Shut down (lifespan closes every call) and join the thread."""
        self.server.should_exit = True
        self.thread.join(30.0)


def emptied_after_each_test(relay: RunningRelay) -> Iterator[RunningRelay]:
    """For a function-scoped fixture over a module's relay: the test gets the relay, and every
    room is closed afterwards whatever the test's outcome, so a failure does not cascade."""
    yield relay
    relay.close_every_room()


@contextlib.contextmanager
def running_relay(**overrides: object) -> Iterator[RunningRelay]:
    """A started relay, stopped afterwards."""
    relay = RunningRelay(**overrides).start()
    try:
        yield relay
    finally:
        relay.stop()


async def wait_until(
    condition: Callable[[], bool], timeout_seconds: float = 30.0, what: str = "condition"
) -> float:
    """Seconds until ``condition()`` held, polled without blocking the loop; TimeoutError after
    ``timeout_seconds`` (a bound for a loaded machine, not an expectation)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_seconds:
            raise TimeoutError(f"{what}: not within {timeout_seconds} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def whip_join(peer: Peer, url: str, room: str) -> httpx.Response:
    """A WHIP client that follows redirects, as RFC 9725 asks of it."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=10.0) as client:
        answer = await client.post(
            f"{url}/whip/{room}",
            content=await peer.offer_sdp(),
            headers={"content-type": "application/sdp"},
        )
    assert answer.status_code == 201, answer.text
    await peer.pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
    return answer
