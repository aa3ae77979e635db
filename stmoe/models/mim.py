"""Memory In Memory, MIM (Wang et al., CVPR 2019): an ST-LSTM first layer and MIM blocks above it.

The STMoE paper's main expert (§4: "MIM takes a temporal difference in hidden states and is useful for non-stationary
components"; STMoE-Id uses it for rotation and intensity, STMoE-conv for all three experts). Reads top-down:
the spatio-temporal LSTM of PredRNN (MIM's first layer), the non-stationary module MIM-N, the stationary module
MIM-S, the MIM block that chains them in place of the forget gate (MIM §3, one equation block each), and the
expert that stacks the layers behind the one-step Expert interface.

State flow per step t (MIM's network figure): H, C per layer (horizontal); M zig-zags upwards and from the top layer
at t-1 to layer 1 at t; N (MIM-N) and S (MIM-S) per MIM block. The MIM-N modules form a cascade, as in the authors'
code (Yunbo426/MIM; OpenSTL's mim_model.py): the first reads the raw difference H^1_t - H^1_{t-1} of the ST-LSTM
layer, and the MIM-N of block j >= 2 reads the output D_t of the MIM-N below, so each block differences once more
(higher-order non-stationarity). At the first step there is no previous hidden state: D is zero and N keeps its
initial zeros, as in the reference (masked by a 0/1 ``started`` tensor, so the step has no data-dependent branch).

Each equation is one convolution over the concatenation of exactly the tensors the equation names, so the modules
keep the paper's connectivity while running as a few wide convolutions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import Expert, ModelConfig, State, conv2d, zeros_grid
from .errors import ModelConfigError
from .registry import register_model

# +1 on every forget-gate pre-activation, as in the PredRNN/MIM reference code: untrained memories start out retained.
FORGET_BIAS = 1.0



class SpatioTemporalLSTMCell(nn.Module):
    """ST-LSTM of PredRNN (Wang et al. 2017, the spatio-temporal LSTM equations), the first layer of MIM.

        (g, i, f)    = (tanh, sig, sig)(W_x * X_t + W_h * H_{t-1})
        C_t          = f . C_{t-1} + i . g
        (g', i', f') = (tanh, sig, sig)(W'_x * X_t + W_m * M^{l-1}_t)
        M_t          = f' . M^{l-1}_t + i' . g'
        o            = sig(W_xo * X_t + W_ho * H_{t-1} + W_co * C_t + W_mo * M_t)
        H_t          = o . tanh(W_1x1 * [C_t, M_t])

    Convolutions: [X, H_{t-1}] -> (g, i, f, o-part); [X, M] -> (g', i', f'); [C_t, M_t] -> o-part; 1x1 on [C_t, M_t].
    """

    def __init__(self, in_channels: int, num_hidden: int, filter_size: int) -> None:
        super().__init__()
        nh = num_hidden
        self.num_hidden = nh
        self.conv_xh = conv2d(in_channels + nh, 4 * nh, filter_size)
        self.conv_xm = conv2d(in_channels + nh, 3 * nh, filter_size)
        self.conv_o = conv2d(2 * nh, nh, filter_size)
        self.conv_h = nn.Conv2d(2 * nh, nh, 1)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C_in, P, Q); h, c, m (B, nh, P, Q) -> new (h, c, m)."""
        g, i, f, o = torch.chunk(self.conv_xh(torch.cat([x, h], dim=1)), 4, dim=1)  # 4 x (B, nh, P, Q)
        c = torch.sigmoid(f + FORGET_BIAS) * c + torch.sigmoid(i) * torch.tanh(g)
        g2, i2, f2 = torch.chunk(self.conv_xm(torch.cat([x, m], dim=1)), 3, dim=1)
        m = torch.sigmoid(f2 + FORGET_BIAS) * m + torch.sigmoid(i2) * torch.tanh(g2)
        cm = torch.cat([c, m], dim=1)  # (B, 2nh, P, Q)
        h = torch.sigmoid(o + self.conv_o(cm)) * torch.tanh(self.conv_h(cm))
        return h, c, m


class MIMN(nn.Module):
    """MIM-N, the non-stationary module of MIM (§3, MIM-N equations), driven by a difference signal dH.

        dH           = H^1_t - H^1_{t-1} (first MIM block) or D_t of the MIM-N below (blocks j >= 2)
        (g, i, f)    = (tanh, sig, sig)(W_x * dH + W_n * N_{t-1})
        N_t          = f . N_{t-1} + i . g
        o            = sig(W_xo * dH + W_no * N_t)
        D_t          = o . tanh(N_t)

    Only the difference enters (the caller forms it), so shifting H_t and H_{t-1} by one tensor changes nothing.
    """

    def __init__(self, num_hidden: int, filter_size: int) -> None:
        super().__init__()
        nh = num_hidden
        self.conv_gates = conv2d(2 * nh, 3 * nh, filter_size)
        self.conv_o = conv2d(2 * nh, nh, filter_size)

    def forward(self, diff: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
        """dH, N_{t-1}, each (B, nh, P, Q) -> (D_t, N_t)."""
        g, i, f = torch.chunk(self.conv_gates(torch.cat([diff, n], dim=1)), 3, dim=1)
        n = torch.sigmoid(f + FORGET_BIAS) * n + torch.sigmoid(i) * torch.tanh(g)
        o = torch.sigmoid(self.conv_o(torch.cat([diff, n], dim=1)))
        return o * torch.tanh(n), n


class MIMS(nn.Module):
    """MIM-S, the stationary module of MIM (§3, MIM-S equations): a memory S fed by MIM-N's D and C_{t-1}.

        (g, i, f) = (tanh, sig, sig)(W_d * D_t + W_c * C_{t-1})
        S_t       = f . S_{t-1} + i . g
        o         = sig(W_do * D_t + W_co * C_{t-1} + W_so * S_t)
        T_t       = o . tanh(S_t)

    Convolutions: [D_t, C_{t-1}] -> (g, i, f, o-part); S_t -> o-part.
    """

    def __init__(self, num_hidden: int, filter_size: int) -> None:
        super().__init__()
        nh = num_hidden
        self.conv_gates = conv2d(2 * nh, 4 * nh, filter_size)
        self.conv_o = conv2d(nh, nh, filter_size)

    def forward(self, d: Tensor, c_prev: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """D_t, C_{t-1}, S_{t-1}, each (B, nh, P, Q) -> (T_t, S_t)."""
        g, i, f, o = torch.chunk(self.conv_gates(torch.cat([d, c_prev], dim=1)), 4, dim=1)
        s = torch.sigmoid(f + FORGET_BIAS) * s + torch.sigmoid(i) * torch.tanh(g)
        o = torch.sigmoid(o + self.conv_o(s))
        return o * torch.tanh(s), s


class MIMBlock(nn.Module):
    """MIM block (MIM §3): an ST-LSTM whose forget path f . C_{t-1} is replaced by the cascade MIM-N -> MIM-S.

        (g, i)       = (tanh, sig)(W_x * H^{l-1}_t + W_h * H^l_{t-1})
        D_t, N_t     = MIM-N(dH, N_{t-1})          (run by the expert, ``self.mim_n``: the cascade crosses blocks)
        T_t, S_t     = MIM-S(D_t, C_{t-1}, S_{t-1})
        C_t          = T_t + i . g
        (g', i', f') = (tanh, sig, sig)(W'_x * H^{l-1}_t + W_m * M^{l-1}_t)
        M_t          = f' . M^{l-1}_t + i' . g'
        o            = sig(W_xo * H^{l-1}_t + W_ho * H^l_{t-1} + W_co * C_t + W_mo * M_t)
        H_t          = o . tanh(W_1x1 * [C_t, M_t])
    """

    def __init__(self, num_hidden: int, filter_size: int) -> None:
        super().__init__()
        nh = num_hidden
        self.conv_xh = conv2d(2 * nh, 3 * nh, filter_size)  # (g, i, o-part)
        self.conv_xm = conv2d(2 * nh, 3 * nh, filter_size)  # (g', i', f')
        self.conv_o = conv2d(2 * nh, nh, filter_size)
        self.conv_h = nn.Conv2d(2 * nh, nh, 1)
        self.mim_n = MIMN(nh, filter_size)
        self.mim_s = MIMS(nh, filter_size)

    def forward(self, x: Tensor, d: Tensor, h: Tensor, c: Tensor, m: Tensor,
                s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x = H^{l-1}_t, d = D_t of this block's MIM-N, and this layer's H, C, M (from below), S -> new (h, c, m, s)."""
        g, i, o = torch.chunk(self.conv_xh(torch.cat([x, h], dim=1)), 3, dim=1)  # 3 x (B, nh, P, Q)
        t, s = self.mim_s(d, c, s)
        c = t + torch.sigmoid(i) * torch.tanh(g)
        g2, i2, f2 = torch.chunk(self.conv_xm(torch.cat([x, m], dim=1)), 3, dim=1)
        m = torch.sigmoid(f2 + FORGET_BIAS) * m + torch.sigmoid(i2) * torch.tanh(g2)
        cm = torch.cat([c, m], dim=1)  # (B, 2nh, P, Q)
        h = torch.sigmoid(o + self.conv_o(cm)) * torch.tanh(self.conv_h(cm))
        return h, c, m, s


# --------------------------------------------------------------------------------------------------- expert
@dataclass(frozen=True)
class MIMConfig(ModelConfig):
    """MIM uses only the shared fields; ``num_layers`` = 1 ST-LSTM + (num_layers - 1) MIM blocks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_layers < 2:
            raise ModelConfigError("num_layers", f"MIM stacks an ST-LSTM and at least one MIM block, so it needs >= 2 "
                                                 f"layers, got {self.num_layers}")


@register_model("mim")
class MIM(Expert):
    """MIM network (Wang et al. 2019: one ST-LSTM, then MIM blocks) as a one-step expert.

    State (dict): ``h``, ``c`` lists of L tensors (B, nh, P, Q); ``m`` the zig-zag memory leaving the top layer;
    ``n``, ``s`` lists of L-1 tensors (MIM-N and MIM-S memories of the MIM blocks); ``started`` False before the
    first step (a 0-d 0/1 tensor: no H_{t-1} yet, so no difference). Z~_t is a 1x1 read-out of the top hidden state to ``out_channels``.
    """

    config_class = MIMConfig

    def __init__(self, config: MIMConfig) -> None:
        super().__init__(config)
        nh, k = config.num_hidden, config.filter_size
        self.stlstm = SpatioTemporalLSTMCell(config.frame_channels, nh, k)
        self.blocks = nn.ModuleList(MIMBlock(nh, k) for _ in range(config.num_layers - 1))
        self.readout = nn.Conv2d(nh, config.out_channels, 1)

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        nh, n_layers = self.config.num_hidden, self.config.num_layers

        def zeros(n: int) -> list[Tensor]:
            return [zeros_grid(self.config, batch_size, nh, device, dtype) for _ in range(n)]

        return {"h": zeros(n_layers), "c": zeros(n_layers), "m": zeros(1)[0],
                "n": zeros(n_layers - 1), "s": zeros(n_layers - 1),
                "started": torch.zeros((), device=device, dtype=dtype)}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x (B, C_Y*p*p, P, Q) -> Z~_t (B, C_Z, P, Q) and the new state (the old one is not modified)."""
        h_prev = state["h"]  # H^l_{t-1}
        started = state["started"]
        h, c, m = self.stlstm(x, h_prev[0], state["c"][0], state["m"])
        hs, cs, ns, ss = [h], [c], [], []
        d = None
        for j, block in enumerate(self.blocks):
            layer = j + 1
            # The MIM-N cascade: the raw difference enters block 1, D of the block below enters the rest. Before the
            # first step has a predecessor (started = 0) D = 0 and N keeps its zeros, as in the reference code.
            d, n = block.mim_n(hs[0] - h_prev[0] if j == 0 else d, state["n"][j])
            d = d * started
            n = torch.lerp(state["n"][j], n, started.to(n.dtype))
            h, c, m, s = block(hs[layer - 1], d, h_prev[layer], state["c"][layer], m, state["s"][j])
            hs.append(h)
            cs.append(c)
            ns.append(n)
            ss.append(s)
        return self.readout(hs[-1]), {"h": hs, "c": cs, "m": m, "n": ns, "s": ss,
                                      "started": torch.ones_like(started)}
