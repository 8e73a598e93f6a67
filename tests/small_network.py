"""A small PercepNet for the export and runtime tests: the shipped graph's shape, exported in
seconds (needs torch, onnx and onnxruntime: import it after their ``importorskip``)."""

from __future__ import annotations

from pathlib import Path

import torch

from model.export import export_all
from model.network import NetworkConfig, PercepNet

SMALL = NetworkConfig(conv1_channels=32, conv2_channels=48, gru_size=40, gru_layers=2)


def small_network(seed: int) -> PercepNet:
    """Random weights of the small network, the same for the same seed."""
    torch.manual_seed(seed)
    return PercepNet(SMALL).eval()


def exported_folder(model: PercepNet, out: Path) -> Path:
    """``out`` after ``model.export.export_all`` wrote every graph of ``model`` into it."""
    export_all(model, out)
    return out
