"""PhyDNet (Le Guen & Thome, CVPR 2020): a physical branch (PhyCell) and a residual ConvLSTM branch in one latent space.

Baseline of the STMoE paper (§4, Table 1). Reads top-down: the moment-matrix transform of a kernel (K2M) and the
moment loss, the PhyCell, the encoder/decoder blocks, then the expert.

Resolution. PhyDNet runs its latent dynamics at 1/4 of the frame (64x64 Moving MNIST -> 16x16). Our experts get the
space-to-depth frame (B, C_Y*p*p, H/p, W/p), already downsampled by p, so the encoder E downsamples that grid by a
further ``encoder_stride`` = 4 // p by default (p = 4 -> stride 1, p = 2 -> 2, p = 1 -> 4): the PhyCell always sees
1/4 of the frame, as in PhyDNet, and the decoder D brings the sum of the branches back to the P x Q grid with
``out_channels`` channels (Z~_t of STMoE Eq. 2).

Per step (PhyDNet's two-branch architecture): e = E(u_t); the PhyCell reads E_p(e), the ConvLSTM reads E_r(e);
Z~_t = D(D_p(H^p_t) + D_r(H^r_t)).
The moment constraint on the PhyCell filters is exposed through :meth:`PhyDNet.aux_losses` as ``"moment"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import Expert, ModelConfig, State, check_int, check_odd, conv2d
from .convlstm import ConvLSTMCell  # the residual branch: a plain ConvLSTM (Shi et al. 2015), no peepholes
from .errors import ModelConfigError
from .registry import register_model

ENCODER_STRIDES = (1, 2, 4)
# Default weight of the moment loss relative to our reconstruction term. PhyDNet's training loop (vincent-leguen/PhyDNet
# main.py) adds the moment term once to a SUM over its T predicted frames of per-frame MSE; our term is 1/2 the MEAN
# squared error over frames (stmoe.losses, alpha = 2, c = 1), so the same balance is 1 / (2 T). T = l - 1 + n = 9 for the
# paper's 4 + 6 frames with warm-up frames scored (optim.observed_loss, on for PhyDNet): 1/18. Weight 1 (the old
# default) made the moment constraint 18x heavier than in the reference.
MOMENT_WEIGHT = 1.0 / 18.0
LATENT_FRACTION = 4  # PhyDNet's latent grid is 1/4 of the frame in each direction


# --------------------------------------------------------------------------------------------------- moments
def moment_basis(kernel_size: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor:
    """The K2M matrix A (k, k) with A[p, i] = x_i^p / p!, x_i = i - (k-1)/2 the tap position relative to the centre.

    The moment matrix of a kernel w (k, k) is A w A^T: m[p, q] = sum_ij w[i, j] x_i^p x_j^q / (p! q!), the coefficient
    with which the convolution approximates d^{p+q}/dx^p dy^q (PhyDNet, moment-matrix constraint).
    """
    x = torch.arange(kernel_size, dtype=dtype, device=device) - (kernel_size - 1) / 2  # (k,)
    p = torch.arange(kernel_size, device=device)
    fact = torch.exp(torch.lgamma(p.to(dtype) + 1))  # p!
    return x.unsqueeze(0) ** p.to(dtype).unsqueeze(1) / fact.unsqueeze(1)  # (k, k)


def kernel_moments(weight: Tensor) -> Tensor:
    """Moment matrices of a stack of square kernels: (..., k, k) -> (..., k, k), m = A w A^T."""
    a = moment_basis(weight.shape[-1], weight.dtype, weight.device)
    return a @ weight @ a.transpose(0, 1)


def identity_moment_kernels(kernel_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The k*k kernels (k*k, k, k) whose moment matrices are the one-hot e_f, f = p*k + q (M2K of the identity).

    Kernel f approximates exactly one derivative d^{p+q}/dx^p dy^q; these are what the moment loss drives filter f to.
    """
    a_inv = torch.linalg.inv(moment_basis(kernel_size, torch.float64))
    eye = torch.eye(kernel_size * kernel_size, dtype=torch.float64).reshape(-1, kernel_size, kernel_size)
    return (a_inv @ eye @ a_inv.transpose(0, 1)).to(dtype)


