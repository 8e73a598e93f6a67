"""The user documents stay true to the code: every setting is in the reference table with its
default, every ``PNR_`` variable the documents name exists, every relative link (and its
``#anchor``) resolves, and the README's quality table and gap to DeepFilterNet3 are the model
card's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")],
    key=lambda p: p.name,
)
VARIABLE = re.compile(r"PNR_[A-Z0-9_]*[A-Z0-9]")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_FOLDERS = ("dsp", "model", "service", "loadtest", "docker")


def _configuration_rows() -> list[list[str]]:
    """The cells of the rows of the reference's configuration table."""
    section = REFERENCE.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `PNR_")
    ]


def test_every_setting_is_in_the_reference_table_with_its_default() -> None:
    documented: dict[str, str | None] = {}
    for cells in _configuration_rows():
        names = re.findall(r"`PNR_([A-Z0-9_]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])
        for index, name in enumerate(names):
            documented[name.lower()] = defaults[index] if len(defaults) == len(names) else None
    assert sorted(documented) == sorted(Settings.model_fields)
    for name, shown in documented.items():
        default = Settings.model_fields[name].get_default(call_default_factory=True)
        if shown is None or default is None:
            continue  # described in words ("unset", "all interfaces")
        if isinstance(default, bool):
            expected = str(default).lower()
        elif isinstance(default, float) and default.is_integer():
            expected = str(int(default))
        else:
            expected = str(default)
        assert shown == expected, f"PNR_{name.upper()}: documented {shown}, default {expected}"


def _variables_the_code_reads() -> set[str]:
    found: set[str] = set()
    for folder in CODE_FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".sh", ".yaml", ".yml", ".env", ""}:
                found |= set(VARIABLE.findall(path.read_text(errors="ignore")))
    return found


def test_every_variable_the_documents_name_exists() -> None:
    known = {f"PNR_{name.upper()}" for name in Settings.model_fields}
    known |= _variables_the_code_reads()
    for document in DOCUMENTS:
        if document.name == "CHANGELOG.md":
            continue  # history may name what was removed
        unknown = set(VARIABLE.findall(document.read_text())) - known
        assert not unknown, f"{document.relative_to(ROOT)} names {sorted(unknown)}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    return {
        _anchor(line.lstrip("#"))
        for line in document.read_text().splitlines()
        if line.startswith("#")
    }


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path_text, _, anchor = target.partition("#")
        path = (document.parent / path_text).resolve() if path_text else document
        assert path.exists(), f"{document.name}: {target} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{document.name}: no #{anchor} in {path.name}"


def test_the_anchor_rule_follows_github() -> None:
    assert _anchor(" Network faults and soak") == "network-faults-and-soak"
    assert _anchor(" HTTP API and configuration") == "http-api-and-configuration"
    assert _anchor(" Cleaning files: `denoise`") == "cleaning-files-denoise"


README_SYSTEMS = {
    "noisy input": "noisy",
    "RNNoise": "rnnoise",
    "WebRTC NS (16 kHz)": "webrtc_ns",
    "DeepFilterNet3": "deepfilternet3",
    "this model, int8": "percepnet_int8",
}


def _table_rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text`` whose first header is
    ``first_header``, as {header: cell} with bold marks removed."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    headers = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("**", "") for cell in line.strip("|").split("|")]
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def test_the_readmes_quality_table_is_the_model_cards() -> None:
    card = (ROOT / "model" / "weights" / "MODEL_CARD.md").read_text()
    quality = (ROOT / "README.md").read_text().split("## Quality", 1)[1].split("\n## ", 1)[0]
    card_rows = {r["system"]: r for r in _table_rows(card, "SNR (dB)") if r["SNR (dB)"] == "all"}
    readme_rows = _table_rows(quality, "system")
    assert {README_SYSTEMS[r["system"]] for r in readme_rows} >= {
        "rnnoise",
        "deepfilternet3",
        "percepnet_int8",
    }
    columns = {"PESQ-WB": "PESQ-WB", "STOI": "STOI", "SI-SDR (dB)": "SI-SDR (dB)"}
    columns |= {"DNSMOS P.808": "DNSMOS P.808", "DNSMOS OVRL": "DNSMOS OVRL"}
    columns |= {"CPU µs / 10 ms": "CPU µs / 10 ms"}
    for row in readme_rows:
        measured = card_rows[README_SYSTEMS[row["system"]]]
        for readme_column, card_column in columns.items():
            if row[readme_column]:  # the noisy input has no CPU figure
                assert row[readme_column] == measured[card_column], (row["system"], readme_column)
    # the gap to DeepFilterNet3, stated in words, is the card's
    gap_section = card.split("Gap to DeepFilterNet3", 1)[1]
    (gap,) = [r for r in _table_rows(gap_section, "SNR (dB)") if r["SNR (dB)"] == "all"]
    for metric in ("PESQ-WB", "STOI", "SI-SDR (dB)", "DNSMOS P.808", "DNSMOS OVRL"):
        assert gap[metric].lstrip("+-") in quality, f"the README's gap in {metric}"
