"""A tiny run of the load test (N=2, a few seconds) so that the harness cannot rot.

The measured window starts once every peer is connected, so a slow start on a loaded machine
shortens nothing; what is asserted are the harness's own invariants, not speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.relay_load import main, may_run_realtime, scheduling_of
from loadtest.server import pin
from model.runtime import DEFAULT_MODEL


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
def test_load_test_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "load.json"
    main(
        [
            "--participants",
            "2",
            "--room-size",
            "2",
            "--seconds",
            "8",
            "--client-processes",
            "1",
            "--workers",  # a shard thread, so that its CPU is counted apart (default: the loop)
            "1",
            "--generated",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["participants"] == 2 and report["connected"] == 2
    assert report["frames_enhanced_per_second"] > 0  # inside the window, after connection
    assert report["speaker_pairs"] == 1  # only the first listener of the room decodes
    assert report["server_cpu_percent_per_participant"] > 0
    assert report["client_cpu_percent_per_participant"] > 0  # the load generator's own share
    by_thread = report["server_cpu_percent_per_participant_by_thread"]  # pnr_thread_cpu_…
    assert {"event_loop", "enhance"} <= set(by_thread)
    assert report["server_ready_seconds"] < 60
    if report["frames_dropped"] == 0 and not report["frames_trimmed_for_latency"]:
        # a server that kept up delivered the speaker's audio whole: it must be found in the
        # listener's recording and its delay measured (a starved one garbles the timeline)
        assert report["speakers_found_in_mixes"] == 1, report
        assert report["mouth_to_ear_seconds_p50"] is not None, report
    assert "server_cpu_percent_per_participant" in capsys.readouterr().out


def _may_use_fifo() -> bool:
    try:
        return os.sched_get_priority_max(os.SCHED_FIFO) >= 5 and may_run_realtime(5)
    except (AttributeError, OSError):
        return False


@pytest.mark.skipif(not _may_use_fifo(), reason="SCHED_FIFO is not permitted here")
def test_pin_runs_a_child_under_sched_fifo() -> None:
    # what --realtime-priority does to the server and the client processes
    cores = set(sorted(os.sched_getaffinity(0))[:1])
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], preexec_fn=lambda: pin(cores, 5)
    )
    try:
        assert scheduling_of(child.pid) == "SCHED_FIFO 5"
        assert os.sched_getaffinity(child.pid) == cores
    finally:
        child.kill()
        child.wait()
    assert scheduling_of(os.getpid()).startswith("SCHED_OTHER")  # the harness itself unchanged


def test_realtime_priority_refused_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with pytest.raises(SystemExit) as exit_info:
        main(["--participants", "2", "--realtime-priority", "40"])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(
        "error: --realtime-priority needs root or CAP_SYS_NICE (SCHED_FIFO was refused)"
    )


@pytest.mark.parametrize("priority", ["1", "100", "x"])
def test_realtime_priority_out_of_range_is_refused(
    priority: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--realtime-priority", priority])
    assert exit_info.value.code != 0
    assert "error:" in capsys.readouterr().err
