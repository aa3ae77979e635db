"""Training objective of the global optimisation stage (paper §3.2, Eq. 7-8) and Barron's general robust loss (paper ref. [4]).

Eq. 7:  L = L_reconst + lambda_s * smo(W) + lambda_e * ent(W)
Eq. 8:  L = rho(L_reconst, a1, c1) + lambda_e * rho(ent(W), a2, c2) + lambda_m * rho(mag(W), a3, c3)

`compute_loss` implements the union of both equations: every term goes through the robust function rho with its own (alpha, c),
    total = rho(Y_hat - Y) + lambda_e * rho(ent(W)) + lambda_s * rho(dW/dt) + lambda_m * rho(mag(W)) + sum_k w_k * aux_k
            [+ lambda_c * competition(W), beyond the paper: the experts' competition of Jacobs et al. 1991, off by default]
            [+ lambda_g * gate_target(W), beyond the paper: -log W of the expert of each cell's known physics, off by default].

Reduction (all terms): rho is applied element-wise and then averaged over all elements of its argument (Barron's usual use, and the
same scale whatever the batch, horizon or image size). The paper writes rho(||Y_hat - Y||) with a norm inside rho; applying rho to a whole
norm would make the loss scale with the image size and defeat the point of a per-residual robust function, so we apply it per element.

Definitions used for the attention weights W of shape (B, n, m, P, Q) (batch, horizon, experts, feature rows, feature columns):
- ent(W) = -W log W element-wise, with log evaluated at max(W, eps) so that W = 0 gives 0 and a finite gradient.
- smo(W) = dW/dt = W[:, 1:] - W[:, :-1] (forward difference along the horizon axis). Eq. 7 uses its L1 norm; here rho is applied to the
  difference instead. rho is even, and c * rho(x, 1, c) -> |x| as c -> 0, so plain L1 is the alpha = 1, small-c limit.
- mag(W) = |W| element-wise. The paper names mag(W) in Eq. 8 without defining it; this is our reading (a magnitude/sparsity penalty).
  Its weight defaults to 0 so that the default objective is Eq. 7 made robust, with the values of the reference setup.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor

__all__ = ["LossConfigError", "LossConfig", "robust_loss", "entropy_map", "temporal_difference", "competition_map", "gate_target_nll",
           "compute_loss"]


class LossConfigError(ValueError):
    """Invalid loss configuration or loss inputs (names the field and the allowed values)."""


def robust_loss(x: Tensor, alpha: float, c: float) -> Tensor:
    """Barron's general robust function rho(x, alpha, c) for a fixed shape alpha, element-wise (paper Eq. 8, ref. [4]).

    rho = |alpha-2|/alpha * [((x/c)^2/|alpha-2| + 1)^(alpha/2) - 1], with its limits
    alpha=2: 0.5 (x/c)^2 (L2), alpha=0: log(0.5 (x/c)^2 + 1) (Cauchy), alpha=1: sqrt((x/c)^2+1)-1 (Charbonnier),
    alpha=-inf: 1 - exp(-0.5 (x/c)^2) (Welsch).
    The general branch is written as expm1/log1p so that it tends continuously to the limits as alpha approaches 0 or 2.
    """
    _check_alpha_c(alpha, c, "alpha", "c")
    z = (x / c) ** 2
    if alpha == 2.0:
        return 0.5 * z
    if alpha == 0.0:
        return torch.log1p(0.5 * z)
    if alpha == 1.0:
        return torch.sqrt(z + 1.0) - 1.0
    if math.isinf(alpha):  # only -inf passes the check
        return -torch.expm1(-0.5 * z)
    b = abs(alpha - 2.0)
    # (u + 1)^(alpha/2) - 1 == expm1(alpha/2 * log1p(u)): no cancellation when alpha -> 0, no overflow of b/alpha * (...) when alpha -> 2.
    return (b / alpha) * torch.expm1(0.5 * alpha * torch.log1p(z / b))


def entropy_map(weights: Tensor, eps: float = 1e-8) -> Tensor:
    """ent(W) = -W log W element-wise (paper Eq. 7); log taken at max(W, eps) so W=0 contributes 0 with a finite gradient."""
    return -weights * torch.log(weights.clamp_min(eps))


def temporal_difference(weights: Tensor) -> Tensor:
    """dW/dt of attention weights (B, n, m, P, Q): forward difference along the horizon axis -> (B, n-1, m, P, Q) (paper Eq. 7, smo)."""
    return weights[:, 1:] - weights[:, :-1]


def competition_map(weights: Tensor, expert_pred: Tensor, target: Tensor, tau: float, eps: float = 1e-8) -> Tensor:
    """Mixture-of-experts negative log-likelihood per feature cell (Jacobs, Jordan, Nowlan & Hinton 1991, Eq. 1.3).

    weights W (B, n, m, P, Q); expert_pred H(Z~^k) (B, n, m, C, H, W), each expert decoded alone; target (B, n, C, H, W).
    e^k = mean squared error of expert k over the C x (H/P) x (W/Q) pixels of a cell (the cells of ``patchify``);
    returns -log sum_k W^k exp(-e^k / tau), shape (B, n, P, Q), >= 0 up to rounding. Weights that sum to more than 1
    in a cell (``normalization="sigmoid"``) are divided by their sum there first: otherwise raising every W^k to 1
    would minimise the term without any competition.

    The gradient on softmax logits is W - h, h^k ~ W^k exp(-e^k / tau) the posterior responsibility of expert k for the
    cell: a difference of e^k between two experts moves W by (e^j - e^k) / tau, a sharper signal than the reconstruction
    of the mixed Z gives when the experts nearly tie. expert_pred is not detached: in a stage where the experts or H
    train, the term also pulls each expert towards the cells it is responsible for (Jacobs et al.'s specialisation).
    With a convolutional H, H(Z~^k) on a cell also reads neighbouring cells, so the per-cell likelihood is approximate.
    Raises LossConfigError on mismatched shapes.
    """
    B, n, m, P, Q = weights.shape
    C, H, W = target.shape[2:]
    if target.shape[:2] != (B, n) or expert_pred.shape != (B, n, m, C, H, W) or H % P or W % Q:
        raise LossConfigError(f"expert_pred (B, n, m, C, H, W) and target (B, n, C, H, W) must match the weights' "
                              f"(B, n) = {(B, n)}, m = {m} and {P}x{Q} cells that divide H x W, got expert_pred "
                              f"{tuple(expert_pred.shape)} and target {tuple(target.shape)}")
    sq = (expert_pred - target.unsqueeze(2)) ** 2
    e = sq.reshape(B, n, m, C, P, H // P, Q, W // Q).mean(dim=(3, 5, 7))  # (B, n, m, P, Q)
    total = weights.sum(dim=2, keepdim=True)
    w = torch.where(total > 1.0 + 1e-3, weights / total, weights)  # no host sync; softmax/authors weights untouched
    return -torch.logsumexp(torch.log(w.clamp_min(eps)) - e / tau, dim=2)


def gate_target_nll(weights: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean negative log attention weight of the expert that owns each cell (beyond the paper).

    weights: (B, n, m, P, Q) W_t^k; weights that sum above 1 (sigmoid gates) are rescaled to sum to 1, as in
    :func:`competition_map`. target: (B, n, P, Q) int64, the index k of the expert of each cell's physics
    (physvid's property map pooled to the P x Q grid, stmoe.alignment.pool_roles, minus 1), or -1 where no object
    is (background cells are left out). Returns a scalar; 0 when no cell has a target.
    """
    if target.shape != weights.shape[:2] + weights.shape[3:]:
        raise LossConfigError(f"gate target must be (B, n, P, Q) = {tuple(weights.shape[:2] + weights.shape[3:])}, "
                              f"got {tuple(target.shape)}")
    total = weights.sum(2, keepdim=True)
    w = torch.where(total > 1.0 + 1e-3, weights / total, weights)
    valid = target >= 0
    picked = w.gather(2, target.clamp_min(0).unsqueeze(2)).squeeze(2)  # (B, n, P, Q)
    nll = -torch.log(picked.clamp_min(eps))
    return (nll * valid).sum() / valid.sum().clamp_min(1)


def _check_alpha_c(alpha: float, c: float, alpha_name: str, c_name: str) -> None:
    if not isinstance(alpha, (int, float)) or math.isnan(alpha) or alpha == math.inf:
        raise LossConfigError(f"{alpha_name} must be a finite number or -inf (Welsch), got {alpha!r}")
    if not isinstance(c, (int, float)) or not (c > 0) or math.isinf(c):
        raise LossConfigError(f"{c_name} must be a positive finite scale, got {c!r}")


@dataclass(frozen=True)
class LossConfig:
    """Per-term shape alpha, scale c and weight lambda of the global objective (paper Eq. 7-8).

    Defaults reproduce the reference setup (REFERENCE-NOTES): alpha = 0 (Cauchy) in every term; c = 0.9 for the reconstruction,
    0.3 for the entropy and 0.75 for the temporal difference; weight 0.01 for the two W terms; magnitude term off.
    """

    recon_alpha: float = 0.0
    recon_c: float = 0.9  # residuals on [0,1] frames are well below c, so rho stays near-quadratic there and robust to outliers
    entropy_alpha: float = 0.0
    entropy_c: float = 0.3  # -W log W peaks at 1/e ~ 0.37; c of that order keeps the term informative over its whole range
    entropy_weight: float = 0.01
    smooth_alpha: float = 0.0
    smooth_c: float = 0.75
    smooth_weight: float = 0.01
    magnitude_alpha: float = 0.0
    magnitude_c: float = 1.0
    magnitude_weight: float = 0.0  # mag(W) is undefined in the paper; off unless asked for
    # Beyond the paper: the mixture-of-experts likelihood of Jacobs et al. (1991) per feature cell (see competition_map).
    # It tells the gate which expert predicts each cell best, a signal the reconstruction through the mixed Z gives only
    # weakly when the experts nearly tie (docs/training.md). tau is on the scale of a per-pixel squared error in [0, 1].
    # Its value is ~1-10 per cell against ~1e-3 for the reconstruction, so at weight 1 it dominates the total, and the
    # validation loss that picks a stage's best checkpoint then ranks gates by this likelihood.
    competition_weight: float = 0.0
    competition_tau: float = 1e-3
    # Beyond the paper: supervise W with the physics that drives each cell, known exactly for physvid clips (the
    # property map; gate_target_map). Used to pre-train the gate on physvid `mixed` clips before the global stage.
    gate_target_weight: float = 0.0
    entropy_eps: float = 1e-8
    # Weights of named auxiliary losses returned by the models (e.g. PhyDNet "moment", ADDL "divergence", inside an STMoE
    # "experts.<k>.divergence"). Precedence: a key listed here, then the model's own default for that term
    # (Expert.default_aux_weights, scaled to this reconstruction term: docs/models.md), then default_aux_weight. A key may name
    # a bare term ("magnitude") to set it for every expert that has it. Stored as sorted (name, weight) pairs so the
    # config stays hashable; a dict is accepted. Weights may be negative (de Bezenac's -0.003 magnitude rewards motion).
    aux_weights: Any = field(default=())
    default_aux_weight: float = 1.0

    def __post_init__(self) -> None:
        for term in ("recon", "entropy", "smooth", "magnitude"):
            _check_alpha_c(getattr(self, f"{term}_alpha"), getattr(self, f"{term}_c"), f"{term}_alpha", f"{term}_c")
        for name in ("entropy_weight", "smooth_weight", "magnitude_weight", "competition_weight", "gate_target_weight",
                     "default_aux_weight"):
            _check_weight(getattr(self, name), name)
        if not (isinstance(self.competition_tau, (int, float)) and 0 < self.competition_tau < math.inf):
            raise LossConfigError(f"competition_tau must be a positive finite number, got {self.competition_tau!r}")
        if not (isinstance(self.entropy_eps, (int, float)) and 0 < self.entropy_eps < 1):
            raise LossConfigError(f"entropy_eps must be in (0, 1), got {self.entropy_eps!r}")
        pairs = self.aux_weights.items() if isinstance(self.aux_weights, Mapping) else self.aux_weights
        try:
            pairs = tuple(sorted((str(k), float(v)) for k, v in pairs))
        except (TypeError, ValueError):
            raise LossConfigError(
                f"aux_weights must be a mapping name -> weight or (name, weight) pairs, got {self.aux_weights!r}"
            ) from None
        for k, v in pairs:
            if not math.isfinite(v):
                raise LossConfigError(f"aux_weights[{k!r}] must be a finite number, got {v!r}")
        object.__setattr__(self, "aux_weights", pairs)

    def aux_weight(self, name: str, model_default: float | None = None) -> float:
        """Weight of auxiliary term ``name``: set here (full name, then bare term) > the model's default > default_aux_weight."""
        given = dict(self.aux_weights)
        if name in given:
            return given[name]
        bare = name.rsplit(".", 1)[-1]
        if bare in given:
            return given[bare]
        return self.default_aux_weight if model_default is None else model_default

    def to_dict(self) -> dict:
        """JSON-ready dict (aux_weights as a dict); `LossConfig(**d)` rebuilds it."""
        d = asdict(self)
        d["aux_weights"] = dict(self.aux_weights)
        return d


def _check_weight(value: Any, name: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LossConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def compute_loss(
    pred: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    aux: Mapping[str, Tensor] | None = None,
    config: LossConfig | None = None,
    aux_defaults: Mapping[str, float] | None = None,
    expert_pred: Tensor | None = None,
    gate_target: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Global objective (paper Eq. 7-8) -> (total, terms).

    pred, target: (B, n, C, H, W) predicted and ground-truth frames. weights: attention weights W (B, n, m, P, Q) or None for models
    without a gate (then the W terms are absent). aux: named auxiliary losses of the model; non-scalar values are mean-reduced.
    terms holds the unweighted mean terms ("reconstruction", "entropy", "smoothness", "magnitude", "competition", "aux/<name>") as tensors still
    attached to the graph, and "total". Terms whose weight is 0 are not computed (and not reported).
    aux_defaults: the model's own default weight per aux name (``Predictor.default_aux_weights``), used where the config sets none.
    expert_pred: (B, n_W, m, C, H, W) each expert's own frames for the last n_W predictions (``Output.expert_frames``),
    needed by the "competition" term when ``config.competition_weight`` > 0.
    gate_target: (B, n_W, P, Q) the expert index owning each cell or -1 (:func:`gate_target_nll`), needed by the
    "gate_target" term when ``config.gate_target_weight`` > 0.
    """
    cfg = config if config is not None else LossConfig()
    if not isinstance(cfg, LossConfig):
        raise LossConfigError(f"config must be a LossConfig, got {type(cfg).__name__}")
    if pred.shape != target.shape:
        raise LossConfigError(f"pred and target must have the same shape (B, n, C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim != 5:
        raise LossConfigError(f"pred must be (B, n, C, H, W), got {pred.ndim} dims {tuple(pred.shape)}")

    terms: dict[str, Tensor] = {}
    recon = robust_loss(pred - target, cfg.recon_alpha, cfg.recon_c).mean()
    terms["reconstruction"] = recon
    total = recon

    if weights is not None:
        # n of W may be shorter than pred's horizon: warm-up predictions (optim.observed_loss) carry no W terms.
        if weights.ndim != 5 or weights.shape[0] != pred.shape[0] or not 1 <= weights.shape[1] <= pred.shape[1]:
            raise LossConfigError(
                f"weights must be (B, n, m, P, Q) with B of pred and n <= {pred.shape[1]}, got {tuple(weights.shape)}"
            )
        if cfg.entropy_weight > 0:
            ent = robust_loss(entropy_map(weights, cfg.entropy_eps), cfg.entropy_alpha, cfg.entropy_c).mean()
            terms["entropy"] = ent
            total = total + cfg.entropy_weight * ent
        if cfg.smooth_weight > 0:
            if weights.shape[1] > 1:
                smo = robust_loss(temporal_difference(weights), cfg.smooth_alpha, cfg.smooth_c).mean()
            else:  # a one-frame horizon has no temporal difference
                smo = weights.sum() * 0.0
            terms["smoothness"] = smo
            total = total + cfg.smooth_weight * smo
        if cfg.magnitude_weight > 0:
            mag = robust_loss(weights.abs(), cfg.magnitude_alpha, cfg.magnitude_c).mean()
            terms["magnitude"] = mag
            total = total + cfg.magnitude_weight * mag
        if cfg.competition_weight > 0:
            if expert_pred is None:
                raise LossConfigError("competition_weight > 0 needs each expert's frames (expert_pred); "
                                      "call the model with return_expert_frames=True")
            n_w = weights.shape[1]
            com = competition_map(weights, expert_pred, target[:, -n_w:], cfg.competition_tau).mean()
            terms["competition"] = com
            total = total + cfg.competition_weight * com
        if cfg.gate_target_weight > 0:
            if gate_target is None:
                raise LossConfigError("gate_target_weight > 0 needs the expert index of each cell (gate_target), "
                                      "from physvid property maps")
            tgt = gate_target_nll(weights, gate_target)
            terms["gate_target"] = tgt
            total = total + cfg.gate_target_weight * tgt

    for name, value in sorted((aux or {}).items()):
        if not isinstance(value, Tensor):
            raise LossConfigError(f"aux[{name!r}] must be a tensor, got {type(value).__name__}")
        w = cfg.aux_weight(name, (aux_defaults or {}).get(name))
        if w == 0:
            continue
        value = value.mean() if value.ndim else value
        terms[f"aux/{name}"] = value
        total = total + w * value

    terms["total"] = total
    return total, terms
