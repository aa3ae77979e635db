"""stmoe stages trained straight from the generator (data.synthetic, issue 21): no files."""
from __future__ import annotations

import json

import pytest
import torch

from physvid import RenderConfig, render
from stmoe.train import load_config, make_loader
from stmoe.train.errors import TrainConfigError
from stmoe.train.stages import train_baseline
from stmoe.train.synthetic import SyntheticClips

SYN = {"property": "rotation", "n": 16, "val": 8}


def test_a_stage_trains_from_the_stream(tmp_path):
    config = load_config("tiny", overrides={"stages.baseline.data.synthetic": SYN, "optim.epochs": 1,
                                            "data.batch_size": 4, "data.num_workers": 2, "run.progress": "off",
                                            "run.tensorboard": "off"})
    best = train_baseline(config, tmp_path / "b")
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    epoch = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    assert best.is_file() and result["meta"]["data"] == ["synthetic:rotation"]
    assert epoch["step"] == 4 and epoch["samples"] == 16 and "val_loss" in epoch  # 16 sequences, batches of 4


def test_stream_clips_are_the_rendered_sequences_split_over_ranks():
    cfg = RenderConfig(property="rotation", height=40, width=40, frames=6)
    clips = {}
    for rank in range(2):
        ds = SyntheticClips(cfg, 12, (32, 32), 5, first_index=8, fresh=True)
        loader = make_loader(ds, 3, shuffle=True, seed=0, rank=rank, world_size=2)
        loader.sampler.set_epoch(1)  # as the trainer does: epoch 1 of a fresh stream renders 8 + 12 ... 8 + 23
        batches = list(loader)
        assert len(batches) == len(loader) == 2 and all(b.shape == (3, 5, 1, 32, 32) for b in batches)
        clips[rank] = torch.cat(batches)
    video = torch.from_numpy(render(cfg, range(20, 32))[0][:, :5, :, 4:36, 4:36])
    # batches of 3 consecutive indices alternate between the ranks: rank 0 holds 20-22, 26-28; rank 1 23-25, 29-31
    assert torch.equal(clips[0], video[[0, 1, 2, 6, 7, 8]]) and torch.equal(clips[1], video[[3, 4, 5, 9, 10, 11]])


@pytest.mark.parametrize("spec, needle", [({"property": "spin"}, "data.synthetic"), ({"n": 0}, "data.synthetic.n"),
                                          ({"property": ["rotation"]}, "only the experts stage")])
def test_bad_synthetic_configs_name_the_key(spec, needle, tmp_path):
    with pytest.raises(TrainConfigError, match=needle):
        config = load_config("tiny", overrides={"stages.baseline.data.synthetic": spec})
        train_baseline(config, tmp_path / "x")
