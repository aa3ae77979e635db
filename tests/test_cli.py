"""The `physvid` command line: every command through click's CliRunner, plus real subprocesses (kill -9, file limits)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.physvid_cmd import cli
from physvid import RenderConfig, ShapeConfig, render
from physvid.dataset import generate, open_dataset

REPO = Path(__file__).resolve().parents[1]
# Small enough that a whole command takes a fraction of a second.
SMALL = ["--property", "all", "--size", "16", "--frames", "3", "--objects", "1:2", "--workers", "1", "--quiet"]
SMALL_CONFIG = RenderConfig(property="all", height=16, width=16, frames=3, shape=ShapeConfig(num_objects=(1, 2)))


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def assert_one_line_error(result, code: int, pattern: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(pattern, result.output), result.output


def physvid_subprocess(*args, cwd: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "physvid", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("command", [[], ["generate"], ["info"], ["verify"], ["preview"], ["export"]])
def test_every_command_shows_an_example_in_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output and "physvid " + (command[0] if command else "generate") in result.output


def test_generate_info_verify_preview_export(tmp_path):
    out = tmp_path / "ds"
    result = invoke("generate", *SMALL[:-1], "--n", 6, "--shard-size", 4, "--property-maps",
                    "--out", out)
    assert result.exit_code == 0, result.output
    assert "6 sequences (18 frames) written" in result.stdout and "frames/s" in result.stdout
    np.testing.assert_array_equal(open_dataset(out)[0:6], render(SMALL_CONFIG.replace(property_maps=True),
                                                                   range(6))[0])

    info = invoke("info", out)
    assert info.exit_code == 0
    for text in ("sequences:    6 (18 frames) in 2 shard(s) of 4", "property: all", "physvid-hdf5 1.1",
                 "video         uint8    (6, 3, 1, 16, 16)", "property_map", "checksums:    not verified",
                 "noise.ratio = 0.0", "h5py"):
        assert text in info.stdout, text
    assert "verified: all match" in invoke("info", out, "--verify").stdout
    shard = json.loads(invoke("info", out / "shard-00001.h5", "--json").stdout)
    assert shard["kind"] == "single shard" and shard["sequences"] == 2

    verified = invoke("verify", out)
    assert verified.exit_code == 0 and verified.stdout.startswith("OK")

    from PIL import Image

    assert invoke("preview", out, "--out", tmp_path / "p.gif").exit_code == 0
    assert Image.open(tmp_path / "p.gif").n_frames == 3
    grid = invoke("preview", out, "--out", tmp_path / "p.png", "-i", 0, "-i", 5, "--property-map", "--scale", 1)
    assert grid.exit_code == 0, grid.output
    assert Image.open(tmp_path / "p.png").size == (3 * 16 + 2 * 2, 2 * 16 + 2)  # frames x sequences, 2 px gaps

    assert invoke("export", out, "--format", "npy").exit_code == 0
    assert np.load(tmp_path / "ds.npy").shape == (3, 6, 16, 16)
    assert invoke("export", out, "--format", "png", "-i", 1).exit_code == 0
    assert sorted(os.listdir(tmp_path / "ds-png" / "seq-0000001")) == ["frame-00.png", "frame-01.png", "frame-02.png"]


def test_out_defaults_to_a_folder_named_after_the_property(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("generate", "--property", "rotation", "--n", 2, "--size", 16, "--frames", 3, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "rotation" / "manifest.json").read_text())["config"]["property"] == "rotation"


CONFIG_FILES = {
    "yaml": "property: rotation\nframes: 5\nseed: 7\nheight: 16\nwidth: 16\nnoise:\n  ratio: 0.3\nnoise.white: 0.5\n"
            "masks: true\nn: 3\nshard_size: 2\n",
    "json": json.dumps({"property": "rotation", "frames": 5, "seed": 7, "height": 16, "width": 16,
                        "noise": {"ratio": 0.3}, "noise.white": 0.5, "masks": True, "n": 3, "shard_size": 2}),
    "toml": 'property = "rotation"\nframes = 5\nseed = 7\nheight = 16\nwidth = 16\nmasks = true\nn = 3\n'
            'shard_size = 2\n"noise.white" = 0.5\n[noise]\nratio = 0.3\n',
}


@pytest.mark.parametrize("kind", sorted(CONFIG_FILES))
def test_config_file_is_overridden_only_by_options_given(tmp_path, kind):
    path = tmp_path / f"settings.{kind}"
    path.write_text(CONFIG_FILES[kind])
    out = tmp_path / "ds"
    # Zero and "no" on the command line must still win over the file (presence, not truthiness).
    result = invoke("generate", "--config", path, "--frames", 3, "--noise-ratio", 0, "--no-masks", "--out", out,
                    "--workers", 1, "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    config = manifest["config"]
    assert (config["property"], config["seed"], config["height"]) == ("rotation", 7, 16)  # from the file
    assert config["noise"]["white"] == 0.5 and config["noise"]["gaussian"] == 1.0  # file; untouched default
    assert (config["frames"], config["noise"]["ratio"], config["masks"]) == (3, 0.0, False)  # command line
    assert (manifest["total_sequences"], manifest["shard_size"]) == (3, 2)  # run settings from the file


def test_a_manifest_is_a_config_file_that_reproduces_its_dataset(tmp_path):
    assert invoke("generate", *SMALL, "--n", 5, "--shard-size", 2, "--seed", 3, "--out", tmp_path / "a").exit_code == 0
    again = invoke("generate", "--config", tmp_path / "a" / "manifest.json", "--out", tmp_path / "b", "--workers", 1,
                   "-q")
    assert again.exit_code == 0, again.output
    assert files(tmp_path / "a") == files(tmp_path / "b")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


BAD_INPUTS = [
    # (arguments, exit code, message)
    (["--property", "spin", "--n", 2], 2, r"Invalid value for '--property'.*'spin'"),
    (["--property", "all", "--n", 0], 2, r"Invalid value for '--n'.*0 is not in the range x>=1"),
    (["--property", "all", "--n", -5], 2, r"Invalid value for '--n'"),
    (["--property", "all"], 2, r"give --n"),
    (["--n", 3], 2, r"give --property"),
    (["--property", "all", "--n", 2, "--speed", "3:1"], 2, r"error: motion.speed is inverted"),
    (["--property", "all", "--n", 2, "--size", "big"], 2, r"'big' is not N or HxW"),
    (["--property", "all", "--n", 4, "--shard-size", 2, "--shard-range", "5:9"], 2,
     r"error: --shard-range 5:9 .*2 shard"),
    (["--property", "dynamic-mnist", "--n", 2, "--digits", "{tmp}/no-such-file.gz"], 2,
     r"error: digits file not found: .*no-such-file.gz \(give --digits PATH"),
    (["--property", "dynamic-mnist", "--n", 2], 2, r"error: property 'dynamic-mnist' needs shape.digits"),
    (["--config", "{tmp}/bad_key.yaml"], 2, r"error: unknown key 'colour' in config file .*bad_key.yaml; allowed: "),
    (["--config", "{tmp}/bad_nested.json"], 2, r"error: unknown config key noise.amount; allowed keys: ratio"),
    (["--config", "{tmp}/bad_type.toml"], 2, r"error: frames must be an integer, got 'ten' \(in config file"),
    (["--config", "{tmp}/bad_property.yaml"], 2, r"error: unknown property 'spin'; allowed: .*rotation"),
    (["--config", "{tmp}/bad_n.yaml"], 2, r"error: n in config file .* must be an integer >= 1, got 0"),
    (["--config", "{tmp}/broken.yaml"], 2, r"error: config file .*broken.yaml is not valid YAML"),
    (["--config", "{tmp}/nope.yaml"], 2, r"Invalid value for '--config'.*does not exist"),
    (["--property", "all", "--n", 2, "--out", "{tmp}/a_file/sub"], 2,
     r"error: cannot write to the output folder .*a_file/sub .*choose a writable --out"),
]


@pytest.mark.parametrize("args,code,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_bad_input_exits_with_one_clear_line(tmp_path, args, code, message):
    _write(tmp_path, "bad_key.yaml", "property: all\nn: 2\ncolour: 3\n")
    _write(tmp_path, "bad_nested.json", '{"property": "all", "n": 2, "noise": {"amount": 1}}')
    _write(tmp_path, "bad_type.toml", 'property = "all"\nn = 2\nframes = "ten"\n')
    _write(tmp_path, "bad_property.yaml", "property: spin\nn: 2\n")
    _write(tmp_path, "bad_n.yaml", "property: all\nn: 0\n")
    _write(tmp_path, "broken.yaml", "property: [all\n")
    _write(tmp_path, "a_file", "not a folder")
    out = tmp_path / "out"
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(out)]
    result = invoke("generate", *args, "--workers", 1, "--quiet")
    assert_one_line_error(result, code, message)
    assert not out.exists()  # nothing partial left


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_is_a_usage_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke("generate", *SMALL, "--n", 2, "--out", locked / "ds")
    assert_one_line_error(result, 2, r"error: cannot write to the output folder .*Permission denied")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell the shard's fsync apart")
def test_disk_full_is_a_runtime_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    real_fsync = os.fsync

    def full(fd):  # file systems with delayed allocation report a full disk when a shard's data is flushed
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".h5.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    result = invoke("generate", *SMALL, "--n", 4, "--out", tmp_path / "ds")
    assert_one_line_error(result, 1, r"^error: no space left on device while writing .*shard-00000.h5; free some")
    assert result.output.count("\n") == 1 and not (tmp_path / "ds").exists()


def test_a_real_write_failure_in_a_subprocess(tmp_path):
    """A file-size limit makes the kernel refuse the shard's write (EFBIG), as a full disk does (ENOSPC)."""
    import resource

    args = ["--property", "all", "--size", 64, "--frames", 6, "--noise-ratio", 0.5, "--workers", 1, "--quiet"]
    warm = invoke("generate", *args, "--n", 1, "--out", tmp_path / "warm")  # compiled kernels cached before the limit
    assert warm.exit_code == 0, warm.output

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # Python already ignores SIGXFSZ

    proc = physvid_subprocess("generate", *args, "--n", 40, "--out", "ds", cwd=tmp_path, preexec_fn=limit)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert stderr.startswith("error: file too large while writing ds/shard-00000.h5") and stderr.count("\n") == 1
    assert not (tmp_path / "ds").exists()


