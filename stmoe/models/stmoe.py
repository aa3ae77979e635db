"""STMoE, the Spatio-Temporal Mixture of Experts of the paper (§3.1, Eq. 4-6; Fig. 1) and its gating network STGN.

    X_t --+--> F^1 --> Z~_t^1 --\\
          +--> F^2 --> Z~_t^2 ---+--> Z_t = sum_k W_t^k . Z~_t^k  (Eq. 4, 6) --> H --> Y^_t
          +--> F^m --> Z~_t^m --/            ^
          +--> G' --> U_t (m' ch.) --> G''^k over R(i, j) + SE across experts --> W_t^k in [0, 1]^{P x Q}  (Eq. 5)

* Experts F^k are any registered Expert models (``experts`` names them; default m = 3 for translation, rotation and
  intensity, §4). They share the frame/patch/grid sizes and C_Z; per-expert fields go in ``expert_configs``.
* STGN (:class:`STGN`): G' is a small CNN over X_t (the last l frames stacked as channels) giving U_t with m' =
  ``gate_channels`` channels at P x Q; G''^k is a ``gate_kernel`` x ``gate_kernel`` convolution over the neighbourhood
  R(i, j) of U_t, one output channel per expert (all m of them in one convolution); a squeeze-and-excitation branch
  (global pooling of U_t -> MLP -> one excitation per expert) weighs the experts against each other.
  ``normalization="softmax"`` (default): W^k = s_k exp(A_k) / sum_j s_j exp(A_j), i.e. the SE excitation s_k = sig(e_k)
  scales each expert's positive gate exp(A_k) before the pixel-wise normalisation, so W sums to 1 per pixel;
  ``"sigmoid"``: W^k = s_k sig(A_k), independent weights in [0, 1]; ``"authors"``: W^k = s_k softmax_k(A)_k, the
  authors' order (softmax of the per-expert maps, then multiplied by the SE excitation), for comparison runs: it
  does not sum to 1 per pixel, so the SE branch can scale the whole mixture down.
* ``attention`` (Table 6): ``"pixel"`` (the STGN above), ``"uniform"`` (one scalar per expert from the SE branch alone,
  conventional MoE), ``"none"`` (no gating network, W^k = 1/m).
* H: ``stmoe-id`` uses the identity (experts output frames, Z is the frame); ``stmoe-conv`` one convolutional decoder
  shared by all experts (§4).
* ``batch_experts`` (beyond the paper, speed only): experts of one architecture and config (STMoE-conv's three MIMs)
  can run as one batched call per step (``torch.func.vmap`` over their stacked parameters: one kernel launch where the
  loop makes m) instead of one after another. ``"auto"`` batches on CUDA, where an eager step of small convolutions is
  launch-bound, and keeps the loop on the CPU, where both cost the same and the loop's floats are the recorded
  results'; ``"on"`` / ``"off"`` force it. The outputs agree with the loop to float rounding (tests/test_models.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from .base import (ModelConfig, State, as_tuple, check_choice, check_int, check_odd, conv2d, init_window, push_window,
                   shared_fields, stack_window)
from .errors import ModelConfigError
from .predictor import Predictor, Step
from .registry import create_expert, list_experts, make_config, model_config_class, register_model

ATTENTIONS = ("pixel", "uniform", "none")
BATCH_EXPERTS = ("auto", "on", "off")
NORMALIZATIONS = ("softmax", "sigmoid", "authors")
# Fields every expert must share with the mixture: they fix the input frames, the grid P x Q and C_Z of Eq. 4.
MUST_MATCH = ("in_channels", "height", "width", "patch_size", "out_channels", "input_frames")


@dataclass(frozen=True)
class STMoEConfig(ModelConfig):
    """STMoE config. The shared size fields (num_layers, num_hidden, filter_size) are the experts' defaults."""

    experts: tuple[str, ...] = ("addl", "mim", "mim")  # F^1..F^m: translation, rotation, intensity (§4, STMoE-Id)
    expert_configs: tuple[dict, ...] = ()  # () or one dict of config overrides per expert, e.g. ({}, {"num_layers": 2}, {})
    gate_channels: int = 16  # m', channels of U_t
    gate_layers: int = 2  # depth of G' (3x3 convolutions)
    gate_kernel: int = 5  # size of the neighbourhood R(i, j) seen by G''^k
    attention: str = "pixel"  # "pixel" (STGN), "uniform" (one scalar per expert), "none" (W = 1/m); Table 6
    normalization: str = "softmax"  # "softmax" over experts per pixel after the SE scaling, or independent "sigmoid"s
    decoder: str = "identity"
    batch_experts: str = "auto"  # run same-architecture experts as one vmapped call: auto (on CUDA), on, off

    def __post_init__(self) -> None:
        experts = self.experts
        if isinstance(experts, str) or not isinstance(experts, (list, tuple)):
            raise ModelConfigError("experts", f"must be a list of expert names, got {experts!r}; "
                                              f"allowed names: {', '.join(list_experts())}")
        object.__setattr__(self, "experts", tuple(experts))
        if len(self.experts) == 0:
            raise ModelConfigError("experts", f"needs at least one expert (m >= 1), got m = 0; "
                                              f"allowed names: {', '.join(list_experts())}")
        known = list_experts()
        for name in self.experts:
            if name not in known:
                raise ModelConfigError("experts", f"unknown expert {name!r}; allowed: {', '.join(known)}")
        overrides = self.expert_configs
        if overrides is None:
            overrides = ()
        if isinstance(overrides, Mapping) or not isinstance(overrides, (list, tuple)) or \
                not all(isinstance(o, Mapping) for o in overrides):
            raise ModelConfigError("expert_configs", "must be a list of dicts, one per expert (or empty)")
        if len(overrides) not in (0, len(self.experts)):
            raise ModelConfigError("expert_configs", f"needs one dict per expert ({len(self.experts)}) or none, "
                                                     f"got {len(overrides)}")
        object.__setattr__(self, "expert_configs", tuple({str(k): as_tuple(v) for k, v in o.items()} for o in overrides))
        super().__post_init__()
        for name in ("gate_channels", "gate_layers"):
            check_int(self, name)
        check_odd(self, "gate_kernel")
        check_choice(self, "attention", ATTENTIONS)
        check_choice(self, "normalization", NORMALIZATIONS)
        check_choice(self, "batch_experts", BATCH_EXPERTS)
        if self.batch_experts == "on" and not self.experts_share_architecture:
            raise ModelConfigError("batch_experts", f"'on' needs experts of one architecture and config, got "
                                                    f"{', '.join(self.experts)}; use 'auto' or 'off'")
        for k in range(len(self.experts)):
            self.expert_config(k)  # raises on a bad override or a channel mismatch

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def experts_share_architecture(self) -> bool:
        """Whether every expert has the same architecture and config (so their parameters stack for vmap)."""
        return len(set(self.experts)) == 1 and all(self.expert_config(k) == self.expert_config(0)
                                                     for k in range(self.num_experts))

    def expert_config(self, k: int) -> ModelConfig:
        """The config of expert k: the shared fields of this config, then ``expert_configs[k]`` on top."""
        name = self.experts[k]
        override = self.expert_configs[k] if self.expert_configs else {}
        allowed = {f.name for f in dataclasses.fields(model_config_class(name)) if f.init}
        for key, value in override.items():
            where = f"expert_configs[{k}].{key}"
            if key not in allowed:
                raise ModelConfigError(where, f"not a field of expert {k} ({name!r}); allowed: {', '.join(sorted(allowed))}")
            if key in MUST_MATCH and value != getattr(self, key):
                raise ModelConfigError(where, f"must equal the mixture's {key}={getattr(self, key)!r} (all experts share "
                                              f"frames, grid and C_Z for Eq. 4), got {value!r}")
        kwargs = {**shared_fields(self), **override}
        try:
            return make_config(name, "experts", **kwargs)
        except ModelConfigError as err:
            field = f"expert_configs[{k}].{err.field}" if err.field in override else err.field
            raise ModelConfigError(field, f"expert {k} ({name!r}) rejects it: {str(err).split(': ', 1)[-1]}") from None


