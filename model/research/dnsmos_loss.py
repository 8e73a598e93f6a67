"""DNSMOS P.835 as a differentiable torch module (training only).

The ONNX network that ``speechmos`` bundles (the one the evaluation scores with) is run node by
node with torch operations by :class:`OnnxTorchGraph`, so a loss on its OVRL reaches the
enhancer's gains. (``onnx2torch`` would do this, but it imports torchvision, which has no build
for the CPU-only torch pinned here; the interpreter knows the 17 operators this graph uses and
refuses any other, and a test holds it to onnxruntime.) The audio is
prepared as ``speechmos`` prepares it: 16 kHz, clipped to [−1, 1], looped to at least 9.01 s,
then one 9.01-s window scored; the raw outputs go through DNSMOS's own polynomial mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

WINDOW_SAMPLES_16K = 144_160  # DNSMOS P.835 scores 9.01 s at a time
DITHER_RMS = 1e-6  # −120 dBFS
# speechmos's polynomial maps from the network's raw outputs to SIG, BAK and OVRL
SIG_POLY = (-0.08397278, 1.22083953, 0.0052439)
BAK_POLY = (-0.13166888, 1.60915514, -0.39604546)
OVRL_POLY = (-0.06766283, 1.11546468, 0.04602535)


def _poly(coefficients: tuple[float, float, float], x: torch.Tensor) -> torch.Tensor:
    a, b, c = coefficients
    return (a * x + b) * x + c


def dnsmos_model_path() -> Path:
    """The P.835 (SIG, BAK, OVRL) ONNX model inside the installed ``speechmos``."""
    from speechmos import dnsmos

    return Path(dnsmos.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"


def dnsmos_window(signal_16k: torch.Tensor, start: int = 0) -> torch.Tensor:
    """One clip's 9.01-s scoring window, looped as ``speechmos`` loops short clips."""
    audio = signal_16k
    while audio.shape[-1] < WINDOW_SAMPLES_16K:
        audio = torch.cat([audio, audio], dim=-1)
    start = min(start, audio.shape[-1] - WINDOW_SAMPLES_16K)
    return audio[..., start : start + WINDOW_SAMPLES_16K]


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values]


class OnnxTorchGraph(torch.nn.Module):
    """A single-input, single-output ONNX graph evaluated with torch operations (so autograd
    runs through it); its weights are constant tensors. Only the operators of DNSMOS P.835."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnx
        from onnx import helper, numpy_helper

        graph = onnx.load(str(path)).graph
        self.constants: dict[str, torch.Tensor] = {
            t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer
        }
        self.nodes = [
            (
                n.op_type,
                list(n.input),
                list(n.output),
                {a.name: helper.get_attribute_value(a) for a in n.attribute},
            )
            for n in graph.node
        ]
        unknown = {op for op, *_ in self.nodes} - set(_OPERATORS)
        if unknown:
            raise ValueError(f"{path.name}: operators not supported here: {sorted(unknown)}")
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every node in graph order."""
        values = dict(self.constants)
        values[self.input_name] = x
        for op, inputs, outputs, attrs in self.nodes:
            values[outputs[0]] = _OPERATORS[op]([values[i] for i in inputs if i], attrs)
        return values[self.output_name]


def _conv(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    pads = _ints(attrs.get("pads", [0] * 2 * (weight.dim() - 2)))
    padding = pads[: len(pads) // 2]
    if pads[: len(pads) // 2] != pads[len(pads) // 2 :]:
        raise ValueError(f"asymmetric Conv pads {pads}")
    conv = torch.nn.functional.conv1d if weight.dim() == 3 else torch.nn.functional.conv2d
    return conv(
        x,
        weight,
        bias,
        stride=_ints(attrs.get("strides", [1])),
        padding=padding,
        dilation=_ints(attrs.get("dilations", [1])),
        groups=int(attrs.get("group", 1)),
    )


def _slice(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    x, starts, ends, axes, steps = args[0], *(_ints(a.tolist()) for a in args[1:5])
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis] = slice(start, min(end, x.shape[axis]), step)
    return x[tuple(index)]


_OPERATORS: dict[str, Callable[[list[torch.Tensor], dict[str, Any]], torch.Tensor]] = {
    "Add": lambda a, _: a[0] + a[1],
    "Mul": lambda a, _: a[0] * a[1],
    "Div": lambda a, _: a[0] / a[1],
    "Pow": lambda a, _: torch.pow(a[0], a[1]),
    "Max": lambda a, _: torch.maximum(a[0], a[1]),
    "Sqrt": lambda a, _: torch.sqrt(a[0]),
    "Log": lambda a, _: torch.log(a[0]),
    "Relu": lambda a, _: torch.relu(a[0]),
    "MatMul": lambda a, _: a[0] @ a[1],
    "Concat": lambda a, attrs: torch.cat(a, dim=int(attrs["axis"])),
    "Transpose": lambda a, attrs: a[0].permute(*_ints(attrs["perm"])),
    "Reshape": lambda a, _: a[0].reshape(
        [a[0].shape[i] if d == 0 else int(d) for i, d in enumerate(a[1].tolist())]
    ),
    "Unsqueeze": lambda a, attrs: a[0].unsqueeze(_ints(attrs["axes"])[0]),
    "ReduceMax": lambda a, attrs: torch.amax(
        a[0], dim=_ints(attrs["axes"]), keepdim=bool(attrs.get("keepdims", 1))
    ),
    "MaxPool": lambda a, attrs: torch.nn.functional.max_pool2d(
        a[0], _ints(attrs["kernel_shape"]), _ints(attrs["strides"])
    ),
    "Conv": _conv,
    "Slice": _slice,
}


class DnsmosP835(torch.nn.Module):
    """[B, 144160] 16 kHz windows → (SIG, BAK, OVRL) [B] each, differentiable."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.network = OnnxTorchGraph(path or dnsmos_model_path())

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores of each window, mapped as DNSMOS maps them."""
        # a dither far below any recording's noise floor keeps every spectrogram bin above
        # zero, where DNSMOS's magnitude (a square root) has a finite gradient
        dither = DITHER_RMS * torch.randn_like(windows) if windows.requires_grad else 0.0
        raw = self.network(windows.clamp(-1.0, 1.0) + dither)
        return _poly(SIG_POLY, raw[:, 0]), _poly(BAK_POLY, raw[:, 1]), _poly(OVRL_POLY, raw[:, 2])
