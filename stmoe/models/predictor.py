"""The generic predictor M = H(F(X_t)) and its recursive roll-out (paper Eq. 1-3 and the text after Eq. 1).

``Predictor`` = space-to-depth patching -> expert(s) F -> decoder H -> depth-to-space. It warms up on the l observed
frames, then predicts n frames, each time feeding its own prediction back as the newest input ("an updating output image
is recursively used as a new input image until t + n - 1", §3). Teacher forcing / scheduled sampling is the argument
``teacher_mask`` of :meth:`Predictor.forward`, never a flag stored on the module.

A baseline is a Predictor with one expert in ``experts``; the STMoE (stmoe.py) subclasses it and overrides the core
methods ``init_state`` / ``observe`` / ``step`` / ``aux_losses`` to mix m experts with the STGN.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .base import Expert, ModelConfig, State, build_decoder, patchify, unpatchify
from .errors import ModelInputError


@dataclass
class Output:
    """What :meth:`Predictor.forward` returns.

    pred: (B, n, C, H, W) predicted frames.
    weights: (B, n, m, P, Q) STGN attention weights W_t^k (Eq. 5) or None for a single model.
    aux: scalar regularisers averaged over the n prediction steps (e.g. ``divergence`` of ADDL; an STMoE prefixes
        its experts' terms with ``experts.<k>.``).
    expert_frames: (B, n, m, C, H, W) = H(Z~_t^k), each expert decoded alone (Fig. 4, 9), only when asked for.
    observed_pred: (B, l-1, C, H, W), the next-frame predictions made while reading the observed frames 2..l (teacher
        forced: each from the true frames before it), only with ``predict_observed=True``.
    """

    pred: Tensor
    weights: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)
    expert_frames: Tensor | None = None
    observed_pred: Tensor | None = None


class Step(NamedTuple):
    """One step of a predictor core: the mixed feature map Z_t, its weights, the per-expert Z~_t^k, the new state."""

    z: Tensor  # (B, C_Z, P, Q)
    weights: Tensor | None  # (B, m, P, Q)
    expert_z: Tensor | None  # (B, m, C_Z, P, Q), only when asked for
    state: State


class Predictor(nn.Module):
    """Patch -> expert(s) F -> decoder H -> unpatch, rolled out recursively (Eq. 1-3).

    Attributes reachable for freezing and for loading shared weights: ``experts`` (nn.ModuleList; one entry for a
    baseline), ``decoder`` (H), ``config`` (the dataclass) and ``model_name`` (set by ``create_model``).
    """

    model_name: str = ""  # the registry name; set by register_model (subclasses) or create_model

    def __init__(self, config: ModelConfig, expert: Expert | None = None) -> None:
        super().__init__()
        self.config = config
        if expert is not None:
            self.model_name = expert.model_name
        self.experts = nn.ModuleList([expert] if expert is not None else [])
        self.decoder = build_decoder(config)
        self.gate: nn.Module | None = None

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    # ------------------------------------------------------------------ core (overridden by the STMoE)
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return self.experts[0].init_state(batch_size, device, dtype)

    def observe(self, x: Tensor, state: State) -> State:
        return self.experts[0].observe(x, state)

    def step(self, x: Tensor, state: State, return_expert_z: bool = False) -> Step:
        z, state = self.experts[0].step(x, state)
        return Step(z, None, z.unsqueeze(1) if return_expert_z else None, state)

    def aux_losses(self, state: State) -> dict[str, Tensor]:
        return self.experts[0].aux_losses(state)

    @property
    def default_aux_weights(self) -> dict[str, float]:
        """The model's default loss weight of each name ``aux_losses`` returns (``Expert.default_aux_weights``);
        ``loss.aux_weights`` overrides them."""
        return dict(self.experts[0].default_aux_weights)

    @property
    def observed_loss_default(self) -> bool:
        """Whether ``optim.observed_loss=auto`` scores the l-1 warm-up predictions too: yes for a recurrent baseline, as
        in the PredRNN/PredRNN++/MIM/PhyDNet reference code (every next-frame prediction is a target); no for window
        models, whose early windows are mostly zero padding, and for the STMoE (Eq. 7 scores Y_t..Y_{t+n-1})."""
        return self.num_experts == 1 and self.experts[0].recurrent

    # ------------------------------------------------------------------ roll-out
    def _check(self, frames: Tensor, n_future: int, targets: Tensor | None, teacher_mask: Tensor | None) -> None:
        c = self.config
        want = (c.input_frames, c.in_channels, c.height, c.width)
        if not isinstance(frames, Tensor) or frames.dim() != 5 or tuple(frames.shape[1:]) != want:
            got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ModelInputError("frames", f"expected (B, l={want[0]}, C={want[1]}, H={want[2]}, W={want[3]}) "
                                            f"from the model config, got {got}")
        if isinstance(n_future, bool) or not isinstance(n_future, int) or n_future < 1:
            raise ModelInputError("n_future", f"must be an integer >= 1, got {n_future!r}")
        if teacher_mask is None:
            return
        if targets is None:
            raise ModelInputError("targets", "teacher_mask needs the ground-truth frames `targets` (B, n, C, H, W)")
        B = frames.shape[0]
        if targets.dim() != 5 or targets.shape[0] != B or targets.shape[1] < n_future - 1 or \
                tuple(targets.shape[2:]) != want[1:]:
            raise ModelInputError("targets", f"expected (B={B}, n>={n_future - 1}, {want[1]}, {want[2]}, {want[3]}), "
                                             f"got {tuple(targets.shape)}")
        if tuple(teacher_mask.shape) != (B, n_future - 1):
            raise ModelInputError("teacher_mask", f"expected (B={B}, n-1={n_future - 1}), got {tuple(teacher_mask.shape)}")

    def forward(self, frames: Tensor, n_future: int, targets: Tensor | None = None, teacher_mask: Tensor | None = None,
                return_expert_frames: bool = False, predict_observed: bool = False) -> Output:
        """Predict ``n_future`` frames after ``frames`` (B, l, C, H, W).

        teacher_mask (B, n-1), bool or float in [0, 1]: where 1, the ground truth ``targets[:, i]`` (B, n, C, H, W) is fed
        as the input after prediction i instead of the prediction itself (scheduled sampling); None feeds predictions.
        predict_observed: also predict frames 2..l from the observed frames before each (``Output.observed_pred``), so that training
        can score every next-frame prediction, as the recurrent baselines' reference code does.
        """
        self._check(frames, n_future, targets, teacher_mask)
        p = self.config.patch_size
        B, l = frames.shape[:2]
        x = patchify(frames, p)  # (B, l, C*p*p, P, Q)
        state = self.init_state(B, frames.device, frames.dtype)
        warm = []
        for t in range(l - 1):
            if predict_observed:
                z, _, _, state = self.step(x[:, t], state)
                warm.append(self.decoder(z))  # predicts frame t+1 from frames 0..t
            else:
                state = self.observe(x[:, t], state)

        inp = x[:, l - 1]
        preds, weights, expert_frames = [], [], []
        aux_sum: dict[str, Tensor] = {}
        for i in range(n_future):
            z, w, z_k, state = self.step(inp, state, return_expert_frames)
            y = self.decoder(z)  # (B, C*p*p, P, Q)
            preds.append(y)
            if w is not None:
                weights.append(w)
            if return_expert_frames:
                m = z_k.shape[1]
                expert_frames.append(self.decoder(z_k.flatten(0, 1)).unflatten(0, (B, m)))  # (B, m, C*p*p, P, Q)
            for k, v in self.aux_losses(state).items():
                aux_sum[k] = aux_sum[k] + v if k in aux_sum else v
            if i < n_future - 1:
                inp = y
                if teacher_mask is not None:
                    truth = patchify(targets[:, i], p).to(y.dtype)
                    mask = teacher_mask[:, i].view(B, 1, 1, 1)
                    inp = torch.where(mask, truth, y) if mask.dtype == torch.bool else torch.lerp(y, truth, mask.to(y.dtype))

        pred = unpatchify(torch.stack(preds, 1), p)  # (B, n, C, H, W)
        return Output(
            pred=pred,
            weights=torch.stack(weights, 1) if weights else None,  # (B, n, m, P, Q)
            aux={k: v / n_future for k, v in aux_sum.items()},
            expert_frames=unpatchify(torch.stack(expert_frames, 1), p) if return_expert_frames else None,
            observed_pred=unpatchify(torch.stack(warm, 1), p) if warm else None,  # (B, l-1, C, H, W)
        )


def rollout(model: Predictor, frames: Tensor, n_future: int, targets: Tensor | None = None,
            teacher_mask: Tensor | None = None, return_expert_frames: bool = False) -> Output:
    """Recursive roll-out of any model (paper Eq. 1); the same as calling ``model(frames, n_future, ...)``."""
    return model(frames, n_future, targets=targets, teacher_mask=teacher_mask, return_expert_frames=return_expert_frames)
