"""The PercepNet network (PyTorch; training and export only, never imported by the server).

Per hop: 70 features → conv (width 5: three past frames, one future) → conv (width 3: one past, one
future) → stacked GRUs → two heads reading the last GRU, 34 gains and 34 strengths in [0, 1]. The
two convolutions together look two hops (20 ms) ahead and no further: the output for frame t needs
features up to t + 2, which is exactly the enhancer's look-ahead.

``PercepNet`` runs whole sequences (training); ``PercepNetStep`` runs one hop with explicit
state, with the GRUs and convolutions written as matrix products so that dynamic int8
quantisation covers them (onnxruntime does not quantise the ONNX GRU or Conv ops).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dsp.constants import NUM_BANDS, NUM_FEATURES

CONV1_WIDTH, CONV1_FUTURE = 5, 1  # frames t−3 .. t+1
CONV2_WIDTH, CONV2_FUTURE = 3, 1  # frames t−1 .. t+1
LOOKAHEAD_FRAMES = CONV1_FUTURE + CONV2_FUTURE  # 2 hops = 20 ms
MAX_STRENGTH_SCALE = 4.0
STRENGTH_SCALE_NAME = "strength_scale"  # the graph's initializer holding a scale other than 1


def head_strengths(logits: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Comb-filter strengths from the strength head's logits: ``min(1, scale·σ(logits))``.

    A scale above 1 calibrates a head that hedges between 0 and 1: the shipped network's
    strengths scaled by 1.5 raised PESQ-WB and DNSMOS P.808 on each of five dev draws
    (docs/model-experiments.md). At 1 the graph holds no extra op."""
    strengths = torch.sigmoid(logits)
    if isinstance(scale, float) and scale == 1.0:
        return strengths
    return torch.clamp(strengths * scale, max=1.0)


@dataclass(frozen=True)
class NetworkConfig:
    """Size of the network. ``paper()`` is PercepNet's ~8 M-parameter configuration."""

    conv1_channels: int = 128
    conv2_channels: int = 256
    gru_size: int = 256
    gru_layers: int = 3
    weight_clip: float = 0.5  # |w| bound kept during training: clean int8 quantisation
    # The strength head's sigmoid scaled by this and capped at 1 (see head_strengths)
    strength_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.strength_scale <= MAX_STRENGTH_SCALE:
            raise ValueError(
                f"strength_scale must be in [1, {MAX_STRENGTH_SCALE}], got {self.strength_scale}"
            )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> NetworkConfig:
        """A checkpoint's config; one from before heads reading every GRU layer were dropped
        carries ``skip_to_heads``, accepted only when off."""
        config = dict(config)
        if config.pop("skip_to_heads", False):
            raise ValueError("heads reading every GRU layer (skip_to_heads) are no longer built")
        return cls(**config)

    @staticmethod
    def paper() -> NetworkConfig:
        """Conv 128/512 and four 512-unit GRUs, as in the PercepNet paper."""
        return NetworkConfig(conv1_channels=128, conv2_channels=512, gru_size=512, gru_layers=4)

    def as_dict(self) -> dict[str, int | float]:
        """Plain dict for checkpoints and the model card."""
        return asdict(self)


