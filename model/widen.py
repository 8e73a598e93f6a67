"""Widen a trained network's GRUs without changing what it computes (Net2Net-style growth).

A fine-tune that wants more capacity than the weights it starts from has: each GRU layer gets
``new − old`` more units. Their gate rows start random (PyTorch's own GRU initialisation,
scaled by ``scale``), so they carry signal from the first step, but every weight that reads them
into the old units, the next layer's old units or the heads is zero. The old units therefore
see exactly what they saw before, and the widened network's outputs equal the trained one's
until training gives the new units a say.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from model.network import NetworkConfig

GATES = 3  # PyTorch's GRU stacks the reset, update and new gates' rows


def _grown_rows(
    old: torch.Tensor, old_size: int, new_size: int, rows: torch.Tensor
) -> torch.Tensor:
    """``old`` [3·old_size, …] with each gate's block grown to new_size rows, the new rows
    taken from ``rows`` [3·(new_size − old_size), …]."""
    added = new_size - old_size
    blocks = []
    for gate in range(GATES):
        blocks.append(old[gate * old_size : (gate + 1) * old_size])
        blocks.append(rows[gate * added : (gate + 1) * added])
    return torch.cat(blocks, dim=0)


def _zero_columns(weight: torch.Tensor, columns: int) -> torch.Tensor:
    """``weight`` with ``columns`` zero columns appended (inputs the old rows must not read)."""
    return torch.cat([weight, weight.new_zeros(weight.shape[0], columns)], dim=1)


def widen_grus(
    weights: dict[str, torch.Tensor],
    found: NetworkConfig,
    wanted: NetworkConfig,
    generator: torch.Generator,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """``weights`` of a ``found`` network as a ``wanted`` one whose GRUs are wider (and nothing
    else differs), computing the same outputs; ValueError for any other change of shape."""
    if dataclasses.replace(found, gru_size=wanted.gru_size, weight_clip=wanted.weight_clip) != (
        wanted
    ):
        raise ValueError(f"only the GRU size can grow: {found.as_dict()} → {wanted.as_dict()}")
    old, new = found.gru_size, wanted.gru_size
    if new <= old:
        raise ValueError(f"the GRUs can only grow ({old} → {new})")
    added = new - old
    bound = scale / math.sqrt(new)

    def random(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * bound

    grown = dict(weights)
    for layer in range(found.gru_layers):
        prefix = f"grus.{layer}."
        w_ih, w_hh = weights[prefix + "weight_ih_l0"], weights[prefix + "weight_hh_l0"]
        inputs_added = added if layer > 0 else 0  # layer 0 reads conv2, which keeps its size
        old_ih = _zero_columns(w_ih, inputs_added)
        grown[prefix + "weight_ih_l0"] = _grown_rows(
            old_ih, old, new, random(GATES * added, w_ih.shape[1] + inputs_added)
        )
        grown[prefix + "weight_hh_l0"] = _grown_rows(
            _zero_columns(w_hh, added), old, new, random(GATES * added, new)
        )
        for bias in ("bias_ih_l0", "bias_hh_l0"):
            grown[prefix + bias] = _grown_rows(
                weights[prefix + bias], old, new, random(GATES * added)
            )
    for head in ("gain_head", "strength_head"):
        grown[head + ".weight"] = _zero_columns(weights[head + ".weight"], added)
    return grown
