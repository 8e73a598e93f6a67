"""A tiny run of the batching benchmark so that its table cannot rot (figures, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.runtime import DEFAULT_MODEL

pytest.importorskip("pyrnnoise")


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
def test_bench_batch_reports_the_model_step_and_the_whole_enhancer_per_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from loadtest.bench_batch import main

    main(["--sizes", "1,3", "--frames", "3", "--json", str(tmp_path / "bench.json")])
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = result["rows"]
    # one hop a call and, the shipped model having its two-hop graph, two, side by side
    assert [(row["batch"], row["calls"]) for row in rows] == [
        (1, "one hop a call"),
        (1, "two hops a call"),
        (3, "one hop a call"),
        (3, "two hops a call"),
    ]
    for row in rows:
        hops = 2 if row["calls"] == "two hops a call" else 1
        assert row["model_per_stream_us"] == pytest.approx(
            row["model_call_us"] / row["batch"] / hops
        )
        assert row["ratio_to_rnnoise"] == pytest.approx(
            row["median_us"] / result["rnnoise"]["median_us"]
        )
        assert 0 < row["cpu_median_us"] and row["cpu_ratio_to_rnnoise"] == pytest.approx(
            row["cpu_median_us"] / result["rnnoise"]["median_us"]
        )
    table = capsys.readouterr().out
    assert "| streams batched | model calls | model step µs per call |" in table
    assert sum(line.startswith(("| 1 |", "| 3 |")) for line in table.splitlines()) == 4
