"""Tests of the model interface (docs/models.md): every registered model, the STGN and the STMoE mixture (paper §3.1).

Parametrised over ``list_models()``, so a newly registered model is under test automatically. Tiny sizes keep the file
fast on two CPU cores; the STMoE tests use experts from convlstm/addl/unet so they do not depend on the other RNNs.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import stmoe
from stmoe.models import ModelConfigError, ModelInputError, create_expert, patchify, unpatchify
from stmoe.models.addl import flow_regularisers, warp_bilinear, warp_gaussian
from stmoe.models.registry import register_model
from stmoe.models.stmoe import STGN

MODELS = stmoe.list_models()
MIX = ("stmoe-id", "stmoe-conv")
TINY_EXPERTS = ("convlstm", "addl", "unet")  # m = 3 experts from this helper's own files


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str, **kw):
    """Tiny config kwargs: 16x16 frames, patch 4, 2 layers x 8 hidden, 3x3 filters, 3 input frames."""
    cfg = dict(height=16, width=16, patch_size=4, num_layers=2, num_hidden=8, filter_size=3, input_frames=3)
    if name in MIX:
        cfg.update(experts=TINY_EXPERTS, gate_channels=8)
    if name == "phydnet":  # the PhyCell's own defaults (64 channels, 7x7) dominate a tiny model's cost
        cfg.update(phy_channels=8, phy_kernel=3)
    cfg.update(kw)
    return cfg


def make(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return stmoe.create_model(name, **tiny(name, **kw))


def frames(B=2, l=3, C=1, H=16, W=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, l, C, H, W, generator=g)


# ----------------------------------------------------------------------------------------------- registry and configs
def test_registry_lists_all_models_and_rejects_duplicates():
    assert MODELS == sorted(MODELS)
    for name in ("convlstm", "unet", "addl", "stmoe-id", "stmoe-conv"):
        assert name in MODELS
    assert set(stmoe.list_experts()) <= set(MODELS) and not set(MIX) & set(stmoe.list_experts())
    with pytest.raises(ModelConfigError, match="already registered"):
        register_model("convlstm")(type(create_expert("convlstm", **tiny("convlstm"))))


def test_paper_defaults():
    assert stmoe.model_config_class("stmoe-id")().experts == ("addl", "mim", "mim")
    assert stmoe.model_config_class("stmoe-conv")().experts == ("mim", "mim", "mim")
    cfg = stmoe.model_config_class("convlstm")()
    assert (cfg.height, cfg.patch_size, cfg.num_layers, cfg.num_hidden, cfg.filter_size, cfg.out_channels) == \
        (64, 4, 4, 128, 5, 16)


@pytest.mark.parametrize("name", MODELS)
def test_config_roundtrip_rebuilds_model(name):
    model = make(name)
    assert isinstance(model, stmoe.Predictor) and model.model_name == name
    assert isinstance(model.decoder, torch.nn.Module) and len(model.experts) >= 1
    saved = json.loads(json.dumps(dataclasses.asdict(model.config)))  # what a checkpoint stores
    rebuilt = stmoe.create_model(name, **saved)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())  # same architecture, key for key
    spec = json.loads(json.dumps(stmoe.model_spec(model)))
    assert spec["name"] == name and stmoe.model_from_spec(spec).config == model.config


@pytest.mark.parametrize("kwargs, field", [
    (dict(name="nope"), "name"),
    (dict(name="convlstm", patch_size=3), "patch_size"),
    (dict(name="convlstm", height=18, patch_size=4), "patch_size"),
    (dict(name="convlstm", num_hidden=0), "num_hidden"),
    (dict(name="convlstm", filter_size=4), "filter_size"),
    (dict(name="convlstm", bogus=1), "bogus"),
    (dict(name="convlstm", decoder="linear"), "decoder"),
    (dict(name="convlstm", decoder="identity", out_channels=8), "out_channels"),
    (dict(name="addl", out_channels=8), "out_channels"),
    (dict(name="addl", warp="nearest"), "warp"),
    (dict(name="stmoe-id", experts=()), "experts"),
    (dict(name="stmoe-id", experts=("convlstm", "nope")), "experts"),
    (dict(name="stmoe-id", experts=("stmoe-conv",)), "experts"),
    (dict(name="stmoe-id", experts="convlstm"), "experts"),
    (dict(name="stmoe-conv", experts=("convlstm", "unet"), expert_configs=({}, {"out_channels": 4})),
     "expert_configs[1].out_channels"),
    (dict(name="stmoe-conv", experts=("convlstm", "unet"), expert_configs=({},)), "expert_configs"),
    (dict(name="stmoe-conv", experts=("convlstm", "unet"), expert_configs=({"warp": "gaussian"}, {})),
     "expert_configs[0].warp"),
    (dict(name="stmoe-conv", experts=("convlstm", "addl"), out_channels=8), "out_channels"),
    (dict(name="stmoe-id", experts=("convlstm",), attention="global"), "attention"),
    (dict(name="stmoe-id", experts=("convlstm",), normalization="relu"), "normalization"),
    (dict(name="stmoe-id", experts=("convlstm",), gate_kernel=2), "gate_kernel"),
    (dict(name="stmoe-id", experts=("convlstm",), decoder="conv"), "decoder"),
])
def test_bad_configs_raise_one_clear_error_naming_the_field(kwargs, field):
    name = kwargs.pop("name")
    with pytest.raises(ModelConfigError) as info:
        stmoe.create_model(name, **{**tiny("convlstm"), **kwargs})
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_expert_overrides_reach_the_expert():
    model = make("stmoe-conv", experts=("convlstm", "addl"),
                 expert_configs=({"num_hidden": 4, "peephole": True}, {"warp": "gaussian"}))
    assert model.experts[0].config.num_hidden == 4 and model.experts[0].config.peephole
    assert model.experts[1].config.warp == "gaussian" and model.experts[1].config.num_hidden == 8


def test_bad_inputs_raise_model_input_error():
    model = make("convlstm")
    with pytest.raises(ModelInputError, match="frames"):
        model(frames(l=4), 2)  # config says 3 input frames
    with pytest.raises(ModelInputError, match="frames"):
        model(frames(H=32, W=32), 2)
    with pytest.raises(ModelInputError, match="n_future"):
        model(frames(), 0)
    with pytest.raises(ModelInputError, match="targets"):
        model(frames(), 3, teacher_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ModelInputError, match="teacher_mask"):
        model(frames(), 3, targets=frames(), teacher_mask=torch.ones(2, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------- patching
@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_matches_naive_space_to_depth(p):
    x = torch.rand(2, 3, 2, 8, 12)  # leading dims are kept
    y = patchify(x, p)
    assert y.shape == (2, 3, 2 * p * p, 8 // p, 12 // p)
    b, t, c, i, j, P, Q = 1, 2, 1, p - 1, 0, 1, 2
    assert y[b, t, c * p * p + i * p + j, P, Q] == x[b, t, c, P * p + i, Q * p + j]
    assert torch.equal(unpatchify(y, p), x)


# ----------------------------------------------------------------------------------------------- every model
SIZES = [  # (H, W, patch, l, n)
    (16, 16, 4, 3, 3),
    (16, 32, 2, 2, 1),
    (32, 16, 4, 4, 5),
]


@pytest.mark.parametrize("H, W, p, l, n", SIZES)
@pytest.mark.parametrize("name", MODELS)
def test_output_shapes(name, H, W, p, l, n):
    model = make(name, height=H, width=W, patch_size=p, input_frames=l, num_hidden=4, in_channels=2)
    with torch.no_grad():
        out = model(frames(B=2, l=l, C=2, H=H, W=W), n)
    assert out.pred.shape == (2, n, 2, H, W)
    assert torch.isfinite(out.pred).all()
    if name in MIX:
        assert out.weights.shape == (2, n, 3, H // p, W // p)
    else:
        assert out.weights is None
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.aux.values())


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_gradients_on_every_parameter(name):
    model = make(name)
    x = frames()
    out = model(x, 3, targets=frames(seed=2), teacher_mask=torch.tensor([[True, False], [False, True]]))
    loss = (out.pred - 0.5).pow(2).mean() + sum(out.aux.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_rollout_feeds_back_its_own_predictions(name):
    model = make(name).eval()
    x, truth = frames(), frames(seed=3)
    bump = {"on": False}

    def perturb_first_prediction(module, inputs, output):  # decoder H output of the first prediction step only
        if bump["on"] and bump.setdefault("calls", 0) == 0:
            bump["calls"] = 1
            return output + 0.5
        return output

    model.decoder.register_forward_hook(perturb_first_prediction)
    with torch.no_grad():
        base = model(x, 3).pred
        bump.update(on=True, calls=0)
        changed = model(x, 3).pred
        bump.update(on=False)
        forced = model(x, 3, targets=truth, teacher_mask=torch.ones(2, 2, dtype=torch.bool)).pred
        bump.update(on=True, calls=0)
        forced_changed = model(x, 3, targets=truth, teacher_mask=torch.ones(2, 2, dtype=torch.bool)).pred
    assert not torch.allclose(changed[:, 0], base[:, 0])
    assert (changed[:, 1:] - base[:, 1:]).abs().max() > 1e-6, "later frames ignore the fed-back prediction"
    # With full teacher forcing the ground truth is fed instead: the perturbation stays in frame 0.
    torch.testing.assert_close(forced_changed[:, 1:], forced[:, 1:], rtol=0, atol=0)
    assert not torch.allclose(forced[:, 1:], base[:, 1:])


def test_teacher_mask_float_mixes_truth_and_prediction():
    model = make("convlstm").eval()
    x, truth = frames(), frames(seed=3)
    with torch.no_grad():
        hard0 = model(x, 3, targets=truth, teacher_mask=torch.zeros(2, 2)).pred
        free = model(x, 3).pred
        hard1 = model(x, 3, targets=truth, teacher_mask=torch.ones(2, 2)).pred
        bool1 = model(x, 3, targets=truth, teacher_mask=torch.ones(2, 2, dtype=torch.bool)).pred
        half = model(x, 3, targets=truth, teacher_mask=torch.full((2, 2), 0.5)).pred
    torch.testing.assert_close(hard0, free)
    torch.testing.assert_close(hard1, bool1)
    assert not torch.allclose(half[:, 1:], free[:, 1:]) and not torch.allclose(half[:, 1:], hard1[:, 1:])


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_with_fixed_seed(name):
    a, b, c = make(name, seed=5), make(name, seed=5), make(name, seed=6)
    x = frames()
    with torch.no_grad():
        torch.testing.assert_close(a(x, 2).pred, b(x, 2).pred, rtol=0, atol=0)
    differs = [not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters())]
    assert any(differs)


def moving_square_batch(B=2, l=3, n=3, H=16):
    """A bright 4x4 square moving one pixel right per frame, on a dim background."""
    T = l + n
    video = torch.full((B, T, 1, H, H), 0.1)
    for b in range(B):
        for t in range(T):
            r, c = 3 + 5 * b, 2 + t
            video[b, t, 0, r:r + 4, c:c + 4] = 1.0
    return video[:, :l], video[:, l:]


@pytest.mark.parametrize("name", MODELS)
def test_tiny_model_overfits_one_batch(name):
    model = make(name, patch_size=2)
    x, y = moving_square_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(model(x, 3).pred, y)
        losses.append(loss.item())
        if loss.item() < losses[0] / 20:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert min(losses) < losses[0] / 10, f"loss {losses[0]:.4g} -> {min(losses):.4g} after {len(losses)} steps"


# ----------------------------------------------------------------------------------------------- STGN and STMoE
@pytest.mark.parametrize("attention", ["pixel", "uniform", "none"])
@pytest.mark.parametrize("normalization", ["softmax", "sigmoid", "authors"])
@pytest.mark.parametrize("name", MIX)
def test_stgn_weights_in_unit_interval_and_softmax_sums_to_one(name, attention, normalization):
    model = make(name, attention=attention, normalization=normalization)
    with torch.no_grad():
        for p in model.gate.parameters():  # a trained gate: the fresh one starts at W = 1/m (zero last layers)
            torch.nn.init.normal_(p, std=0.3)
        w = model(frames(B=3), 4).weights
    assert w.shape == (3, 4, 3, 4, 4)
    assert (w >= 0).all() and (w <= 1).all()
    if normalization == "softmax" or attention == "none":
        torch.testing.assert_close(w.sum(2), torch.ones_like(w.sum(2)))
    if attention == "none":
        torch.testing.assert_close(w, torch.full_like(w, 1 / 3))
        assert model.gate is not None and not list(model.gate.parameters())
    elif attention == "uniform":
        torch.testing.assert_close(w, w[..., :1, :1].expand_as(w))  # one scalar per expert
    else:
        assert (w.std(dim=(-1, -2)) > 0).any(), "pixel attention gave spatially constant weights"


def test_stgn_pixel_weights_depend_on_the_neighbourhood_r_ij():
    torch.manual_seed(0)
    gate = STGN(in_channels=4, num_experts=3, gate_channels=8, gate_layers=2, gate_kernel=3)
    for layer in (gate.se[-1], gate.g_second):  # as after training (a fresh gate's last layers are zero)
        torch.nn.init.normal_(layer.weight, std=0.3)
    x = torch.rand(1, 4, 12, 12)
    x2 = x.clone()
    x2[..., 0, 0] += 5.0  # a change in one corner
    with torch.no_grad():
        w, w2 = gate(x), gate(x2)
    # G' (two 3x3) + G'' (3x3) see 3 pixels around (i, j): far pixels change only through the image-wide SE factor s_k,
    # so the ratio w2/w, taken relative to expert 0, is one number per expert there ...
    far = w2[..., 6:, 6:] / w[..., 6:, 6:]
    far = far / far[:, :1]
    torch.testing.assert_close(far, far[..., :1, :1].expand_as(far))
    # ... while next to the change the pixel-wise gate moved on its own.
    near = w2[..., :2, :2] / w[..., :2, :2]
    near = near / near[:, :1]
    assert (near - far[..., :1, :1]).abs().max() > 1e-3


@pytest.mark.parametrize("attention", ["pixel", "uniform", "none"])
def test_identity_decoder_returns_exactly_the_weighted_sum_of_expert_outputs(attention):
    model = make("stmoe-id", attention=attention)
    p = model.config.patch_size
    with torch.no_grad():
        out = model(frames(), 3, return_expert_frames=True)
    assert out.expert_frames.shape == (2, 3, 3, 1, 16, 16)
    w = out.weights.repeat_interleave(p, -1).repeat_interleave(p, -2).unsqueeze(3)  # (B, n, m, 1, H, W)
    torch.testing.assert_close(out.pred, (w * out.expert_frames).sum(2), rtol=0, atol=1e-6)


def test_stmoe_experts_step_like_the_bare_experts_and_prefix_aux():
    model = make("stmoe-conv", experts=("addl", "convlstm"))
    with torch.no_grad():
        out = model(frames(), 2, return_expert_frames=True)
    assert set(out.aux) == {"experts.0.divergence", "experts.0.smoothness", "experts.0.magnitude"}
    # Expert 1 decoded alone equals the convlstm baseline with the same weights and decoder.
    single = stmoe.create_model("convlstm", **{k: v for k, v in dataclasses.asdict(model.config).items()
                                               if k in {f.name for f in dataclasses.fields(stmoe.model_config_class("convlstm"))}})
    single.experts[0].load_state_dict(model.experts[1].state_dict())
    single.decoder.load_state_dict(model.decoder.state_dict())
    with torch.no_grad():
        alone = single(frames(), 1).pred
    torch.testing.assert_close(out.expert_frames[:, 0, 1], alone[:, 0])


# ----------------------------------------------------------------------------------------------- ADDL physics
def test_bilinear_warp_shifts_by_integer_flow_and_interpolates():
    img = torch.rand(1, 2, 8, 9)
    flow = torch.zeros(1, 2, 8, 9)
    flow[:, 0] = 2.0  # two pixels to the right
    flow[:, 1] = -1.0  # one pixel up
    out = warp_bilinear(img, flow)
    torch.testing.assert_close(out[..., :-1, 2:], img[..., 1:, :-2])
    flow_half = torch.zeros(1, 2, 8, 9)
    flow_half[:, 0] = 0.5
    torch.testing.assert_close(warp_bilinear(img, flow_half)[..., 1:], (img[..., 1:] + img[..., :-1]) / 2)


def naive_gaussian_warp(img, flow, D):
    """Per-pixel loop over every source pixel (normalised kernel), border pixels repeated far enough to hold the kernel."""
    C, H, W = img.shape
    pad = 6
    padded = torch.nn.functional.pad(img[None], (pad, pad, pad, pad), mode="replicate")[0]
    out = torch.zeros_like(img)
    ys, xs = torch.meshgrid(torch.arange(-pad, H + pad, dtype=torch.float64),
                            torch.arange(-pad, W + pad, dtype=torch.float64), indexing="ij")
    for i in range(H):
        for j in range(W):
            sy, sx = i - flow[1, i, j], j - flow[0, i, j]
            k = torch.exp(-((ys - sy) ** 2 + (xs - sx) ** 2) / (4 * D))
            out[:, i, j] = (padded * k).sum((1, 2)) / k.sum()
    return out


def test_gaussian_warp_matches_naive_twin():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 2, 7, 8, generator=g, dtype=torch.float64)
    flow = (torch.rand(1, 2, 7, 8, generator=g, dtype=torch.float64) - 0.5) * 3
    D = 0.25
    got = warp_gaussian(img, flow, D)[0]
    want = naive_gaussian_warp(img[0], flow[0], D)
    # Interior pixels whose source point stays inside the frame; the truncated window loses < 1e-3 of the mass.
    torch.testing.assert_close(got[:, 2:-2, 2:-2], want[:, 2:-2, 2:-2], rtol=0, atol=3e-3)
    const = torch.full((1, 1, 7, 8), 0.7, dtype=torch.float64)
    torch.testing.assert_close(warp_gaussian(const, flow, D), const)  # normalised kernel conserves a constant


def test_flow_regularisers_on_analytic_fields():
    H, W = 6, 7
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    radial = torch.stack([xs, ys])[None]  # w = (x, y): div = 2, |grad w|^2 = 2, |w|^2 = x^2 + y^2
    r = flow_regularisers(radial)
    torch.testing.assert_close(r["divergence"], torch.tensor(4.0))
    torch.testing.assert_close(r["smoothness"], torch.tensor(2.0))
    torch.testing.assert_close(r["magnitude"], (xs ** 2 + ys ** 2).mean())
    rotation = torch.stack([-ys, xs])[None]  # divergence-free
    assert flow_regularisers(rotation)["divergence"] == 0


def test_fresh_addl_predicts_the_last_frame():
    model = make("addl", decoder="identity")
    x = frames()
    with torch.no_grad():
        pred = model(x, 2).pred
    torch.testing.assert_close(pred[:, 0], x[:, -1])
    torch.testing.assert_close(pred[:, 1], x[:, -1])
