"""PredRNN++ (Wang et al., ICML 2018): stacked Causal LSTMs with a Gradient Highway Unit between layers 1 and 2.

Baseline of the STMoE paper (§4, Table 1). Reads top-down: the Causal LSTM cell (PredRNN++ Eq. 1), the Gradient
Highway Unit (Eq. 2), then the expert that stacks them (PredRNN++'s final architecture) behind the one-step Expert
interface.
The spatio-temporal memory M zig-zags: layer k gets M from layer k-1 at the same step, layer 1 gets it from the top
layer at the previous step. The expert works on the space-to-depth patched frame (B, C*p*p, P, Q) and emits the
feature map Z~_t (B, C_Z, P, Q) of STMoE Eq. 2 through a 1x1 read-out of the top hidden state.

Each equation of the paper is one convolution over the concatenation of exactly the tensors that equation names
(e.g. W_1 * [X_t, H_{t-1}, C_{t-1}] -> 3 gates at once), so the cell has the paper's connectivity and still runs as
a few wide convolutions instead of one small convolution per term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import Expert, ModelConfig, State, check_bool, conv2d, zeros_grid
from .errors import ModelConfigError
from .registry import register_model

# PredRNN++ adds a constant 1 to the forget-gate pre-activation (as the reference code does) so that an untrained cell
# starts out remembering; a constant instead of a bias initialisation survives any re-initialisation of the convs.
FORGET_BIAS = 1.0



def _norm(channels: int, layer_norm: bool) -> nn.Module:
    """Layer norm over (C, H, W) of one convolution's output (TF tensor_layer_norm), or nothing."""
    return nn.GroupNorm(1, channels) if layer_norm else nn.Identity()


