"""Cell-level tests of the recurrent baselines PredRNN++, MIM and PhyDNet (stmoe/models/{predrnnpp,mim,phydnet}.py).

The generic interface tests over every registered model live in test_models.py; here: cell shapes, the connectivity of
each paper equation (which inputs feed which memory, checked with autograd), hand-computed GHU / MIM-N / PhyCell
cases, the K2M moment transform against a naive double loop, state threading, and a one-batch overfit per model.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from stmoe.models import ModelConfigError, create_model
from stmoe.models.mim import MIM, MIMN, MIMS, MIMBlock, SpatioTemporalLSTMCell
from stmoe.models.phydnet import (PhyCell, PhyDNet, identity_moment_kernels, kernel_moments, moment_basis,
                                  moment_loss)
from stmoe.models.predrnnpp import CausalLSTMCell, GradientHighwayUnit, PredRNNpp

NH, K, B, P = 8, 3, 2, 6  # hidden channels, kernel, batch, grid side of the cell tests
TINY = dict(height=16, width=16, patch_size=4, num_layers=2, num_hidden=8, filter_size=3, input_frames=4)
EXTRA = {"predrnnpp": {}, "mim": {}, "phydnet": {"phy_channels": 8, "phy_kernel": 3}}
NAMES = tuple(EXTRA)


def tiny(name: str, **kw):
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **EXTRA[name], **kw})


def rand(*shape: int, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, requires_grad=requires_grad)


def depends(out: torch.Tensor, inp: torch.Tensor) -> bool:
    """Whether ``out`` has a non-zero gradient path to ``inp``."""
    (g,) = torch.autograd.grad(out.sum(), inp, retain_graph=True, allow_unused=True)
    return g is not None and bool(g.abs().sum() > 0)


# --------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("cin", [1, 16])
def test_cell_shapes(cin: int) -> None:
    torch.manual_seed(0)
    x, h, c, m, n, s = rand(B, cin, P, P), *(rand(B, NH, P, P) for _ in range(5))
    for out in CausalLSTMCell(cin, NH, K)(x, h, c, m):
        assert out.shape == (B, NH, P, P)
    assert GradientHighwayUnit(cin, NH, K)(x, h).shape == (B, NH, P, P)
    for out in SpatioTemporalLSTMCell(cin, NH, K)(x, h, c, m):
        assert out.shape == (B, NH, P, P)
    for out in (*MIMN(NH, K)(h, n), *MIMS(NH, K)(h, c, s), *MIMBlock(NH, K)(h, n, h, c, m, s)):
        assert out.shape == (B, NH, P, P)
    assert PhyCell(NH, 3)(h, c).shape == (B, NH, P, P)


# --------------------------------------------------------------------------------------------------- connectivity
def test_causal_lstm_connectivity() -> None:
    """PredRNN++ Eq. 1: C_t from (X, H, C) only; M_t from X, M^{k-1} and (through C_t) H and C."""
    torch.manual_seed(0)
    x, h, c, m = (rand(B, NH, P, P, requires_grad=True) for _ in range(4))
    h1, c1, m1 = CausalLSTMCell(NH, NH, K)(x, h, c, m)
    assert all(depends(c1, t) for t in (x, h, c)) and not depends(c1, m)
    assert all(depends(m1, t) for t in (x, h, c, m))  # h, c enter through C_t (the cascade)
    assert all(depends(h1, t) for t in (x, h, c, m))


def zeroed_causal_cell() -> CausalLSTMCell:
    """A 1-channel, 1x1 Causal LSTM with every weight and bias zero (the by-hand tests set what they need)."""
    cell = CausalLSTMCell(1, 1, 1)
    for conv in (cell.conv_xhc, cell.conv_xc, cell.conv_m, cell.conv_o, cell.conv_h):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return cell


def test_causal_lstm_memory_cascade_by_hand() -> None:
    """With all weights zero the cell reduces to its biases: C_t = sig(b_f + 1) C + sig(b_i) tanh(b_g), etc."""
    cell = zeroed_causal_cell()
    with torch.no_grad():
        cell.conv_xhc.bias.copy_(torch.tensor([0.3, -0.2, 0.5]))  # g, i, f
        cell.conv_xc.bias.copy_(torch.tensor([-0.4, 0.1, 0.7]))  # g', i'-part, f'-part
        cell.conv_m.bias.copy_(torch.tensor([0.05, -0.1, 0.6]))  # i'-part, f'-part, W_3 * M
        cell.conv_o.bias.fill_(0.9)
        cell.conv_h.bias.fill_(-0.8)
    c0 = torch.full((1, 1, 2, 2), 0.25)
    h, c, m = cell(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), c0, torch.full((1, 1, 2, 2), 2.0))
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    c_ref = sig(0.5 + 1) * 0.25 + sig(-0.2) * math.tanh(0.3)
    m_ref = sig(0.7 - 0.1 + 1) * math.tanh(0.6) + sig(0.1 + 0.05) * math.tanh(-0.4)  # f' . tanh(W_3 * M) + i' . g'
    h_ref = math.tanh(0.9) * math.tanh(-0.8)  # output gate uses tanh
    torch.testing.assert_close(c, torch.full_like(c, c_ref))
    torch.testing.assert_close(m, torch.full_like(m, m_ref))
    torch.testing.assert_close(h, torch.full_like(h, h_ref))


def test_causal_lstm_wiring_follows_the_reference_code() -> None:
    """predrnn-pp's causal LSTM: the output gate also reads H_{t-1}; g' has no M term (only X and C_t)."""
    cell = zeroed_causal_cell()
    with torch.no_grad():
        cell.conv_o.weight[0, 1] = 1.0  # o = tanh(H_{t-1}): inputs of W_4 are [X, H_{t-1}, C_t, M_t]
        cell.conv_h.bias.fill_(1.0)
    zeros = torch.zeros(1, 1, 2, 2)
    h_prev = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    h, _, _ = cell(zeros, h_prev, zeros, zeros)
    torch.testing.assert_close(h, torch.tanh(h_prev) * math.tanh(1.0))
    assert cell.conv_xc.in_channels == 1 + 1  # g' (and the X/C parts of i', f') from [X, C_t] only
    ghu = GradientHighwayUnit(8, 8, 3)
    assert float(ghu.conv.weight.detach().abs().max()) <= 1e-3 and float(ghu.conv.bias.detach().abs().max()) == 0


def test_st_lstm_connectivity() -> None:
    """PredRNN ST-LSTM: C_t from (X, H_{t-1}, C_{t-1}); M_t from (X, M^{l-1}) only."""
    torch.manual_seed(0)
    x, h, c, m = (rand(B, NH, P, P, requires_grad=True) for _ in range(4))
    h1, c1, m1 = SpatioTemporalLSTMCell(NH, NH, K)(x, h, c, m)
    assert all(depends(c1, t) for t in (x, h, c)) and not depends(c1, m)
    assert depends(m1, x) and depends(m1, m) and not depends(m1, h) and not depends(m1, c)
    assert all(depends(h1, t) for t in (x, h, c, m))


def test_mim_block_connectivity() -> None:
    """MIM block: the forget path of C goes through MIM-S (fed by D); M_t ignores H, C, D, S; S_t ignores M and H."""
    torch.manual_seed(0)
    x, d, h, c, m, s = (rand(B, NH, P, P, requires_grad=True) for _ in range(6))
    h1, c1, m1, s1 = MIMBlock(NH, K)(x, d, h, c, m, s)
    assert all(depends(c1, t) for t in (x, d, h, c, s)) and not depends(c1, m)
    assert depends(m1, x) and depends(m1, m) and not any(depends(m1, t) for t in (d, h, c, s))
    assert all(depends(s1, t) for t in (d, c, s)) and not any(depends(s1, t) for t in (x, m, h))


# --------------------------------------------------------------------------------------------------- GHU by hand
def test_ghu_equation_by_hand() -> None:
    """PredRNN++ Eq. 2 with 1x1 kernels: Z_t = u p + (1 - u) Z_{t-1}, p = tanh(.), u = sig(.), computed in NumPy."""
    ghu = GradientHighwayUnit(1, 1, 1)
    w = np.array([[0.7, -1.3], [-0.4, 0.9]])  # rows: (p, u) pre-activations; columns: (x, z)
    b = np.array([0.2, -0.1])
    with torch.no_grad():
        ghu.conv.weight.copy_(torch.tensor(w, dtype=torch.float32).view(2, 2, 1, 1))
        ghu.conv.bias.copy_(torch.tensor(b, dtype=torch.float32))
    x = np.array([[0.5, -1.0], [2.0, 0.0]])
    z = np.array([[0.3, 0.8], [-0.6, 1.5]])
    p = np.tanh(w[0, 0] * x + w[0, 1] * z + b[0])
    u = 1 / (1 + np.exp(-(w[1, 0] * x + w[1, 1] * z + b[1])))
    expected = u * p + (1 - u) * z
    as_t = lambda a: torch.tensor(a, dtype=torch.float32).view(1, 1, 2, 2)  # noqa: E731
    got = ghu(as_t(x), as_t(z))
    np.testing.assert_allclose(got.detach().numpy().reshape(2, 2), expected, rtol=1e-6, atol=1e-6)


def test_ghu_saturated_gate_passes_state_through() -> None:
    """u -> 0 keeps Z_{t-1} (the highway); u -> 1 replaces it with p."""
    ghu = GradientHighwayUnit(NH, NH, K)
    x, z = rand(B, NH, P, P), rand(B, NH, P, P)
    with torch.no_grad():
        ghu.conv.bias[NH:] = -50.0
    torch.testing.assert_close(ghu(x, z), z)


# --------------------------------------------------------------------------------------------------- MIM-N
def test_mim_n_zero_difference_path() -> None:
    """With dH = 0 and N_{t-1} = 0 only the biases act: N_t = sig(b_i) tanh(b_g)."""
    torch.manual_seed(0)
    mim_n = MIMN(NH, K)
    d, n = mim_n(torch.zeros(B, NH, P, P), torch.zeros(B, NH, P, P))
    b_g, b_i, _ = mim_n.conv_gates.bias.detach().chunk(3)
    expected = (torch.sigmoid(b_i) * torch.tanh(b_g)).view(1, NH, 1, 1).expand_as(n)
    torch.testing.assert_close(n, expected)


def _record_mim_n_inputs(expert):
    """Forward hooks on every block's MIM-N: per call, (dH input, D output)."""
    calls = {j: [] for j in range(len(expert.blocks))}
    for j, block in enumerate(expert.blocks):
        block.mim_n.register_forward_hook(lambda mod, inp, out, j=j: calls[j].append((inp[0].detach(), out[0].detach())))
    return calls


