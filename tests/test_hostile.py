"""Hostile input, next round (issue 19): no hang, no silently wrong result, no traceback.

One block per kind of failure the issue lists; each test covers every variant of its kind that the code can meet (every
reader of a FIFO, every tensor of a checkpoint, every section that can be null, ...), so that the next one fails here
too: readers that block on a file that is not regular; checkpoints that were changed, edited, or do not fit their
model; resumes that would silently start over or change the record; YAML numbers; seeds; a noise ratio no entry point
may render at 0; and signals, concurrent writers and readers, and a killed training with DataLoader workers.
"""
from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from cli.physvid_cmd import cli as physvid_cli
from cli.stmoe_cmd import cli as stmoe_cli
from physvid import ConfigError, DatasetError, RenderConfig, open_dataset, render, render_sequence
from physvid.dataset import estimate, generate
from physvid.dataset.configfile import read_config_file
from physvid.dataset.layout import sha256_file
from physvid.yamlload import safe_load
from stmoe.train import load_checkpoint, load_config, save_checkpoint, train_baseline
from stmoe.train.config import parse_assignment
from stmoe.train.errors import NonFiniteLossError, TrainError
from test_refusals import invoke, one_line

REPO = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX FIFOs and signals")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------------------------------------- 1. hang: FIFOs
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "ds"
    generate(RenderConfig(property="all", height=16, width=16, frames=3), 6, out, shard_size=3, workers=1)
    return out


