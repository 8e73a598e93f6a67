"""The research probes' shared scoring: what it writes and prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.devset import build_dev_mixtures
from model.evaluate import make_systems
from model.research.dev_probe import score_and_write


@pytest.mark.slow
def test_scoring_writes_the_config_with_the_mixtures_and_prints_the_table(
    shared_data_dir: Path, tmp_path: Path, capsys
) -> None:
    mixtures = build_dev_mixtures(shared_data_dir, per_snr=1, seed=0)
    score_and_write(make_systems(["noisy"]), mixtures, tmp_path, {"seed": 0, "probe": "x"})
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert config == {"seed": 0, "probe": "x", "mixtures": [m.name for m in mixtures]}
    captured = capsys.readouterr()
    assert f"| all | noisy | {len(mixtures)} |" in captured.out
    assert captured.err.strip().startswith("wrote ") and "results.json" in captured.err