def test_mim_n_cascade_feeds_each_block_the_output_of_the_block_below() -> None:
    """Authors' MIM (Yunbo426/MIM, OpenSTL): the first MIM-N reads H^1_t - H^1_{t-1}, block j >= 2 reads D_t of block
    j - 1; at the first step every block gets D = 0 and N stays 0. Checked with hooks on a 4-layer MIM."""
    expert = tiny("mim", num_layers=4).experts[0]
    calls = _record_mim_n_inputs(expert)
    block_d = {j: [] for j in range(3)}
    for j, block in enumerate(expert.blocks):
        block.register_forward_hook(lambda mod, inp, out, j=j: block_d[j].append(inp[1].detach()))
    x = torch.rand(B, 16, 4, 4)
    s0 = expert.init_state(B)
    _, s1 = expert.step(x, s0)
    assert all(float(d[0].abs().max()) == 0 for d in block_d.values())  # first step: no difference, D = 0
    assert all(float(n.detach().abs().max()) == 0 for n in s1["n"])
    _, s2 = expert.step(torch.rand(B, 16, 4, 4), s1)
    torch.testing.assert_close(calls[0][1][0], s2["h"][0] - s1["h"][0])  # the raw difference of the ST-LSTM layer
    for j in (1, 2):
        torch.testing.assert_close(calls[j][1][0], calls[j - 1][1][1])  # D of the block below
        torch.testing.assert_close(block_d[j][1], calls[j][1][1])  # ... and the block uses its own MIM-N's D
        assert (calls[j][1][0] - (s2["h"][j] - s1["h"][j])).abs().max() > 1e-4  # not the raw difference


