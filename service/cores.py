"""The cores this process may use (its CPU affinity, capped by a cgroup CPU limit), and how it
is scheduled on them.

``serve`` starts one node per usable core (``service/cluster.py``). A container or Kubernetes
pod limited to N cores by a CFS quota still sees every host core in its affinity mask, so the
quota (``cpu.max`` under cgroup v2, ``cpu.cfs_quota_us`` under v1) caps the count; it is
rounded down, as a node needs a whole core when busy and a throttled node stalls its audio for
the rest of the period (joblib/loky round up, for batch work).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """Cores granted by this cgroup's CFS quota (e.g. 1.5), None when there is no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """Whole cores this process may run on: its affinity mask, capped by the cgroup limit."""
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return cores


def node_cores(count: int, root: Path = CGROUP_ROOT) -> list[int] | None:
    """The core each of ``count`` nodes is pinned to: one each when there is a node for every
    core of the affinity mask and no smaller cgroup quota, so the cores are ours to hand out.
    Otherwise None: with fewer nodes than cores (say a Kubernetes pod without a CPU limit,
    whose mask is the whole host) or a quota, which cores are free is the kernel's call."""
    cores = sorted(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root)
    if count != len(cores) or (limit is not None and limit < len(cores)):
        return None
    return cores


def use_realtime_scheduling(priority: int) -> None:
    """This process, and every thread and process it starts later, under SCHED_FIFO at
    ``priority`` (1–99). Its threads then run until they block rather than preempt each other
    (a batch of the enhancement thread is not cut up by the event loop's wake-ups), and no
    normal process on the core preempts them; the kernel's RT throttling
    (``/proc/sys/kernel/sched_rt_runtime_us``, 95 % by default) still keeps the rest of each
    second for everything else. Raises PermissionError without root or CAP_SYS_NICE."""
    param = os.sched_param(priority)
    os.sched_setscheduler(0, os.SCHED_FIFO, param)  # this thread first: refused, nothing changed
    tasks = Path("/proc/self/task")  # threads the imports started (numpy's OpenBLAS, …)
    for task in tasks.iterdir() if tasks.is_dir() else ():
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.sched_setscheduler(int(task.name), os.SCHED_FIFO, param)
