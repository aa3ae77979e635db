"""U-Net nowcasting baseline (Agrawal et al. 2019, paper §4 "U-Net [1]"): the last l frames stacked as channels -> U-Net
-> the next frame's features Z~_t (paper Eq. 2 with F = U-Net); longer horizons by the generic recursive roll-out.

Widths stay at ``num_hidden`` on every level, so ``num_layers x num_hidden`` means a comparable budget to the recurrent
baselines (doubling widths over 4 levels of 128 channels would be ~100x larger). ``num_layers`` is the number of
down-sampling levels; odd grid sizes are handled by ceil-mode pooling and size-matched up-sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Expert, ModelConfig, State, conv2d, init_window, push_window, stack_window
from .registry import register_model


class DoubleConv(nn.Sequential):
    """(conv -> GroupNorm -> ReLU) x 2; GroupNorm, not BatchNorm, so a prediction never depends on the rest of the batch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        # >= 2 channels per group: at a 1x1 bottom level a batch of one clip must still have 2 values to normalise
        groups = math.gcd(out_channels, 8)
        if out_channels // groups < 2:
            groups = max(1, groups // 2)
        super().__init__(
            conv2d(in_channels, out_channels, kernel_size, bias=False), nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True),
            conv2d(out_channels, out_channels, kernel_size, bias=False), nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True),
        )


class UNetBody(nn.Module):
    """Encoder-decoder with skip connections (Ronneberger et al. 2015): (B, C_in, P, Q) -> (B, width, P, Q)."""

    def __init__(self, in_channels: int, width: int, levels: int, kernel_size: int) -> None:
        super().__init__()
        self.inc = DoubleConv(in_channels, width, kernel_size)
        self.down = nn.ModuleList(DoubleConv(width, width, kernel_size) for _ in range(levels))
        self.up = nn.ModuleList(DoubleConv(2 * width, width, kernel_size) for _ in range(levels))

    def forward(self, x: Tensor) -> Tensor:
        h = self.inc(x)
        skips = [h]
        for down in self.down:
            h = down(F.max_pool2d(h, 2, ceil_mode=True))
            skips.append(h)
        skips.pop()  # the bottom level is h itself
        for up in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = up(torch.cat([h, skip], dim=1))  # (B, width, ., .)
        return h


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """U-Net baseline config; the shared fields only (num_layers = down-sampling levels)."""


@register_model("unet")
class UNet(Expert):
    """Frames stacked as channels -> U-Net -> Z~_t. State: {"window": the last l patched frames (B, l, C*p*p, P, Q)}."""

    config_class = UNetConfig
    recurrent = False  # sees only the window X_t

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        self.body = UNetBody(config.input_frames * config.frame_channels, config.num_hidden, config.num_layers,
                             config.filter_size)
        self.head = nn.Conv2d(config.num_hidden, config.out_channels, 1)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {"window": init_window(self.config, batch_size, device, dtype)}

    def observe(self, x: Tensor, state: State) -> State:
        return {"window": push_window(state["window"], x)}  # warm-up frames only fill the window

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        window = push_window(state["window"], x)  # X_t, (B, l, C*p*p, P, Q)
        return self.head(self.body(stack_window(window))), {"window": window}  # (B, C_Z, P, Q)