# --------------------------------------------------------------------------------------------------- PhyDNet
def naive_moments(w: np.ndarray) -> np.ndarray:
    """m[p, q] = sum_ij w[i, j] x_i^p x_j^q / (p! q!), x_i = i - (k-1)/2, by explicit loops."""
    k = w.shape[0]
    m = np.zeros((k, k))
    for p in range(k):
        for q in range(k):
            for i in range(k):
                for j in range(k):
                    xi, xj = i - (k - 1) / 2, j - (k - 1) / 2
                    m[p, q] += w[i, j] * xi ** p * xj ** q / (math.factorial(p) * math.factorial(q))
    return m


@pytest.mark.parametrize("k", [3, 5, 7])
def test_kernel_moments_match_naive_loops(k: int) -> None:
    w = np.random.default_rng(k).normal(size=(k, k))
    got = kernel_moments(torch.tensor(w)).numpy()
    np.testing.assert_allclose(got, naive_moments(w), rtol=1e-10, atol=1e-10)
    assert moment_basis(k).shape == (k, k)


def test_identity_moment_kernels_are_finite_differences() -> None:
    """k = 3: kernel (1, 0) is the central difference along rows, kernel (2, 0) the 3-point second difference."""
    kern = identity_moment_kernels(3)
    torch.testing.assert_close(kern[3], torch.tensor([[0, -0.5, 0], [0, 0, 0], [0, 0.5, 0]], dtype=torch.float64))
    torch.testing.assert_close(kern[6], torch.tensor([[0, 1.0, 0], [0, -2, 0], [0, 1, 0]], dtype=torch.float64))
    torch.testing.assert_close(kern[0], torch.tensor([[0, 0, 0], [0, 1.0, 0], [0, 0, 0]], dtype=torch.float64))


