"""The paired comparison of two eval runs: per-file changes, their standard error and the files
better, overall and by SNR; runs that scored different mixtures or lack a system are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model import paired_eval
from model.paired_eval import METRICS, paired_change, report, scores


def _results(system: str, pesq: list[float], snrs: list[float]) -> dict[str, Any]:
    rows = []
    for i, (value, snr) in enumerate(zip(pesq, snrs, strict=True)):
        row: dict[str, Any] = {key: 1.0 for key, _ in METRICS}
        rows.append(row | {"mixture": f"m{i}", "system": system, "snr_db": snr, "pesq_wb": value})
    return {"files": rows}


def test_the_change_is_per_file_with_its_standard_error() -> None:
    change = paired_change([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.5, 3.8])
    delta = np.array([0.5, 0.0, 0.5, -0.2])
    assert change.mean == pytest.approx(delta.mean())
    assert change.standard_error == pytest.approx(delta.std(ddof=1) / 2.0)
    assert (change.better, change.files) == (2, 4)
    assert (change.base_mean, change.candidate_mean) == (2.5, pytest.approx(2.7))
    assert change.beyond_error  # 0.200 against a standard error of 0.178
    assert not paired_change([1.0, 2.0], [1.1, 1.9]).beyond_error


def test_the_report_pairs_by_mixture_and_splits_by_snr() -> None:
    base = scores(_results("percepnet_int8", [1.0, 2.0, 3.0, 4.0], [0, 0, 5, 5]), "percepnet_int8")
    candidate = scores(_results("percepnet", [1.2, 2.2, 3.0, 3.9], [0, 0, 5, 5]), "percepnet")
    # the candidate's rows in another order still pair by mixture
    candidate = dict(reversed(list(candidate.items())))
    text = report(base, candidate)
    assert "| PESQ-WB | 2.500 | 2.575 | +0.075 (" in text and ", 2 of 4) | no |" in text
    assert "| PESQ-WB | 1.500 → 1.700 (+0.200 ± 0.000) | 3.500 → 3.450 (-0.050 ± 0.050) |" in text
    assert "| metric by SNR | 0 dB | 5 dB |" in text


def test_runs_of_other_mixtures_or_without_the_system_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_results("percepnet_int8", [1.0, 2.0], [0, 0])))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_results("percepnet", [1.0, 2.0, 3.0], [0, 0, 5])))
    with pytest.raises(SystemExit) as exit_info:
        paired_eval.main([str(base), str(other)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: the two runs scored different mixtures, e.g. m2\n"
    with pytest.raises(SystemExit):
        paired_eval.main([str(base), str(other), "--candidate-system", "rnnoise"])
    assert "no files scored for system 'rnnoise' (has: percepnet)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paired_eval.main([str(base), str(tmp_path / "missing.json")])
    assert capsys.readouterr().err.startswith("error: ")
    same = tmp_path / "same.json"
    same.write_text(json.dumps(_results("percepnet", [1.5, 2.5], [0, 0])))
    paired_eval.main([str(base), str(same)])
    assert "| PESQ-WB | 1.500 | 2.000 | +0.500 (0.000, 2 of 2) | yes |" in capsys.readouterr().out