def moment_loss(weight: Tensor) -> Tensor:
    """PhyDNet's moment constraint for a PhyCell convolution weight (k*k, C, k, k).

    For every input channel c, filter f's moment matrix should be the one-hot e_f (f = p*k + q), i.e. the k*k filters
    span the finite-difference derivatives up to order k-1 in each direction. As in PhyDNet's training loop, the loss
    is the mean squared error over (f, p, q), summed over input channels. Computed in float32 outside autocast.
    """
    n_filters, _, k, k2 = weight.shape
    if n_filters != k * k2 or k != k2:
        raise ValueError(f"moment_loss needs a (k*k, C, k, k) weight, got {tuple(weight.shape)}")
    with torch.autocast(device_type=weight.device.type, enabled=False):
        m = kernel_moments(weight.float())  # (k*k, C, k, k)
        target = torch.eye(k * k, dtype=m.dtype, device=m.device).reshape(k * k, 1, k, k)
        return ((m - target) ** 2).mean(dim=(0, 2, 3)).sum()


# --------------------------------------------------------------------------------------------------- cells
class PhyCell(nn.Module):
    """PhyCell (PhyDNet): a physical prediction step followed by a Kalman-like correction with the observation.

        H~_t = H_{t-1} + Phi(H_{t-1}),   Phi = conv kxk (k*k channels) -> GroupNorm(k) -> conv 1x1   (prediction)
        K_t  = sig(conv3x3([E(u_t), H_{t-1}]))                                                    (gain)
        H_t  = H~_t + K_t . (E(u_t) - H~_t)                                                       (correction)

    With k = 7 this is PhyDNet's 49 filters of 7x7 in 7 groups; their moments are constrained by :func:`moment_loss`.
    """

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        n_filters = kernel_size * kernel_size
        self.phi_conv = conv2d(channels, n_filters, kernel_size)
        self.phi_norm = nn.GroupNorm(kernel_size, n_filters)
        self.phi_out = nn.Conv2d(n_filters, channels, 1)
        self.gain = conv2d(2 * channels, channels, 3)

    def forward(self, e: Tensor, h: Tensor) -> Tensor:
        """e = E(u_t), h = H_{t-1}, both (B, ch, P', Q') -> H_t (B, ch, P', Q')."""
        h_tilde = h + self.phi_out(self.phi_norm(self.phi_conv(h)))
        k = torch.sigmoid(self.gain(torch.cat([e, h], dim=1)))
        return h_tilde + k * (e - h_tilde)

    def moment_loss(self) -> Tensor:
        return moment_loss(self.phi_conv.weight)


def _norm(channels: int) -> nn.GroupNorm:
    # PhyDNet's DCGAN-style blocks use GroupNorm(16); gcd keeps narrow test-size models valid.
    return nn.GroupNorm(math.gcd(16, channels), channels)