@pytest.mark.parametrize("k", [3, 7])
def test_moment_loss_zero_at_identity_kernels(k: int) -> None:
    cell = PhyCell(4, k)
    assert cell.phi_conv.weight.shape == (k * k, 4, k, k)
    assert cell.moment_loss().item() > 1e-3  # random init
    with torch.no_grad():
        cell.phi_conv.weight.copy_(identity_moment_kernels(k, torch.float32).unsqueeze(1).expand(-1, 4, -1, -1))
    assert cell.moment_loss().item() < 1e-8
    with torch.no_grad():
        cell.phi_conv.weight[5, 2, 0, 0] += 0.1
    assert cell.moment_loss().item() > 1e-6


def test_moment_loss_value_and_gradient() -> None:
    """Zero filters: every one-hot target is missed by 1, so the per-channel MSE is k*k / k**4 and channels add up."""
    w = torch.zeros(9, 5, 3, 3, requires_grad=True)
    loss = moment_loss(w)
    torch.testing.assert_close(loss, torch.tensor(5 * 9 / 81.0))
    loss.backward()
    assert w.grad.abs().sum() > 0


def test_phydnet_aux_loss_and_bf16() -> None:
    model = tiny("phydnet")
    out = model(torch.rand(B, 4, 1, 16, 16), 2)
    assert set(out.aux) == {"moment"} and out.aux["moment"].dim() == 0 and out.aux["moment"] > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        aux = model.experts[0].aux_losses({})
    assert aux["moment"].dtype == torch.float32


def test_phycell_correction_by_hand() -> None:
    """Phi = 0 and a constant gain sig(b) give H_t = H + sig(b) (E(u) - H)."""
    cell = PhyCell(NH, 3)
    with torch.no_grad():
        cell.phi_out.weight.zero_()
        cell.phi_out.bias.zero_()
        cell.gain.weight.zero_()
        cell.gain.bias.fill_(0.4)
    e, h = rand(B, NH, P, P), rand(B, NH, P, P)
    torch.testing.assert_close(cell(e, h), h + torch.sigmoid(torch.tensor(0.4)) * (e - h))


