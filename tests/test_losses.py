"""Barron's robust loss and the global objective (paper Eq. 7-8) against hand-written formulas."""
from __future__ import annotations

import json
import math

import pytest
import torch

from stmoe.losses import (LossConfig, LossConfigError, competition_map, compute_loss, entropy_map, robust_loss,
                          temporal_difference)

X = torch.linspace(-5.0, 5.0, 201, dtype=torch.float64)


def naive_general(x: torch.Tensor, alpha: float, c: float) -> torch.Tensor:
    """The textbook closed form, valid away from alpha in {0, 2}."""
    b = abs(alpha - 2.0)
    return b / alpha * (((x / c) ** 2 / b + 1.0) ** (alpha / 2.0) - 1.0)


@pytest.mark.parametrize("c", [0.3, 0.75, 0.9, 2.0])
def test_special_cases(c):
    z = (X / c) ** 2
    torch.testing.assert_close(robust_loss(X, 2.0, c), 0.5 * z)
    torch.testing.assert_close(robust_loss(X, 0.0, c), torch.log(0.5 * z + 1.0))
    torch.testing.assert_close(robust_loss(X, 1.0, c), torch.sqrt(z + 1.0) - 1.0)
    torch.testing.assert_close(robust_loss(X, float("-inf"), c), 1.0 - torch.exp(-0.5 * z))


@pytest.mark.parametrize("alpha", [-4.0, -1.0, -0.5, 0.5, 1.0, 1.5, 3.0, 4.0])
def test_general_alpha_matches_textbook_form(alpha):
    torch.testing.assert_close(robust_loss(X, alpha, 0.7), naive_general(X, alpha, 0.7))


@pytest.mark.parametrize("special", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("delta", [1e-3, -1e-3, 1e-6, -1e-6])
def test_continuous_near_special_cases(special, delta):
    exact = robust_loss(X, special, 0.9)
    near = robust_loss(X, special + delta, 0.9)
    assert torch.isfinite(near).all()
    # d rho / d alpha is bounded on this range, so the gap shrinks linearly with delta
    assert (near - exact).abs().max().item() < 20 * abs(delta) * (1 + exact.abs().max().item())


def test_welsch_is_the_large_negative_limit():
    far = robust_loss(X, -1e5, 0.9)
    torch.testing.assert_close(far, robust_loss(X, float("-inf"), 0.9), atol=1e-4, rtol=1e-4)


def test_float32_near_alpha_two_is_finite_and_close():
    x = X.float()
    a = robust_loss(x, 2.0 - 1e-4, 0.5)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, robust_loss(x, 2.0, 0.5), rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("alpha", [float("-inf"), -2.0, 0.0, 0.5, 1.0, 2.0, 3.0])
def test_gradient_is_finite_at_zero_and_zero_there(alpha):
    x = torch.tensor([0.0, 0.1, -2.0], dtype=torch.float64, requires_grad=True)
    robust_loss(x, alpha, 0.9).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].item() == 0.0
    assert x.grad[1].item() > 0 and x.grad[2].item() < 0


@pytest.mark.parametrize("alpha,c", [(float("nan"), 1.0), (float("inf"), 1.0), (0.0, 0.0), (0.0, -1.0), (0.0, float("inf"))])
def test_bad_alpha_or_scale(alpha, c):
    with pytest.raises(LossConfigError, match="alpha|c must"):
        robust_loss(X, alpha, c)


def test_entropy_on_hand_made_weights():
    w = torch.tensor([0.0, 0.5, 1.0, 1.0 / math.e, 0.25], dtype=torch.float64, requires_grad=True)
    ent = entropy_map(w)
    expected = torch.tensor([0.0, 0.5 * math.log(2.0), 0.0, 1.0 / math.e, 0.25 * math.log(4.0)], dtype=torch.float64)
    torch.testing.assert_close(ent.detach(), expected)
    ent.sum().backward()
    assert torch.isfinite(w.grad).all()  # W = 0 must not give an infinite gradient


def hand_weights() -> torch.Tensor:
    """W (B=1, n=3, m=2, P=1, Q=2) with known temporal differences."""
    w = torch.zeros(1, 3, 2, 1, 2, dtype=torch.float64)
    w[0, :, 0, 0, 0] = torch.tensor([0.2, 0.5, 0.5])
    w[0, :, 1, 0, 0] = torch.tensor([0.8, 0.5, 0.5])
    w[0, :, 0, 0, 1] = torch.tensor([1.0, 0.0, 1.0])
    w[0, :, 1, 0, 1] = torch.tensor([0.0, 1.0, 0.0])
    return w