def _down(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """conv3x3 (stride 1 or 2) -> GroupNorm -> LeakyReLU(0.2), PhyDNet's encoder block."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), _norm(out_channels), nn.LeakyReLU(0.2))


def _up(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """The decoder twin of :func:`_down`; stride 2 is a transposed conv that exactly doubles the grid."""
    conv = (nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, output_padding=1) if stride == 2
            else nn.Conv2d(in_channels, out_channels, 3, 1, 1))
    return nn.Sequential(conv, _norm(out_channels), nn.LeakyReLU(0.2))


# --------------------------------------------------------------------------------------------------- expert
@dataclass(frozen=True)
class PhyDNetConfig(ModelConfig):
    """Shared fields (num_layers x num_hidden, filter_size describe the ConvLSTM branch) plus the physical branch."""

    phy_channels: int = 64  # width of the latent space E(u) and of the PhyCell state (PhyDNet: 64)
    phy_kernel: int = 7  # PhyCell filters: phy_kernel**2 kernels of phy_kernel x phy_kernel (PhyDNet: 49 of 7x7)
    phy_layers: int = 1  # stacked PhyCells (PhyDNet: 1)
    encoder_stride: int | None = None  # extra downsampling of P x Q; None -> max(1, 4 // patch_size): latent 1/4 frame

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self, "phy_channels")
        check_odd(self, "phy_kernel")
        check_int(self, "phy_layers")
        if self.encoder_stride is None:
            object.__setattr__(self, "encoder_stride", max(1, LATENT_FRACTION // self.patch_size))
        if self.encoder_stride not in ENCODER_STRIDES:
            raise ModelConfigError("encoder_stride", f"unknown value {self.encoder_stride!r}; allowed: "
                                                     f"{', '.join(map(str, ENCODER_STRIDES))}")
        for name, size in zip(("height", "width"), self.grid):
            if size % self.encoder_stride:
                raise ModelConfigError("encoder_stride", f"must divide the patched {name} {size} "
                                                         f"(= {name} / patch_size), got {self.encoder_stride}")

    @property
    def latent_grid(self) -> tuple[int, int]:
        """(P', Q'), the grid of the PhyCell and ConvLSTM states."""
        return self.grid[0] // self.encoder_stride, self.grid[1] // self.encoder_stride


@register_model("phydnet")
class PhyDNet(Expert):
    """PhyDNet (Le Guen & Thome 2020) as a one-step expert.

    State (dict): ``phy`` list of ``phy_layers`` PhyCell states (B, phy_channels, P', Q'); ``h``, ``c`` lists of
    ``num_layers`` ConvLSTM states (B, num_hidden, P', Q'). ``aux_losses`` returns ``{"moment": ...}``.
    """

    config_class = PhyDNetConfig
    default_aux_weights = {"moment": MOMENT_WEIGHT}

    def __init__(self, config: PhyDNetConfig) -> None:
        super().__init__(config)
        ch, nh, n_down = config.phy_channels, config.num_hidden, int(math.log2(config.encoder_stride))
        self.encoder = nn.Sequential(_down(config.frame_channels, ch, 1), *(_down(ch, ch, 2) for _ in range(n_down)))
        self.encoder_phy = nn.Sequential(_down(ch, ch, 1), _down(ch, ch, 1))  # E_p
        self.encoder_res = nn.Sequential(_down(ch, ch, 1), _down(ch, ch, 1))  # E_r
        self.phycells = nn.ModuleList(PhyCell(ch, config.phy_kernel) for _ in range(config.phy_layers))
        self.convlstm = nn.ModuleList(
            ConvLSTMCell(ch if layer == 0 else nh, nh, config.filter_size) for layer in range(config.num_layers))
        self.decoder_phy = nn.Sequential(_up(ch, ch, 1), _up(ch, ch, 1))  # D_p
        self.decoder_res = nn.Sequential(_up(nh, ch, 1), _up(ch, ch, 1))  # D_r
        # D: back to the P x Q grid; the last conv is linear because the predictor's decoder H follows.
        self.decoder_out = nn.Sequential(*(_up(ch, ch, 2) for _ in range(n_down)), conv2d(ch, config.out_channels, 3))

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        cfg = self.config

        def zeros(channels: int) -> Tensor:
            return torch.zeros(batch_size, channels, *cfg.latent_grid, device=device, dtype=dtype)

        return {"phy": [zeros(cfg.phy_channels) for _ in range(cfg.phy_layers)],
                "h": [zeros(cfg.num_hidden) for _ in range(cfg.num_layers)],
                "c": [zeros(cfg.num_hidden) for _ in range(cfg.num_layers)]}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x (B, C_Y*p*p, P, Q) -> Z~_t (B, C_Z, P, Q) and the new state (the old one is not modified)."""
        e = self.encoder(x)  # (B, ch, P', Q')
        inp = self.encoder_phy(e)
        phy: list[Tensor] = []
        for cell, h in zip(self.phycells, state["phy"]):
            inp = cell(inp, h)
            phy.append(inp)
        inp = self.encoder_res(e)
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for cell, h, c in zip(self.convlstm, state["h"], state["c"]):
            h, c = cell(inp, h, c)
            hs.append(h)
            cs.append(c)
            inp = h
        z = self.decoder_out(self.decoder_phy(phy[-1]) + self.decoder_res(hs[-1]))  # (B, C_Z, P, Q)
        return z, {"phy": phy, "h": hs, "c": cs}

    def aux_losses(self, state: State) -> dict[str, Tensor]:
        """PhyDNet's moment constraint on the PhyCell filters (independent of the state; summed over PhyCells)."""
        return {"moment": sum(cell.moment_loss() for cell in self.phycells)}
