"""Numbers you can trust (issue 16): validation scores the training objective, best.pt is the epoch the monitor says,
a stage retrained on one machine gives the same metrics to the last digit, and every table has a copy-last-frame row."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import stmoe
from stmoe.train import ClipDataset, TrainConfig, evaluate, load_checkpoint
from stmoe.train.trainer import Trainer

L, N, SIZE = 3, 3, 16
MIX = ("stmoe-id", "stmoe-conv")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clips(n: int = 4, seed: int = 0) -> np.ndarray:
    """(N, T, C, H, W) uint8: a bright square moving one pixel per frame over a faint random background."""
    rng = np.random.default_rng(seed)
    out = (rng.random((n, L + N, 1, SIZE, SIZE)) * 40).astype(np.uint8)
    for i in range(n):
        y, x = rng.integers(2, 8, size=2)
        for t in range(L + N):
            out[i, t, 0, y:y + 5, x + t:x + t + 5] = 220
    return out


def _model_doc(name: str) -> dict:
    m = {"name": name, "height": SIZE, "width": SIZE, "patch_size": 4, "num_layers": 2, "num_hidden": 8,
         "filter_size": 3}
    if name in MIX:
        m.update(experts=["convlstm", "addl", "unet"], gate_channels=4)
    if name == "phydnet":
        m.update(phy_channels=4, phy_kernel=3)
    return m


def _config(name: str, **optim) -> TrainConfig:
    doc = {"model": _model_doc(name),
           "data": {"input_frames": L, "output_frames": N, "batch_size": 4, "split": [1.0, 0.0, 0.0]},
           "optim": {"epochs": 1, "teacher_forcing_start": 0.0, "grad_clip": 0.0, **optim},
           "run": {"progress": "off", "threads": 1, "tensorboard": "off", "seed": 3}}
    return TrainConfig.from_dict(doc)


@pytest.mark.parametrize("name", stmoe.list_models())
def test_val_loss_is_the_training_objective_of_the_same_batch(name, tmp_path):
    """One batch, no teacher forcing, an optimiser step too small to change a float32 weight: the training loss of the
    batch (taken before the step) and the validation loss of the same clips must agree, for every registered model --
    including each model's own aux weights (ADDL's magnitude 0, PhyDNet's moment 1/18) and the warm-up frames that
    recurrent baselines score."""
    cfg = _config(name, lr=1e-30)
    clips = _clips()
    torch.manual_seed(0)
    model = stmoe.create_model(name, **{k: v for k, v in _model_doc(name).items() if k != "name"},
                               input_frames=L)
    with torch.no_grad():  # away from the initialisation, where some terms vanish (ADDL's flow starts at zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    train = ClipDataset(clips, cfg.data, "all", (SIZE, SIZE), 1, seed=cfg.run.seed)
    trainer = Trainer(model, cfg, tmp_path / name, train_set=train, val_set=train)
    record = trainer.fit().history[0]
    assert record["samples"] == len(clips)
    assert record["val_loss"] == pytest.approx(record["train_loss"], rel=1e-5, abs=1e-7)
    assert record["monitor"] == "val_loss" and "val_mse" in record


def _fit_twice_selecting(tmp_path: Path, monitor: str) -> tuple[dict, dict]:
    clips = _clips(8)
    cfg = _config("convlstm", epochs=3, lr=3e-2, monitor=monitor)
    torch.manual_seed(1)
    model = stmoe.create_model("convlstm", **{k: v for k, v in _model_doc("convlstm").items() if k != "name"},
                               input_frames=L)
    ds = ClipDataset(clips, cfg.data, "all", (SIZE, SIZE), 1)
    res = Trainer(model, cfg, tmp_path / monitor, train_set=ds, val_set=ds).fit()
    return res, load_checkpoint(res.best_checkpoint)


@pytest.mark.parametrize("monitor,key", [("loss", "val_loss"), ("mse", "val_mse")])
def test_best_checkpoint_is_the_epoch_with_the_lowest_monitored_value(tmp_path, monitor, key):
    res, best = _fit_twice_selecting(tmp_path, monitor)
    values = [r[key] for r in res.history]
    assert res.best_epoch == 1 + int(np.argmin(values)) and best["epoch"] == res.best_epoch
    assert res.best_loss == min(values) and all(r["monitor"] == key for r in res.history)


def _without_timing(path: Path) -> list[dict]:
    drop = {"seconds", "samples_per_s"}
    return [{k: v for k, v in json.loads(ln).items() if k not in drop} for ln in path.read_text().splitlines()]


def test_a_stage_retrained_on_one_machine_gives_identical_metrics(tmp_path):
    """Same command, same machine: every logged number equal to the last digit (timings aside), same weights."""
    runs = []
    for k in range(2):
        cfg = _config("stmoe-conv", epochs=2, lr=3e-3)
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "split": [0.75, 0.25, 0.0]}})
        torch.manual_seed(5)
        model = stmoe.create_model("stmoe-conv", **{k: v for k, v in _model_doc("stmoe-conv").items()
                                                    if k != "name"}, input_frames=L)
        clips = _clips(8)
        train = ClipDataset(clips, cfg.data, "train", (SIZE, SIZE), 1, seed=cfg.run.seed)
        val = ClipDataset(clips, cfg.data, "val", (SIZE, SIZE), 1, seed=cfg.run.seed)
        runs.append(Trainer(model, cfg, tmp_path / f"run{k}", train_set=train, val_set=val).fit())
    a, b = (_without_timing(r.run_dir / "metrics.jsonl") for r in runs)
    assert a == b and len(a) == 2
    sa, sb = (load_checkpoint(r.last_checkpoint)["model_state"] for r in runs)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_evaluate_reports_the_copy_last_frame_reference(tmp_path):
    """`evaluate` scores the trivial forecast (repeat the last observed frame) on the same clips, by the same code."""
    clips = _clips(6)
    cfg = _config("convlstm")
    torch.manual_seed(0)
    model = stmoe.create_model("convlstm", **{k: v for k, v in _model_doc("convlstm").items() if k != "name"},
                               input_frames=L)
    ds = ClipDataset(clips, cfg.data, "all", (SIZE, SIZE), 1)
    res = Trainer(model, cfg, tmp_path / "run", train_set=ds).fit()
    result = evaluate(res.last_checkpoint, clips)
    copy = result["copy_last_frame"]
    x = clips.astype(np.float64) / 255.0
    want = ((x[:, L - 1:L] - x[:, L:]) ** 2).sum(axis=(2, 3, 4)).mean()
    assert copy["mean"]["mse"] == pytest.approx(want, rel=1e-6)
    assert 0.0 < copy["mean"]["ssim"] < 1.0 and copy["mean"]["mse"] != result["mean"]["mse"]
    assert len(copy["per_frame"]["mse"]) == N
    # ... and the CLI prints it beside the model's line
    from click.testing import CliRunner

    from physvid_cli.stmoe_cmd import cli

    np.save(tmp_path / "clips.npy", clips)
    out = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(res.last_checkpoint), "--data",
                                   str(tmp_path / "clips.npy"), "--metrics", "mse"])
    assert out.exit_code == 0, out.output
    assert f"copy last frame (reference): mse {want:.4g}" in out.output


def test_evaluate_scores_the_flow_of_predictions_against_physvid_s_exact_flow(tmp_path):
    """Data made with --flow: evaluate adds the endpoint error (pixels) of the predictions' motion against physvid's
    exact flow of the predicted frame pairs, and beside it Farneback's own error on the true frames."""
    import physvid
    from physvid.dataset import generate

    cfg = physvid.RenderConfig.from_dict({"property": "translation", "height": SIZE, "width": SIZE, "frames": L + N,
                                          "seed": 1, "flow": True, "shape": {"size": [6.0, 9.0]},
                                          "motion": {"speed": [1.0, 1.5]}})
    generate(cfg, 8, tmp_path / "flow", workers=1)
    doc = _config("convlstm").to_dict()
    torch.manual_seed(0)
    model = stmoe.create_model("convlstm", **{k: v for k, v in _model_doc("convlstm").items() if k != "name"},
                               input_frames=L)
    ds = ClipDataset(str(tmp_path / "flow"), TrainConfig.from_dict(doc).data, "all", (SIZE, SIZE), 1)
    truth = physvid.open_dataset(tmp_path / "flow").get(3, fields=("flow_forward",))["flow_forward"]
    assert ds.flow(3).shape == (L + N - 1, 2, SIZE, SIZE) and np.array_equal(ds.flow(3).numpy(), truth)
    res = Trainer(model, TrainConfig.from_dict(doc), tmp_path / "run", train_set=ds).fit()
    result = evaluate(res.last_checkpoint, str(tmp_path / "flow"), split="all")
    epe = result["flow_epe"]
    assert len(epe["per_frame"]) == N and epe["units"] == "pixels"
    assert all(np.isfinite(v) and v >= 0 for v in epe["per_frame"]) and 0 < epe["true_frames"] < 5
    assert "flow_epe" not in evaluate(res.last_checkpoint, _clips(4))  # no flow in the data: no flow score
    assert "field_epe" not in result  # no ADDL in a ConvLSTM


