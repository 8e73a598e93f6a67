"""Widening a trained network's GRUs keeps its outputs, and training can then use the new units."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.network import LOOKAHEAD_FRAMES, NetworkConfig, PercepNet, PercepNetStep
from model.widen import widen_grus

SMALL = NetworkConfig(conv1_channels=16, conv2_channels=24, gru_size=20, gru_layers=3)
WIDE = dataclasses.replace(SMALL, gru_size=28)


def trained_like(config: NetworkConfig) -> PercepNet:
    """A network with every weight random and non-zero, as trained ones are."""
    torch.manual_seed(0)
    network = PercepNet(config).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.uniform_(-0.4, 0.4)
    return network


def widened(network: PercepNet, config: NetworkConfig = WIDE) -> PercepNet:
    wide = PercepNet(config).eval()
    grown = widen_grus(
        network.state_dict(), network.config, config, torch.Generator().manual_seed(1)
    )
    wide.load_state_dict(grown)
    return wide


def test_a_widened_network_computes_what_it_was_grown_from() -> None:
    narrow = trained_like(SMALL)
    wide = widened(narrow)
    features = torch.randn(2, 40, 70)
    with torch.no_grad():
        gains, strengths = narrow(features)
        wide_gains, wide_strengths = wide(features)
    assert torch.allclose(gains, wide_gains, atol=1e-6)
    assert torch.allclose(strengths, wide_strengths, atol=1e-6)
    # the streaming form the export quantises agrees too
    step = PercepNetStep(wide).eval()
    state = tuple(torch.zeros(shape) for shape in step.state_shapes(2))
    with torch.no_grad():
        for t in range(6):
            step_gains, _, *state = step(features[:, t], *state)
    assert torch.allclose(step_gains, gains[:, 5 - LOOKAHEAD_FRAMES], atol=1e-5)


def test_the_new_units_are_live_and_learn_to_speak() -> None:
    wide = widened(trained_like(SMALL))
    features = torch.randn(2, 30, 70)
    new_units = wide.state_dict()["grus.0.weight_hh_l0"].shape[1] - SMALL.gru_size
    assert new_units == WIDE.gru_size - SMALL.gru_size
    gains, _ = wide(features)
    gains.sum().backward()
    head_grad = wide.gain_head.weight.grad
    assert head_grad is not None
    # the heads do not read the new units yet, but their gradient asks them to
    assert torch.count_nonzero(wide.gain_head.weight[:, SMALL.gru_size :]) == 0
    assert head_grad[:, SMALL.gru_size :].abs().sum() > 0


@pytest.mark.parametrize(
    "wanted",
    [
        dataclasses.replace(SMALL, gru_size=12),
        dataclasses.replace(SMALL, gru_size=20),
        dataclasses.replace(WIDE, conv2_channels=32),
        dataclasses.replace(WIDE, gru_layers=4),
    ],
)
def test_only_wider_grus_can_be_grown(wanted: NetworkConfig) -> None:
    with pytest.raises(ValueError):
        widen_grus(
            trained_like(SMALL).state_dict(), SMALL, wanted, torch.Generator().manual_seed(1)
        )
