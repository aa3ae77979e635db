"""ConvLSTM (Shi et al., NeurIPS 2015), a stack of convolutional LSTM layers behind the Expert interface.

    i_t = sig(W_xi * X_t + W_hi * H_{t-1} [+ W_ci . C_{t-1}] + b_i)
    f_t = sig(W_xf * X_t + W_hf * H_{t-1} [+ W_cf . C_{t-1}] + b_f)
    C_t = f_t . C_{t-1} + i_t . tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
    o_t = sig(W_xo * X_t + W_ho * H_{t-1} [+ W_co . C_t] + b_o)
    H_t = o_t . tanh(C_t)                                              (Shi et al. Eq. 3; [.] = optional peepholes)

The four gates are one convolution over [X_t, H_{t-1}] (4 x num_hidden output channels). Layer l > 1 takes H^{l-1}_t as
its input; a 1x1 convolution of the top H gives Z~_t (paper Eq. 2), C_Z channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import Expert, ModelConfig, State, check_bool, conv2d, zeros_grid
from .registry import register_model


@dataclass(frozen=True)
class ConvLSTMConfig(ModelConfig):
    peephole: bool = False  # Shi et al.'s Hadamard peepholes W_c . C; off in OpenSTL's implementation we compare with

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool(self, "peephole")


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer (Shi et al. Eq. 3): gates from one convolution over the concatenation [x, h]."""

    def __init__(self, in_channels: int, num_hidden: int, filter_size: int, grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.num_hidden = num_hidden
        self.gates = conv2d(in_channels + num_hidden, 4 * num_hidden, filter_size)
        # Peephole weights are per position (Hadamard product with C), so they need the grid size.
        self.peephole = nn.Parameter(torch.zeros(3, num_hidden, *grid)) if grid is not None else None

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C_in, P, Q); h, c (B, nh, P, Q) -> new (h, c)."""
        i, f, g, o = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)  # 4 x (B, nh, P, Q)
        if self.peephole is not None:
            i = i + self.peephole[0] * c
            f = f + self.peephole[1] * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peephole is not None:
            o = o + self.peephole[2] * c
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


@register_model("convlstm")
class ConvLSTM(Expert):
    """Stacked ConvLSTM expert: state {"h": [H^l], "c": [C^l]}, each (B, num_hidden, P, Q)."""

    config_class = ConvLSTMConfig

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__(config)
        nh = config.num_hidden
        grid = config.grid if config.peephole else None
        self.cells = nn.ModuleList(
            ConvLSTMCell(config.frame_channels if l == 0 else nh, nh, config.filter_size, grid)
            for l in range(config.num_layers))
        self.head = nn.Conv2d(nh, config.out_channels, 1)  # Z~_t from the top hidden state

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        cfg = self.config
        zeros = lambda: zeros_grid(cfg, batch_size, cfg.num_hidden, device, dtype)  # noqa: E731
        return {"h": [zeros() for _ in self.cells], "c": [zeros() for _ in self.cells]}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        hs, cs = [], []
        inp = x  # (B, C*p*p, P, Q)
        for cell, h, c in zip(self.cells, state["h"], state["c"]):
            h, c = cell(inp, h, c)
            hs.append(h)
            cs.append(c)
            inp = h
        return self.head(inp), {"h": hs, "c": cs}  # (B, C_Z, P, Q)