def test_kill_9_during_a_run_then_resume_is_byte_identical(tmp_path, kill_9_when):
    args = ["generate", "--property", "all", "--n", 300, "--size", 32, "--frames", 6, "--noise-ratio", 0.3,
            "--shard-size", 15, "--workers", 2, "--quiet", "--out", "ds"]
    proc = physvid_subprocess(*args, cwd=tmp_path)
    workers = kill_9_when(proc, tmp_path / "ds" / "shard-00000.h5", before=lambda: subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split())
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "ds" / "manifest.json").exists(), "the run finished before it could be killed"
    # Orphaned workers notice the dead parent (busy ones at their next batch, removing their temp files; idle ones
    # within a second) and exit: nothing is left running.
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "orphaned workers kept running"

    config = RenderConfig(property="all", height=32, width=32, frames=6).replace(**{"noise.ratio": 0.3})
    generate(config, 300, tmp_path / "ref", shard_size=15, workers=1)  # the uninterrupted run

    resumed = physvid_subprocess(*args, cwd=tmp_path)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert files(tmp_path / "ds") == files(tmp_path / "ref")
    check = physvid_subprocess("verify", "ds", cwd=tmp_path)
    assert check.wait(timeout=120) == 0


def test_verify_names_a_flipped_shard_and_fails(tmp_path):
    out = tmp_path / "ds"
    assert invoke("generate", *SMALL, "--n", 6, "--shard-size", 2, "--out", out).exit_code == 0
    data = bytearray((out / "shard-00001.h5").read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / "shard-00001.h5").write_bytes(bytes(data))
    result = invoke("verify", out)
    assert result.exit_code == 1
    assert "shard-00001.h5: sha256" in result.stderr and "shard-00000.h5" not in result.stderr
    assert invoke("info", out, "--verify").exit_code == 1