@pytest.fixture
def fifo_watchdog():
    """Turns a reader that blocks on a FIFO into a failed test instead of a hung suite: after 20 s, opening each listed
    FIFO's write end (and closing it) releases a reader blocked in open(), which then reads end-of-file."""
    fifos: list[Path] = []
    hung: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        if stop.wait(20):
            return
        while not stop.is_set():
            for path in fifos:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only when a reader is waiting
                except OSError:
                    continue
                hung.append(str(path))
                os.close(fd)
            stop.wait(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield fifos
    stop.set()
    thread.join()
    assert not hung, f"a reader blocked on the FIFO(s) {sorted(set(hung))}"


def _fifo_copy(src: Path, dst: Path, name: str) -> Path:
    """A copy of the dataset folder `src` with its file `name` replaced by a FIFO."""
    import shutil

    shutil.copytree(src, dst)
    (dst / name).unlink()
    os.mkfifo(dst / name)
    return dst / name


FIFO_SHARD = r"shard-00001\.h5 is a FIFO \(named pipe\), not a regular file"


@POSIX
@pytest.mark.parametrize("case", ["open_dataset", "export", "preview", "verify", "info --verify", "info shard",
                                  "manifest", "manifest export"])
def test_readers_never_open_a_fifo(small, tmp_path, fifo_watchdog, case):
    name = "manifest.json" if case.startswith("manifest") else "shard-00001.h5"
    fifo = _fifo_copy(small, tmp_path / "ds", name)
    fifo_watchdog.append(fifo)
    ds = tmp_path / "ds"
    if case == "open_dataset":
        d = open_dataset(ds)
        assert d[0].shape == (3, 1, 16, 16)  # shard 0 is fine
        with pytest.raises(DatasetError, match=FIFO_SHARD):
            d[4]
    elif case == "manifest":
        with pytest.raises(DatasetError, match=r"manifest .*manifest\.json is a FIFO \(named pipe\)"):
            open_dataset(ds)
    elif case == "manifest export":
        one_line(invoke("export", ds, "--format", "npy", "--out", tmp_path / "x.npy"), 1,
                 r"manifest\.json is a FIFO \(named pipe\), not a regular file")
    elif case == "export":
        one_line(invoke("export", ds, "--format", "npy", "--out", tmp_path / "x.npy"), 1, FIFO_SHARD)
        assert not (tmp_path / "x.npy").exists()
    elif case == "preview":
        one_line(invoke("preview", ds, "--out", tmp_path / "p.png", "-i", 4), 1, FIFO_SHARD)
    elif case == "verify":
        res = invoke("verify", ds)
        assert res.exit_code == 1 and "shard-00001.h5: is a FIFO (named pipe), not a regular file" in res.output
    elif case == "info --verify":
        res = invoke("info", ds, "--verify")
        assert res.exit_code == 1 and "FAILED: shard-00001.h5" in res.output
    elif case == "info shard":
        one_line(invoke("info", fifo), 1, r"shard-00001\.h5 is a FIFO \(named pipe\), not a dataset folder or shard file")


@POSIX
def test_config_files_and_checkpoints_that_are_fifos_are_refused(tmp_path, fifo_watchdog):
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    ckpt = tmp_path / "best.pt"
    os.mkfifo(ckpt)
    fifo_watchdog.extend([fifo, ckpt])
    pattern = r"cfg\.yaml is a FIFO \(named pipe\), not a regular file"
    one_line(invoke("generate", "-p", "all", "--n", 2, "--config", fifo, "--out", tmp_path / "o"), 2, pattern)
    one_line(invoke("config", "--config", fifo, app=stmoe_cli), 2, pattern)
    with pytest.raises(ConfigError, match=pattern):
        read_config_file(fifo)
    one_line(invoke("evaluate", "--checkpoint", ckpt, "--data", tmp_path, app=stmoe_cli), 1,
             r"checkpoint .*best\.pt is a FIFO \(named pipe\), not a regular file")


# ---------------------------------------------------------------------------------------------- 2-3. checkpoints
TINY = {"model.height": 16, "model.width": 16, "model.num_hidden": 8, "data.output_frames": 3, "data.batch_size": 4,
        "optim.epochs": 1, "optim.max_steps_per_epoch": 1, "run.threads": 1, "run.progress": "off",
        "stages.baseline.model.name": "unet"}
TINY_CLI = ["--preset", "tiny", "--set", "model.height=16", "--set", "model.width=16", "--set", "model.num_hidden=8",
            "-n", "3", "-b", "4", "--threads", "1", "--epochs", "1", "--steps-per-epoch", "1", "--model", "unet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny unet baseline run (one step) on a tiny mixed dataset."""
    root = tmp_path_factory.mktemp("ckpt")
    cfg = RenderConfig.from_dict({"property": "mixed", "height": 16, "width": 16, "frames": 8,
                                  "shape": {"size": [4.0, 8.0], "thickness": [1.0, 2.0]}})
    generate(cfg, 16, root / "data", shard_size=8, workers=1)
    train_baseline(load_config("tiny", overrides={**TINY, "real": str(root / "data")}), root / "run")
    return {"root": root, "data": root / "data", "run": root / "run", "best": root / "run" / "checkpoints" / "best.pt"}


def _tensor_records(path: Path) -> list[tuple[str, int, int]]:
    """(name, file offset, size) of every tensor's bytes inside a torch.save zip."""
    out = []
    with zipfile.ZipFile(path) as z, open(path, "rb") as fh:
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size > 0:
                fh.seek(info.header_offset)
                head = fh.read(30)
                name_len, extra_len = struct.unpack("<HH", head[26:30])
                out.append((info.filename, info.header_offset + 30 + name_len + extra_len, info.file_size))
    return out


def _flipped(src: Path, dst: Path, offset: int) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= 0x5A
    dst.write_bytes(bytes(data))
    return dst


def test_a_byte_changed_in_any_tensor_is_refused(trained, tmp_path):
    records = _tensor_records(trained["best"])
    assert len(records) > 20  # weights, optimiser moments, RNG states
    for name, offset, size in records:
        bad = _flipped(trained["best"], tmp_path / "bad.pt", offset + size // 2)
        with pytest.raises(TrainError, match=r"fails its integrity check.*modified or damaged") as err:
            load_checkpoint(bad)
        assert "\n" not in str(err.value), name


def test_every_reader_refuses_a_tampered_checkpoint(trained, tmp_path):
    """evaluate, predict, a stage input and --resume all load through the check."""
    _, offset, size = max(_tensor_records(trained["best"]), key=lambda r: r[2])
    bad = _flipped(trained["best"], tmp_path / "bad.pt", offset + size // 2)
    integrity = r"fails its integrity check"
    one_line(invoke("evaluate", "--checkpoint", bad, "--data", trained["data"], app=stmoe_cli), 1, integrity)
    one_line(invoke("predict", "--checkpoint", bad, "--data", trained["data"], "--out", tmp_path / "p",
                    app=stmoe_cli), 1, integrity)
    one_line(invoke("train", "global", *TINY_CLI[:-2], "--checkpoint", bad, "--real", trained["data"], "--out",
                    tmp_path / "g", app=stmoe_cli), 1, integrity)
    import shutil

    run = shutil.copytree(trained["run"], tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    _, offset, size = max(_tensor_records(last), key=lambda r: r[2])
    _flipped(trained["run"] / "checkpoints" / "last.pt", last, offset + size // 2)
    before = (run / "config.yaml").read_bytes()
    one_line(invoke("train", "baseline", *TINY_CLI, "--epochs", 2, "--real", trained["data"], "--out", run,
                    "--resume", app=stmoe_cli), 1, integrity)
    assert (run / "config.yaml").read_bytes() == before


def _resaved(src: Path, dst: Path, edit) -> Path:
    """The checkpoint at `src` with `edit(dict)` applied, written by plain torch.save (its digest kept as it was)."""
    ckpt = torch.load(src, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


EDITS = {
    "data.input_frames": lambda c: c["config"]["data"].__setitem__("input_frames", 3),
    "model.num_hidden": lambda c: c["config"]["model"].__setitem__("num_hidden", 16),
    "optim.lr": lambda c: c["config"]["optim"].__setitem__("lr", 0.5),
    "meta data": lambda c: c["meta"].__setitem__("data", ["elsewhere"]),
    "epoch": lambda c: c.__setitem__("epoch", 7),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_checkpoint_is_refused(trained, tmp_path, edit):
    bad = _resaved(trained["best"], tmp_path / "edited.pt", EDITS[edit])
    one_line(invoke("evaluate", "--checkpoint", bad, "--data", trained["data"], app=stmoe_cli), 1,
             r"fails its integrity check")


def test_checkpoints_without_a_digest_load_with_a_notice(trained, tmp_path):
    """Checkpoints written before digests existed (runs in progress) load as before, with one note; the other checks
    still apply to them."""
    legacy = _resaved(trained["best"], tmp_path / "legacy.pt", lambda c: c.pop("digest"))
    args = ["--data", trained["data"], "--metrics", "mse,ssim"]
    new = invoke("evaluate", "--checkpoint", trained["best"], *args, app=stmoe_cli)
    old = invoke("evaluate", "--checkpoint", legacy, *args, app=stmoe_cli)
    assert new.exit_code == old.exit_code == 0, old.output
    assert old.stdout == new.stdout and "note:" not in new.stderr
    notes = [ln for ln in old.stderr.splitlines() if ln.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: checkpoint") and "before checkpoints carried a digest" \
        in notes[0], old.stderr

    def edit(c):
        c.pop("digest")
        c["config"]["data"]["input_frames"] = 3

    edited = _resaved(trained["best"], tmp_path / "legacy-edited.pt", edit)
    one_line(invoke("evaluate", "--checkpoint", edited, *args, app=stmoe_cli), 1,
             r"its config says data\.input_frames = 3 but its model was built for 4 input frames; the config was "
             r"edited")


def _first(c: dict) -> str:
    return next(iter(c["model_state"]))


def _rename(c: dict) -> None:
    k = _first(c)
    c["model_state"][k + "_renamed"] = c["model_state"].pop(k)


def _huge(n: int):
    def edit(c: dict) -> None:
        c["model"]["config"]["num_hidden"] = n
        c["config"]["model"]["num_hidden"] = n
    return edit


def _poison(value: float):
    def edit(c: dict) -> None:
        c["model_state"][_first(c)].view(-1)[3] = value
    return edit


# What a checkpoint can lack or hold instead (saved with a valid digest): each refused in one line, exit 1.
MISFITS = {
    "missing tensor": (lambda c: c["model_state"].pop(_first(c)), r"1 tensor\(s\) of the model are missing"),
    "extra tensor": (lambda c: c["model_state"].__setitem__("bogus.weight", torch.zeros(3)),
                     r"1 tensor\(s\) do not belong to it \(first: bogus\.weight\)"),
    "renamed tensor": (_rename, r"are missing .* do not belong to it \(first: .*_renamed\)"),
    "resized tensor": (lambda c: c["model_state"].__setitem__(_first(c), torch.zeros(2, 3)),
                       r"has shape \[2, 3\], the stored config builds \[8, 64, 3, 3\]"),
    "num_hidden 10^9": (_huge(10**9), r"cannot be built from the stored config|does not fit its model"),
    "num_hidden 4096": (_huge(4096), r"the stored config builds \[4096, "),
    "config is a string": (lambda c: c.__setitem__("config", "model: unet"),
                           r"holds a config that is a str, not a mapping"),
    "config is a list": (lambda c: c.__setitem__("config", [1]), r"holds a config that is a list, not a mapping"),
    "weights are a string": (lambda c: c.__setitem__("model_state", "x"), r"lacks its weights"),
    "no model description": (lambda c: c.pop("model"), r"lacks its model description"),
    "future version": (lambda c: c.__setitem__("version", 99), r"has version 99, newer than this stmoe reads"),
    "nan weight": (_poison(float("nan")), r"holds non-finite weights: 1 of \d+ value\(s\) of .* are nan or inf"),
    "inf weight": (_poison(float("inf")), r"holds non-finite weights"),
    "model name differs": (lambda c: c["config"]["model"].__setitem__("name", "mim"),
                           r"its config names model 'mim' but its weights are a 'unet'"),
}


@pytest.mark.parametrize("case", sorted(MISFITS))
def test_checkpoints_that_do_not_fit_their_model_are_one_line(trained, tmp_path, case):
    edit, pattern = MISFITS[case]
    ckpt = torch.load(trained["best"], weights_only=True)
    body = {k: v for k, v in ckpt.items() if k not in ("format", "digest")}
    edit(body)
    bad = save_checkpoint(tmp_path / "bad.pt", body)  # a valid digest: these are checked beyond it
    one_line(invoke("evaluate", "--checkpoint", bad, "--data", trained["data"], app=stmoe_cli), 1, pattern)
    if case == "nan weight":
        one_line(invoke("predict", "--checkpoint", bad, "--data", trained["data"], "--out", tmp_path / "p",
                        app=stmoe_cli), 1, pattern)


# ---------------------------------------------------------------------------------------------- 2, 4, 5. resuming
@pytest.mark.parametrize("command", ["baseline", "experts", "pipeline"])
def test_resume_without_a_run_is_refused(trained, tmp_path, command):
    out = tmp_path / "fresh"
    data = str(trained["data"])
    args = {"baseline": ["train", "baseline", *TINY_CLI, "--real", data],
            "experts": ["train", "experts", "--preset", "tiny", "--synthetic", f"{data},{data},{data}"],
            "pipeline": ["pipeline", "--preset", "tiny", "--synthetic", f"{data},{data},{data}", "--real", data]}
    one_line(invoke(*args[command], "--out", out, "--resume", app=stmoe_cli), 2,
             r"--resume: .*fresh holds no run to continue .*; drop --resume to start a new run there")
    assert not out.exists()


def test_resume_with_other_data_is_refused_and_keeps_the_record(trained, tmp_path):
    import shutil

    run = shutil.copytree(trained["run"], tmp_path / "run")
    other = shutil.copytree(trained["data"], tmp_path / "other")
    record = (run / "config.yaml").read_bytes()
    one_line(invoke("train", "baseline", *TINY_CLI, "--epochs", 2, "--real", other, "--out", run, "--resume",
                    app=stmoe_cli), 2,
             r"cannot resume .*run: it was started with data .*data, this command gives .*other; give the same")
    assert (run / "config.yaml").read_bytes() == record
    assert load_checkpoint(run / "checkpoints" / "last.pt")["meta"]["data"] == [str(trained["data"])]
    # The same folder spelled differently is the same data.
    spelled = os.path.relpath(trained["data"], Path.cwd())
    res = invoke("train", "baseline", *TINY_CLI, "--real", spelled, "--out", run, "--resume", app=stmoe_cli)
    assert res.exit_code == 0, res.output


def test_a_nan_loss_names_only_a_checkpoint_that_exists(trained, tmp_path):
    from stmoe.train.stages import _build, fit

    cfg = load_config("tiny", overrides={**TINY, "real": str(trained["data"])}).stage("baseline")
    model = _build(cfg)
    model.decoder.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(NonFiniteLossError) as err:
        fit(model, cfg, tmp_path / "run", [str(trained["data"])], stage="baseline")
    msg = str(err.value)
    assert "no checkpoint was written yet" in msg and "start the run again (without --resume)" in msg, msg
    assert ".pt" not in msg and not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


# ---------------------------------------------------------------------------------------------- 5. config values
def test_yaml_exponent_numbers_are_floats_everywhere(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("optim: {lr: 1e-3}\nloss: {entropy_weight: 2E-2}\n")
    cfg = load_config("tiny", f).base
    assert cfg.optim.lr == 0.001 and cfg.loss.entropy_weight == 0.02
    assert parse_assignment("optim.lr=1e-3") == ("optim.lr", 0.001)
    g = tmp_path / "gen.yaml"
    g.write_text("property: all\nnoise: {ratio: 2e-1}\n")
    assert read_config_file(g)[0]["noise"]["ratio"] == 0.2
    import yaml

    for text, value in (("1e-3", 0.001), ("2E5", 200000.0), ("-1.5e+2", -150.0), ("1_000e3", 1e6)):
        assert safe_load(f"v: {text}")["v"] == value
    for text in ("1.5", "7", "0x10", "1:30", ".inf", "e3", "1e", "0o7", "true", "null", "2026-01-01", "abc"):
        assert safe_load(f"v: {text}") == yaml.safe_load(f"v: {text}"), text


@pytest.mark.parametrize("section", ["model", "data", "optim", "loss", "run", "stages.gating.optim"])
def test_null_sections_are_refused(tmp_path, section):
    f = tmp_path / "exp.yaml"
    *parents, last = section.split(".")
    text = "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents)) + f"{'  ' * len(parents)}{last}: null\n"
    f.write_text(text)
    one_line(invoke("config", "--preset", "tiny", "--config", f, app=stmoe_cli), 2,
             rf"{last} is null; give a mapping of settings .* or leave the key out")


@pytest.mark.parametrize("how", ["--seed", "--set", "yaml"])
def test_seeds_beyond_64_bits_are_refused(trained, tmp_path, how):
    huge = 10**23
    f = tmp_path / "s.yaml"
    f.write_text(f"run: {{seed: {huge}}}\n")
    extra = {"--seed": ["--seed", huge], "--set": ["--set", f"run.seed={huge}"], "yaml": ["--config", f]}[how]
    one_line(invoke("train", "baseline", *TINY_CLI, *extra, "--real", trained["data"], "--out", tmp_path / "o",
                    app=stmoe_cli), 2, r"(--seed|run\.seed).*" + str(huge) if how != "--seed" else r"--seed")
    assert not (tmp_path / "o").exists()
    one_line(invoke("generate", "-p", "all", "--n", 2, "--seed", huge, "--out", tmp_path / "p"), 2, r"seed")


def test_no_entry_point_renders_an_unreachable_noise_ratio(tmp_path):
    cfg = RenderConfig.from_dict({"property": "all", "height": 16, "width": 16, "frames": 3,
                                  "noise": {"ratio": 0.26, "gaussian": 0, "white": 0, "perlin": 1,
                                            "perlin_frequency": 1.0, "perlin_speed": 0}})
    pattern = r"noise\.ratio 0\.26 cannot be reached: the noise field is 0 everywhere"
    for call in (lambda: render(cfg, [0]), lambda: render_sequence(cfg, 0),
                 lambda: generate(cfg, 2, tmp_path / "g", workers=1), lambda: estimate(cfg, 2, tmp_path / "e")):
        with pytest.raises(ConfigError, match=pattern):
            call()
    assert not (tmp_path / "g").exists() and not (tmp_path / "e").exists()
    ok = RenderConfig.from_dict({**cfg.to_dict(), "noise": {**cfg.to_dict()["noise"], "perlin_frequency": 0.3}})
    video, params = render(ok, [0])
    assert params["noise_ratio"][0] > 0


# ---------------------------------------------------------------------------------------------- 6. signals, writers
GENERATE = [sys.executable, "-m", "physvid", "generate", "-p", "all", "--n", "20000", "--size", "24", "--frames", "4",
            "--shard-size", "20", "--quiet"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


@POSIX
def test_repeated_sigterm_at_random_moments_stops_promptly_and_cleanly(tmp_path):
    """SIGTERM once, twice or three times, at random moments of a 2-worker run: every time the process exits within a
    bound, with exit code 143, one line, no temporary file and no leaked semaphore."""
    rng = random.Random(19)
    for round_ in range(3):
        out = tmp_path / f"ds{round_}"
        proc = subprocess.Popen([*GENERATE, "--workers", "2", "--out", str(out)], cwd=tmp_path, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(out, proc)  # the folder appears once the SIGTERM handler is in place
        time.sleep(rng.uniform(0.0, 1.5))
        signals = rng.choice([1, 2, 3])
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(rng.uniform(0.0, 0.2))
        start = time.monotonic()
        try:
            _, err = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"round {round_}: no exit within 45 s of {signals} SIGTERM(s): {err}")
        why = f"round {round_}, {signals} signal(s), {time.monotonic() - start:.1f} s: {err}"
        assert proc.returncode == 143, why
        assert err.strip().startswith("error: terminated; finished shards are kept") and err.count("\n") == 1, why
        assert "Traceback" not in err and "resource_tracker" not in err, why
        assert not list(out.glob("*.tmp")) and not (out / "manifest.json").exists(), why


@POSIX
def test_a_swallowed_sigterm_is_delivered_again_and_a_repeated_one_never_cuts_the_clean_up(capfd):
    """The hang seen under load: SIGTERM landed in a ctypes callback of numba's kernel loading, which reported it as
    "Exception ignored" and went on rendering. The handler delivers it again until it is seen (and the swallowed one is
    not printed); while the clean-up of a seen one runs, further SIGTERMs are ignored."""
    import ctypes

    from cli import Terminated, sigterm_as_interrupt

    def callback() -> None:  # C calls back into Python, which is where the signal is handled
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)

    c_callback = ctypes.CFUNCTYPE(None)(callback)
    before = signal.getsignal(signal.SIGTERM)
    seen, cleanup_done = None, False
    try:
        with pytest.raises(Terminated):
            with sigterm_as_interrupt(redeliver_every=0.2):
                c_callback()  # the Terminated raised in there is swallowed by ctypes
                start = time.monotonic()
                try:
                    time.sleep(10)
                except Terminated:
                    seen = time.monotonic() - start
                    for _ in range(3):  # a supervisor that keeps signalling while we clean up
                        os.kill(os.getpid(), signal.SIGTERM)
                        time.sleep(0.3)
                    cleanup_done = True
                    raise
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # on the way out: never the default action
    finally:
        signal.signal(signal.SIGTERM, before)
    assert seen is not None and seen < 3 and cleanup_done
    assert "Exception ignored" not in capfd.readouterr().err


STUCK = """
import gc, os, struct, sys, time
import multiprocessing as mp
import multiprocessing.queues
from concurrent.futures import ProcessPoolExecutor


def half_message(_):
    # Die mid-message: a header promising 1000 bytes of result, then 10 (what a worker killed while sending leaves).
    for obj in gc.get_objects():
        if isinstance(obj, multiprocessing.queues.SimpleQueue):
            os.write(obj._writer.fileno(), struct.pack("!i", 1000) + b"x" * 10)
    time.sleep(600)


if __name__ == "__main__":
    from physvid.dataset.pool import stop_pool

    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))
    futures = [pool.submit(half_message, i) for i in range(2)]
    while not all(f.running() for f in futures):
        time.sleep(0.05)
    time.sleep(1.0)
    start = time.monotonic()
    stop_pool(pool, grace=1.0)
    print(f"stopped in {time.monotonic() - start:.1f} s", flush=True)
"""


@POSIX
def test_stopping_the_workers_is_bounded_when_one_died_mid_message(tmp_path):
    """The suspected hang: a worker killed while sending its result leaves half a message, and the executor's thread
    waits for the rest forever (pool.shutdown(wait=True) then never returns, nor does the interpreter's exit)."""
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("stopped in"), res.stderr
    assert float(res.stdout.split()[2]) < 10, res.stdout


@POSIX
def test_readers_during_a_write_see_finished_shards_and_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "ds"
    n = 1200
    args = ["-p", "all", "--n", str(n), "--size", "24", "--frames", "4", "--shard-size", "20", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "physvid", "generate", *args, "--workers", "2", "--out", str(out)],
                            cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / ".physvid" / "plan.json", proc)
        # A second generate into the same folder, while the first writes: refused, and nothing of the first touched.
        one_line(invoke("generate", *args, "--workers", 1, "--out", out), 1,
                 r"is being written by another `physvid generate`")
        one_line(invoke("generate", *args, "--workers", 1, "--overwrite", "--out", out), 1,
                 r"is being written by another")
        seen: dict[str, str] = {}
        refused = 0
        while proc.poll() is None:
            try:
                open_dataset(out)  # the folder: refused until the manifest exists
            except DatasetError as exc:
                assert "still being written" in str(exc), str(exc)
                refused += 1
            for shard in sorted(out.glob("shard-*.h5")):  # every shard visible is finished: it reads in full
                if shard.name not in seen:
                    assert len(open_dataset(shard).read_video(range(20))) == 20
                    seen[shard.name] = sha256_file(shard)[0]
            time.sleep(0.02)
        assert proc.returncode == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    final = {s["file"]: s["sha256"] for s in manifest["shards"]}
    assert refused > 0 and seen, "the reader saw nothing of the write in progress"
    assert all(final[name] == sha for name, sha in seen.items())  # what readers saw is what the dataset holds
    assert len(open_dataset(out)) == n


@POSIX
def test_shard_range_jobs_write_side_by_side_but_never_beside_a_whole_run(tmp_path):
    from physvid.dataset.lock import lock_folder

    cfg = RenderConfig(property="all", height=16, width=16, frames=3)
    out = tmp_path / "ds"
    out.mkdir()
    held = lock_folder(out, exclusive=False)  # another --shard-range job at work
    try:
        generate(cfg, 6, out, shard_size=3, workers=1, shard_range=(0, 1))  # shared with it: fine
        with pytest.raises(DatasetError, match="is being written by another"):
            generate(cfg, 6, out, shard_size=3, workers=1)
    finally:
        held.release()
    generate(cfg, 6, out, shard_size=3, workers=1)
    assert len(open_dataset(out)) == 6
    held = lock_folder(out, exclusive=True)  # a complete dataset: a call that writes nothing needs no lock
    try:
        assert generate(cfg, 6, out, shard_size=3, workers=1).shards_written == 0
    finally:
        held.release()


@POSIX
def test_a_killed_training_with_dataloader_workers_resumes_to_identical_losses(trained, tmp_path, kill_9_when):
    epochs = 3
    args = ["train", "baseline", *TINY_CLI[:-6], "--model", "unet", "--epochs", str(epochs), "--steps-per-epoch", "2",
            "--workers", "2", "--real", str(trained["data"])]
    res = invoke(*args, "--out", tmp_path / "straight", app=stmoe_cli)
    assert res.exit_code == 0, res.output
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cli.stmoe_cmd", *args, "--out", str(killed)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.pt"
    kill_9_when(proc, last)
    assert last.exists(), proc.stderr.read().decode()
    assert 1 <= load_checkpoint(last)["epoch"] < epochs, "the kill must land mid-run"
    res = invoke(*args, "--out", killed, "--resume", app=stmoe_cli)
    assert res.exit_code == 0, res.output

    def losses(run: Path) -> list[tuple]:
        rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["epoch"], r["train_loss"], r["val_loss"]) for r in rows]

    assert losses(killed) == losses(tmp_path / "straight")
    assert [r[0] for r in losses(killed)] == list(range(1, epochs + 1))


# ---------------------------------------------------------------------------------------------- 4. refusals, exit codes
@pytest.mark.parametrize("case", ["export npy into a folder", "export mp4 onto a file", "export png onto a file",
                                  "preview onto a folder", "generate onto a file", "evaluate onto a folder",
                                  "predict onto a file", "prepare onto a file"])
def test_an_output_path_of_the_wrong_kind_is_a_usage_error(small, trained, tmp_path, case):
    """Every command that writes: an --out that is a folder where a file is written, or a file where a folder is, is
    exit 2 with one line, and nothing is written."""
    folder, file = tmp_path / "folder", tmp_path / "file"
    folder.mkdir()
    file.write_text("keep")
    ckpt, data = trained["best"], trained["data"]
    args = {"export npy into a folder": ("export", small, "--format", "npy", "--out", folder),
            "export mp4 onto a file": ("export", small, "--format", "mp4", "--out", file),
            "export png onto a file": ("export", small, "--format", "png", "--out", file),
            "preview onto a folder": ("preview", small, "--out", folder),
            "generate onto a file": ("generate", "-p", "all", "--n", 2, "--out", file)}
    stmoe = {"evaluate onto a folder": ("evaluate", "--checkpoint", ckpt, "--data", data, "--out", folder),
             "predict onto a file": ("predict", "--checkpoint", ckpt, "--data", data, "--out", file),
             "prepare onto a file": ("prepare", tmp_path, "--frames", 4, "--out", file)}
    res = invoke(*args[case]) if case in args else invoke(*stmoe[case], app=stmoe_cli)
    one_line(res, 2, r"folder|file|directory")
    assert list(folder.iterdir()) == [] and file.read_text() == "keep"


def test_a_run_larger_than_the_free_disk_is_refused_up_front(tmp_path, monkeypatch):
    import shutil

    from physvid.dataset import writer

    real = shutil.disk_usage
    monkeypatch.setattr(writer.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=300_000))  # room for 2 sequences (and a shard's headers), not 200
    one_line(invoke("generate", "-p", "all", "--size", 32, "--frames", 4, "--n", 200, "--workers", 1, "--quiet",
                    "--out", tmp_path / "ds"), 2,
             r"the \d+ shard\(s\) to write need about .* \(estimated from 16 sequences\), but .*ds has 300\.0 KB free")
    assert not (tmp_path / "ds").exists()
    res = invoke("generate", "-p", "all", "--size", 32, "--frames", 4, "--n", 2, "--workers", 1, "--quiet", "--out",
                 tmp_path / "ok")
    assert res.exit_code == 0, res.output
