"""``serve``: one relay node per usable core (or ``--processes N``), sharing one directory.

aiortc's RTP, SRTP and ICE handling is Python on one event loop, so one process cannot use a
second core for it; more cores take more processes, each pinned to a core of its own where the
cores are this process's to give (``service/cores.py``). Each process is an ordinary node, exactly
as on N machines (``service/node.py``): node ``i`` listens on ``PORT + i``, new rooms go to the
least-loaded node, and signaling for any room may reach any node (a request for another node's
room is proxied there, or redirected for WHIP). The nodes share Redis when ``PNR_REDIS_URL`` is
set, otherwise a directory this process serves them on loopback. SIGTERM is passed on to every
node; each drains, then this process exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from service.cores import node_cores, usable_cores
from service.directory import TableManager
from service.node import public_url
from service.server import configure_logging
from service.settings import MAX_PROCESSES, Settings

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2  # how often the nodes' exit status is checked
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def node_count(settings: Settings) -> int:
    """How many nodes ``serve`` starts: ``processes``, else one per usable core (one on port 0,
    which cannot promise consecutive ports)."""
    if settings.processes:
        return settings.processes
    if settings.port == 0:
        return 1
    return min(usable_cores(), MAX_PROCESSES)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def with_port(url: str, port: int) -> str:
    """``url`` with its port replaced."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path.rstrip("/"), "", ""))


def serve_shared_directory() -> str:
    """Serve an in-memory directory on a loopback port from a thread of this process;
    returns its ``AUTHKEY@HOST:PORT``."""
    authkey = secrets.token_hex(16)
    manager = TableManager(address=("127.0.0.1", 0), authkey=authkey.encode())
    server = manager.get_server()
    threading.Thread(target=server.serve_forever, name="directory", daemon=True).start()
    address = server.address
    assert isinstance(address, tuple)  # a TCP address, as asked for
    return f"{authkey}@{address[0]}:{address[1]}"


def node_environments(
    settings: Settings, count: int, directory: str | None
) -> list[dict[str, str]]:
    """The environment of each node: its own port and public URL, the shared directory;
    every other setting comes from this process's environment."""
    base_id = settings.node_id or socket.gethostname()
    environments = []
    for index in range(count):
        port = settings.port + index
        env = os.environ | {
            "PNR_HOST": settings.host,
            "PNR_PORT": str(port),
            "PNR_PROCESSES": "1",
            "PNR_PARENT_PID": str(os.getpid()),
            "PNR_NODE_ID": f"{base_id}-{index}",
            "PNR_PUBLIC_URL": with_port(public_url(settings), port),
            "PNR_MODEL_PATH": str(settings.model_path),
            "PNR_WORKER_THREADS": str(settings.worker_threads),
            "PNR_LOG_FORMAT": settings.log_format,
        }
        if directory is not None:
            env["PNR_SHARED_DIRECTORY"] = directory
        environments.append(env)
    return environments


def end_with_parent(parent_pid: int) -> None:
    """Have this node sent SIGTERM (a drain) when ``parent_pid``, the ``serve`` that started
    it, dies, even by SIGKILL, rather than live on holding its port (Linux: PR_SET_PDEATHSIG;
    elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        log.warning("cannot follow the parent process: %s", os.strerror(ctypes.get_errno()))
    elif os.getppid() != parent_pid:  # it died before the call
        raise SystemExit(0)


def serve_nodes(settings: Settings, count: int) -> int:
    """Run ``count`` nodes until they exit (SIGTERM: each drains; SIGINT: each stops)."""
    if settings.port == 0 or settings.port + count - 1 > 65535:
        raise ValueError(
            f"{count} nodes need the ports PORT to PORT+{count - 1}"
            + ("" if settings.processes else " (one per core; set --processes or PNR_PROCESSES)")
        )
    configure_logging(settings.log_format, settings.log_level)
    directory = None if settings.redis_url else serve_shared_directory()
    command = [sys.executable, "-m", "service.cli", "serve"]
    cores = node_cores(count)
    nodes = []
    for index, env in enumerate(node_environments(settings, count, directory)):
        node = subprocess.Popen(command, env=env)
        if cores is not None:  # before the node starts its threads, which inherit the mask
            with contextlib.suppress(OSError):  # it may have exited already
                os.sched_setaffinity(node.pid, {cores[index]})
        nodes.append(node)
    log.info(
        "%d nodes on ports %d–%d (%s) sharing %s",
        count,
        settings.port,
        settings.port + count - 1,
        f"pinned to cores {', '.join(map(str, cores))}" if cores else "not pinned",
        "Redis" if directory is None else "this process's directory",
    )

    def pass_on(sig: int, frame: FrameType | None) -> None:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(sig)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    while any(node.poll() is None for node in nodes):
        if any(node.poll() not in (None, 0) for node in nodes):  # e.g. its port was taken
            log.error("a node failed; stopping the others")
            pass_on(signal.SIGINT, None)
            break
        time.sleep(POLL_SECONDS)
    codes = [node.wait() for node in nodes]
    return 0 if all(code == 0 for code in codes) else 1
