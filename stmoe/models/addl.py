"""ADDL, advection-diffusion deep learning (de Bézenac et al., ICLR 2018), the paper's translation expert (§4, STMoE-Id).

A convolutional encoder-decoder (the U-Net body of unet.py) looks at the last l frames and estimates a motion field
w(x) at full resolution; the prediction is the last frame transported by the field, the discretised solution of the
advection-diffusion equation dI/dt + (w . grad) I = D lap I (de Bézenac et al. Eq. 4-5):

* ``warp="bilinear"`` (default): I_{t+1}(x) = I_t(x - w(x)), bilinear sampling (D = 0, the usual practical choice);
* ``warp="gaussian"``: I_{t+1}(x) = sum_y k(x - w(x) - y) I_t(y) / sum_y k(.), k(d) = exp(-|d|^2 / (4 D dt)), the
  Gaussian kernel of de Bézenac et al. gathered over a small window of integer offsets (one gather per offset).

The field's divergence, smoothness and magnitude (de Bézenac et al. §3.2 regularisers) are returned by ``aux_losses``.
With patching, the field is estimated on the P x Q grid with 2*p*p channels and depth-to-space'd to H x W, and the
warp runs on the full-resolution frame, so patching never breaks the physics. The flow head starts at zero: a fresh
ADDL predicts "nothing moves", the last frame.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (Expert, ModelConfig, State, check_choice, check_float, init_window, patchify, push_window,
                   stack_window, unpatchify)
from .errors import ModelConfigError
from .registry import register_model
from .unet import UNetBody

WARPS = ("bilinear", "gaussian")


# Smallest D*dt of the Gaussian warp: sqrt(2 D) = 0.014 px is a pure bilinear-free point sample for any practical use,
# and the normalised kernel stays finite below it too (log-sum-exp); the bound only keeps configs meaningful.
MIN_DIFFUSION = 1e-4

# Default weights of ADDL's field regularisers relative to our reconstruction term (stmoe.losses: 1/2 mean squared
# error on [0, 1] frames in the local stages). de Bezenac et al.'s code (emited/flow) uses
# MSE + 0.4 smoothness + 1 divergence - 0.003 magnitude on standardised data: their MSE is 2 / sigma^2 times our term
# (sigma ~ 0.3 for sparse bright objects on black), so the same balance is their weights times sigma^2 / 2 ~ 0.045.
# The reference rewards motion with a negative magnitude weight; on frames with flat black backgrounds that reward
# lets the field grow without bound where the warp samples black anyway, so ours is 0 by default (a negative value
# is accepted: loss.aux_weights.magnitude=-1e-4). docs/models.md lists the scales.
ADDL_AUX_WEIGHTS = {"divergence": 0.045, "smoothness": 0.018, "magnitude": 0.0}


@dataclass(frozen=True)
class ADDLConfig(ModelConfig):
    warp: str = "bilinear"  # "bilinear" (D = 0) or "gaussian" (advection + diffusion with coefficient `diffusion`)
    diffusion: float = 0.25  # D * dt in pixels^2 for the Gaussian kernel (std sqrt(2 D dt) ~ 0.7 px)
    # de Bezenac's model is the warp alone: a learnable conv after it could fake intensity changes (issue: baseline
    # ADDL must stay advection-diffusion). Inside STMoE-conv the mixture's decoder wins (shared field).
    decoder: str = "identity"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "warp", WARPS)
        check_float(self, "diffusion", low=MIN_DIFFUSION, high=16.0)
        if self.out_channels != self.frame_channels:
            raise ModelConfigError("out_channels", f"ADDL's Z~ is the warped frame: out_channels must be "
                                                   f"in_channels*patch_size**2 = {self.frame_channels}, got {self.out_channels}")


def _at_least_fp32(t: Tensor) -> Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def sampling_points(flow: Tensor) -> tuple[Tensor, Tensor]:
    """Source points x - w(x) in pixels, (sx, sy) each (B, H, W), from flow (B, 2, H, W); always float32.

    Built outside autocast: in bf16 a coordinate near 64 has a resolution of 0.25-0.5 px, which would swamp sub-pixel
    motion (a 0.3 px shift came out 0.17 px wrong at 64x64) and compound over the roll-out. (fp64 stays fp64.)
    """
    flow = _at_least_fp32(flow)
    _, _, H, W = flow.shape
    ys = torch.arange(H, device=flow.device, dtype=flow.dtype).view(1, H, 1)
    xs = torch.arange(W, device=flow.device, dtype=flow.dtype).view(1, 1, W)
    return xs - flow[:, 0], ys - flow[:, 1]


def sampling_grid(flow: Tensor) -> Tensor:
    """The grid_sample grid (B, H, W, 2) in [-1, 1] (align_corners=True) for I(x - w(x)); >= float32, autocast off."""
    with torch.autocast(device_type=flow.device.type, enabled=False):
        sx, sy = sampling_points(flow)
        H, W = sx.shape[-2:]
        # align_corners=True: -1 and +1 are the centres of the first and last pixels.
        return torch.stack([2 * sx / max(W - 1, 1) - 1, 2 * sy / max(H - 1, 1) - 1], dim=-1)


def warp_bilinear(frame: Tensor, flow: Tensor) -> Tensor:
    """I(x - w(x)) by bilinear sampling with border padding, in float32 whatever the autocast state.

    frame (B, C, H, W); flow (B, 2, H, W) = (u_x, u_y) in pixels per frame. Returns float32 (B, C, H, W).
    """
    with torch.autocast(device_type=frame.device.type, enabled=False):
        grid = sampling_grid(flow)
        return F.grid_sample(_at_least_fp32(frame).to(grid.dtype), grid, mode="bilinear", padding_mode="border",
                             align_corners=True)


def warp_gaussian(frame: Tensor, flow: Tensor, diffusion: float) -> Tensor:
    """sum_y k(x - w(x) - y) I(y) / sum_y k(.), k(d) = exp(-|d|^2 / (4 D)): advection plus diffusion (de Bézenac Eq. 5).

    The sum runs over the 2r x 2r integer points around the source point x - w(x), r = ceil(3 sqrt(2 D)) (at least three
    standard deviations each way); outside the frame the border value is used, as in the bilinear warp. The normalised
    kernel is a softmax over the taps of -|d|^2 / (4 D), so it stays finite when every tap underflows (small D: the
    plain ratio was 0/0). float32 whatever the autocast state; frame (B, C, H, W), flow (B, 2, H, W) in pixels.
    """
    with torch.autocast(device_type=frame.device.type, enabled=False):
        sx, sy = sampling_points(flow)  # (B, H, W)
        frame = _at_least_fp32(frame).to(sx.dtype)
        B, C, H, W = frame.shape
        r = max(1, math.ceil(3 * math.sqrt(2 * diffusion)))
        x0 = torch.floor(sx).detach()
        y0 = torch.floor(sy).detach()
        flat = frame.reshape(B, C, H * W)
        logits, values = [], []
        for dy in range(-r + 1, r + 1):
            for dx in range(-r + 1, r + 1):
                yi = y0 + dy
                xi = x0 + dx
                logits.append((-((sy - yi) ** 2 + (sx - xi) ** 2) / (4 * diffusion)).reshape(B, 1, H * W))
                idx = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long().reshape(B, 1, H * W).expand(B, C, H * W)
                values.append(torch.gather(flat, 2, idx))
        k = torch.softmax(torch.stack(logits, 0), dim=0)  # (taps, B, 1, H*W), sums to 1 over the taps
        return (k * torch.stack(values, 0)).sum(0).reshape(B, C, H, W)


def flow_regularisers(flow: Tensor) -> dict[str, Tensor]:
    """de Bézenac et al. §3.2: mean (div w)^2, mean |grad w|^2 (smoothness) and mean |w|^2 (magnitude); flow (B, 2, H, W).

    Units: px^2 per frame^2 (the field is in pixels per frame). Computed in float32 (or float64).
    """
    flow = _at_least_fp32(flow)
    u, v = flow[:, 0], flow[:, 1]
    du_dx = u[:, :, 1:] - u[:, :, :-1]
    du_dy = u[:, 1:, :] - u[:, :-1, :]
    dv_dx = v[:, :, 1:] - v[:, :, :-1]
    dv_dy = v[:, 1:, :] - v[:, :-1, :]
    div = du_dx[:, :-1, :] + dv_dy[:, :, :-1]  # forward differences on the common (H-1) x (W-1) grid
    smooth = du_dx.pow(2).mean() + du_dy.pow(2).mean() + dv_dx.pow(2).mean() + dv_dy.pow(2).mean()
    return {"divergence": div.pow(2).mean(), "smoothness": smooth, "magnitude": flow.pow(2).sum(1).mean()}


@register_model("addl")
class ADDL(Expert):
    """Motion field from the last l frames, last frame warped by it. State: {"window": (B, l, C*p*p, P, Q),
    "flow": the latest field (B, 2, H, W)}."""

    config_class = ADDLConfig
    default_aux_weights = ADDL_AUX_WEIGHTS
    recurrent = False  # a window model: X_t alone decides the field

    def __init__(self, config: ADDLConfig) -> None:
        super().__init__(config)
        p = config.patch_size
        self.body = UNetBody(config.input_frames * config.frame_channels, config.num_hidden, config.num_layers,
                             config.filter_size)
        self.flow_head = nn.Conv2d(config.num_hidden, 2 * p * p, 1)  # (u_x, u_y) for each pixel of a patch
        nn.init.zeros_(self.flow_head.weight)
        nn.init.zeros_(self.flow_head.bias)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        c = self.config
        return {"window": init_window(c, batch_size, device, dtype),
                "flow": torch.zeros(batch_size, 2, c.height, c.width, device=device, dtype=dtype)}

    def observe(self, x: Tensor, state: State) -> State:
        return {"window": push_window(state["window"], x), "flow": state["flow"]}

    def motion_field(self, window: Tensor) -> Tensor:
        """(B, l, C*p*p, P, Q) -> w (B, 2, H, W) in pixels per frame, float32 (the head runs outside autocast)."""
        features = self.body(stack_window(window))
        with torch.autocast(device_type=features.device.type, enabled=False):
            return unpatchify(self.flow_head(features.float()), self.config.patch_size)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        c = self.config
        window = push_window(state["window"], x)  # X_t
        flow = self.motion_field(window)  # (B, 2, H, W)
        last = unpatchify(x, c.patch_size)  # (B, C, H, W), full resolution
        if c.warp == "bilinear":
            nxt = warp_bilinear(last, flow)
        else:
            nxt = warp_gaussian(last, flow, c.diffusion)
        # Z~_t = the warped frame, patched; float32 like the field (autocast callers cast where they mix it)
        return patchify(nxt, c.patch_size), {"window": window, "flow": flow}

    def aux_losses(self, state: State) -> dict[str, Tensor]:
        return flow_regularisers(state["flow"])


@contextmanager
def recording_fields(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """Inside the block, every ADDL in ``model`` (a baseline's expert, or an expert of an STMoE) appends each motion
    field it computes to ``record[name]``, name its path in the model (``"experts.0"``, ``"experts.1"``, ...).

    Each entry is w (B, 2, H, W) float32 in pixels per frame at the model's full resolution (after depth-to-space of
    the patched head), channels (w_x along columns, w_y along rows), with the convention of the warp: the predicted
    frame is I_{t+1}(x) = I_t(x - w(x)), i.e. w(x) points from where the content of x came from in frame t to x and
    lives on frame t+1's grid. A roll-out of n frames computes n fields (plus l - 1 with ``predict_observed``).
    Each instance's ``motion_field`` is wrapped while inside the block (detached copies are recorded) and restored on
    exit; the model is not changed otherwise."""
    record: dict[str, list[Tensor]] = {}
    wrapped: list[tuple[nn.Module, object]] = []

    def recorder(compute, fields):
        def motion_field(window: Tensor) -> Tensor:
            w = compute(window)
            fields.append(w.detach())
            return w
        return motion_field

    try:
        for name, module in model.named_modules():
            if isinstance(module, ADDL):
                wrapped.append((module, module.__dict__.get("motion_field")))
                module.motion_field = recorder(module.motion_field, record.setdefault(name, []))
        yield record
    finally:
        for module, own in wrapped:
            if own is None:
                del module.motion_field  # the class's method shows again
            else:
                module.motion_field = own
