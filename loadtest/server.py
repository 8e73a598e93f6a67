"""Start ``percepnet-relay serve`` as its own process on 127.0.0.1 and wait until it is ready
(for the load test, the benchmarks and the tests that need a real server process)."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

# Ports for servers that start seconds later are taken below the kernel's usual ephemeral range
# (32768–60999 on Linux), so the client sockets opened meanwhile never land on them.
SERVER_PORT_RANGE = (20_000, 32_000)


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive TCP ports that were all free a moment ago on ``host``
    (``serve --processes N`` listens on PORT … PORT+N-1)."""
    for _ in range(1000):
        first = random.randrange(SERVER_PORT_RANGE[0], SERVER_PORT_RANGE[1] - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports in {SERVER_PORT_RANGE}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port for a server that binds it later (see ``free_port_run``)."""
    return free_port_run(1, host)


def pin(cpus: set[int] | None, realtime_priority: int | None = None) -> None:
    """This process (and what it starts later) on ``cpus`` only, and under SCHED_FIFO at
    ``realtime_priority`` (1–99; needs root or CAP_SYS_NICE): no normal process on those cores
    takes their time from it, but the kernel's RT throttling
    (``/proc/sys/kernel/sched_rt_runtime_us``, 95 % by default) caps what it gets."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if realtime_priority is not None:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_priority))


@dataclass
class ServedRelay:
    """A relay process, its base URL and how long it took from start to ready."""

    process: subprocess.Popen
    url: str
    ready_seconds: float

    def output(self) -> str:
        """What the process printed (when started with ``capture_output``), once it has ended."""
        return self.process.stdout.read() if self.process.stdout else ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the relay drains, then exits) and wait for the exit."""
        self.process.terminate()
        self.process.wait(timeout_s)


def serve_on_loopback(
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    capture_output: bool = False,
    timeout: float = 120.0,
    verify: ssl.SSLContext | bool = True,
    nodes: int = 1,
    cpus: set[int] | None = None,
    realtime_priority: int | None = None,
    runner: Sequence[str] = ("-m", "service.cli"),
) -> ServedRelay:
    """``percepnet-relay serve`` on a free loopback port with ICE on 127.0.0.1 only, ``env``
    added to this process's environment; returns once ``/readyz`` answers 200 (over HTTPS,
    checked with ``verify``, when ``env`` names a TLS certificate) and ``/nodes`` lists
    ``nodes`` ready nodes (it starts that many unless ``env`` or ``args`` say otherwise).
    ``cpus``: the relay and every thread and process it starts run only on these cores;
    ``realtime_priority``: and under SCHED_FIFO at that priority (see :func:`pin`);
    ``PYTHONPATH`` in ``env`` names another source tree to run (its working directory too);
    ``runner``: the interpreter's arguments before ``serve`` (another module that ends in
    ``percepnet-relay``'s command line, e.g. :mod:`loadtest.relay_trace`)."""
    port = free_port_run(nodes)
    scheme = "https" if (env or {}).get("PNR_TLS_CERT_FILE") else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            *runner,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        env=os.environ
        | {"PNR_ICE_HOST_ADDRESSES": "127.0.0.1", "PNR_PROCESSES": str(nodes)}
        | dict(env or {}),
        stdout=subprocess.PIPE if capture_output else None,
        stderr=subprocess.STDOUT if capture_output else None,
        text=True,
        preexec_fn=((lambda: pin(cpus, realtime_priority)) if cpus or realtime_priority else None),
        # ``python -m`` puts the working directory ahead of PYTHONPATH on sys.path: a relay
        # started from another source tree must also run in it, or it imports this one
        cwd=(env or {}).get("PYTHONPATH") or None,
    )
    served = ServedRelay(process, url, 0.0)
    while time.monotonic() - started < timeout:
        try:
            ready = httpx.get(url + "/readyz", timeout=1, verify=verify).status_code == 200
            if ready and (nodes == 1 or _ready_nodes(url, verify) >= nodes):
                served.ready_seconds = time.monotonic() - started
                return served
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the relay exited with {process.returncode}: {served.output()}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise TimeoutError(f"the relay was not ready within {timeout:.0f} s")


def _ready_nodes(url: str, verify: ssl.SSLContext | bool) -> int:
    listed = httpx.get(url + "/nodes", timeout=1, verify=verify).json()
    return sum(node["state"] == "ready" for node in listed)
