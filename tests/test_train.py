"""stmoe.train: config merging, clip datasets, the four stages of §3.2 (freezing), resume, NaN stop, evaluate, predict."""
from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physvid import RenderConfig
from physvid.dataset import generate, open_dataset
from stmoe.data.errors import DataError
from stmoe.train import (ClipDataset, NonFiniteLossError, TrainConfigError, evaluate, load_checkpoint, load_config,
                         load_model, make_loader, plot_run, predict, prepare_dataset, run_pipeline, split_ranges,
                         train_baseline, train_decoder, train_end_to_end, train_experts)
from stmoe.train.config import Config, DataConfig, parse_assignment
from stmoe.train.errors import DataReadError, TrainError, one_line
from stmoe.train.stages import fit
from stmoe.train.trainer import Trainer

SIZE, FRAMES, N_SEQ = 16, 8, 20
PROPS = ("translation", "rotation", "intensity", "mixed")


def make_datasets(root: Path) -> dict[str, Path]:
    """Tiny physvid folders (16x16, 8 frames, 20 sequences in two shards) for every property used here."""
    out = {}
    for k, prop in enumerate(PROPS):
        cfg = RenderConfig.from_dict({"property": prop, "height": SIZE, "width": SIZE, "frames": FRAMES, "seed": k,
                                      "shape": {"size": [4.0, 8.0], "thickness": [1.0, 2.0]}})
        generate(cfg, N_SEQ, root / prop, shard_size=10, workers=1)
        out[prop] = root / prop
    return out


def tiny_overrides(data: dict[str, Path], **extra) -> dict:
    o = {"model.height": SIZE, "model.width": SIZE, "model.num_hidden": 8, "model.gate_channels": 4,
         "data.output_frames": 3, "data.batch_size": 4, "optim.epochs": 2, "stages.gating.optim.epochs": 2,
         "run.progress": "off", "run.threads": 1,
         "synthetic": [str(data[p]) for p in PROPS[:3]], "real": str(data["mixed"])}
    o.update(extra)
    return o


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return make_datasets(tmp_path_factory.mktemp("physvid"))


@pytest.fixture(scope="module")
def pipeline_run(data, tmp_path_factory):
    """All four stages of the tiny STMoE-conv once; tests below inspect what they left."""
    cfg = load_config("tiny", overrides=tiny_overrides(data))
    out = tmp_path_factory.mktemp("run")
    ckpts = run_pipeline(cfg, out)
    return cfg, out, ckpts


