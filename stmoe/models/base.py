"""Shared building blocks: the config base class, space-to-depth patching and the one-step Expert interface.

Paper §3 (Eq. 1-3): a predictor M = H(F(X_t)) maps the last l frames X_t = {Y_{t-1}, ..., Y_{t-l}} to a feature map
Z_t (P x Q x C_Z) through an encoder/expert F, and Z_t to the next frame through a decoder H; longer horizons feed the
prediction back as the newest input frame. Here every F is an :class:`Expert` with an explicit state, advanced one
(patched) frame at a time; the generic roll-out lives in :mod:`stmoe.models.predictor`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import torch
import torch.nn.functional as F
from physvid.checks import Checks
from torch import Tensor, nn

from .errors import ModelConfigError

# A state is a dict of tensors (or lists of tensors); dicts keep torch.compile and checkpointing simple.
State = dict[str, Any]

DECODERS = ("conv", "identity")


# --------------------------------------------------------------------------------------------------- config checks
CHECK = Checks(ModelConfigError, field_first=True)


def check_int(config: Any, name: str, *, low: int = 1, high: int | None = None) -> None:
    """Raise ModelConfigError naming ``name`` unless the field is an integer in [low, high]."""
    CHECK.int(name, getattr(config, name), low=low, high=high)


def check_odd(config: Any, name: str) -> None:
    """Kernel sizes must be odd so that 'same' padding keeps the P x Q grid."""
    check_int(config, name)
    if getattr(config, name) % 2 == 0:
        raise ModelConfigError(name, f"must be odd so that padding keeps the grid size, got {getattr(config, name)!r}")


def check_float(config: Any, name: str, *, low: float | None = None, low_open: bool = False,
                high: float | None = None) -> None:
    """Raise ModelConfigError naming ``name`` unless the field is a finite number in the bounds."""
    CHECK.float(name, getattr(config, name), low=low, low_open=low_open, high=high)


def check_choice(config: Any, name: str, allowed: Iterable[str]) -> None:
    """Raise ModelConfigError naming ``name`` unless the field is one of ``allowed``."""
    CHECK.choice(name, getattr(config, name), allowed)


def check_bool(config: Any, name: str) -> None:
    """Raise ModelConfigError naming ``name`` unless the field is true or false."""
    CHECK.bool(name, getattr(config, name))


@dataclass(frozen=True)
class ModelConfig:
    """Fields shared by every model (paper §3, Eq. 1-3). Defaults are the common Moving-MNIST 64x64 setting.

    Each architecture subclasses it (frozen dataclass, extra fields with defaults) and extends ``__post_init__``.
    ``dataclasses.asdict(config)`` is JSON-safe and ``create_model(name, **asdict(config))`` rebuilds the model.
    """

    in_channels: int = 1  # C_Y, channels of a frame
    height: int = 64  # M
    width: int = 64  # N
    patch_size: int = 4  # space-to-depth factor p: experts run on a (H/p) x (W/p) grid with C_Y*p*p channels
    num_layers: int = 4  # stacked recurrent layers (RNNs) or resolution levels (U-Nets)
    num_hidden: int = 128  # hidden channels per layer
    filter_size: int = 5  # spatial kernel of the recurrent/encoder convolutions
    out_channels: int | None = None  # C_Z of the feature map Z~; None -> in_channels*p*p, the frame, so H may be identity
    input_frames: int = 4  # l, number of observed frames (§4: 4 frames estimate velocity, acceleration and jerk)
    decoder: str = "conv"  # H: "conv" (one conv filter, §4 STMoE-conv) or "identity" (Z is the frame, §4 STMoE-Id)
    decoder_kernel: int = 3  # kernel of the conv decoder H

    def __post_init__(self) -> None:
        for name in ("in_channels", "height", "width", "patch_size", "num_layers", "num_hidden", "input_frames"):
            check_int(self, name)
        check_odd(self, "filter_size")
        check_odd(self, "decoder_kernel")
        for name, size in (("height", self.height), ("width", self.width)):
            if size % self.patch_size:
                raise ModelConfigError("patch_size", f"must divide {name}={size}, got {self.patch_size}; "
                                                     f"allowed: {', '.join(str(d) for d in _divisors(size))}")
        if self.out_channels is None:
            object.__setattr__(self, "out_channels", self.frame_channels)
        check_int(self, "out_channels")
        check_choice(self, "decoder", DECODERS)
        if self.decoder == "identity" and self.out_channels != self.frame_channels:
            raise ModelConfigError("out_channels", f"the identity decoder needs Z~ to be the patched frame: out_channels "
                                                   f"must be in_channels*patch_size**2 = {self.frame_channels}, "
                                                   f"got {self.out_channels} (or use decoder='conv')")

    @property
    def frame_channels(self) -> int:
        """Channels of a space-to-depth frame, C_Y * p * p."""
        return self.in_channels * self.patch_size ** 2

    @property
    def grid(self) -> tuple[int, int]:
        """(P, Q), the spatial size of Z and of the attention weights W."""
        return self.height // self.patch_size, self.width // self.patch_size

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (re-validated)."""
        return dataclasses.replace(self, **changes)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def shared_fields(config: ModelConfig) -> dict[str, Any]:
    """The ModelConfig base fields of ``config`` (what every expert of one STMoE must agree on, plus the defaults)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelConfig)}


# --------------------------------------------------------------------------------------------------- patching
def patchify(x: Tensor, p: int) -> Tensor:
    """Space-to-depth: (..., C, H, W) -> (..., C*p*p, H/p, W/p); channel index c*p*p + i*p + j holds pixel (i, j) of a patch."""
    if p == 1:
        return x
    lead = x.shape[:-3]
    y = F.pixel_unshuffle(x.reshape(-1, *x.shape[-3:]), p)
    return y.reshape(*lead, *y.shape[-3:])


def unpatchify(x: Tensor, p: int) -> Tensor:
    """Depth-to-space, the exact inverse of :func:`patchify`: (..., C*p*p, P, Q) -> (..., C, P*p, Q*p)."""
    if p == 1:
        return x
    lead = x.shape[:-3]
    y = F.pixel_shuffle(x.reshape(-1, *x.shape[-3:]), p)
    return y.reshape(*lead, *y.shape[-3:])


# --------------------------------------------------------------------------------------------------- experts
class Expert(nn.Module):
    """One expert / encoder F^k (paper Eq. 2, §3.1) behind a one-step recurrent interface shared by every model.

    * ``init_state(batch_size, device, dtype)`` -> a fresh state (dict of tensors); the state never lives on ``self``.
    * ``step(x, state) -> (z, state)``: consume the newest patched frame x (B, C_Y*p*p, P, Q) and return the feature
      map Z~_t (B, C_Z, P, Q) that predicts the next frame, with the updated state.
    * ``observe(x, state) -> state``: consume a warm-up frame whose prediction is not needed. Defaults to ``step``;
      window models override it to skip the network.
    * ``aux_losses(state) -> dict[str, Tensor]``: scalar regularisers of the latest step (ADDL's motion-field terms,
      PhyDNet's moment loss); ``{}`` by default.

    Subclasses set ``config_class`` and are registered with ``@register_model(name)``.
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    model_name: ClassVar[str] = ""
    # Default loss weight of each term of aux_losses, scaled to the reconstruction term of stmoe.losses (1/2 MSE on
    # [0, 1] frames in the local stages); LossConfig.aux_weights overrides them. docs/models.md gives the derivations.
    default_aux_weights: ClassVar[dict[str, float]] = {}
    # True when the state carries memory across steps (RNNs): such models learn from every next-frame prediction of
    # the warm-up frames too (optim.observed_loss=auto). Window models (U-Net, ADDL) see only X_t.
    recurrent: ClassVar[bool] = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    def frame_channels(self) -> int:
        return self.config.frame_channels

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        raise NotImplementedError

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def observe(self, x: Tensor, state: State) -> State:
        return self.step(x, state)[1]

    def aux_losses(self, state: State) -> dict[str, Tensor]:
        return {}


# --------------------------------------------------------------------------------------------------- helpers
def zeros_grid(config: ModelConfig, batch_size: int, channels: int, device: Any = None, dtype: Any = None) -> Tensor:
    """A zero tensor (B, channels, P, Q) on the expert grid, the usual initial hidden state."""
    P, Q = config.grid
    return torch.zeros(batch_size, channels, P, Q, device=device, dtype=dtype)


def init_window(config: ModelConfig, batch_size: int, device: Any = None, dtype: Any = None) -> Tensor:
    """An empty window of the last l patched frames, (B, l, C_Y*p*p, P, Q); frames before the first are zeros."""
    P, Q = config.grid
    return torch.zeros(batch_size, config.input_frames, config.frame_channels, P, Q, device=device, dtype=dtype)


def push_window(window: Tensor, x: Tensor) -> Tensor:
    """Drop the oldest frame of a (B, l, C, P, Q) window and append x (B, C, P, Q) as the newest (X_t of §3)."""
    return torch.cat([window[:, 1:], x.unsqueeze(1).to(window.dtype)], dim=1)


def stack_window(window: Tensor) -> Tensor:
    """(B, l, C, P, Q) -> (B, l*C, P, Q), oldest frame first: X_t stacked as channels for one convolution."""
    return window.flatten(1, 2)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """A 'same'-padded 2-D convolution."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class ConvDecoder(nn.Module):
    """The decoder H of Eq. 3/6 as one convolution filter (§4, STMoE-conv), (B, C_Z, P, Q) -> (B, C_Y*p*p, P, Q).

    Initialised as the identity on the first min(C_Z, C_Y*p*p) channels, so a fresh model starts as its identity-decoder
    version (an ADDL warp stays a warp) and training moves it from there.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = conv2d(in_channels, out_channels, kernel_size)
        nn.init.dirac_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(z)


def build_decoder(config: ModelConfig) -> nn.Module:
    """H from the config: ``nn.Identity`` (STMoE-Id) or :class:`ConvDecoder` (STMoE-conv, baselines)."""
    if config.decoder == "identity":
        return nn.Identity()
    return ConvDecoder(config.out_channels, config.frame_channels, config.decoder_kernel)


def freeze_(module: nn.Module, frozen: bool = True) -> nn.Module:
    """Set requires_grad of every parameter (training stage 2 freezes H, global stage 1 freezes F and H)."""
    for p in module.parameters():
        p.requires_grad_(not frozen)
    return module


def as_tuple(value: Any) -> Any:
    """Lists from JSON back to tuples (recursively), so a config read from a checkpoint equals the one saved."""
    if isinstance(value, (list, tuple)):
        return tuple(as_tuple(v) for v in value)
    if isinstance(value, Mapping):
        return {k: as_tuple(v) for k, v in value.items()}
    return value