def test_workers_and_shard_size_never_change_the_data(tmp_path):
    base = ["generate", *SMALL[:-3], "--quiet", "--n", 10, "--noise-ratio", 0.2]
    assert invoke(*base, "--workers", 1, "--shard-size", 4, "--out", tmp_path / "w1").exit_code == 0
    assert invoke(*base, "--workers", 2, "--shard-size", 4, "--out", tmp_path / "w2").exit_code == 0
    assert invoke(*base, "--workers", 2, "--shard-size", 3, "--out", tmp_path / "s3").exit_code == 0
    assert files(tmp_path / "w1") == files(tmp_path / "w2")  # even the bytes
    a, b = open_dataset(tmp_path / "w1"), open_dataset(tmp_path / "s3")
    np.testing.assert_array_equal(a[0:10], b[0:10])
    for name in a.param_names:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_shard_range_jobs_then_finalize_equal_one_run(tmp_path):
    base = ["generate", *SMALL, "--n", 7, "--shard-size", 2]
    assert invoke(*base, "--out", tmp_path / "one").exit_code == 0
    half = invoke(*base, "--out", tmp_path / "arr", "--shard-range", "0:2")
    assert half.exit_code == 0 and not (tmp_path / "arr" / "manifest.json").exists()
    early = invoke("generate", "--finalize", "--out", tmp_path / "arr")
    assert_one_line_error(early, 1, r"error: cannot finalize .*2 of 4 shard\(s\) missing \(shard-00002.h5, shard-00003")
    assert invoke(*base, "--out", tmp_path / "arr", "--shard-range", "2:").exit_code == 0
    wrong = invoke("generate", *SMALL, "--n", 9, "--shard-size", 2, "--finalize", "--out", tmp_path / "arr")
    assert_one_line_error(wrong, 2, r"holds a different dataset \(total_sequences: 7 in DIR, 9 requested")
    done = invoke("generate", "--finalize", "--out", tmp_path / "arr")
    assert done.exit_code == 0 and "manifest written" in done.stdout
    assert files(tmp_path / "arr") == files(tmp_path / "one")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result = invoke("generate", *SMALL[:-1], "--n", 25, "--shard-size", 10, "--workers", 2, "--out", tmp_path / "ds",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    for text in ("25 in 3 shard(s) of 10", "75 frames, 2 worker process(es)", "on disk with gzip", "time:"):
        assert text in result.stdout, text
    assert not (tmp_path / "ds").exists()


def test_another_dataset_in_the_folder_is_refused_until_overwrite(tmp_path):
    out = tmp_path / "ds"
    assert invoke("generate", *SMALL, "--n", 3, "--out", out).exit_code == 0
    refused = invoke("generate", *SMALL, "--n", 3, "--out", out, "--frames", 4)
    assert_one_line_error(refused, 2, r"error: .* holds a different dataset \(config.frames: 3 in DIR, 4 requested\); "
                                      r"use --overwrite")
    assert invoke("generate", *SMALL, "--n", 3, "--out", out, "--frames", 4,
                  "--overwrite").exit_code == 0
    assert open_dataset(out).shape == (3, 4, 1, 16, 16)


def test_python_dash_m_physvid_runs_the_cli(tmp_path):
    proc = physvid_subprocess("--version", cwd=tmp_path)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and stdout.startswith("physvid, version ")
    missing = physvid_subprocess("info", "nowhere", cwd=tmp_path)
    _, stderr = missing.communicate(timeout=60)
    assert missing.returncode == 2 and "does not exist" in stderr and "Traceback" not in stderr
