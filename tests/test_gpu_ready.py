"""A trainer ready for a GPU, checked on the CPU (issue 17): one compiled graph per stage and no recompilation, the
STMoE's same-architecture experts batched into one call (same outputs as the loop, a fraction of the kernel launches),
and no host read-back inside a training step."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import stmoe
from conftest import tiny_physvid_folders
from stmoe.models import ModelConfigError
from stmoe.train import ClipDataset, TrainConfig, load_config, run_pipeline
from stmoe.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Ops that only relabel memory (no kernel on a GPU): left out of the launch counts.
VIEWS = {"view", "_unsafe_view", "t", "detach", "expand", "permute", "transpose", "unsqueeze", "squeeze", "slice",
         "select", "alias", "as_strided", "split", "unbind", "split_with_sizes", "reshape", "_reshape_alias", "unfold",
         "lift_fresh"}


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched inside the ``with`` block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def compute(self) -> int:
        return sum(v for k, v in self.ops.items() if k not in VIEWS)


def _model(name: str, **kw):
    """The issue's reference setting (4 layers, 5x5 filters, 4 + 6 frames) at a tiny grid and width: the number of
    ops per step does not depend on them."""
    torch.manual_seed(0)
    return stmoe.create_model(name, **{"height": 16, "width": 16, "patch_size": 4, "num_layers": 4, "num_hidden": 8,
                                       "filter_size": 5, "input_frames": 4, **kw})


def _step_ops(model) -> int:
    """Compute ops of one training step: roll-out 4 + 6 with a teacher-forcing mask, MSE, backward, fused Adam."""
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    x = torch.rand(2, 10, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def step():
        out = model(x[:, :4], 6, targets=x[:, 4:], teacher_mask=torch.zeros(2, 5, dtype=torch.bool))
        loss = ((out.pred - x[:, 4:]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # lazy state (Adam moments) outside the count
    with OpCounter() as c:
        step()
    return c.compute


def test_batched_experts_give_the_loops_outputs_and_gradients():
    loop = _model("stmoe-conv", gate_channels=4, batch_experts="off")
    with torch.no_grad():  # distinct experts, a gate that is not uniform
        for p in loop.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batched = _model("stmoe-conv", gate_channels=4, batch_experts="on")
    batched.load_state_dict(loop.state_dict())
    x, y = torch.rand(3, 4, 1, 16, 16), torch.rand(3, 5, 1, 16, 16)
    mask = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    outs = [m(x, 5, targets=y, teacher_mask=mask, return_expert_frames=True, predict_observed=True) for m in (loop, batched)]
    for field in ("pred", "weights", "expert_frames", "observed_pred"):
        a, b = (getattr(o, field) for o in outs)
        assert torch.allclose(a, b, atol=1e-6), field
    for o in outs:
        (o.pred ** 2).mean().backward()
    for (name, a), b in zip(loop.named_parameters(), batched.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-7, rtol=1e-5), name
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in batched.experts.parameters())


def test_batched_experts_need_one_architecture_and_auto_keeps_the_loop_on_cpu():
    with pytest.raises(ModelConfigError, match="batch_experts: 'on' needs experts of one architecture"):
        _model("stmoe-id", gate_channels=4, batch_experts="on")
    auto = _model("stmoe-conv", gate_channels=4)
    assert "experts" in auto.init_state(2, "cpu") and "stacked" not in auto.init_state(2, "cpu")
    assert auto._batched("cuda") and not auto._batched("cpu")
    assert not _model("stmoe-id", gate_channels=4)._batched("cuda")  # ADDL + two MIMs: the loop


def test_stmoe_conv_with_batched_experts_launches_little_more_than_one_mim():
    """Issue 17's goal: at most 1.3x the compute ops of one MIM per training step (the loop: about 3x)."""
    mim = _step_ops(_model("mim"))
    loop = _step_ops(_model("stmoe-conv", gate_channels=16, batch_experts="off"))
    batched = _step_ops(_model("stmoe-conv", gate_channels=16, batch_experts="on"))
    assert loop > 2.5 * mim, (loop, mim)
    assert batched <= 1.3 * mim, (batched, mim, round(batched / mim, 2))


# --------------------------------------------------------------------------------------------------- the trainer
SIZE = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return tiny_physvid_folders(tmp_path_factory.mktemp("gpu_ready"), 22, frames=6, size=SIZE)


