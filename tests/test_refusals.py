"""Refuse the impossible up front, never a traceback (issue 11, part 3): huge sizes and ranges, pictures too big for
memory, garbage config files, full disks, exit codes, SIGTERM, 16-bit frames and noise ratios that cannot be met.
Each case asserts the exit code and the one line; the tables cover every option of a kind, so the next one added
fails here too until it is bounded."""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from cli.physvid_cmd import CONFIG_OPTIONS, RangeType, cli
from cli.stmoe_cmd import cli as stmoe_cli
from physvid import RenderConfig, ShapeConfig
from physvid.dataset import generate

REPO = Path(__file__).resolve().parents[1]
SMALL = ["-p", "all", "--size", "16", "--frames", "3", "--objects", "1:2", "--workers", "1", "--quiet"]


def one_line(result, code: int, pattern: str) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [ln for ln in result.output.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, result.output
    assert re.search(pattern, errors[0]), result.output


def invoke(*args, app=cli):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refusals") / "ds"
    generate(RenderConfig(property="all", height=16, width=16, frames=3, shape=ShapeConfig(num_objects=(1, 2))), 6,
             out, shard_size=3, workers=1)
    return out


# ---------------------------------------------------------------------------------------------- sizes and ranges
def _huge(opt) -> str | None:
    """An absurd value for a numeric option (None for options that are not numbers)."""
    if isinstance(opt.type, RangeType):  # a valid low end, an absurd high end
        return "4:1e308" if opt.type.kind is float else f"4:{10**30}"
    if isinstance(opt.type, click.IntRange):
        return str(10**30)
    if opt.key == "size":
        return "1000000"
    return None


NUMERIC = [opt for opt in CONFIG_OPTIONS if _huge(opt) is not None and opt.type is not None
           and not (isinstance(opt.type, click.FloatRange) and opt.type.max is not None)]


@pytest.mark.parametrize("opt", NUMERIC, ids=[o.decls[0] for o in NUMERIC])
def test_every_numeric_option_has_an_upper_bound(tmp_path, opt):
    result = invoke("generate", *SMALL, "--n", 2, opt.decls[0], _huge(opt), "--out", tmp_path / "ds")
    one_line(result, 2, r"^error: .*(must be <=|must be one of|lies inside|needs about|must be odd|<= )")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("args,pattern", [
    (["--n", 10**12], r"n must be <= 1,000,000,000 sequences, got 1,000,000,000,000"),
    (["--n", 10**12, "--dry-run"], r"n must be <= 1,000,000,000 sequences"),
    (["--n", 10**9, "--shard-size", 10], r"make 100,000,000 files; at most 100,000 per dataset: raise --shard-size"),
    (["--n", 10**9, "--shard-size", 10**9], r"needs about .* of memory .* this machine has"),
    (["--n", 10, "--size", 4096, "--frames", 10000], r"needs about .* of memory"),
    (["--n", 10, "--size", 4096, "--frames", 10000, "--dry-run"], r"needs about .* of memory"),
    (["--n", 2, "--object-size", "1e9"], r"shape.size must be <= 8192"),
    (["--n", 2, "--object-size", "200"], r"shape.size must be <= 32 \(twice the frame's side 16\)"),
    (["--n", 2, "--speed", "1e308"], r"motion.speed must be <= 8192"),
])
def test_impossible_runs_are_refused_before_anything_is_allocated(tmp_path, args, pattern):
    one_line(invoke("generate", *SMALL, *args, "--out", tmp_path / "ds"), 2, pattern)
    assert not (tmp_path / "ds").exists()


def test_noise_that_cannot_reach_the_ratio_is_refused(tmp_path):
    lattice = tmp_path / "lattice.yaml"
    lattice.write_text("noise: {ratio: 0.26, gaussian: 0, white: 0, perlin: 1, perlin_frequency: 1.0, "
                       "perlin_speed: 0}\n")
    one_line(invoke("generate", *SMALL, "--n", 4, "--config", lattice, "--out", tmp_path / "ds"), 2,
             r"noise.ratio 0.26 cannot be reached: the noise field is 0 everywhere")
    # Any other way of asking for more noise than the scenes can hold: the run stops at the first shard.
    one_line(invoke("generate", *SMALL, "--n", 8, "--noise-ratio", 10, "--out", tmp_path / "ds"), 2,
             r"sequences 0..7 reach a median noise ratio of [0-9.]+, 10 requested \(tolerance 10%\)")
    assert not (tmp_path / "ds").exists()


def test_stored_noise_ratios_meet_the_request(tmp_path):
    from physvid.dataset import open_dataset

    generate(RenderConfig(property="all", height=32, width=32, frames=4).replace(**{"noise.ratio": 0.26}), 24,
             tmp_path / "ds", shard_size=12, workers=1)
    got = open_dataset(tmp_path / "ds").params["noise_ratio"]
    assert abs(np.median(got) / 0.26 - 1) < 0.1


# ---------------------------------------------------------------------------------------------- pictures
@pytest.mark.parametrize("args,code,pattern", [
    (["preview", "{ds}", "--out", "{tmp}/p.png", "--scale", 100000], 2, r"--scale 100000 makes 1600000x1600000"),
    (["preview", "{ds}", "--out", "{tmp}/p.gif", "--scale", 400], 2, r"--scale 400 makes a picture of [0-9.]+ GB"),
    (["export", "{ds}", "--format", "png", "--out", "{tmp}/p", "--scale", 100000], 2, r"--scale 100000 makes"),
    (["preview", "{ds}", "--out", "{tmp}/p.png", "-i", -1], 2, r"index -1 is out of range"),
    (["export", "{ds}", "--format", "npy", "--out", "{tmp}/x.npy", "-i", -1], 2, r"index -1 is out of range"),
    (["preview", "{ds}", "--out", "{tmp}/p.png", "-i", 6], 2, r"--index 6 is out of range .* \(0..5\)"),
    (["info", "{tmp}/empty"], 2, r"empty has no manifest.json: it is no physvid dataset"),
    (["verify", "{tmp}/empty"], 2, r"empty has no manifest.json: it is no physvid dataset"),
    (["preview", "{tmp}/empty", "--out", "{tmp}/p.png"], 2, r"no manifest.json"),
    (["export", "{tmp}/empty", "--format", "npy", "--out", "{tmp}/x.npy"], 2, r"no manifest.json"),
    (["generate", "--finalize", "--out", "{tmp}/missing"], 2, r"holds no physvid dataset to finalize"),
])
def test_reader_commands_refuse_with_the_right_exit_code(small, tmp_path, args, code, pattern):
    (tmp_path / "empty").mkdir()
    args = [str(a).replace("{ds}", str(small)).replace("{tmp}", str(tmp_path)) for a in args]
    one_line(invoke(*args), code, pattern)
    assert not any(p.name.startswith(("p.", "x.")) or p.name == "p" for p in tmp_path.iterdir())


@pytest.mark.parametrize("where", ["reserve", "write"])
def test_export_npy_on_a_full_disk_is_one_line_and_leaves_nothing(small, tmp_path, monkeypatch, where):
    if where == "reserve":
        def full(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    else:
        real = os.pwrite
        calls = {"n": 0}

        def full(fd, data, offset):  # the third block meets a full disk (a memory map would die of SIGBUS here)
            calls["n"] += 1
            if calls["n"] >= 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data, offset)
        monkeypatch.setattr(os, "pwrite", full)
    one_line(invoke("export", small, "--format", "npy", "--out", tmp_path / "x.npy"), 1,
             r"^error: cannot write .*x.npy: No space left on device")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- config files
GARBAGE = bytes(range(256)) * 4


@pytest.mark.parametrize("name", ["bad.yaml", "bad.json", "bad.toml"])
def test_a_binary_config_file_is_one_line_in_both_commands(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(GARBAGE)
    one_line(invoke("generate", "--config", path, "--n", 2, "--out", tmp_path / "ds"), 2,
             r"config file .*bad\.\w+ is not UTF-8 text|holds NUL bytes")
    one_line(invoke("config", "--config", path, app=stmoe_cli), 2, r"config file .*bad\.\w+ (is not UTF-8|holds NUL)")
    path.write_bytes(b"property: all\n\0\0\0")
    one_line(invoke("generate", "--config", path, "--n", 2, "--out", tmp_path / "ds"), 2, r"holds NUL bytes")
    from physvid.dataset.configfile import read_config_file
    from physvid.errors import ConfigError

    path.write_bytes(GARBAGE[128:])
    with pytest.raises(ConfigError, match="is not UTF-8 text"):  # the library, without the command line
        read_config_file(path)


# ---------------------------------------------------------------------------------------------- stmoe
def test_stmoe_refuses_models_that_cannot_fit_and_unwritable_or_empty_folders(tmp_path):
    huge = ("--preset", "tiny", "--set", "model.num_hidden=100000000")
    # `stmoe config` describes (a config written here may train elsewhere); training refuses, the pipeline up front
    assert invoke("config", *huge, app=stmoe_cli).exit_code == 0
    syn = ",".join(str(tmp_path) for _ in range(3))
    one_line(invoke("pipeline", *huge, "--synthetic", syn, "--real", tmp_path, "--out", tmp_path / "p", app=stmoe_cli),
             2, r"model convlstm of stage decoder would have [0-9,]+ parameters, .* this machine has")
    assert not (tmp_path / "p").exists()
    one_line(invoke("train", "decoder", "--preset", "tiny", "--set", "model.num_hidden=100000000", "--synthetic",
                    tmp_path, "--out", tmp_path / "run", app=stmoe_cli), 2, r"would have [0-9,]+ parameters")
    (tmp_path / "file").write_text("x")
    one_line(invoke("train", "decoder", "--preset", "tiny", "--synthetic", tmp_path, "--out", tmp_path / "file" / "run",
                    app=stmoe_cli), 2, r"cannot write the run folder .*file/run: .*file is not a folder")
    (tmp_path / "empty").mkdir()
    one_line(invoke("plot", tmp_path / "empty", app=stmoe_cli), 2, r"no metrics.jsonl under .*empty")
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        one_line(invoke("train", "decoder", "--preset", "tiny", "--out", tmp_path / "ro" / "run", app=stmoe_cli), 2,
                 r"ro is not writable")


def test_a_checkpoint_that_cannot_be_saved_names_its_path_and_keeps_the_old_one(tmp_path, monkeypatch):
    import torch

    from stmoe.train.checkpoint import save_checkpoint
    from stmoe.train.errors import TrainError

    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    before = path.read_bytes()

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainError, match=r"^cannot save checkpoint .*last\.pt: .*file write failed; free some space"):
        save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_evaluate_out_is_all_or_nothing(tmp_path, monkeypatch):
    import importlib

    from stmoe.train.errors import TrainError

    ev = importlib.import_module("stmoe.train.evaluate")  # stmoe.train.evaluate is also the function's name
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(TrainError, match=r"cannot write .*m\.json: No space left on device"):
        ev._write_result(tmp_path / "m.json", {"mean": {}})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_prepare_scales_16_bit_grey_frames_to_8_bits(tmp_path):
    from PIL import Image

    from physvid.dataset import open_dataset

    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(4):
        Image.fromarray(np.full((16, 16), 16384 * t + 1000, np.uint16)).save(frames / f"f{t}.png")
    res = invoke("prepare", frames, "--frames", 4, "--size", 16, "--out", tmp_path / "ds", app=stmoe_cli)
    assert res.exit_code == 0, res.output
    video = open_dataset(tmp_path / "ds")[0]
    np.testing.assert_array_equal(video[:, 0, 0, 0], np.rint((16384 * np.arange(4) + 1000) * 255 / 65535))


# ---------------------------------------------------------------------------------------------- SIGTERM
@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_sigterm_stops_cleanly_without_leaked_semaphores(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "physvid", "generate", "-p", "all", "--n", "2000", "--size", "24",
                             "--frames", "4", "--shard-size", "20", "--workers", "2", "--quiet", "--out", "ds"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ds" / "shard-00001.h5").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert not (tmp_path / "ds" / "manifest.json").exists(), "the run finished before SIGTERM"
    assert proc.returncode == 143, err
    assert err.strip().startswith("error: terminated; finished shards are kept") and err.count("\n") == 1, err
    assert "resource_tracker" not in err and "Traceback" not in err
    assert not list((tmp_path / "ds").glob("*.tmp"))


def test_predict_scale_and_evaluate_out_on_a_real_checkpoint(tmp_path, monkeypatch):
    """The stmoe commands end to end: a picture too big is refused before the out folder exists; a metrics file that
    cannot be written leaves nothing."""
    cfg = RenderConfig.from_dict({"property": "mixed", "height": 16, "width": 16, "frames": 8,
                                  "shape": {"size": [4.0, 8.0], "thickness": [1.0, 2.0]}})
    generate(cfg, 16, tmp_path / "data", shard_size=8, workers=1)
    tiny = ["--preset", "tiny", "--set", "model.height=16", "--set", "model.width=16", "--set", "model.num_hidden=8",
            "-n", "3", "-b", "4", "--threads", "1", "--epochs", "1", "--steps-per-epoch", "1"]
    res = invoke("train", "baseline", *tiny, "--model", "unet", "--real", tmp_path / "data", "--out", tmp_path / "b",
                 app=stmoe_cli)
    assert res.exit_code == 0, res.output
    best = tmp_path / "b" / "checkpoints" / "best.pt"
    one_line(invoke("predict", "--checkpoint", best, "--data", tmp_path / "data", "--out", tmp_path / "pred",
                    "--scale", 100000, app=stmoe_cli), 2, r"--scale 100000 makes 1600000x1600000 frames")
    assert not (tmp_path / "pred").exists()

    def full(fd):  # a full disk reported when the metrics file is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    one_line(invoke("evaluate", "--checkpoint", best, "--data", tmp_path / "data", "--out", tmp_path / "m.json",
                    app=stmoe_cli), 1, r"^error: cannot write .*m\.json: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "data"]