class CausalLSTMCell(nn.Module):
    """Causal LSTM, PredRNN++ Eq. 1, wired as the authors' code (Yunbo426/predrnn-pp causal_lstm_cell.py).

        (g, i, f)    = (tanh, sig, sig)(W_1 * [X_t, H_{t-1}, C_{t-1}])
        C_t          = f . C_{t-1} + i . g
        g'           = tanh(W_2 * [X_t, C_t])                          (no M term, as in the reference)
        (i', f')     = sig(W_2 * [X_t, C_t] + W_m * M^{k-1}_t)
        M_t          = f' . tanh(W_3 * M^{k-1}_t) + i' . g'
        o            = tanh(W_4 * [X_t, H_{t-1}, C_t, M_t])             (the reference's o_x + o_h + o_c + o_m)
        H_t          = o . tanh(W_5 * [C_t, M_t])                       (W_5 is 1x1)

    The output gate uses tanh, as written in the paper; both forget gates get +1 (:data:`FORGET_BIAS`).
    ``layer_norm`` normalises each convolution's output as the TF original does (here per fused convolution).
    """

    def __init__(self, in_channels: int, num_hidden: int, filter_size: int, layer_norm: bool = False) -> None:
        super().__init__()
        nh = num_hidden
        self.num_hidden = nh
        self.conv_xhc = conv2d(in_channels + 2 * nh, 3 * nh, filter_size)  # W_1 -> (g, i, f)
        self.conv_xc = conv2d(in_channels + nh, 3 * nh, filter_size)  # W_2 -> (g', i'-part, f'-part)
        self.conv_m = conv2d(nh, 3 * nh, filter_size)  # W_m, W_3 -> (i'-part, f'-part, W_3 * M)
        self.conv_o = conv2d(in_channels + 3 * nh, nh, filter_size)  # W_4
        self.conv_h = nn.Conv2d(2 * nh, nh, 1)  # W_5
        self.norm_xhc, self.norm_xc, self.norm_m, self.norm_o = (
            _norm(c, layer_norm) for c in (3 * nh, 3 * nh, 3 * nh, nh))

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C_in, P, Q); h, c, m (B, nh, P, Q) -> new (h, c, m), each (B, nh, P, Q)."""
        g, i, f = torch.chunk(self.norm_xhc(self.conv_xhc(torch.cat([x, h, c], dim=1))), 3, dim=1)  # 3 x (B, nh, P, Q)
        c_new = torch.sigmoid(f + FORGET_BIAS) * c + torch.sigmoid(i) * torch.tanh(g)
        g2, i2, f2 = torch.chunk(self.norm_xc(self.conv_xc(torch.cat([x, c_new], dim=1))), 3, dim=1)
        i_m, f_m, m_m = torch.chunk(self.norm_m(self.conv_m(m)), 3, dim=1)
        m = torch.sigmoid(f2 + f_m + FORGET_BIAS) * torch.tanh(m_m) + torch.sigmoid(i2 + i_m) * torch.tanh(g2)
        o = torch.tanh(self.norm_o(self.conv_o(torch.cat([x, h, c_new, m], dim=1))))
        h = o * torch.tanh(self.conv_h(torch.cat([c_new, m], dim=1)))
        return h, c_new, m


# The reference initialises the GHU's convolutions uniformly in [-0.001, 0.001] (predrnn-pp, initializer=0.001):
# the highway starts as Z_t ~ (Z_{t-1} + 0) / 2, a near-identity shortcut, instead of a random mixing layer.
GHU_INIT = 1e-3


class GradientHighwayUnit(nn.Module):
    """Gradient Highway Unit, PredRNN++ Eq. 2: a gated shortcut that gives gradients a short path through time.

        P_t = tanh(W_px * X_t + W_pz * Z_{t-1})
        U_t = sig(W_ux * X_t + W_uz * Z_{t-1})          (S_t in the paper)
        Z_t = U_t . P_t + (1 - U_t) . Z_{t-1}

    Both gates come from one convolution over [X_t, Z_{t-1}], initialised as the reference (:data:`GHU_INIT`).
    """

    def __init__(self, in_channels: int, num_hidden: int, filter_size: int, layer_norm: bool = False) -> None:
        super().__init__()
        self.conv = conv2d(in_channels + num_hidden, 2 * num_hidden, filter_size)
        nn.init.uniform_(self.conv.weight, -GHU_INIT, GHU_INIT)
        nn.init.zeros_(self.conv.bias)
        self.norm = _norm(2 * num_hidden, layer_norm)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """x (B, C_in, P, Q), z = Z_{t-1} (B, nh, P, Q) -> Z_t (B, nh, P, Q)."""
        p, u = torch.chunk(self.norm(self.conv(torch.cat([x, z], dim=1))), 2, dim=1)
        u = torch.sigmoid(u)
        return u * torch.tanh(p) + (1.0 - u) * z


# --------------------------------------------------------------------------------------------------- expert
@dataclass(frozen=True)
class PredRNNppConfig(ModelConfig):
    """``num_layers`` counts Causal LSTMs (the GHU is extra)."""

    # The TF original normalises every convolution (tensor_layer_norm); the PyTorch ports (OpenSTL's Moving-MNIST
    # configs) run without. Off by default, like the ports we benchmark against.
    layer_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool(self, "layer_norm")
        if self.num_layers < 2:
            raise ModelConfigError("num_layers", f"PredRNN++ puts its Gradient Highway Unit between layers 1 and 2, "
                                                 f"so it needs >= 2 layers, got {self.num_layers}")


@register_model("predrnnpp")
class PredRNNpp(Expert):
    """PredRNN++ (Wang et al. 2018) as a one-step expert: Causal LSTM 1 -> GHU -> Causal LSTM 2 -> ... -> Causal LSTM L.

    State (dict): ``h``, ``c`` lists of L tensors (B, nh, P, Q); ``m`` the zig-zag memory leaving the top layer;
    ``z`` the GHU state. Z~_t is a 1x1 read-out of the top hidden state to ``out_channels``.
    """

    config_class = PredRNNppConfig

    def __init__(self, config: PredRNNppConfig) -> None:
        super().__init__(config)
        nh, k = config.num_hidden, config.filter_size
        self.cells = nn.ModuleList(
            CausalLSTMCell(config.frame_channels if layer == 0 else nh, nh, k, config.layer_norm)
            for layer in range(config.num_layers))
        self.ghu = GradientHighwayUnit(nh, nh, k, config.layer_norm)
        self.readout = nn.Conv2d(nh, config.out_channels, 1)

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        nh, n_layers = self.config.num_hidden, self.config.num_layers

        def zero() -> Tensor:
            return zeros_grid(self.config, batch_size, nh, device, dtype)

        return {"h": [zero() for _ in range(n_layers)], "c": [zero() for _ in range(n_layers)],
                "m": zero(), "z": zero()}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x (B, C_Y*p*p, P, Q) -> Z~_t (B, C_Z, P, Q) and the new state (the old one is not modified)."""
        m = state["m"]  # M^L_{t-1}: the zig-zag enters layer 1 from the top of the previous step
        z = state["z"]
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        inp = x
        for layer, cell in enumerate(self.cells):
            h, c, m = cell(inp, state["h"][layer], state["c"][layer], m)
            hs.append(h)
            cs.append(c)
            if layer == 0:
                z = self.ghu(h, z)  # the highway sits between the first and second Causal LSTM
                inp = z
            else:
                inp = h
        return self.readout(hs[-1]), {"h": hs, "c": cs, "m": m, "z": z}