def test_a_compiled_pipeline_compiles_each_stage_once(data, tmp_path):
    """Four stages with compile on (a counting backend that traces like Inductor but generates no code): one graph per
    stage, never a recompilation -- across the last partial batch, the end of teacher forcing and earlier stages."""
    import torch._dynamo

    graphs: list[int] = []

    def counting(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    torch._dynamo.reset()
    if "stmoe_test_counting" not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(counting, "stmoe_test_counting")
    # 22 clips: 17 train in batches of 4 -> a partial last batch; teacher forcing ends halfway through.
    cfg = load_config("tiny", overrides={
        "model.height": SIZE, "model.width": SIZE, "model.num_hidden": 4, "model.gate_channels": 4,
        "data.input_frames": 3, "data.output_frames": 3, "data.batch_size": 4, "optim.epochs": 2,
        "stages.experts.optim.epochs": 2, "stages.gating.optim.epochs": 2, "run.progress": "off",
        "run.compile": True, "run.compile_backend": "stmoe_test_counting",
        "synthetic": [str(data[p]) for p in ("translation", "rotation", "intensity")], "real": str(data["mixed"])})
    seen: dict[str, int] = {}  # run folder -> graphs compiled when its last epoch ended

    def note(event, trainer, info):
        if event == "epoch_end":
            seen[trainer.run_dir.name] = len(graphs)

    run_pipeline(cfg, tmp_path / "run", callbacks=[note])
    counts = list(seen.values())
    per_stage = dict(zip(seen, np.diff([0, *counts]).tolist()))
    assert per_stage == {"decoder": 1, "expert-0": 1, "expert-1": 1, "expert-2": 1, "gating": 1, "global": 1}, seen


def _fit(data: Path, tmp_path: Path, steps: int, name: str) -> Counter:
    """Ops that read a value back to the host (`.item()`, `float(tensor)`, `if tensor`) during one epoch."""
    doc = {"model": {"name": "convlstm", "height": SIZE, "width": SIZE, "patch_size": 4, "num_layers": 1,
                     "num_hidden": 4, "filter_size": 3},
           "data": {"input_frames": 3, "output_frames": 3, "batch_size": 2, "split": [1.0, 0.0, 0.0]},
           "optim": {"epochs": 1, "fused": "on", "max_steps_per_epoch": steps},
           "run": {"progress": "off", "tensorboard": "off", "log_every": 1000, "log_formats": ["jsonl"]}}
    cfg = TrainConfig.from_dict(doc)
    model = cfg.model.build()
    ds = ClipDataset(str(data), cfg.data, "train", (SIZE, SIZE), 1, dtype=torch.uint8)
    trainer = Trainer(model, cfg, tmp_path / name, train_set=ds)
    with OpCounter() as c:
        trainer.fit()
    return Counter({k: v for k, v in c.ops.items() if k in ("_local_scalar_dense", "is_nonzero", "item")})


def test_no_host_read_back_inside_a_training_step(data, tmp_path):
    """An epoch of 2 steps and one of 8 read back the same number of values: every read-back is per epoch (the
    finite check, the epoch's sums, the checkpoint), none per step -- on a GPU each would stall the stream."""
    two, eight = (_fit(data["mixed"], tmp_path, steps, f"s{steps}") for steps in (2, 8))
    assert two == eight, (two, eight)


def test_recompilation_is_an_error_not_a_silent_fallback(data, tmp_path):
    """Anything that would make Dynamo recompile mid-stage stops the run with one line."""
    import torch._dynamo

    from stmoe.train.errors import TrainError

    def varying(gm, example_inputs):
        return gm.forward

    if "stmoe_test_plain" not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(varying, "stmoe_test_plain")
    doc = {"model": {"name": "convlstm", "height": SIZE, "width": SIZE, "patch_size": 4, "num_layers": 1,
                     "num_hidden": 4, "filter_size": 3},
           "data": {"input_frames": 3, "output_frames": 3, "batch_size": 4, "split": [1.0, 0.0, 0.0]},
           "optim": {"epochs": 1},
           "run": {"progress": "off", "tensorboard": "off", "compile": True, "compile_backend": "stmoe_test_plain"}}
    cfg = TrainConfig.from_dict(doc)
    ds = ClipDataset(str(data["mixed"]), cfg.data, "train", (SIZE, SIZE), 1, dtype=torch.uint8)
    model = cfg.model.build()
    real_forward = model.forward
    calls = iter(range(1000))

    def shape_shifting(frames, n, **kw):  # a model whose horizon changes every call: Dynamo must recompile
        return real_forward(frames, n - next(calls) % 2, **kw)

    model.forward = shape_shifting
    with pytest.raises(TrainError, match="torch.compile had to recompile"):
        Trainer(model, cfg, tmp_path / "r", train_set=ds).fit()
    assert not torch._dynamo.config.error_on_recompile  # the process setting is restored


def test_the_prepared_gpu_check_runs_in_its_tiny_cpu_mode(tmp_path):
    """benchmarks/gpu_check.py goes through the real Trainer, eager and compiled, and writes its JSON (CI runs this so
    the script a GPU session will spend its minutes on cannot rot)."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_check

    code = gpu_check.main(["--tiny", "--out", str(tmp_path), "--models", "convlstm,stmoe-conv", "--skip-table1"])
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0 and [(r["model"], r["mode"]) for r in result["rows"]] == [
        ("convlstm", "eager-fp32"), ("convlstm", "compiled-bf16"), ("stmoe-conv", "eager-fp32"),
        ("stmoe-conv", "compiled-bf16")]
    assert all(r["samples_per_s"] > 0 for r in result["rows"]) and result["rows"][0]["openstl_h100_fp32"] == 534
