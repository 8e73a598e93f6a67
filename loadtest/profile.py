"""Where the relay's CPU time goes: a py-spy sampling profile of the server, by component.

``py-spy record`` samples every thread of the server (and of its workers with
``serve --processes N``) during the load test's measured window and writes collapsed stacks
(``--format raw``: one ``frame;frame;… count`` line per distinct stack, the input of
flamegraph.pl and speedscope). :func:`components` then attributes each sample to the most
specific component on its stack (leaf first: the network, the DSP kernels, Opus, SRTP, …).
Samples whose leaf is a wait (a thread woken up but still queued for the CPU or the GIL) are
set apart, and each thread group's samples are scaled to that group's measured CPU time, so
the table reads in % of one core per participant and adds up to the server's total.
"""

from __future__ import annotations

import linecache
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from service.metrics import thread_group

# (component, substrings of a frame): the first rule that matches a frame, scanning from the
# leaf towards the root, names the sample's component
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("network (onnxruntime)", ("onnxruntime",)),
    ("DSP kernels (numba)", ("dsp/", "Enhancer.")),
    ("state gather/scatter, batching", ("model/runtime.py", "service/batching.py")),
    ("Opus encode (per listener)", ("service/opus.py",)),
    ("Opus decode (per speaker)", ("service/concealment.py", "aiortc/codecs/opus.py")),
    ("SRTP", ("pylibsrtp",)),
    ("ICE, UDP send", ("aioice",)),
    ("RTP/RTCP (aiortc)", ("aiortc/",)),
    ("PCM conversion", ("service/audio_frames.py",)),
    ("receive buffer", ("service/jitter.py",)),
    ("mixing", ("service/mixer.py",)),
    ("relay, other", ("service/",)),
    ("metrics", ("prometheus_client",)),
    ("event loop (uvloop/asyncio)", ("asyncio", "Runner.run", "uvloop")),
)
# "Runner.run" as the leaf: inside uvloop's C loop, which py-spy cannot see into; a --native
# check showed those samples to be mostly epoll_pwait (idle) with under a tenth in uvloop's own
# work, so they count as waiting
WAIT_FUNCTIONS = {
    "Condition.wait", "Event.wait", "Queue.get", "SimpleQueue.get", "Thread.join", "Runner.run"
}  # fmt: skip
# a shard sleeping until its batch clock's tick (``self._sleep(…)``, ``time.sleep(…)``) waits too:
# the sleep is C, so py-spy's leaf is the Python line that called it
WAIT_CALLS = re.compile(r"\.(get|wait|join|select|_?sleep)\(")
FRAME = re.compile(r"^(?P<function>.+) \((?P<file>[^()]+):(?P<line>\d+)\)$")
THREAD = re.compile(r"^thread \(\w+\): (?P<name>.*)$")


def py_spy_command() -> str | None:
    """The py-spy executable, or None when it is not installed."""
    return shutil.which("py-spy")


def start_recording(pid: int, seconds: float, output: Path, rate: int = 100) -> subprocess.Popen:
    """Start sampling process ``pid`` and its children for ``seconds`` into ``output``."""
    executable = py_spy_command()
    if executable is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy (or '.[bench]')")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(rate), "--format", "raw", "--output", str(output),
        "--threads", "--subprocesses", "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _source_line(file: str, line: int) -> str:
    for root in (Path.cwd(), *map(Path, sys.path)):
        text = linecache.getline(str(root / file), line)
        if text:
            return text
    return ""


def is_wait(leaf: str) -> bool:
    """True when the leaf frame is a thread waiting (on a queue, a condition, a selector)."""
    match = FRAME.match(leaf)
    if match is None:
        return False
    if match["function"] in WAIT_FUNCTIONS:
        return True
    return bool(WAIT_CALLS.search(_source_line(match["file"], int(match["line"]))))


def component_of(frames: list[str]) -> str:
    """The most specific component named on a stack (frames root first)."""
    for frame in reversed(frames):
        for component, needles in RULES:
            if any(needle in frame for needle in needles):
                return component
    return "other"


def read_samples(raw: Path) -> Counter[tuple[str, str]]:
    """Sample counts by (thread group, component) from py-spy's raw output; waits are
    counted under the component ``"(waiting)"``."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread_at = next((i for i, f in enumerate(frames) if THREAD.match(f)), None)
        if thread_at is None:
            continue
        group = thread_group(THREAD.match(frames[thread_at])["name"])  # type: ignore[index]
        calls = frames[thread_at + 1 :]
        component = "(waiting)" if calls and is_wait(calls[-1]) else component_of(calls)
        counts[(group, component)] += int(count)
    return counts


def components(
    samples: Counter[tuple[str, str]], cpu_by_group: dict[str, float]
) -> list[tuple[str, float]]:
    """Each component's share in the unit of ``cpu_by_group`` (e.g. % of a core per
    participant): every group's non-waiting samples scaled to the group's measured CPU.
    Groups without samples keep their CPU under ``"<group> (not sampled)"``."""
    shares: dict[str, float] = {}
    for group, cpu in cpu_by_group.items():
        busy = {
            component: n
            for (g, component), n in samples.items()
            if g == group and component != "(waiting)"
        }
        total = sum(busy.values())
        if total == 0:
            shares[f"{group} (not sampled)"] = shares.get(f"{group} (not sampled)", 0.0) + cpu
            continue
        for component, n in busy.items():
            shares[component] = shares.get(component, 0.0) + cpu * n / total
    return sorted(shares.items(), key=lambda kv: -kv[1])


def print_components(rows: list[tuple[str, float]], unit: str) -> None:
    """The profile as a two-column table."""
    width = max((len(name) for name, _ in rows), default=10)
    print(f"{'where the time goes':<{width}}  {unit}")
    for name, share in rows:
        print(f"{name:<{width}}  {share:.2f}")
    print(f"{'total':<{width}}  {sum(share for _, share in rows):.2f}")