class PercepNet(nn.Module):
    """Sequence model: features [B, T, NUM_FEATURES] → gains, strengths [B, T, NUM_BANDS]
    (frame-aligned)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(NUM_FEATURES, config.conv1_channels, CONV1_WIDTH)
        self.conv2 = nn.Conv1d(config.conv1_channels, config.conv2_channels, CONV2_WIDTH)
        self.grus = nn.ModuleList(
            nn.GRU(
                config.conv2_channels if i == 0 else config.gru_size,
                config.gru_size,
                batch_first=True,
            )
            for i in range(config.gru_layers)
        )
        self.gain_head = nn.Linear(config.gru_size, NUM_BANDS)
        self.strength_head = nn.Linear(config.gru_size, NUM_BANDS)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exactly what :class:`PercepNetStep` computes over a stream that starts from zero
        state and is flushed with two hops of zero features: output t is frame t's."""
        c1_past = CONV1_WIDTH - 1
        x = features.transpose(1, 2)  # [B, NUM_FEATURES, T]
        # Step τ = 0 .. T+1 sees features τ−4 .. τ (zeros outside the stream).
        x = torch.tanh(self.conv1(nn.functional.pad(x, (c1_past, LOOKAHEAD_FRAMES))))
        # ... and conv1 outputs τ−2 .. τ, whose history starts as zeros.
        x = torch.tanh(self.conv2(nn.functional.pad(x, (CONV2_WIDTH - 1, 0))))
        x = x.transpose(1, 2)  # [B, T+2, C]; step τ belongs to frame τ − 2
        for gru in self.grus:
            x, _ = gru(x)
        x = x[:, LOOKAHEAD_FRAMES:]
        strengths = head_strengths(self.strength_head(x), self.config.strength_scale)
        return torch.sigmoid(self.gain_head(x)), strengths

    def clip_weights(self) -> None:
        """Keep every weight matrix inside ±weight_clip (biases are left free)."""
        bound = self.config.weight_clip
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if "weight" in name:
                    parameter.clamp_(-bound, bound)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Affine(nn.Module):
    """y = x·Wᵀ + b written as MatMul + Add (ONNX Gemm would escape dynamic quantisation)."""

    def __init__(self, weight: object, bias: object) -> None:
        assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
        super().__init__()
        self.weight_t = nn.Parameter(weight.detach().t().contiguous().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map."""
        return torch.matmul(x, self.weight_t) + self.bias


def gru_update(
    inputs: torch.Tensor, hidden_map: nn.Module, h: torch.Tensor, size: int
) -> torch.Tensor:
    """One GRU step (PyTorch's gate order r, z, n) from the input map's output ``inputs``
    [B, 3·size] and the state ``h`` [B, size]: the new state."""
    i_r, i_z, i_n = torch.split(inputs, size, dim=1)
    h_r, h_z, h_n = torch.split(hidden_map(h), size, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)  # (1 − z)·n + z·h with one multiply


class PercepNetStep(nn.Module):
    """One hop with explicit state; same weights as a trained :class:`PercepNet`.

    Inputs: features [B, NUM_FEATURES], conv1 history [B, 4·NUM_FEATURES] (the four previous
    feature frames), conv2 history [B, 2·C1] (the two previous conv1 outputs), GRU states
    [B, L·H].
    Outputs: gains and strengths [B, NUM_BANDS] for the frame two hops before ``features``, and the
    three new states. Zero states are the start of a stream.
    """

    def __init__(self, trained: PercepNet) -> None:
        super().__init__()
        config = trained.config
        self.config = config
        # Conv as one matmul over the flattened window, oldest frame first.
        w1 = trained.conv1.weight.detach()  # [C1, NUM_FEATURES, 5]
        self.conv1 = Affine(
            w1.permute(0, 2, 1).reshape(config.conv1_channels, -1), trained.conv1.bias
        )
        w2 = trained.conv2.weight.detach()  # [C2, C1, 3]
        self.conv2 = Affine(
            w2.permute(0, 2, 1).reshape(config.conv2_channels, -1), trained.conv2.bias
        )
        self.input_maps = nn.ModuleList()
        self.hidden_maps = nn.ModuleList()
        for gru in trained.grus:
            assert isinstance(gru, nn.GRU)
            self.input_maps.append(Affine(gru.weight_ih_l0, gru.bias_ih_l0))
            self.hidden_maps.append(Affine(gru.weight_hh_l0, gru.bias_hh_l0))
        self.gain_head = Affine(trained.gain_head.weight, trained.gain_head.bias)
        self.strength_head = Affine(trained.strength_head.weight, trained.strength_head.bias)
        if config.strength_scale == 1.0:
            self.strength_scale: float | torch.Tensor = 1.0
        else:  # an initializer of the graph, which the ONNX loader reads back
            self.register_buffer(STRENGTH_SCALE_NAME, torch.tensor(config.strength_scale))

    def fixed_scale_weights(self) -> list[str]:
        """The matrices whose int8 export quantises their input with a fixed scale: they read
        the second convolution's tanh output or GRU states (convex mixes of tanh outputs, from
        0), values in [−1, 1] that use both signs. The convolutions' windows (features, and
        conv1's often one-sided tanh outputs) are quantised per stream on their own range;
        on the dev mixtures a fixed scale there cost 0.01 dB SI-SDR, elsewhere nothing."""
        return [
            f"{name}.weight_t"
            for name, module in self.named_modules()
            if isinstance(module, Affine) and name not in ("conv1", "conv2")
        ]

    def state_shapes(self, batch: int) -> tuple[tuple[int, ...], ...]:
        """Shapes of (conv1 history, conv2 history, GRU states) for a batch."""
        c = self.config
        return (
            (batch, (CONV1_WIDTH - 1) * NUM_FEATURES),
            (batch, (CONV2_WIDTH - 1) * c.conv1_channels),
            (batch, c.gru_layers * c.gru_size),
        )

    def forward(
        self,
        features: torch.Tensor,
        conv1_history: torch.Tensor,
        conv2_history: torch.Tensor,
        gru_state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every stream of the batch by one hop.

        ``gru_state`` is [B, layers·size], layer after layer: splitting it along the feature
        axis keeps the graph free of gathers and reshapes (each ONNX op costs microseconds).
        """
        size = self.config.gru_size  # a constant: no Shape ops in the graph
        window1 = torch.cat([conv1_history, features], dim=1)
        conv1_out = torch.tanh(self.conv1(window1))
        window2 = torch.cat([conv2_history, conv1_out], dim=1)
        x = torch.tanh(self.conv2(window2))
        new_states = []
        layer_states = torch.split(gru_state, size, dim=1)
        for h, w_ih, w_hh in zip(layer_states, self.input_maps, self.hidden_maps, strict=True):
            h = gru_update(w_ih(x), w_hh, h, size)
            new_states.append(h)
            x = h
        new_gru_state = torch.cat(new_states, dim=1)
        gains = torch.sigmoid(self.gain_head(x))
        strengths = head_strengths(self.strength_head(x), self.strength_scale)
        next_conv1 = window1[:, NUM_FEATURES:]
        next_conv2 = window2[:, self.config.conv1_channels :]
        return gains, strengths, next_conv1, next_conv2, new_gru_state


class PercepNetTwoHopStep(PercepNetStep):
    """Two consecutive hops in one call (a relay packet is 20 ms): the same weights, state
    and per-hop arithmetic as two :class:`PercepNetStep` calls, bit for bit in the int8 graph.

    ``features`` is [2, B, NUM_FEATURES] (hop, stream, feature); gains and strengths come back
    [2, B, NUM_BANDS], the state as after the second hop. The convolutions, the GRUs' input
    maps and the heads multiply both hops' rows in one matrix product, so each weight is read
    from memory once per packet instead of once per hop; only the recurrent maps run per hop,
    the second time on a matrix the first has just brought into cache.
    """

    def forward(
        self,
        features: torch.Tensor,
        conv1_history: torch.Tensor,
        conv2_history: torch.Tensor,
        gru_state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every stream of the batch by two hops."""
        size = self.config.gru_size
        f, c1 = NUM_FEATURES, self.config.conv1_channels
        frames = torch.cat([conv1_history, features[0], features[1]], dim=1)  # t−4 .. t+1
        windows1 = torch.stack([frames[:, : CONV1_WIDTH * f], frames[:, f:]])
        conv1_out = torch.tanh(self.conv1(windows1))
        conv1_frames = torch.cat([conv2_history, conv1_out[0], conv1_out[1]], dim=1)
        windows2 = torch.stack([conv1_frames[:, : CONV2_WIDTH * c1], conv1_frames[:, c1:]])
        x = torch.tanh(self.conv2(windows2))
        new_states = []
        layer_states = torch.split(gru_state, size, dim=1)
        for h, w_ih, w_hh in zip(layer_states, self.input_maps, self.hidden_maps, strict=True):
            both_inputs = w_ih(x)  # [2, B, 3·size]: both hops' rows in one product
            outputs = []
            for hop in range(2):
                h = gru_update(both_inputs[hop], w_hh, h, size)
                outputs.append(h)
            new_states.append(h)
            x = torch.stack(outputs)
        gains = torch.sigmoid(self.gain_head(x))
        strengths = head_strengths(self.strength_head(x), self.strength_scale)
        return (
            gains,
            strengths,
            frames[:, 2 * f :],
            conv1_frames[:, 2 * c1 :],
            torch.cat(new_states, dim=1),
        )