def test_evaluate_scores_addl_s_own_field_against_the_exact_displacement(tmp_path, monkeypatch):
    """ADDL predicts I_{t+1}(x) = I_t(x - w(x)), so its exact field is minus physvid's backward flow of the pair:
    warping a noise-free translation clip's frame by it reproduces the next frame (by its opposite it does not);
    evaluate scores a field set to it 0 px, and a zero field (a fresh ADDL: its head starts at zero) the mean true
    motion, `zero_field`."""
    import physvid
    from physvid.dataset import generate
    from stmoe.models.addl import ADDL, warp_bilinear

    cfg = physvid.RenderConfig.from_dict({"property": "translation", "height": SIZE, "width": SIZE, "frames": L + N,
                                          "seed": 2, "flow": True, "shape": {"size": [6.0, 9.0]},
                                          "motion": {"speed": [1.0, 1.5]}})
    generate(cfg, 8, tmp_path / "flow", workers=1)
    doc = _config("addl", lr=1e-30).to_dict()  # a step that leaves the zero head at (numerically) zero
    ds = ClipDataset(str(tmp_path / "flow"), TrainConfig.from_dict(doc).data, "all", (SIZE, SIZE), 1)
    # the convention, from ADDL's own warp: frame t+1 from frame t and w = -flow_backward[t]
    frames = ds[3].float() / 255.0  # (T, 1, H, W)
    exact = -ds.flow(3, "backward")  # (T-1, 2, H, W)
    t = L - 1

    def miss(field):
        return float(((warp_bilinear(frames[t:t + 1], field) - frames[t + 1:t + 2]) ** 2).sum())

    assert exact[t].abs().max() > 0.5  # the objects move
    assert miss(exact[t:t + 1]) < 0.25 * min(miss(-exact[t:t + 1]), miss(torch.zeros_like(exact[t:t + 1])))

    torch.manual_seed(0)
    model = stmoe.create_model("addl", **{k: v for k, v in _model_doc("addl").items() if k != "name"},
                               input_frames=L)
    res = Trainer(model, TrainConfig.from_dict(doc), tmp_path / "run", train_set=ds).fit()
    zero = evaluate(res.last_checkpoint, str(tmp_path / "flow"), split="all")["field_epe"]
    assert list(zero) == ["experts.0"]  # the one ADDL, by its path in the model
    z = zero["experts.0"]
    assert len(z["per_frame"]) == N and z["units"] == "pixels" and z["zero_field"] > 0.1
    assert z["mean"] == pytest.approx(z["zero_field"], abs=1e-6)
    # the exact field, in evaluate's order: clips in order, batches of data.batch_size, n steps each
    bs = TrainConfig.from_dict(doc).data.batch_size
    fields = [torch.stack([-ds.flow(j, "backward")[L - 1 + i] for j in range(a, min(a + bs, len(ds)))])
              for a in range(0, len(ds), bs) for i in range(N)]
    feed = iter(fields)
    monkeypatch.setattr(ADDL, "motion_field", lambda self, window: next(feed))
    right = evaluate(res.last_checkpoint, str(tmp_path / "flow"), split="all")["field_epe"]["experts.0"]
    assert next(feed, None) is None  # every field was used
    assert right["mean"] < 1e-6 and right["zero_field"] == z["zero_field"]
