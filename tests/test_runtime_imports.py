"""The relay's inference path imports no training or research code: ``model.runtime`` and every
``service`` module load without torch, onnx, the evaluation tools, or any other ``model`` module
(a plain ``pip install .`` has none of them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING_PACKAGES = ("torch", "onnx", "matplotlib", "pesq", "pystoi", "speechmos", "librosa")


def test_runtime_and_relay_import_no_training_code() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import model.runtime, service\n"
        "for module in pkgutil.iter_modules(service.__path__):\n"
        "    importlib.import_module('service.' + module.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert "service.relay" in loaded and "model.runtime" in loaded
    assert {m for m in loaded if m.startswith("model.")} == {"model.runtime"}
    assert not {m.split(".")[0] for m in loaded} & set(TRAINING_PACKAGES)