def _state(path, prefix: str) -> dict[str, torch.Tensor]:
    st = load_checkpoint(path)["model_state"]
    return {k[len(prefix):]: v for k, v in st.items() if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ config
def test_config_precedence_is_by_presence(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text(textwrap.dedent("""
        optim: {lr: 0.5, epochs: 7}
        run: {seed: 5, compile: true}
        stages: {gating: {optim: {epochs: 9}}}
    """))
    cfg = load_config("tiny", f, {"run.seed": 0, "run.compile": False})
    base = cfg.base
    assert base.optim.lr == 0.5 and base.optim.epochs == 7  # the file beats the preset
    assert base.run.seed == 0 and base.run.compile is False  # 0 and false typed on the command line still win
    assert base.model.args["num_hidden"] == 16  # the preset survives where nothing overrides it
    assert cfg.stage("gating").optim.epochs == 9 and cfg.stage("global").optim.epochs == 7
    assert cfg.stage("decoder").model.name == "convlstm" and cfg.stage("decoder").model.args["decoder"] == "conv"
    assert cfg.expert(2).model.name == "convlstm" and cfg.expert(2).model.args["out_channels"] == 16


@pytest.mark.parametrize("overrides, needle", [
    ({"optim.lrr": 1}, "optim.lrr"),
    ({"optim.schedule": "linear"}, "optim.schedule"),
    ({"data.split": [0.5, 0.6, 0.1]}, "data.split"),
    ({"model.patch_size": 3}, "model.patch_size"),
    ({"loss.recon_c": -1.0}, "loss.recon_c"),
    ({"stages.gating.model": {"name": "mim"}}, "stages.gating.model"),
    ({"stages.nope": {}}, "stages.nope"),
])
def test_bad_config_names_the_key(overrides, needle):
    with pytest.raises(TrainConfigError) as err:
        load_config("tiny", overrides=overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_parse_assignment_reads_yaml_values():
    assert parse_assignment("optim.lr=1e-3") == ("optim.lr", 1e-3)
    assert parse_assignment("run.compile=false") == ("run.compile", False)
    assert parse_assignment("synthetic=[a, b]") == ("synthetic", ["a", "b"])
    with pytest.raises(TrainConfigError):
        parse_assignment("novalue")


def test_presets_are_valid_and_paper_matches_reference_notes():
    paper = load_config("paper")
    b = paper.base
    assert (b.model.args["height"], b.data.input_frames, b.data.output_frames, b.data.batch_size) == (128, 4, 6, 16)
    assert (b.loss.recon_alpha, b.loss.recon_c, b.loss.entropy_c, b.loss.smooth_c) == (0.0, 0.9, 0.3, 0.75)
    assert b.optim.lr == 1e-3 and paper.base.model.name == "stmoe-id"
    for name in ("tiny", "small"):
        assert load_config(name).num_experts == 3


# ------------------------------------------------------------------------------------------------ data
def test_split_ranges_partition_in_index_order():
    d = DataConfig(split=(0.7, 0.2, 0.1))
    r = split_ranges(20, d)
    assert r == {"train": (0, 14), "val": (14, 18), "test": (18, 20), "all": (0, 20)}
    r = split_ranges(20, DataConfig(max_sequences=10, val_range=(2, 4)))
    assert r["train"] == (0, 8) and r["val"] == (2, 4) and r["all"] == (0, 10)


def test_clip_dataset_matches_physvid_frames(data):
    d = DataConfig(input_frames=3, output_frames=2, window_stride=2)  # windows start at 0, 2 (8 frames, clips of 5)
    ds = ClipDataset(data["rotation"], d, "val", (12, 12), 1)
    raw = open_dataset(data["rotation"])
    first, stop = split_ranges(N_SEQ, d)["val"]
    assert len(ds) == (stop - first) * 2
    clip = ds[3]  # sequence first + 1, start frame 2
    expect = raw[first + 1][2:7, :, 2:14, 2:14].astype(np.float32) / 255.0
    assert clip.dtype == torch.float32 and clip.shape == (5, 1, 12, 12)
    np.testing.assert_array_equal(clip.numpy(), expect)
    raw8 = ClipDataset(data["rotation"], d, "val", (12, 12), 1, dtype=torch.uint8)[3]
    assert raw8.dtype == torch.uint8 and torch.equal(raw8.float() / 255.0, clip)


def test_random_crop_depends_on_seed_epoch_and_index_only(data):
    d = DataConfig(input_frames=2, output_frames=1, crop="random")
    ds = ClipDataset(data["translation"], d, "train", (8, 8), 1, seed=3)
    a = [ds[i] for i in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, [ds[i] for i in range(4)]))
    ds.set_epoch(1)
    b = [ds[i] for i in range(4)]
    assert not all(torch.equal(x, y) for x, y in zip(a, b))
    val = ClipDataset(data["translation"], d, "val", (8, 8), 1, seed=3)
    assert not val.random_crop  # validation is always centre-cropped


def test_dataloader_workers_give_the_same_batches(data):
    d = DataConfig(input_frames=2, output_frames=2, crop="random")
    ds = ClipDataset(data["mixed"], d, "train", (12, 12), 1, seed=1, dtype=torch.uint8)

    def batches(workers):
        loader = make_loader(ds, 4, shuffle=True, seed=7, num_workers=workers)
        loader.sampler.set_epoch(2)
        ds.set_epoch(2)
        return [b.clone() for b in loader]

    one, two = batches(0), batches(2)
    assert len(one) == len(two) == math.ceil(len(ds) / 4)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("case", ["too_long", "too_small", "missing", "channels", "not_a_dataset"])
def test_bad_data_gives_one_line_errors(data, tmp_path, case):
    d = DataConfig(input_frames=4, output_frames=3)
    src, size, ch = data["mixed"], (16, 16), 1
    if case == "too_long":
        d = DataConfig(input_frames=5, output_frames=4)
    elif case == "too_small":
        size = (32, 32)
    elif case == "missing":
        src = tmp_path / "nowhere"
    elif case == "channels":
        ch = 3
    else:
        src = tmp_path / "clip.mp4"
        src.write_bytes(b"not a video")
    with pytest.raises(DataError) as err:
        ClipDataset(src, d, "train", size, ch)
    msg = str(err.value)
    assert "\n" not in msg
    assert {"too_long": "exceeds the 8 frames", "too_small": "smaller than the model's 32x32", "missing": "does not exist",
            "channels": "in_channels = 3", "not_a_dataset": "stmoe prepare"}[case] in msg


def test_corrupt_shard_is_a_one_line_runtime_error(data, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(data["translation"], bad)
    shard = bad / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[:2000])  # truncated
    with pytest.raises(DataReadError) as err:
        ClipDataset(bad, DataConfig(input_frames=4, output_frames=3), "all", (16, 16), 1)
    assert "shard-00001.h5" in str(err.value) or "sequence 10" in str(err.value)
    assert "\n" not in str(err.value) and err.value.exit_code == 1


def test_one_line_unwraps_dataloader_worker_errors():
    wrapped = RuntimeError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                           "  File \"x.py\", line 1\nstmoe.data.errors.DataError: cannot read sequence 3 of d")
    assert one_line(wrapped) == "cannot read sequence 3 of d"
    assert one_line(ValueError("a\nb")) == "a b"


def test_prepare_writes_clips_that_training_reads(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(3, 12, 20, 20), dtype=np.uint8)  # N, T, H, W
    np.save(tmp_path / "seqs.npy", arr)
    prepare_dataset(tmp_path / "seqs.npy", tmp_path / "prepared", clip_length=6, stride=3, size=20, layout="NTHW")
    ds = open_dataset(tmp_path / "prepared")
    assert ds.shape == (3 * 3, 6, 1, 20, 20)  # starts 0, 3, 6 in each 12-frame sequence
    np.testing.assert_array_equal(ds[4][:, 0], arr[1, 3:9])
    assert ds.manifest["source"] == "stmoe.prepare" and ds.config["clip"]["clip_length"] == 6


# ------------------------------------------------------------------------------------------------ stages (§3.2)
def test_pipeline_freezes_what_each_stage_must_not_change(pipeline_run):
    cfg, out, ck = pipeline_run
    dec = _state(ck["decoder"], "decoder.")
    assert dec, "stage 1 must produce a decoder H"
    for k, path in enumerate(ck["experts"]):
        # Stage 2: H loaded from stage 1 and frozen (not in the optimiser, bit-identical after training).
        assert _same(_state(path, "decoder."), dec)
        c = load_checkpoint(path)
        assert c["trainable"] and not any(n.startswith("decoder.") for n in c["trainable"])
        assert c["meta"]["expert"] == k and c["meta"]["data"] == [cfg.synthetic[k]]
    gating = load_checkpoint(ck["gating"])
    # Stage 3: experts and H exactly as stage 2 left them; only the gate trains.
    assert all(n.startswith("gate.") for n in gating["trainable"])
    for k, path in enumerate(ck["experts"]):
        assert _same(_state(ck["gating"], f"experts.{k}."), _state(path, "experts.0."))
    assert _same(_state(ck["gating"], "decoder."), dec)
    # Stage 4: everything trains, so experts, gate and H all move away from stage 3.
    final = load_checkpoint(ck["global"])
    assert {n.split(".")[0] for n in final["trainable"]} == {"experts", "gate", "decoder"}
    for prefix in ("experts.0.", "gate.", "decoder."):
        assert not _same(_state(ck["global"], prefix), _state(ck["gating"], prefix))
    assert json.loads((out / "pipeline.json").read_text())["final"] == ck["global"]


def test_gate_really_trains_in_stage_3(pipeline_run, data, tmp_path):
    cfg, out, ck = pipeline_run
    from stmoe.train.stages import _build, load_experts

    fresh = _build(cfg.stage("gating"))  # the stage-3 model before training (same seed)
    load_experts(fresh, ck["experts"], ck["decoder"])
    trained = _state(ck["gating"], "gate.")
    assert not _same({k: v for k, v in fresh.gate.state_dict().items()}, trained)


def test_tiny_gating_stage_adds_the_experts_competition(pipeline_run):
    """The tiny preset adds the competition term to stage 3 only; its value is logged for training and validation."""
    cfg, out, _ = pipeline_run
    assert cfg.stage("gating").loss.competition_weight == 1.0 and cfg.stage("global").loss.competition_weight == 0.0
    for stage, present in (("gating", True), ("global", False)):
        last = json.loads((out / stage / "metrics.jsonl").read_text().splitlines()[-1])
        assert ("train_competition" in last and "val_competition" in last) is present, (stage, sorted(last))
        if present:
            assert last["train_competition"] > 0 and math.isfinite(last["val_competition"])


def test_pipeline_skips_finished_stages(pipeline_run):
    cfg, out, ck = pipeline_run
    before = {p: Path(p).stat().st_mtime_ns for p in [ck["decoder"], *ck["experts"], ck["gating"], ck["global"]]}
    again = run_pipeline(cfg, out)
    assert again == ck
    assert {p: Path(p).stat().st_mtime_ns for p in before} == before


def test_identity_decoder_skips_stage_1_and_experts_train(data, tmp_path):
    cfg = load_config("tiny", overrides=tiny_overrides(data, **{"model.name": "stmoe-id", "optim.epochs": 1,
                                                                "optim.max_steps_per_epoch": 2}))
    assert train_decoder(cfg, tmp_path / "decoder") is None
    paths = train_experts(cfg, tmp_path / "experts", experts=[1])
    c = load_checkpoint(paths[0])
    assert c["model"]["config"]["decoder"] == "identity" and c["meta"]["expert"] == 1
    assert not (tmp_path / "experts" / "expert-0").exists()


def test_experts_of_stmoe_conv_need_the_decoder_checkpoint(data, tmp_path):
    cfg = load_config("tiny", overrides=tiny_overrides(data))
    with pytest.raises(TrainConfigError, match="--decoder-checkpoint"):
        train_experts(cfg, tmp_path / "e")


@pytest.mark.parametrize("schedule", ["onecycle", "plateau", "none"])
def test_end_to_end_and_baseline_and_schedules(data, tmp_path, schedule):
    o = tiny_overrides(data, **{"optim.epochs": 1, "optim.max_steps_per_epoch": 2, "optim.schedule": schedule})
    cfg = load_config("tiny", overrides=o)
    e2e = load_checkpoint(train_end_to_end(cfg, tmp_path / "e2e"))
    assert e2e["stage"] == "end_to_end" and {n.split(".")[0] for n in e2e["trainable"]} == {"experts", "gate", "decoder"}
    base = load_checkpoint(train_baseline(cfg, tmp_path / "base"))
    assert base["model"]["name"] == "convlstm" and base["model"]["config"]["decoder"] == "conv"
    assert (base["scheduler"] is None) == (schedule == "none")


def test_checkpoint_holds_everything_needed_to_resume(pipeline_run):
    _, out, ck = pipeline_run
    c = load_checkpoint(out / "global" / "checkpoints" / "last.pt")
    for key in ("model_state", "optimizer", "scheduler", "rng", "config", "epoch", "global_step", "history"):
        assert key in c
    assert set(c["rng"]) >= {"python", "numpy", "torch"}
    assert c["epoch"] == 2 and len(c["history"]) == 2
    model, _ = load_model(ck["global"])
    assert model.model_name == "stmoe-conv"
    lines = (out / "global" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    header = (out / "global" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "val_loss", "lr", "samples_per_s"} <= set(header)


# ------------------------------------------------------------------------------------------------ resume, NaN
def _baseline_cfg(data, **extra) -> Config:
    o = tiny_overrides(data, **{"optim.epochs": 3, "data.crop": "random", "model.height": 12, "model.width": 12,
                                "run.log_every": 1, "optim.teacher_forcing_start": 0.8, **extra})
    return load_config("tiny", overrides=o)


class Kill(Exception):
    pass


def test_resume_after_a_kill_reproduces_the_uninterrupted_losses(data, tmp_path):
    cfg = _baseline_cfg(data)
    train_baseline(cfg, tmp_path / "straight")

    def kill(event, trainer, info):
        if event == "step_end" and info["epoch"] == 2 and info["step"] == 6:  # mid-epoch 2 (4 steps per epoch)
            raise Kill()

    with pytest.raises(Kill):
        train_baseline(cfg, tmp_path / "killed", callbacks=[kill])
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["epoch"] == 1
    with pytest.raises(TrainConfigError, match="--resume"):
        train_baseline(cfg, tmp_path / "killed")
    train_baseline(cfg, tmp_path / "killed", resume=True)

    def read(run, name):
        return [json.loads(ln) for ln in (tmp_path / run / name).read_text().splitlines()]

    a, b = read("straight", "metrics.jsonl"), read("killed", "metrics.jsonl")
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "train_reconstruction", "lr", "teacher_forcing"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert [(r["step"], r["loss"]) for r in read("straight", "steps.jsonl")] == \
           [(r["step"], r["loss"]) for r in read("killed", "steps.jsonl")]
    sa = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model_state"]
    sb = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["model_state"]
    assert _same(sa, sb)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    cfg = _baseline_cfg(data, **{"data.crop": "center"}).stage("baseline")
    from stmoe.train.stages import _build

    model = _build(cfg)
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 4 * 3 * 2 else output  # from epoch 2 on (4 steps x 3 frames)

    model.decoder.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError) as err:
        fit(model, cfg, tmp_path / "run", [str(data["mixed"])], stage="baseline")
    msg = str(err.value)
    assert "\n" not in msg and "nan" in msg and "epoch 2" in msg and "last.pt" in msg
    good = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert good["epoch"] == 1 and all(torch.isfinite(v).all() for v in good["model_state"].values())


def test_early_stopping_on_validation_loss(data, tmp_path):
    cfg = _baseline_cfg(data, **{"optim.epochs": 6, "optim.early_stopping": 1, "optim.min_delta": 10.0,
                                 "optim.max_steps_per_epoch": 1})
    train_baseline(cfg, tmp_path / "es")
    res = json.loads((tmp_path / "es" / "result.json").read_text())
    assert res["stopped"] == "early stopping" and res["epochs"] == 2 and res["best_epoch"] == 1


def test_teacher_forcing_schedule_is_linear_then_flat(data, tmp_path):
    cfg = _baseline_cfg(data, **{"optim.teacher_forcing_start": 1.0, "optim.teacher_forcing_end": 0.2,
                                 "optim.teacher_forcing_fraction": 0.5}).stage("baseline")
    model = cfg.model.build()
    ds = ClipDataset(data["mixed"], cfg.data, "train", (12, 12), 1)
    t = Trainer(model, cfg, tmp_path / "t", train_set=ds)
    assert [round(t.teacher_forcing(s, 100), 6) for s in (0, 25, 50, 80)] == [1.0, 0.6, 0.2, 0.2]


# ------------------------------------------------------------------------------------------------ evaluate, predict, plot
def test_evaluate_matches_a_direct_computation(pipeline_run, data, tmp_path):
    cfg, out, ck = pipeline_run
    res = evaluate(ck["global"], data["mixed"], tmp_path / "m.json", metrics=["mse", "mse_pixel", "ssim"])
    assert json.loads((tmp_path / "m.json").read_text())["mean"] == res["mean"]
    model, c = load_model(ck["global"])
    d = dataclasses.replace(cfg.base.data, path=())
    clips = ClipDataset(data["mixed"], d, "test", (SIZE, SIZE), 1)
    x = torch.stack([clips[i] for i in range(len(clips))])
    with torch.no_grad():
        pred = model(x[:, :4], 3).pred.clamp(0, 1)
    per_frame = ((pred - x[:, 4:]) ** 2).sum(dim=(2, 3, 4)).mean(0).double()
    assert res["count"] == len(clips) and len(res["per_frame"]["mse"]) == 3
    np.testing.assert_allclose(res["per_frame"]["mse"], per_frame.numpy(), rtol=1e-5)
    np.testing.assert_allclose(res["mean"]["mse"], res["mean"]["mse_pixel"] * SIZE * SIZE, rtol=1e-6)
    assert 0 < res["mean"]["ssim"] <= 1


def test_predict_writes_h5_gif_png_and_attention(pipeline_run, data, tmp_path):
    _, _, ck = pipeline_run
    res = predict(ck["global"], data["mixed"], tmp_path / "p", indices=[0, 1], scale=2)
    names = {Path(f).name for f in res["files"]}
    assert {"clip-00000.gif", "clip-00001-strip.png", "clip-00000-attention.png", "predictions.h5"} <= names
    from PIL import Image

    gif = Image.open(tmp_path / "p" / "clip-00000.gif")
    assert gif.n_frames == 4 + 3
    with h5py.File(tmp_path / "p" / "predictions.h5") as f:
        assert f["predictions"].shape == (2, 3, 1, SIZE, SIZE)
        assert f["weights"].shape == (2, 3, 3, SIZE // 4, SIZE // 4)
        assert f["expert_frames"].shape == (2, 3, 3, 1, SIZE, SIZE)
        w = f["weights"][()]
    np.testing.assert_allclose(w.sum(axis=2), 1.0, rtol=1e-5)  # softmax gate: weights sum to 1 per pixel
    with pytest.raises(TrainConfigError, match="out of range"):
        predict(ck["global"], data["mixed"], tmp_path / "q", indices=[99])


def test_plot_draws_every_stage(pipeline_run, tmp_path):
    _, out, _ = pipeline_run
    png = plot_run(out, tmp_path / "curves.png")
    from PIL import Image

    img = Image.open(png)
    assert img.size[1] > 6 * 200  # one row per stage run (decoder, 3 experts, gating, global)


def test_checkpoint_errors_are_one_line(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"garbage")
    for path in (bad, tmp_path / "missing.pt"):
        with pytest.raises(TrainError) as err:
            load_checkpoint(path)
        assert "\n" not in str(err.value)


def test_renamed_keys_and_options_still_read_the_old_names():
    """optim.warmup_loss (stored in run folders and checkpoints before the rename) is read as optim.observed_loss;
    `--max-steps` stays an alias of `--steps-per-epoch`."""
    from click.testing import CliRunner

    from physvid_cli.stmoe_cmd import cli as stmoe_cli
    from stmoe.train import TrainConfigError
    from stmoe.train.config import TrainConfig

    assert TrainConfig.from_dict({"optim": {"warmup_loss": "on"}}).optim.observed_loss == "on"
    with pytest.raises(TrainConfigError, match="optim.warmup_loss is the old name of optim.observed_loss"):
        TrainConfig.from_dict({"optim": {"warmup_loss": "on", "observed_loss": "off"}})
    for option in ("--steps-per-epoch", "--max-steps"):
        res = CliRunner().invoke(stmoe_cli, ["config", "--preset", "tiny", option, "7"])
        assert res.exit_code == 0 and "max_steps_per_epoch: 7" in res.output, res.output