def test_temporal_difference_along_horizon():
    d = temporal_difference(hand_weights())
    assert d.shape == (1, 2, 2, 1, 2)
    torch.testing.assert_close(d[0, :, 0, 0, 0], torch.tensor([0.3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(d[0, :, 1, 0, 1], torch.tensor([1.0, -1.0], dtype=torch.float64))


def quadratic_config(**kw) -> LossConfig:
    """alpha = 2, c = 1 everywhere, so every term is 0.5 x^2 and easy to compute by hand."""
    base = dict(recon_alpha=2.0, recon_c=1.0, entropy_alpha=2.0, entropy_c=1.0, smooth_alpha=2.0, smooth_c=1.0,
                magnitude_alpha=2.0, magnitude_c=1.0)
    base.update(kw)
    return LossConfig(**base)


def test_compute_loss_terms_by_hand():
    pred = torch.zeros(1, 3, 1, 2, 2, dtype=torch.float64)
    target = torch.full_like(pred, 0.5)
    target[0, 0, 0, 0, 0] = 1.0
    w = hand_weights()
    cfg = quadratic_config(entropy_weight=0.1, smooth_weight=0.2, magnitude_weight=0.3, aux_weights={"moment": 2.0})
    aux = {"moment": torch.tensor(0.25, dtype=torch.float64), "other": torch.tensor([1.0, 3.0], dtype=torch.float64)}
    total, terms = compute_loss(pred, target, w, aux, cfg)

    recon = (11 * 0.5 * 0.25 + 0.5 * 1.0) / 12
    ent_vals = [(-v * math.log(v)) if v > 0 else 0.0 for v in w.flatten().tolist()]
    ent = sum(0.5 * e * e for e in ent_vals) / len(ent_vals)
    diffs = [0.3, 0.0, -0.3, 0.0, -1.0, 1.0, 1.0, -1.0]
    smo = sum(0.5 * d * d for d in diffs) / len(diffs)
    mag = sum(0.5 * v * v for v in w.flatten().tolist()) / w.numel()
    assert terms["reconstruction"].item() == pytest.approx(recon)
    assert terms["entropy"].item() == pytest.approx(ent)
    assert terms["smoothness"].item() == pytest.approx(smo)
    assert terms["magnitude"].item() == pytest.approx(mag)
    assert terms["aux/moment"].item() == pytest.approx(0.25)
    assert terms["aux/other"].item() == pytest.approx(2.0)  # non-scalar aux is mean-reduced, default weight 1
    expected = recon + 0.1 * ent + 0.2 * smo + 0.3 * mag + 2.0 * 0.25 + 1.0 * 2.0
    assert total.item() == pytest.approx(expected)
    assert terms["total"] is total


def test_default_config_is_the_reference_setup():
    cfg = LossConfig()
    assert (cfg.recon_alpha, cfg.entropy_alpha, cfg.smooth_alpha) == (0.0, 0.0, 0.0)
    assert (cfg.recon_c, cfg.entropy_c, cfg.smooth_c) == (0.9, 0.3, 0.75)
    assert (cfg.entropy_weight, cfg.smooth_weight, cfg.magnitude_weight) == (0.01, 0.01, 0.0)
    pred = torch.rand(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.rand(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    w = torch.softmax(torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(2)), dim=2)
    total, terms = compute_loss(pred, target, w)
    recon = torch.log1p(0.5 * ((pred - target) / 0.9) ** 2).mean()
    ent = torch.log1p(0.5 * ((-w * torch.log(w)) / 0.3) ** 2).mean()
    smo = torch.log1p(0.5 * ((w[:, 1:] - w[:, :-1]) / 0.75) ** 2).mean()
    torch.testing.assert_close(total, recon + 0.01 * ent + 0.01 * smo)
    assert "magnitude" not in terms


def test_without_weights_only_reconstruction_and_aux():
    pred, target = torch.zeros(1, 2, 1, 2, 2), torch.ones(1, 2, 1, 2, 2)
    total, terms = compute_loss(pred, target, None, {"div": torch.tensor(1.0)}, LossConfig(aux_weights={"div": 0.5}))
    assert set(terms) == {"reconstruction", "aux/div", "total"}
    assert total.item() == pytest.approx(math.log1p(0.5 / 0.81) + 0.5)


def test_single_frame_horizon_has_zero_smoothness():
    w = torch.full((1, 1, 2, 2, 2), 0.5, requires_grad=True)
    _, terms = compute_loss(torch.zeros(1, 1, 1, 4, 4), torch.zeros(1, 1, 1, 4, 4), w)
    assert terms["smoothness"].item() == 0.0


def test_gradients_flow_to_pred_and_weights():
    pred = torch.rand(1, 3, 1, 4, 4, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    w = torch.zeros(1, 3, 2, 2, 2)
    w[:, :, 1] = 1.0  # hard 0/1 gate: the entropy's log must stay finite at W = 0
    w.requires_grad_(True)
    total, _ = compute_loss(pred, torch.zeros(1, 3, 1, 4, 4), w)
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert torch.isfinite(w.grad).all()


def test_config_validation_and_json_round_trip():
    with pytest.raises(LossConfigError, match="entropy_c"):
        LossConfig(entropy_c=0.0)
    with pytest.raises(LossConfigError, match="smooth_weight"):
        LossConfig(smooth_weight=-1.0)
    with pytest.raises(LossConfigError, match=r"aux_weights\['x'\]"):
        LossConfig(aux_weights={"x": float("inf")})
    assert LossConfig(aux_weights={"magnitude": -0.003}).aux_weight("magnitude") == -0.003  # de Bezenac's sign
    with pytest.raises(LossConfigError, match="recon_alpha"):
        LossConfig(recon_alpha=float("nan"))
    cfg = LossConfig(recon_alpha=1.0, aux_weights={"moment": 0.1, "div": 2.0})
    d = json.loads(json.dumps(cfg.to_dict()))
    assert LossConfig(**d) == cfg
    assert cfg.aux_weight("moment") == 0.1 and cfg.aux_weight("unknown") == 1.0
    # precedence: the full name, then the bare term, then the model's default, then default_aux_weight
    assert cfg.aux_weight("experts.2.moment", 0.5) == 0.1 and cfg.aux_weight("experts.0.magnitude", 0.5) == 0.5


def test_bad_shapes_name_the_problem():
    with pytest.raises(LossConfigError, match="same shape"):
        compute_loss(torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 3, 1, 4, 4))
    with pytest.raises(LossConfigError, match=r"\(B, n, m, P, Q\)"):
        compute_loss(torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 3, 2, 2, 2))


def test_competition_by_hand():
    """-log sum_k W^k exp(-e^k / tau) with e^k the mean squared error of expert k over each 2x2 cell."""
    target = torch.zeros(1, 1, 1, 2, 4, dtype=torch.float64)  # one frame, two cells of 2x2 pixels side by side
    expert = torch.zeros(1, 1, 2, 1, 2, 4, dtype=torch.float64)
    expert[0, 0, 0, 0, :, 2:] = 0.1  # expert 0 is exact on the left cell, 0.1 off on the right one
    expert[0, 0, 1, 0, 0, 0] = 0.2  # expert 1 misses one left pixel by 0.2 and is exact on the right
    w = torch.tensor([0.25, 0.75], dtype=torch.float64).view(1, 1, 2, 1, 1).expand(1, 1, 2, 1, 2)
    got = competition_map(w, expert, target, tau=0.01)
    left = -math.log(0.25 * 1.0 + 0.75 * math.exp(-(0.04 / 4) / 0.01))
    right = -math.log(0.25 * math.exp(-0.01 / 0.01) + 0.75 * 1.0)
    torch.testing.assert_close(got, torch.tensor([[[[left, right]]]], dtype=torch.float64))
    cfg = quadratic_config(competition_weight=2.0, competition_tau=0.01, entropy_weight=0.0, smooth_weight=0.0)
    total, terms = compute_loss(expert[:, :, 0], target, w, config=cfg, expert_pred=expert)
    assert terms["competition"].item() == pytest.approx((left + right) / 2)
    assert total.item() == pytest.approx(terms["reconstruction"].item() + 2.0 * (left + right) / 2)


def test_competition_pulls_each_cell_to_its_best_expert():
    """Its gradient on softmax logits is W - h (Jacobs et al. 1991): the logit of the better expert of a cell rises."""
    target = torch.zeros(1, 2, 1, 4, 4)
    expert = torch.zeros(1, 2, 3, 1, 4, 4)
    expert[:, :, 0, :, :, :2] = 0.3  # expert 0 bad on the left half, expert 1 bad on the right, expert 2 bad everywhere
    expert[:, :, 1, :, :, 2:] = 0.3
    expert[:, :, 2] = 0.2
    logits = torch.randn(1, 2, 3, 2, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    w = torch.softmax(logits, dim=2)
    competition_map(w, expert, target, tau=1e-2).sum().backward()
    e = ((expert - target.unsqueeze(2)) ** 2).reshape(1, 2, 3, 1, 2, 2, 2, 2).mean(dim=(3, 5, 7))
    h = torch.softmax(torch.log(w) - e / 1e-2, dim=2)  # posterior responsibilities
    torch.testing.assert_close(logits.grad, (w - h).detach())
    assert (h[:, :, 1, :, 0] > 0.9).all() and (h[:, :, 0, :, 1] > 0.9).all()  # left cells -> expert 1, right -> expert 0


def test_competition_scores_the_predicted_frames_after_warm_up_ones():
    """With warm-up predictions (optim.observed_loss) pred and target are longer than W: the term uses the last n_W."""
    w = torch.full((1, 2, 2, 1, 1), 0.5, dtype=torch.float64)  # two predicted frames, two experts, one 2x2 cell
    target = torch.zeros(1, 5, 1, 2, 2, dtype=torch.float64)  # 3 warm-up targets, then the 2 predicted frames
    target[:, :3] = 9.0  # a term that read the warm-up frames would be huge
    expert = torch.zeros(1, 2, 2, 1, 2, 2, dtype=torch.float64)
    expert[:, :, 1] = 0.1
    _, terms = compute_loss(torch.zeros_like(target), target, w, config=LossConfig(competition_weight=1.0),
                            expert_pred=expert)
    assert terms["competition"].item() == pytest.approx(-math.log(0.5 + 0.5 * math.exp(-0.01 / 1e-3)))


def test_competition_rescales_weights_that_sum_above_one():
    """Sigmoid gates: W = (1, 1) must not beat W = (1/2, 1/2), or the term would reward raising every weight."""
    target = torch.zeros(1, 1, 1, 2, 2)
    expert = torch.zeros(1, 1, 2, 1, 2, 2)
    expert[:, :, 1] = 0.1
    ones = competition_map(torch.ones(1, 1, 2, 1, 1), expert, target, tau=1e-3)
    halves = competition_map(torch.full((1, 1, 2, 1, 1), 0.5), expert, target, tau=1e-3)
    torch.testing.assert_close(ones, halves)
    assert (halves >= 0).all()


def test_competition_needs_each_experts_frames_and_a_positive_tau():
    w = torch.full((1, 2, 2, 2, 2), 0.5)
    with pytest.raises(LossConfigError, match="return_expert_frames"):
        compute_loss(torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 2, 1, 4, 4), w, config=LossConfig(competition_weight=1.0))
    with pytest.raises(LossConfigError, match=r"expert_pred \(B, n, m, C, H, W\) and target"):
        competition_map(w, torch.zeros(1, 2, 3, 1, 4, 4), torch.zeros(1, 2, 1, 4, 4), tau=1e-3)
    with pytest.raises(LossConfigError, match=r"must match the weights' \(B, n\)"):
        competition_map(w, torch.zeros(1, 2, 2, 1, 4, 4), torch.zeros(1, 1, 1, 4, 4), tau=1e-3)
    with pytest.raises(LossConfigError, match="competition_tau"):
        LossConfig(competition_tau=0.0)
    with pytest.raises(LossConfigError, match="competition_weight"):
        LossConfig(competition_weight=-1.0)
    assert "competition" not in compute_loss(torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 2, 1, 4, 4), w)[1]  # off by default


def test_gate_target_is_the_mean_nll_of_the_owning_expert_over_object_cells():
    from stmoe.losses import gate_target_nll

    w = torch.tensor([0.7, 0.2, 0.1]).view(1, 1, 3, 1, 1).repeat(1, 1, 1, 1, 2)  # two cells, same weights
    target = torch.tensor([[[[0, -1]]]])  # cell 0: expert 0's physics; cell 1: background, left out
    assert torch.allclose(gate_target_nll(w, target), -torch.log(torch.tensor(0.7)))
    target = torch.tensor([[[[2, 1]]]])
    want = -(torch.log(torch.tensor(0.1)) + torch.log(torch.tensor(0.2))) / 2
    assert torch.allclose(gate_target_nll(w, target), want)
    assert gate_target_nll(w * 3, target) == pytest.approx(float(want))  # sigmoid gates summing above 1: rescaled
    assert gate_target_nll(w, torch.full((1, 1, 1, 2), -1)) == 0  # no object anywhere: no signal
    with pytest.raises(LossConfigError, match="gate target must be"):
        gate_target_nll(w, torch.zeros(1, 1, 2, 2, dtype=torch.long))
    cfg = LossConfig(gate_target_weight=2.0, entropy_weight=0.0, smooth_weight=0.0)
    pred = torch.zeros(1, 1, 1, 4, 4)
    _, terms = compute_loss(pred, pred, w, config=cfg, gate_target=target)
    assert torch.allclose(terms["total"], terms["reconstruction"] + 2 * want)
    with pytest.raises(LossConfigError, match="needs the expert index"):
        compute_loss(pred, pred, w, config=cfg)