@dataclass(frozen=True)
class STMoEIdConfig(STMoEConfig):
    """STMoE-Id (§4): identity decoder, ADDL for translation and MIM for rotation and intensity."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder != "identity":
            raise ModelConfigError("decoder", f"stmoe-id has the identity decoder; got {self.decoder!r} "
                                              f"(use stmoe-conv for a convolutional decoder)")


@dataclass(frozen=True)
class STMoEConvConfig(STMoEConfig):
    """STMoE-conv (§4): one convolutional decoder H shared by all experts, MIM for all three experts."""

    experts: tuple[str, ...] = ("mim", "mim", "mim")
    decoder: str = "conv"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder != "conv":
            raise ModelConfigError("decoder", f"stmoe-conv has a convolutional decoder; got {self.decoder!r} "
                                              f"(use stmoe-id for the identity decoder)")


class STGN(nn.Module):
    """Spatio-Temporal Gating Network (Eq. 5, Fig. 1b): X_t stacked (B, l*C*p*p, P, Q) -> W_t (B, m, P, Q) in [0, 1]."""

    def __init__(self, in_channels: int, num_experts: int, gate_channels: int = 16, gate_layers: int = 2,
                 gate_kernel: int = 5, attention: str = "pixel", normalization: str = "softmax") -> None:
        super().__init__()
        self.num_experts = num_experts
        self.attention = attention
        self.normalization = normalization
        if attention == "none":
            return  # no gating network at all: W^k = 1/m
        layers: list[nn.Module] = []
        for i in range(gate_layers):  # G': U_t = G'(X_t)
            layers += [conv2d(in_channels if i == 0 else gate_channels, gate_channels, 3), nn.ReLU(inplace=True)]
        self.g_prime = nn.Sequential(*layers)
        # Squeeze U_t over the grid, excite one logit per expert: weighs the experts against each other.
        self.se = nn.Sequential(nn.Linear(gate_channels, gate_channels), nn.ReLU(inplace=True),
                                nn.Linear(gate_channels, num_experts))
        if attention == "pixel":
            self.g_second = conv2d(gate_channels, num_experts, gate_kernel)  # G''^k over R(i, j): channel k = expert k
        # Start from equal weights: with random last layers a fresh gate already prefers some expert in every pixel,
        # and the reconstruction gradient of a near-tie between experts is too weak to undo that before the entropy
        # term locks it in (measured on the tiny run: 0.94 of the weight on one expert).
        last = [self.se[-1]] + ([self.g_second] if attention == "pixel" else [])
        for layer in last:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, _, P, Q = x.shape
        m = self.num_experts
        if self.attention == "none":
            return x.new_full((B, m, P, Q), 1.0 / m)
        u = self.g_prime(x)  # U_t (B, m', P, Q)
        e = self.se(u.mean(dim=(2, 3)))  # (B, m) expert-wise excitation logits
        if self.attention == "uniform":
            w = torch.softmax(e, dim=1) if self.normalization == "softmax" else torch.sigmoid(e)
            return w[:, :, None, None].expand(B, m, P, Q)
        a = self.g_second(u)  # (B, m, P, Q) pixel-wise gate logits A_k
        if self.normalization == "softmax":
            return torch.softmax(a + F.logsigmoid(e)[:, :, None, None], dim=1)  # prop. to s_k exp(A_k)
        if self.normalization == "authors":
            return torch.softmax(a, dim=1) * torch.sigmoid(e)[:, :, None, None]
        return torch.sigmoid(a) * torch.sigmoid(e)[:, :, None, None]


class STMoE(Predictor):
    """m experts F^k, the STGN G and the decoder H (Eq. 6). State: {"experts": [state_k], "window": X_t (B, l, C*p*p, P, Q)}.

    ``experts`` (nn.ModuleList), ``gate`` (STGN) and ``decoder`` (H) are the parts the two-step optimisation of §3.2
    trains or freezes separately; ``experts[k].load_state_dict(baseline.experts[0].state_dict())`` loads an expert
    trained alone.
    """

    config_class = STMoEConfig

    def __init__(self, config: STMoEConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        super().__init__(config)
        for k, name in enumerate(config.experts):
            self.experts.append(create_expert(name, config.expert_config(k)))
        self.gate = STGN(config.input_frames * config.frame_channels, config.num_experts, config.gate_channels,
                         config.gate_layers, config.gate_kernel, config.attention, config.normalization)
        # Decided once here: a registry lookup inside forward would break a torch.compile graph.
        self._same_architecture = config.experts_share_architecture

    # State of a roll-out: {"experts": [state_k], "window"} with the loop; with batched experts {"stacked": the experts'
    # states stacked on a leading m axis, "params": their parameters and buffers stacked once per roll-out (a
    # differentiable torch.stack, so gradients reach every expert's own parameters), "window"}.
    def _batched(self, device) -> bool:
        mode = self.config.batch_experts
        if mode == "off" or self.num_experts < 2 or not self._same_architecture:
            return False
        return mode == "on" or torch.device(device if device is not None else "cpu").type == "cuda"

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        window = init_window(self.config, batch_size, device, dtype)
        if not self._batched(device):
            return {"experts": [e.init_state(batch_size, device, dtype) for e in self.experts], "window": window}
        named = [dict(e.named_parameters()) | dict(e.named_buffers()) for e in self.experts]
        params = {f"expert.{n}": torch.stack([d[n] for d in named]) for n in named[0]}  # (m, ...), _ExpertCall names
        # Experts of one config start from the same state: one copy, broadcast over m (states are never written in
        # place, each step returns new tensors).
        first = self.experts[0].init_state(batch_size, device, dtype)
        stacked = tree_map(lambda t: t.expand(self.num_experts, *t.shape), first)
        return {"stacked": stacked, "params": params, "window": window}

    def _vmapped(self, method: str, state: State, x: Tensor):
        """expert.<method>(x, state_k) for every k in one vmapped call over the stacked parameters and states."""
        call = _ExpertCall(self.experts[0], method)

        def one(params, s):
            return functional_call(call, params, (x, s))

        return vmap(one, in_dims=(0, 0), randomness="error")(state["params"], state["stacked"])

    def observe(self, x: Tensor, state: State) -> State:
        window = push_window(state["window"], x)
        if "stacked" in state:
            return {"stacked": self._vmapped("observe", state, x), "params": state["params"], "window": window}
        return {"experts": [e.observe(x, s) for e, s in zip(self.experts, state["experts"])], "window": window}

    def step(self, x: Tensor, state: State, return_expert_z: bool = False) -> Step:
        window = push_window(state["window"], x)  # X_t
        if "stacked" in state:
            z_m, stacked = self._vmapped("step", state, x)  # (m, B, C_Z, P, Q)
            z_k = z_m.transpose(0, 1)
            new_state = {"stacked": stacked, "params": state["params"], "window": window}
        else:
            zs, states = [], []
            for expert, s in zip(self.experts, state["experts"]):
                z, s = expert.step(x, s)
                zs.append(z)
                states.append(s)
            z_k = torch.stack(zs, dim=1)  # Z~_t^k, (B, m, C_Z, P, Q)
            new_state = {"experts": states, "window": window}
        w = self.gate(stack_window(window))  # W_t^k, (B, m, P, Q)
        z = (w.unsqueeze(2).to(z_k.dtype) * z_k).sum(dim=1)  # Eq. 4/6: sum_k W^k . Z~^k, (B, C_Z, P, Q)
        return Step(z, w, z_k if return_expert_z else None, new_state)

    def _expert_states(self, state: State) -> list[State]:
        if "stacked" in state:
            return [tree_map(lambda t, k=k: t[k], state["stacked"]) for k in range(self.num_experts)]
        return state["experts"]

    def aux_losses(self, state: State) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for k, (expert, s) in enumerate(zip(self.experts, self._expert_states(state))):
            out.update({f"experts.{k}.{key}": v for key, v in expert.aux_losses(s).items()})
        return out

    @property
    def default_aux_weights(self) -> dict[str, float]:
        return {f"experts.{k}.{key}": w for k, e in enumerate(self.experts)
                for key, w in e.default_aux_weights.items()}


class _ExpertCall(nn.Module):
    """Calls ``expert.<method>(x, state)`` as forward, so torch.func.functional_call can run it with other weights."""

    def __init__(self, expert: nn.Module, method: str) -> None:
        super().__init__()
        self.expert = expert
        self.method = method

    def forward(self, x: Tensor, state: State):
        return getattr(self.expert, self.method)(x, state)


@register_model("stmoe-id")
class STMoEId(STMoE):
    """STMoE-Id (§4): Z_t is the predicted (patched) frame."""

    config_class = STMoEIdConfig


@register_model("stmoe-conv")
class STMoEConv(STMoE):
    """STMoE-conv (§4): H is one convolution shared by all experts."""

    config_class = STMoEConvConfig