@pytest.mark.parametrize("patch, stride, latent", [(4, 1, 4), (2, 2, 4), (1, 4, 4)])
def test_phydnet_latent_is_quarter_frame(patch: int, stride: int, latent: int) -> None:
    model = tiny("phydnet", patch_size=patch)
    assert model.config.encoder_stride == stride
    state = model.experts[0].init_state(B)
    assert state["phy"][0].shape == (B, 8, latent, latent) and state["h"][0].shape == (B, 8, latent, latent)
    z, state = model.experts[0].step(torch.rand(B, patch * patch, 16 // patch, 16 // patch), state)
    assert z.shape == (B, patch * patch, 16 // patch, 16 // patch)


# --------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("name", ["predrnnpp", "mim"])
def test_one_layer_is_rejected(name: str) -> None:
    with pytest.raises(ModelConfigError, match="^num_layers"):
        tiny(name, num_layers=1)


@pytest.mark.parametrize("kw, field", [({"encoder_stride": 3}, "encoder_stride"),
                                       ({"patch_size": 8, "encoder_stride": 4}, "encoder_stride"),
                                       ({"phy_kernel": 4}, "phy_kernel"), ({"phy_channels": 0}, "phy_channels"),
                                       ({"phy_layers": 0}, "phy_layers")])
def test_phydnet_config_errors(kw: dict, field: str) -> None:
    with pytest.raises(ModelConfigError, match=f"^{field}"):
        tiny("phydnet", **kw)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str) -> None:
    model = tiny(name)
    assert isinstance(model.experts[0], {"predrnnpp": PredRNNpp, "mim": MIM, "phydnet": PhyDNet}[name])
    again = create_model(name, **dataclasses.asdict(model.config))
    assert again.config == model.config
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


# --------------------------------------------------------------------------------------------------- state threading
def tensor_attributes(model: nn.Module) -> list[str]:
    """Tensors kept on modules outside their parameters and buffers (state must never live on self)."""
    found = []
    for mod_name, mod in model.named_modules():
        for key, value in vars(mod).items():
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            values = (value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple))
                      else [value])
            if any(isinstance(v, torch.Tensor) for v in values):
                found.append(f"{mod_name}.{key}")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_state_threading(name: str) -> None:
    model = tiny(name)
    expert = model.experts[0]
    state0 = expert.init_state(B)
    snapshot = {k: [t.clone() for t in v] if isinstance(v, list) else v.clone() for k, v in state0.items()}
    x = torch.rand(B, 16, 4, 4)
    z1, state1 = expert.step(x, state0)
    z2, state2 = expert.step(x, state1)
    assert z1.shape == z2.shape == (B, 16, 4, 4)
    assert state1.keys() == state0.keys() == state2.keys()
    flat = lambda s: [t for v in s.values() for t in (v if isinstance(v, list) else [v])]  # noqa: E731
    for a, b in zip(flat(state0), flat(snapshot)):
        assert torch.equal(a, b)  # step does not modify its input state
    for t0, t1, t2 in zip(flat(state0), flat(state1), flat(state2)):
        assert t0.shape == t1.shape == t2.shape
        if t1.dim():  # 0-d flags (MIM's "started") are not memories
            assert (t1 - t2).abs().max() > 0  # every memory evolves
    assert not torch.allclose(z1, z2)  # same input, different state -> different output
    model(torch.rand(B, 4, 1, 16, 16), 2)
    assert tensor_attributes(model) == []


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_channels_last(name: str) -> None:
    model = tiny(name).to(memory_format=torch.channels_last)
    frames = torch.rand(B, 4, 1, 16, 16)
    ref = model(frames, 2).pred
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(frames, 2).pred
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1


@pytest.mark.parametrize("name", NAMES)
def test_step_traces_as_one_graph(name: str) -> None:
    """torch.compile compatibility: dynamo captures a whole step (dict/list state) without graph breaks."""
    expert = tiny(name).experts[0]
    torch._dynamo.reset()
    step = torch.compile(expert.step, backend="eager", fullgraph=True)
    state = expert.init_state(B)
    x = torch.rand(B, 16, 4, 4)
    z, new = step(x, state)
    z_ref, _ = expert.step(x, state)
    torch.testing.assert_close(z, z_ref)


# --------------------------------------------------------------------------------------------------- overfit
def moving_blob(batch: int, frames: int, size: int = 16) -> torch.Tensor:
    """A Gaussian blob moving one pixel per frame diagonally, (B, T, 1, H, W) in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    seq = []
    for t in range(frames):
        blobs = [torch.exp(-((yy - 4 - t - 2 * b) ** 2 + (xx - 3 - t) ** 2) / 6.0) for b in range(batch)]
        seq.append(torch.stack(blobs))
    return torch.stack(seq, 1).unsqueeze(2)


@pytest.mark.parametrize("name", NAMES)
def test_overfits_one_batch(name: str) -> None:
    """The loss falls > 10x, and to < 1/10 of a blank prediction's, so shrinking a large initial output is not enough."""
    model = tiny(name)
    seq = moving_blob(B, 6)
    inputs, targets = seq[:, :4], seq[:, 4:]
    goal = min(torch.mean((model(inputs, 2).pred.detach() - targets) ** 2).item(), targets.pow(2).mean().item()) / 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        out = model(inputs, 2)
        loss = torch.mean((out.pred - targets) ** 2)
        losses.append(loss.item())
        if losses[-1] < goal:
            break
        opt.zero_grad()
        (loss + 1e-3 * sum(out.aux.values(), torch.zeros(()))).backward()
        opt.step()
    assert losses[-1] < goal, f"{name}: loss {losses[0]:.4g} -> {losses[-1]:.4g} after {len(losses)} steps (goal {goal:.4g})"
