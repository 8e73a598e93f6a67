"""Labelled counters start with every known reason at zero (dashboards show 0, not "No data"),
and the known reasons are the ones the relay's code counts."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from service import metrics
from service.metrics import RelayMetrics

SERVICE = Path(__file__).resolve().parents[1] / "service"


def test_every_known_reason_is_exported_at_zero_on_start() -> None:
    exported = generate_latest(RelayMetrics().registry).decode()
    for name, reasons in (
        ("pnr_frames_dropped_total", metrics.FRAMES_DROPPED_REASONS),
        ("pnr_frames_passed_through_total", metrics.FRAMES_PASSED_REASONS),
        ("pnr_leaves_total", metrics.LEAVE_REASONS),
    ):
        for reason in reasons:
            assert f'{name}{{reason="{reason}"}} 0.0' in exported, (name, reason)


def test_the_known_reasons_are_those_the_code_counts() -> None:
    code = "\n".join(path.read_text() for path in SERVICE.glob("*.py"))
    dropped = set(re.findall(r'frames_dropped\.labels\("(\w+)"\)', code))
    dropped |= set(re.findall(r'_count_dropped\("(\w+)"\)', code))
    dropped |= set(re.findall(r'on_dropped\("(\w+)"\)', code))  # the inbound queue's callback
    passed = set(re.findall(r'frames_passed\.labels\("(\w+)"\)', code))
    leaves = set(re.findall(r'leave\([^()]*, "(\w+)"\)', code))
    leaves |= set(re.findall(r'expired\.append\(\([^()]*, "(\w+)"\)\)', code))
    leaves |= {f"connection_{state}" for state in ("failed", "closed")}  # f"connection_{state}"
    assert dropped == set(metrics.FRAMES_DROPPED_REASONS)
    assert passed == set(metrics.FRAMES_PASSED_REASONS)
    assert leaves == set(metrics.LEAVE_REASONS)
