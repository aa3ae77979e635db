"""Issue 18, a user's own data: fine-tuning from a checkpoint (`--init`), forecasting past the frames present
(`stmoe predict --horizon`) and the paper's comparison on named clips (`stmoe reproduce clips --clips`), all from
the command line on tiny data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from stmoe.train import load_checkpoint

from test_train_cli import SIZE, TINY, data, run  # noqa: F401 - `data`: the same tiny folders, as a fixture here

REPO = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------------------------------- forecasting
def test_predict_n_past_the_data_is_refused_with_the_horizon_hint(data, pretrained, tmp_path):
    res = run("predict", "--checkpoint", pretrained, "--data", data["mixed"], "--out", tmp_path / "p", "-n", "8",
              code=2)
    assert res.output.count("\n") == 1 and "--horizon 8" in res.output


def test_forecast_past_the_end_of_the_data_marks_where_the_truth_ends(data, pretrained, tmp_path):
    from PIL import Image

    from physvid.dataset import open_dataset

    out = tmp_path / "fc"
    res = run("predict", "--checkpoint", pretrained, "--data", data["mixed"], "--out", out, "--horizon", "8",
              "-i", "0", "-i", "1")
    assert "forecast-00000.gif" in res.output
    with h5py.File(out / "forecast.h5") as f:
        assert f["predictions"].shape == (2, 8, 1, SIZE, SIZE) and f["inputs"].shape == (2, 4, 1, SIZE, SIZE)
        assert list(f["truth_frames"][:]) == [0, 0] and list(f["start"][:]) == [4, 4]  # the last l of 8 frames
        assert not f["truth"][:].any()
        first_test = int(f["clip_index"][0])
        inputs = f["inputs"][0]
    # The inputs are the last 4 frames of the split's first test sequence (the run's 80/10/10 split of 16).
    assert first_test == 0 and np.array_equal(inputs, open_dataset(data["mixed"])[14][4:])
    gif = Image.open(out / "forecast-00000.gif")
    assert gif.n_frames == 4 + 8
    # From the start of the sequence: 4 frames of truth, then 4 past it.
    out2 = tmp_path / "fc2"
    run("predict", "--checkpoint", pretrained, "--data", data["mixed"], "--out", out2, "--horizon", "8", "--start",
        "0", "--format", "h5,png")
    with h5py.File(out2 / "forecast.h5") as f:
        assert list(f["truth_frames"][:]) == [4]
        assert np.array_equal(f["truth"][0, :4], open_dataset(data["mixed"])[14][4:])
        assert not f["truth"][0, 4:].any()
        rollout = f["predictions"][0]
    strip = np.asarray(Image.open(out2 / "forecast-00000-strip.png").convert("RGB"))
    assert (strip == (200, 30, 30)).all(-1).any(axis=0).sum() >= 3  # the red line where the truth ends
    # The first n frames of the roll-out are what `predict -n 4` predicts for the same clip.
    run("predict", "--checkpoint", pretrained, "--data", data["mixed"], "--out", tmp_path / "p4", "-n", "4",
        "--format", "h5")
    with h5py.File(tmp_path / "p4" / "predictions.h5") as f:
        assert np.allclose(f["predictions"][0], rollout[:4], atol=1e-6)


def test_forecast_from_a_video_like_array_file(pretrained, tmp_path):
    frames = (np.random.default_rng(0).random((10, SIZE, SIZE)) * 255).astype(np.uint8)
    np.save(tmp_path / "clip.npy", frames)
    out = tmp_path / "fc"
    run("predict", "--checkpoint", pretrained, "--data", tmp_path / "clip.npy", "--out", out,
        "--horizon", "5", "--format", "h5,gif")
    with h5py.File(out / "forecast.h5") as f:
        assert list(f["sequence_frames"][:]) == [10] and list(f["truth_frames"][:]) == [0]
        assert np.array_equal(f["inputs"][0, :, 0], frames[6:])


@pytest.mark.parametrize("args, words", [
    (["--horizon", "4", "--start", "5"], ["--start 5", "allowed: 0..4"]),
    (["--horizon", "4", "-n", "3"], ["not both"]),
    (["--start", "0"], ["goes with --horizon"]),
    (["--horizon", "4", "-i", "99"], ["--index 99"]),
])
def test_forecast_refusals_are_one_line(data, pretrained, tmp_path, args, words):
    res = run("predict", "--checkpoint", pretrained, "--data", data["mixed"], "--out", tmp_path / "x", *args, code=2)
    assert res.output.count("\n") == 1 and all(w in res.output for w in words), res.output
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------------- comparison
def test_reproduce_clips_compares_models_on_a_users_files_and_datasets(tmp_path):
    """A video-like array and a dataset folder, named by the user, go through the protocol of `real`."""
    from physvid import RenderConfig
    from physvid.dataset import generate

    t = np.arange(60)[:, None, None]
    y, x = np.arange(16)[None, :, None], np.arange(16)[None, None, :]
    np.save(tmp_path / "walk.npy", (255 * np.exp(-((x - t % 16) ** 2 + (y - 8) ** 2) / 8.0)).astype(np.uint8))
    generate(RenderConfig.from_dict({"property": "translation", "height": 16, "width": 16, "frames": 10, "seed": 3}),
             20, tmp_path / "d10", workers=1)
    out = tmp_path / "rep"
    res = run("reproduce", "clips", "--profile", "smoke", "--clips", tmp_path / "walk.npy", "--clips",
              f"mine={tmp_path / 'd10'}", "--rows", "unet", "--out", out)
    assert "clips/table.md" in res.output
    table = (out / "clips" / "table.md").read_text()
    assert "| U-Net | walk |" in table and "| U-Net | mine |" in table
    results = json.loads((out / "clips" / "results.json").read_text())
    assert results  # the same report as every experiment
    assert not (out / "data" / "real-mine").exists()  # a prepared dataset is used as it is
    assert json.loads((out / "clips.json").read_text())["clips"]["mine"][1] == "dataset"


@pytest.mark.parametrize("args, words", [
    (["--clips", "nowhere.mp4"], ["--clips nowhere.mp4 does not exist"]),
    ([], ["needs your clips", "--clips PATH"]),
])
def test_reproduce_clips_refusals_are_one_line_and_write_nothing(tmp_path, args, words):
    res = run("reproduce", "clips", "--profile", "smoke", "--out", tmp_path / "rep", *args, code=2)
    assert res.output.count("\n") == 1 and all(w in res.output for w in words), res.output
    assert not (tmp_path / "rep").exists()


# --------------------------------------------------------------------------------------------------- first minutes
def _without(module: str, *argv: str) -> subprocess.CompletedProcess:
    """`stmoe ARGV` in a fresh interpreter where `module` cannot be imported (the core install has no torch)."""
    code = f"import sys; sys.modules[{module!r}] = None; from cli.stmoe_cmd import main; main({list(argv)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("argv", [("models",), ("config", "--preset", "tiny"),
                                  ("evaluate", "--checkpoint", "pyproject.toml", "--data", "x")])
def test_stmoe_without_torch_says_install_the_train_extra_in_one_line(argv):
    res = _without("torch", *argv)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and "train extra" in res.stderr and "torch is not installed" in res.stderr


def test_a_model_smaller_than_the_data_says_it_trains_on_a_crop(data, tmp_path):
    res = run("train", "baseline", *TINY, "--set", "model.height=8", "--set", "model.width=8", "--model", "convlstm",
              "--epochs", "1", "--steps-per-epoch", "1", "--real", data["mixed"], "--out", tmp_path / "r")
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "16x16 frames" in notes[0] and "8x8 model trains on their centre 8x8 crop" in notes[0]


def test_pipeline_epochs_reach_every_stage_and_help_says_so():
    import yaml

    for stage in ("decoder", "experts", "gating", "global"):
        doc = yaml.safe_load(run("config", "--preset", "tiny", "--epochs", "2", "--stage", stage).output)
        docs = doc.values() if stage == "experts" else [doc]
        assert all(d["optim"]["epochs"] == 2 for d in docs), (stage, doc)
    # --set names one key: the tiny preset's experts section (24 epochs) still wins there.
    doc = yaml.safe_load(run("config", "--preset", "tiny", "--set", "optim.epochs=2", "--stage", "experts").output)
    assert doc["expert-0"]["optim"]["epochs"] == 24
    assert "set every stage" in " ".join(run("pipeline", "--help").output.split())


@pytest.mark.parametrize("argv", [("--help",), ("train", "baseline", "--bogus"), ("predict", "--help")])
def test_stmoe_answers_help_and_usage_errors_without_importing_torch_or_numba(argv):
    code = ("import atexit, sys; atexit.register(lambda: print('loaded', sorted(m for m in ('torch', 'numba', "
            f"'stmoe') if m in sys.modules))); from cli.stmoe_cmd import main; main({list(argv)!r})")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "loaded []" in res.stdout, res.stdout + res.stderr


# --------------------------------------------------------------------------------------------------- stale docs
def _page(name: str) -> str:
    return (REPO / name).read_text()


def test_the_table1_time_is_the_same_in_readme_training_and_results():
    import re

    readme = re.search(r"for seed 0 in (\d+) h (\d+) min", _page("README.md"))
    training = re.search(r"Table 1 on 2 CPU cores \((.*?)\)", _page("docs/training.md"))
    measured = re.search(r"(\d+) h (\d+) min wall\s+time for seed 0", _page("docs/results.md"))
    assert readme and training and measured
    assert readme.groups() == measured.groups(), (readme.groups(), measured.groups())
    assert training[1] == "see results.md", training[1]  # a number of its own goes stale


def test_the_readme_names_every_package_of_the_train_extra():
    try:
        import tomllib
    except ImportError:  # Python 3.10: the core install's tomli
        import tomli as tomllib

    names = {"torch": "torch", "scipy": "SciPy", "opencv-python-headless": "OpenCV", "imageio": "imageio",
             "imageio-ffmpeg": "imageio-ffmpeg", "av": "PyAV", "matplotlib": "matplotlib"}
    extra = tomllib.loads(_page("pyproject.toml"))["project"]["optional-dependencies"]["train"]
    line = _page("README.md").split("- `train` extra:")[1].split("\n- ")[0]
    for req in extra:
        pkg = req.split(">")[0].split("=")[0].split("<")[0].strip()
        assert pkg in names, f"{pkg}: a new train dependency; name it in README's Installing list and here"
        assert names[pkg] in line, f"README's `train` extra does not name {names[pkg]}"


def test_cli_md_lists_every_generate_option():
    from cli.physvid_cmd import cli as physvid_cli

    text = _page("docs/cli.md")
    section = text[text.index("## generate"):text.index("\n## ", text.index("## generate") + 5)]
    missing = [o for p in physvid_cli.commands["generate"].params for o in (*p.opts, *p.secondary_opts)
               if o.startswith("--") and o not in section]
    assert not missing, f"docs/cli.md's generate section does not list {missing}"


def test_the_readme_tells_stmoe_from_the_other_st_moe():
    readme = " ".join(_page("README.md").split())
    assert "Not the ST-MoE of Zoph et al." in readme


def test_the_own_data_walkthrough_shows_what_its_script_runs():
    """docs/make_own_data_figures.py runs the page's lines verbatim (so the pictures and table come from them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("own", REPO / "docs" / "make_own_data_figures.py")
    own = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own)
    page = _page("docs/training.md")
    missing = [command for command, _ in own.WALKTHROUGH if command not in page]
    assert len(own.WALKTHROUGH) >= 15 and not missing, missing
    assert "images/stmoe-own-forecast-strip.png" in page and "your-own-data" in _page("README.md")
