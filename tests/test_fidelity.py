"""Fidelity to the reference implementations (docs/models.md, "model -> reference code -> remaining differences").

Numerics that the learning tests cannot see: ADDL's sampling grid under bf16 autocast, the Gaussian warp at tiny
diffusion, the loss balance of auxiliary terms, the warm-up targets of the recurrent baselines, the authors' STGN
normalisation, the attention-alignment metric, every model under every preset, and the number of host syncs per
training step.
"""
from __future__ import annotations

import math

import pytest
import torch

import stmoe
from stmoe.alignment import attention_alignment, pool_roles
from stmoe.losses import LossConfig, compute_loss
from stmoe.models.addl import ADDL_AUX_WEIGHTS, MIN_DIFFUSION, sampling_grid, warp_bilinear, warp_gaussian
from stmoe.models.stmoe import STGN
from stmoe.train.config import PRESETS, load_config


# ----------------------------------------------------------------------------------------------- ADDL numerics
@pytest.mark.parametrize("size", [64, 128])
def test_addl_grid_under_bf16_autocast_equals_fp32(size):
    """A uniform 0.3 px shift given as bf16 (what a conv head returns under autocast): the grid built under CPU bf16
    autocast equals the fp32 grid of the same field within 1e-4 px (coordinates built in the field's bf16 were up to
    0.17 px off at 64x64 and 0.44 px at 128x128)."""
    flow = torch.full((1, 2, size, size), 0.3).to(torch.bfloat16)
    ref = sampling_grid(flow.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sampling_grid(flow)
        frame = torch.rand(1, 1, size, size)
        warped = warp_bilinear(frame, flow)
    px = (got - ref).abs() * (size - 1) / 2  # grid units -> pixels
    assert got.dtype == torch.float32 and float(px.max()) < 1e-4
    assert warped.dtype == torch.float32
    torch.testing.assert_close(warped, warp_bilinear(frame, flow.float()))


@pytest.mark.parametrize("diffusion", [MIN_DIFFUSION, 1e-3, 0.01, 0.25, 4.0])
def test_gaussian_warp_is_finite_down_to_the_lower_bound(diffusion):
    """Every tap of exp(-d^2 / 4D) underflows for small D (the plain ratio gave 0/0 = NaN at D = 0.001); the softmax
    form stays finite, and at small D it samples the nearest pixel."""
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(2, 1, 12, 12, generator=g)
    flow = (torch.rand(2, 2, 12, 12, generator=g) - 0.5) * 4
    out = warp_gaussian(frame, flow, diffusion)
    assert torch.isfinite(out).all()
    assert float(out.min()) >= float(frame.min()) - 1e-6 and float(out.max()) <= float(frame.max()) + 1e-6
    if diffusion <= 1e-3:  # the kernel is a delta at the nearest integer point of x - w(x)
        whole = torch.round(flow)
        torch.testing.assert_close(warp_gaussian(frame, whole, diffusion), warp_bilinear(frame, whole))
    with pytest.raises(stmoe.models.ModelConfigError, match="diffusion"):
        stmoe.create_model("addl", height=16, width=16, patch_size=4, num_layers=1, warp="gaussian",
                           diffusion=MIN_DIFFUSION / 2)


def test_addl_baseline_is_the_warp_alone():
    """de Bézenac's model has no learnable decoder (a conv after the warp could fake intensity changes)."""
    cfg = load_config("tiny", overrides={"stages.baseline.model.name": "addl"}).stage("baseline")
    model = cfg.model.build()
    assert isinstance(model.decoder, torch.nn.Identity)
    assert cfg.model.model_config.decoder == "identity"
    conv = load_config("tiny", overrides={"stages.baseline.model.name": "mim"}).stage("baseline").model.build()
    assert not isinstance(conv.decoder, torch.nn.Identity)  # recurrent baselines keep their 1x1-read-out + conv H


# ----------------------------------------------------------------------------------------------- loss balance
def test_model_default_aux_weights_reach_the_loss_and_the_config_wins():
    pred, target = torch.zeros(1, 1, 1, 4, 4), torch.zeros(1, 1, 1, 4, 4)
    aux = {"experts.0.magnitude": torch.tensor(2.0), "experts.0.divergence": torch.tensor(1.0),
           "experts.1.moment": torch.tensor(3.0)}
    defaults = {"experts.0.magnitude": 0.0, "experts.0.divergence": 0.5, "experts.1.moment": 0.1}
    total, terms = compute_loss(pred, target, aux=aux, aux_defaults=defaults)
    assert "aux/experts.0.magnitude" not in terms  # default weight 0: not computed
    assert math.isclose(float(total), 0.5 * 1.0 + 0.1 * 3.0, rel_tol=1e-6)
    cfg = LossConfig(aux_weights={"magnitude": -0.003})  # de Bézenac's sign, set for every expert by its bare name
    total, _ = compute_loss(pred, target, aux=aux, config=cfg, aux_defaults=defaults)
    assert math.isclose(float(total), -0.003 * 2.0 + 0.5 + 0.3, rel_tol=1e-6)
    mix = stmoe.create_model("stmoe-id", height=16, width=16, patch_size=4, num_layers=1, num_hidden=4,
                             filter_size=3, experts=("addl", "convlstm", "phydnet"),
                             expert_configs=({}, {}, {"num_layers": 1, "phy_channels": 4, "phy_kernel": 3}))
    assert mix.default_aux_weights == {**{f"experts.0.{k}": v for k, v in ADDL_AUX_WEIGHTS.items()},
                                 "experts.2.moment": pytest.approx(1 / 18)}


# ----------------------------------------------------------------------------------------------- warm-up targets
def test_observed_predictions_are_the_teacher_forced_next_frame_predictions():
    torch.manual_seed(0)
    model = stmoe.create_model("convlstm", height=16, width=16, patch_size=4, num_layers=2, num_hidden=8,
                               filter_size=3, input_frames=4)
    frames = torch.rand(2, 4, 1, 16, 16)
    with torch.no_grad():
        out = model(frames, 3, predict_observed=True)
        plain = model(frames, 3)
        x = stmoe.models.patchify(frames, 4)
        state = model.init_state(2)
        manual = []
        for t in range(3):
            z, _, _, state = model.step(x[:, t], state)
            manual.append(stmoe.models.unpatchify(model.decoder(z), 4))
    assert out.observed_pred.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(out.observed_pred, torch.stack(manual, 1))
    torch.testing.assert_close(out.pred, plain.pred)  # scoring the warm-up changes no prediction
    assert model.observed_loss_default  # recurrent baseline: on under optim.observed_loss=auto
    window = stmoe.create_model("unet", height=16, width=16, patch_size=4, num_layers=1, num_hidden=8, filter_size=3)
    assert not window.observed_loss_default


# ----------------------------------------------------------------------------------------------- STGN
def test_authors_normalisation_is_softmax_of_the_maps_times_the_excitation():
    torch.manual_seed(0)
    gate = STGN(in_channels=4, num_experts=3, gate_channels=8, gate_layers=2, gate_kernel=3, normalization="authors")
    for p in gate.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(2, 4, 5, 5)
    w = gate(x)
    u = gate.g_prime(x)
    want = torch.softmax(gate.g_second(u), 1) * torch.sigmoid(gate.se(u.mean((2, 3))))[:, :, None, None]
    torch.testing.assert_close(w, want)
    assert (w.sum(1) < 1).all()  # unlike "softmax", the excitation scales the whole mixture


def test_a_fresh_gate_weighs_every_expert_equally():
    """Zero-initialised last layers: W = 1/m everywhere at the start (a random start prefers some expert per pixel)."""
    gate = STGN(in_channels=4, num_experts=3, gate_channels=8)
    torch.testing.assert_close(gate(torch.rand(2, 4, 6, 6)), torch.full((2, 3, 6, 6), 1 / 3))


# ----------------------------------------------------------------------------------------------- alignment metric
def test_alignment_on_hand_made_weights():
    """Two 2x2 cells per frame (patch 2): cell 0 translation, cell 1 rotation, the rest background."""
    pm = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    pm[0, 0, :2, :2] = 1  # translation cell (top left)
    pm[0, 0, :2, 2:] = torch.tensor([[2, 2], [3, 0]])  # rotation majority (top right)
    assert pool_roles(pm, 2).tolist() == [[[[1, 2], [0, 0]]]]
    w = torch.zeros(1, 1, 3, 2, 2)
    w[0, 0, :, 0, 0] = torch.tensor([0.8, 0.1, 0.1])  # the translation expert wins its cell
    w[0, 0, :, 0, 1] = torch.tensor([0.5, 0.3, 0.2])  # ... and the rotation cell too
    w[0, 0, :, 1, :] = torch.tensor([0.2, 0.2, 0.6])[:, None]
    a = attention_alignment(w, pm, 2)
    assert a["weight_by_role"] == {"translation": [0.8, 0.1, 0.1], "rotation": [0.5, 0.3, 0.2]}
    assert a["diagonal_wins"] == {"translation": True, "rotation": False}
    assert a["iou"] == {"translation": 0.5, "rotation": 0.0}  # translation predicted on both object cells
    assert a["own_share"]["translation"] == pytest.approx(0.8 / 1.3, abs=1e-4)
    assert a["role_fraction"] == {"translation": 0.5, "rotation": 0.5}


# ----------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("name", stmoe.list_models())
def test_every_model_runs_under_every_preset(preset, name):
    """`stmoe train baseline --preset P --model NAME` resolves and builds for every registered model (MIM and
    PredRNN++ need >= 2 layers; the tiny preset had 1); under tiny it also runs a forward/backward pass."""
    cfg = load_config(preset, overrides={"stages.baseline.model.name": name}).stage("baseline")
    if preset != "tiny":
        cfg.model.model_config  # resolving validates it; building the paper-size models is left to the GPU
        return
    torch.manual_seed(0)
    model = cfg.model.build()
    c = model.config
    frames = torch.rand(1, c.input_frames, c.in_channels, c.height, c.width)
    out = model(frames, 2)
    out.pred.sum().backward()
    assert torch.isfinite(out.pred).all()


# ----------------------------------------------------------------------------------------------- host syncs
def test_training_steps_do_not_sync_with_the_host(tmp_path, monkeypatch):
    """Loss terms are accumulated on the device; the loop reads them back every run.log_every steps and at the
    epoch end only (it used to call .item()/float() ~6 times per step)."""
    import physvid
    from stmoe.train.config import TrainConfig
    from stmoe.train.stages import fit

    cfg = physvid.RenderConfig(property="translation", height=16, width=16, frames=4, seed=0)
    physvid.generate(cfg, 40, tmp_path / "d", workers=1, compression="none")
    tc = TrainConfig.from_dict({
        "model": {"name": "convlstm", "height": 16, "width": 16, "patch_size": 4, "num_layers": 1,
                  "num_hidden": 4, "filter_size": 3},
        "data": {"input_frames": 2, "output_frames": 2, "batch_size": 2, "split": [1.0, 0.0, 0.0]},
        "optim": {"epochs": 1}, "run": {"log_every": 1000, "progress": "off", "tensorboard": "off"}})
    import sys

    calls = {"n": 0}
    item, to_float = torch.Tensor.item, torch.Tensor.__float__

    def counted(f):
        def wrapper(self, *a, **k):
            # Count reads made by stmoe itself; torch.optim.Adam's .item() on its CPU step counters is no device sync.
            if "stmoe" in sys._getframe(1).f_code.co_filename.replace("\\", "/").split("/"):
                calls["n"] += 1
            return f(self, *a, **k)
        return wrapper

    from stmoe.train import trainer as trainer_mod

    steps = {"n": 0}
    original = trainer_mod.Trainer._train_epoch

    def count_epoch(self, *a, **k):
        monkeypatch.setattr(torch.Tensor, "item", counted(item))
        monkeypatch.setattr(torch.Tensor, "__float__", counted(to_float))
        try:
            record = original(self, *a, **k)
        finally:
            monkeypatch.setattr(torch.Tensor, "item", item)
            monkeypatch.setattr(torch.Tensor, "__float__", to_float)
        steps["n"] = record["step"]
        return record

    monkeypatch.setattr(trainer_mod.Trainer, "_train_epoch", count_epoch)
    fit(tc.model.build(), tc, tmp_path / "run", [str(tmp_path / "d")], stage="baseline")
    assert steps["n"] == 20
    assert calls["n"] <= 12, f"{calls['n']} host syncs in {steps['n']} steps"
