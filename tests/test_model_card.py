"""The model card: re-evaluating the shipped weights keeps their card's text, the acceptance
checks and the gap to DeepFilterNet3 come from the evaluation, and nothing on the shipped path
imports the DNSMOS fine-tune."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.model_card import DEV_HEADING, _gap_table, _verdict, shipped_card_head

ROOT = Path(__file__).resolve().parents[1]


def _row(system: str, snr_db: float | None, pesq: float, cpu: float = 100.0) -> dict:
    return {
        "system": system,
        "snr_db": snr_db,
        "pesq_wb": pesq,
        "stoi": 0.8,
        "si_sdr_db": 9.0,
        "dnsmos_p808": None if system == "rnnoise" else 3.0,
        "dnsmos_ovrl": 2.6,
        "cpu_us_per_hop": cpu,
    }


def _write_results(eval_dir: Path) -> None:
    summary = [
        _row("rnnoise", 0.0, 1.5, 400.0),
        _row("percepnet_int8", 0.0, 1.4, 150.0),
        _row("deepfilternet3", 0.0, 1.9),
        _row("rnnoise", None, 1.7, 400.0),
        _row("percepnet_int8", None, 2.0, 150.0),
        _row("deepfilternet3", None, 2.3),
    ]
    (eval_dir / "results.json").write_text(json.dumps({"summary": summary}))


def test_the_verdict_has_the_issues_checks(tmp_path: Path) -> None:
    _write_results(tmp_path)
    lines = _verdict(tmp_path).splitlines()
    assert "| PESQ-WB ≥ RNNoise + 0.25 | 2.000 | 1.950 | yes |" in lines
    assert "| PESQ-WB ≥ RNNoise at +0 dB | 1.400 | 1.500 | **no** |" in lines
    assert "| DNSMOS P.808 ≥ RNNoise | 3.000 | n/a | **no** |" in lines  # unknown is not met
    assert "| CPU µs / 10 ms (DSP + int8 model) ≤ 0.5 × RNNoise's | 150 | 200 | yes |" in lines


def test_the_gap_to_deepfilternet3_per_snr_and_overall(tmp_path: Path) -> None:
    _write_results(tmp_path)
    lines = _gap_table(tmp_path, "deepfilternet3").splitlines()
    assert lines[2].startswith("| +0 | -0.50 | +0.000 | +0.0 | +0.00 | +0.00 |")
    assert lines[3].startswith("| all | -0.30 |")
    assert "lacks" in _gap_table(tmp_path, "nobody")


def test_the_shipped_cards_head_is_kept_only_for_the_same_weights(tmp_path: Path) -> None:
    from model.runtime import sha256_of

    int8 = tmp_path / "percepnet-int8.onnx"
    int8.write_bytes(b"weights")
    card = tmp_path / "MODEL_CARD.md"
    head = f"# card\nSHA-256 `{sha256_of(int8)}`\n## Training\nhow\n\n"
    card.write_text(head + DEV_HEADING + "old table\n")
    assert shipped_card_head(card, int8) == head
    int8.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="other weights"):
        shipped_card_head(card, int8)
    card.write_text(head)
    with pytest.raises(ValueError, match="no '## Dev-set evaluation' section"):
        shipped_card_head(card, int8)


@pytest.mark.slow
def test_nothing_on_the_shipped_path_imports_the_research_tools() -> None:
    shipped = "service.cli, service.app, model.runtime, model.train, model.export, model.model_card"
    code = (
        f"import sys, {shipped}, model.evaluate\n"
        "bad = [m for m in sys.modules if m.startswith('model.research')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
