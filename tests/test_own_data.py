"""Issue 18, a user's own data: fine-tuning from a checkpoint (`--init`), forecasting past the frames present
(`stmoe predict --horizon`) and the paper's comparison on named clips (`stmoe reproduce clips --clips`), all from
the command line on tiny data."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from stmoe.train import load_checkpoint

from test_train_cli import TINY, data, run  # noqa: F401 - `data`: the same tiny folders, as a fixture here


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model_state"]


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory) -> Path:
    """A ConvLSTM trained on one synthetic folder: the weights the next tests start from."""
    out = tmp_path_factory.mktemp("pre") / "pre"
    run("train", "baseline", *TINY, "--model", "convlstm", "--epochs", "1", "--real", data["translation"],
        "--out", out)
    return out / "checkpoints" / "best.pt"


def test_init_starts_a_baseline_from_another_runs_weights_with_a_fresh_optimiser(data, pretrained, tmp_path):
    # An lr of 1e-30 leaves the weights where they started: they must be the checkpoint's, not fresh ones.
    out = tmp_path / "ft"
    run("train", "baseline", *TINY, "--model", "convlstm", "--epochs", "1", "--lr", "1e-30", "--real", data["mixed"],
        "--init", pretrained, "--out", out)
    ft, pre = load_checkpoint(out / "checkpoints" / "last.pt"), _state(pretrained)
    assert all(torch.allclose(ft["model_state"][k].float(), pre[k].float()) for k in pre)
    assert ft["meta"]["init_checkpoint"] == str(pretrained)
    # Fresh optimiser and schedule: one epoch of history, Adam's step count is this run's alone.
    assert ft["epoch"] == 1 and len(ft["history"]) == 1
    steps = [s["step"] for s in ft["optimizer"]["state"].values()]
    assert steps and max(float(s) for s in steps) == ft["global_step"]
    fresh = tmp_path / "fresh"
    run("train", "baseline", *TINY, "--model", "convlstm", "--epochs", "1", "--lr", "1e-30", "--real", data["mixed"],
        "--out", fresh)
    scratch = _state(fresh / "checkpoints" / "last.pt")
    assert not all(torch.allclose(scratch[k].float(), pre[k].float()) for k in pre)


def test_init_refuses_another_model_or_other_sizes_in_one_line(data, pretrained, tmp_path):
    res = run("train", "baseline", *TINY, "--model", "unet", "--epochs", "1", "--real", data["mixed"],
              "--init", pretrained, "--out", tmp_path / "a", code=2)
    assert res.output.count("\n") == 1 and "'convlstm' model" in res.output and "'unet'" in res.output
    res = run("train", "baseline", *TINY, "--model", "convlstm", "--set", "model.num_hidden=4", "--epochs", "1",
              "--real", data["mixed"], "--init", pretrained, "--out", tmp_path / "b", code=2)
    assert res.output.count("\n") == 1 and "does not fit" in res.output and "model.* size fields" in res.output
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b" / "checkpoints").exists()


def test_init_reaches_every_stage_command(data, pretrained, tmp_path):
    """end-to-end and global take --init too (gating/experts/decoder share the same code path in fit)."""
    e2e = tmp_path / "e2e"
    run("train", "end-to-end", *TINY, "--epochs", "1", "--real", data["mixed"], "--out", e2e)
    ckpt = e2e / "checkpoints" / "best.pt"
    again = tmp_path / "e2e-ft"
    run("train", "end-to-end", *TINY, "--epochs", "1", "--lr", "1e-30", "--real", data["mixed"], "--init", ckpt,
        "--out", again)
    a, b = _state(ckpt), _state(again / "checkpoints" / "last.pt")
    assert all(torch.allclose(a[k].float(), b[k].float()) for k in a)
    for stage in ("decoder", "experts", "gating", "global", "end-to-end", "baseline"):
        assert "--init" in run("train", stage, "--help").output
