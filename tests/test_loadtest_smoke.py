"""A tiny run of the load test (N=2, a few seconds) so that the harness cannot rot.

The measured window starts once every peer is connected, so a slow start on a loaded machine
shortens nothing; what is asserted are the harness's own invariants, not speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.relay_load import main
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
