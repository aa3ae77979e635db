"""DDP under torchrun: two gloo processes on the CPU run an epoch of the same `stmoe train` command, no code changes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physvid import RenderConfig
from physvid.dataset import generate
from stmoe.losses import compute_loss
from stmoe.train import ClipDataset, TrainConfig, load_checkpoint, load_model

REPO = Path(__file__).resolve().parents[1]
SIZE = 16


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("physvid")
    cfg = RenderConfig.from_dict({"property": "mixed", "height": SIZE, "width": SIZE, "frames": 8, "seed": 3,
                                  "shape": {"size": [4.0, 8.0], "thickness": [1.0, 2.0]}})
    generate(cfg, 22, root / "mixed", shard_size=11, workers=1)
    return root / "mixed"


def test_torchrun_two_gloo_processes_train_an_epoch(real, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cli.stmoe_cmd", "train", "end-to-end", "--preset", "tiny",
           "--set", f"model.height={SIZE}", "--set", f"model.width={SIZE}", "--set", "model.num_hidden=8",
           "--set", "model.gate_channels=4", "-n", "3", "-b", "3", "--epochs", "1", "--threads", "1",
           "--device", "cpu", "--real", str(real), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert record["world_size"] == 2 and ckpt["world_size"] == 2
    cfg = TrainConfig.from_dict(ckpt["config"])
    train = ClipDataset(real, cfg.data, "train", (SIZE, SIZE), 1)
    val = ClipDataset(real, cfg.data, "val", (SIZE, SIZE), 1)
    # DistributedSampler pads the training set to a multiple of 2; each rank saw half.
    assert record["samples"] == len(train) + len(train) % 2
    # The validation loss, all-reduced over the two ranks' halves, equals the single-process loss of the saved model.
    model, _ = load_model(out / "checkpoints" / "last.pt")
    x = torch.stack([val[i] for i in range(len(val))])
    with torch.no_grad():
        o = model(x[:, :4], 3)
        _, terms = compute_loss(o.pred, x[:, 4:], o.weights, o.aux, cfg.loss, model.default_aux_weights)
    assert len(val) == 2 and abs(float(terms["total"]) - record["val_loss"]) < 1e-5
    # Only rank 0 wrote: one line per epoch, one "best checkpoint" line on stdout.
    assert proc.stdout.count("best checkpoint:") == 1
