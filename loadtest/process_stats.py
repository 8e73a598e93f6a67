"""What a process (and its children) uses, read from Linux ``/proc``: CPU time, resident
memory and open file descriptors, for the benchmarks."""

from __future__ import annotations

import os
import re
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of ``serve --processes N``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _status_total(pid: int, field: str) -> int:
    """The number after ``field:`` in ``/proc/*/status``, summed over ``pid`` and descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            match = re.search(rf"{field}:\s+(\d+)", Path(f"/proc/{member}/status").read_text())
        except OSError:
            continue
        total += int(match.group(1)) if match else 0
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in bytes."""
    return _status_total(pid, "VmRSS") * 1024  # the kernel reports kB


def open_fds(pid: int) -> int:
    """File descriptors ``pid`` has open (0 once it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def thread_count(pid: int) -> int:
    """Threads of ``pid`` and its descendants."""
    return _status_total(pid, "Threads")


def cores_busy_seconds(cores: set[int]) -> float:
    """CPU seconds the kernel counts as busy (everything but idle and iowait) on ``cores``,
    whoever ran, since boot (``/proc/stat``)."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            values = [int(tick) for tick in ticks]
            total += sum(values[:8]) - values[3] - values[4]  # less idle and iowait
    return total / os.sysconf("SC_CLK_TCK")
