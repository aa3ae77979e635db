"""`stmoe` command line: config precedence, the stage commands, evaluate/predict/plot/prepare, one-line errors,
and a real kill -9 of a training process followed by --resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.stmoe_cmd import cli
from conftest import tiny_physvid_folders
from physvid.dataset import open_dataset
from stmoe.train import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
TINY = ["--preset", "tiny", "--set", f"model.height={SIZE}", "--set", f"model.width={SIZE}", "--set",
        "model.num_hidden=8", "--set", "model.gate_channels=4", "-n", "3", "-b", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return tiny_physvid_folders(tmp_path_factory.mktemp("physvid"), 16, shard_size=8, size=SIZE)


def run(*args, code: int = 0):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == code, (res.output, res.stderr if hasattr(res, "stderr") else "", res.exception)
    return res


def test_config_command_merges_preset_file_and_command_line(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("optim: {lr: 0.25, epochs: 9}\nrun: {seed: 5}\n")
    doc = yaml.safe_load(run("config", "--preset", "tiny", "--config", f, "--seed", "0", "--set",
                             "loss.entropy_weight=0.5").output)
    assert doc["optim"]["lr"] == 0.25 and doc["optim"]["epochs"] == 9  # file over preset
    assert doc["run"]["seed"] == 0  # a typed 0 overrides the file's 5
    assert doc["loss"]["entropy_weight"] == 0.5
    assert doc["model"]["num_hidden"] == 16  # untouched preset value
    stage = yaml.safe_load(run("config", "--preset", "tiny", "--config", f, "--stage", "decoder").output)
    assert stage["model"]["name"] == "convlstm" and stage["run"]["seed"] == 5  # --seed not given: the file wins


def test_stage_commands_chain_into_evaluate_predict_plot(data, tmp_path):
    syn = ",".join(str(data[p]) for p in ("translation", "rotation", "intensity"))
    r = tmp_path / "run"
    common = [*TINY, "--epochs", "1"]
    run("train", "decoder", *common, "--synthetic", syn, "--out", r / "decoder")
    dec = r / "decoder" / "checkpoints" / "best.pt"
    run("train", "experts", *common, "--synthetic", syn, "--decoder-checkpoint", dec, "--out", r / "experts")
    run("train", "gating", *common, "--real", data["mixed"], "--experts-dir", r / "experts", "--decoder-checkpoint",
        dec, "--out", r / "gating")
    run("train", "global", *common, "--real", data["mixed"], "--checkpoint", r / "gating" / "checkpoints" / "best.pt",
        "--out", r / "global")
    best = r / "global" / "checkpoints" / "best.pt"
    out = run("evaluate", "--checkpoint", best, "--data", data["mixed"], "--out", tmp_path / "m.json",
              "--metrics", "mse,ssim").output
    assert "mse" in out and json.loads((tmp_path / "m.json").read_text())["output_frames"] == 3
    run("predict", "--checkpoint", best, "--data", data["mixed"], "--out", tmp_path / "pred", "--format", "gif,png")
    assert (tmp_path / "pred" / "clip-00000.gif").is_file() and (tmp_path / "pred" / "clip-00000-attention.png").is_file()
    run("plot", r, "--out", tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    # Stage 2 in the command line inherits --epochs into stages.experts, and config.yaml records it.
    cfg = yaml.safe_load((r / "experts" / "expert-0" / "config.yaml").read_text())
    assert cfg["optim"]["epochs"] == 1 and cfg["stage"] == "experts"


def test_baseline_and_end_to_end_commands(data, tmp_path):
    run("train", "baseline", *TINY, "--epochs", "1", "--model", "unet", "--real", data["mixed"], "--out", tmp_path / "b")
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["model"]["name"] == "unet"
    run("train", "end-to-end", *TINY, "--epochs", "1", "--steps-per-epoch", "1", "--real", data["mixed"],
        "--out", tmp_path / "e")
    assert (tmp_path / "e" / "checkpoints" / "best.pt").is_file()


@pytest.mark.parametrize("case, code, needle", [
    ("missing_data", 2, "does not exist"),
    ("too_long", 2, "exceeds the 8 frames"),
    ("too_small", 2, "smaller than the model's 32x32"),
    ("corrupt", 1, "cannot read"),
    ("bad_key", 2, "unknown key 'optim.learning_rate'"),
    ("bad_model", 2, "unknown model 'nope'"),
    ("missing_config", 2, "does not exist"),
    ("exists", 2, "--resume"),
])
def test_bad_inputs_give_one_line_errors(data, tmp_path, case, code, needle):
    import shutil

    real = data["mixed"]
    args = [*TINY, "--epochs", "1", "--steps-per-epoch", "1"]
    if case == "missing_data":
        real = tmp_path / "nowhere"
    elif case == "too_long":
        args += ["-n", "5"]
    elif case == "too_small":
        args += ["--set", "model.height=32", "--set", "model.width=32"]
    elif case == "corrupt":
        real = tmp_path / "bad"
        shutil.copytree(data["mixed"], real)
        (real / "shard-00000.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 500)
    elif case == "bad_key":
        args += ["--set", "optim.learning_rate=1"]
    elif case == "bad_model":
        args += ["--model", "nope"]
    elif case == "missing_config":
        args += ["--config", tmp_path / "none.yaml"]
    elif case == "exists":
        run("train", "baseline", *args, "--real", real, "--out", tmp_path / "b")
    res = run("train", "baseline", *args, "--real", real, "--out", tmp_path / "b", code=code)
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err


def test_prepare_a_real_video(shared_data, tmp_path):
    video = shared_data / "video" / "traffic-highway-video02.avi"
    if not video.is_file():
        pytest.skip(f"{video} is absent")
    run("prepare", video, "--frames", "8", "--size", "16", "--max-frames", "40", "--out", tmp_path / "traffic")
    ds = open_dataset(tmp_path / "traffic")
    assert ds.shape == (5, 8, 1, 16, 16) and ds.manifest["source"] == "stmoe.prepare"


def test_prepare_errors_are_one_line(tmp_path):
    res = run("prepare", tmp_path / "missing.avi", "--frames", "8", "--out", tmp_path / "x", code=2)
    assert res.stderr.startswith("error: ") and "does not exist" in res.stderr and res.stderr.count("\n") == 1


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(data, tmp_path, kill_9_when):
    """A real SIGKILL of `stmoe train` mid-run, then --resume: the loss sequence equals an uninterrupted run's."""
    epochs = 12
    args = ["train", "baseline", *TINY, "--model", "convlstm", "--epochs", str(epochs), "--steps-per-epoch", "3",
            "--real", str(data["mixed"]), "--set", "optim.teacher_forcing_start=0.8"]
    run(*args, "--out", tmp_path / "straight")
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "cli.stmoe_cmd", *args, "--out", str(killed)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.pt"
    kill_9_when(proc, last)
    assert last.exists(), proc.stderr.read().decode()
    done = load_checkpoint(last)["epoch"]  # metrics.jsonl may lag the checkpoint by the kill; resume rewrites it
    assert 1 <= done < epochs, "the kill must land mid-run"
    run(*args, "--out", killed, "--resume")
    a, b = _metrics(tmp_path / "straight"), _metrics(killed)
    assert [r["epoch"] for r in b] == list(range(1, epochs + 1))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


def test_help_runs_as_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "cli.stmoe_cmd", "--help"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0 and "pipeline" in out.stdout and "prepare" in out.stdout
