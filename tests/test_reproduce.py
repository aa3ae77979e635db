"""`stmoe reproduce`: every experiment of paper §4 runs at the smoke profile, resumes after a kill, refuses bad input.

The smoke profile trains for two steps per stage: these tests check structure (rows, tables beside the paper's
numbers, figures, shared runs, resume), never conclusions. They need the MNIST digits (and for `real` the clips) of
../shared/data and skip with the reason when they are absent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from stmoe.reproduce import ALL, PROFILES, ReproduceError, experiment_rows, reproduce
from stmoe.reproduce.runner import default_data_root, machine, time_split

DATA = default_data_root()
needs_data = pytest.mark.skipif(not (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason=f"needs the MNIST test digits in {DATA} (third-party data, see README)")


@pytest.fixture(scope="module")
def smoke_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "all"
    if not DATA.is_dir():
        pytest.skip(f"needs ../shared/data ({DATA})")
    results = reproduce("all", "smoke", out, log=lambda m: None)
    return out, results


@needs_data
@pytest.mark.parametrize("name", ALL)
def test_every_experiment_writes_its_table_and_figures(smoke_all, name):
    out, results = smoke_all
    rows = experiment_rows(name, PROFILES["smoke"])
    res = json.loads((out / name / "results.json").read_text())
    trained = [r for r in res["rows"] if r["kind"] != "reference"]
    assert [r["row"] for r in trained] == [r.label for r in rows]
    # one copy-last-frame reference per test set, and each trained row names the recipe chosen on validation
    assert sorted(r["real"] for r in res["rows"] if r["kind"] == "reference") == sorted({r.real for r in rows})
    assert all(r["recipe"]["name"] in [t["recipe"] for t in r["search"]] for r in trained)
    table = (out / name / "table.md").read_text()
    assert "| copy last frame |" in table and "Recipe search (seed 0)" in table
    for r in rows:
        assert f"| {r.label} |" in table
        for value in r.paper.values():  # the paper's numbers stand beside ours
            assert f"{value:g}" in table or f"{value:.3f}" in table
    assert "profile `smoke`" in table.lower() or "Profile `smoke`" in table
    search = table.split("Recipe search (seed 0)")[1]
    if len({r.real for r in rows}) > 1:  # `real`: one search line per row and data set, so the set is named
        for r in rows:
            assert f"| {r.label} | {r.real} |" in search
    for fig in res["figures"]:
        assert (out / name / fig).stat().st_size > 1000
    assert res["figures"], f"{name} drew no figure"
    for r in res["rows"]:
        assert r["stats"]["mse"][0] >= 0 and -1 <= r["stats"]["ssim"][0] <= 1
    if name == "table1":
        aligned = [r for r in res["rows"] if r["alignment"]]
        assert {r["model"] for r in aligned} == {"stmoe-id", "stmoe-conv"}
        assert "Attention alignment" in table and (out / name / "attention.png").is_file()


@needs_data
def test_rows_share_trained_networks_across_experiments(smoke_all):
    """table5's two-step row is table1's STMoE-Id: one local stage and one global stage serve both."""
    out, results = smoke_all
    t1 = {r["row"]: r for r in results["table1"]["rows"]}
    t5 = {r["row"]: r for r in results["table5"]["rows"]}
    assert t5["STMoE w/ local and global optimisation"]["checkpoint"] == t1["STMoE-Id"]["checkpoint"]
    # datasize's rows at the profile's own size are table1's rows, trained once (smoke: 8 training sequences)
    ds = {r["row"]: r for r in results["datasize"]["rows"]}
    for model in ("STMoE-Id", "MIM", "MIM w/ D^all"):
        assert ds[f"{model}, 8 seq."]["checkpoint"] == t1[model]["checkpoint"]
        assert ds[f"{model}, 4 seq."]["checkpoint"] != t1[model]["checkpoint"]
    assert not list((out / "rows").glob("*-n8-s0.json"))
    locals_ = sorted(p.name for p in (out / "runs").iterdir() if p.name.startswith("local-"))
    assert locals_ == ["local-stmoe-conv-noise0-s0", "local-stmoe-conv-noise0.26-s0", "local-stmoe-conv-noise0.7-s0",
                       "local-stmoe-id-noise0.26-s0"]
    # every recipe of an STMoE row reuses the same experts; the physvid-gate recipe's gating stage learns from the
    # property maps of physvid `mixed` clips instead of the real data
    for model in ("stmoe-id", "stmoe-conv"):
        plain, gate = (json.loads((out / "runs" / f"stmoe-{model}-dynamic-mnist-noise0.26-{recipe}-s0" / "gating" /
                                   "metrics.jsonl").read_text().splitlines()[-1]) for recipe in ("paper", "physvid-gate"))
        assert "train_gate_target" in gate and "train_gate_target" not in plain


@needs_data
def test_recipes_are_chosen_on_validation_by_seed_0_and_reused(smoke_all, tmp_path):
    """Seed 0 trains every candidate and keeps the lowest validation MSE; seed 1 trains only that recipe."""
    out = tmp_path / "t5"
    reproduce("table5", "smoke", out, seeds=2, log=lambda m: None)
    for key in ("stmoe-stmoe-id-dynamic-mnist-noise0.26", "end_to_end-stmoe-id-dynamic-mnist"):
        first, second = (json.loads((out / "rows" / f"{key}-s{s}.json").read_text()) for s in (0, 1))
        tried = {t["recipe"]: t["val_mse"] for t in first["search"]}
        assert len(tried) == PROFILES["smoke"].search and first["recipe"]["name"] == min(tried, key=tried.get)
        assert [t["recipe"] for t in second["search"]] == [first["recipe"]["name"]]
        assert first["copy_last_frame"]["mean"] == second["copy_last_frame"]["mean"]


@needs_data
def test_a_killed_reproduction_resumes_and_gives_the_same_table(smoke_all, tmp_path):
    class Killed(Exception):
        pass

    seen = []

    def kill(message):
        seen.append(message)
        if message.startswith("train:") and "expert-1" in message:
            raise Killed()

    out = tmp_path / "t5"
    with pytest.raises(Killed):
        reproduce("table5", "smoke", out, log=kill)
    first = out / "runs" / "local-stmoe-id-noise0.26-s0" / "experts" / "expert-0" / "result.json"
    stamp = first.stat().st_mtime_ns
    with pytest.raises(ReproduceError, match="--resume"):
        reproduce("table5", "smoke", out, log=lambda m: None)
    with pytest.raises(ReproduceError, match="holds the reproduction 'table5'"):
        reproduce("table6", "smoke", out, resume=True, log=lambda m: None)  # another experiment: refused
    again = []
    reproduce("table5", "smoke", out, resume=True, log=again.append)
    assert first.stat().st_mtime_ns == stamp  # finished work is kept, not redone
    assert not any("expert-0" in m for m in again)
    ours = json.loads((out / "table5" / "results.json").read_text())["rows"]
    straight = smoke_all[1]["table5"]["rows"]
    assert [list(r["stats"]["mse"]) for r in ours] == [list(r["stats"]["mse"]) for r in straight]  # same as one run
    more = []  # --resume with a list that includes the folder's experiment extends it, reusing its trained networks
    reproduce("table5,table6", "smoke", out, resume=True, log=more.append)
    assert not any("experts/expert-" in m for m in more)
    assert json.loads((out / "reproduce.json").read_text())["experiment"] == "table5,table6"


@needs_data
def test_worker_processes_give_the_same_numbers_as_one_process(smoke_all, tmp_path, capfd):
    """--jobs 2 trains independent rows in two spawned processes (one CPU thread each): same table. The STMoE-Id rows
    of every data size share one local stage: trained once, before them (workers log to stderr)."""
    logged = []
    res = reproduce("datasize", "smoke", tmp_path / "ds", jobs=2, log=logged.append)
    assert any("worker processes" in m for m in logged)
    err = capfd.readouterr().err
    assert err.count("train: runs/local-stmoe-id-noise0.26-s0/experts/expert-0") == 1
    assert err.count("train: runs/synthetic-mim-noise0.26-s0/pretrain") == 1
    ours = {r["row"]: list(r["stats"]["mse"]) for r in res["datasize"]["rows"]}
    straight = {r["row"]: list(r["stats"]["mse"]) for r in smoke_all[1]["datasize"]["rows"]}
    assert ours == straight


def test_rows_that_share_a_local_stage_train_side_by_side_after_it():
    """The scheduler of --jobs: a shared stage runs before the rows that need it, those rows then run at the same
    time (a barrier only both can pass), never more than `jobs` at once, and a failure stops new starts."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from stmoe.reproduce.runner import _dispatch

    log, lock, running = [], threading.Lock(), [0]
    both = threading.Barrier(2, timeout=20)

    def task(key):
        with lock:
            running[0] += 1
            log.append(("start", key, running[0]))
        if key in ("row-a", "row-b"):
            both.wait()  # raises BrokenBarrierError unless the other row runs at the same time
        if key == "boom":
            raise ValueError("boom")
        with lock:
            running[0] -= 1
            log.append(("end", key, running[0]))

    plan = [("baseline", None, 1.0), ("row-a", "local", 6.0), ("row-b", "local", 6.0), ("local", None, 0.0)]
    with ThreadPoolExecutor(4) as pool:
        _dispatch(plan, 2, lambda key: pool.submit(task, key))
    starts = [k for event, k, _ in log if event == "start"]
    assert starts[0] == "local"  # needed by others: first, although listed last and the lightest
    events = [e[:2] for e in log]
    assert min(events.index(("start", "row-a")), events.index(("start", "row-b"))) > events.index(("end", "local"))
    assert max(n for event, _, n in log if event == "start") <= 2
    assert sorted(starts) == ["baseline", "local", "row-a", "row-b"]

    log.clear()
    with ThreadPoolExecutor(4) as pool, pytest.raises(ValueError, match="boom"):
        _dispatch([("boom", None, 1.0), ("after", "boom", 1.0)], 2, lambda key: pool.submit(task, key))
    assert [k for event, k, _ in log if event == "start"] == ["boom"]


def test_a_worker_stops_when_its_parent_dies(tmp_path):
    """kill -9 of `stmoe reproduce` must not leave workers training into the folder."""
    import subprocess
    import sys
    import time

    code = ("import os, time, multiprocessing as mp\n"
            "from stmoe.reproduce.runner import _exit_with_parent\n"
            "def child(parent, path):\n"
            "    _exit_with_parent(parent)\n"
            "    open(path, 'w').write(str(os.getpid()))\n"
            "    time.sleep(300)\n"
            "if __name__ == '__main__':\n"
            "    p = mp.get_context('spawn').Process(target=child, args=(os.getpid(), %r))\n"
            "    p.start(); time.sleep(300)\n") % str(tmp_path / "pid")
    script = tmp_path / "parent.py"  # spawn re-imports the main module: it must be a file
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script)])
    for _ in range(3000):  # a spawned child re-imports torch: slow on a loaded 2-core machine
        if (tmp_path / "pid").is_file() and (tmp_path / "pid").read_text():
            break
        time.sleep(0.1)
    child = int((tmp_path / "pid").read_text())
    parent.kill()
    parent.wait()
    for _ in range(100):  # the watcher polls every 2 s
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, 9)
    raise AssertionError("the worker outlived its killed parent")


@pytest.mark.parametrize("args, needle", [
    (["tableX", "--out", "{tmp}/a"], "unknown experiment 'tableX'; allowed: table1"),
    (["table1", "--profile", "huge", "--out", "{tmp}/a"], "unknown profile 'huge'; allowed: smoke, cpu, gpu, paper"),
    (["real", "--profile", "smoke", "--out", "{tmp}/a", "--data-root", "{tmp}/nowhere"], "needs the third-party"),
    (["table1", "--profile", "smoke", "--out", "{tmp}/a", "--seeds", "0"], "--seeds must be an integer >= 1"),
    (["table1", "--profile", "smoke", "--out", "{tmp}/a", "--jobs", "0"], "--jobs must be an integer in [1, 64]"),
    (["table5", "--profile", "smoke", "--out", "{tmp}/held"], "holds the reproduction 'table1'"),
    (["table1", "--profile", "smoke", "--out", "{tmp}/full"], "not empty and holds no reproduction"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    from physvid_cli.stmoe_cmd import cli

    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "reproduce.json").write_text(json.dumps({"experiment": "table1", "profile": "smoke"}))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    res = CliRunner().invoke(cli, ["reproduce", *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output
    assert not (tmp_path / "a").exists()  # nothing half-written


def test_time_split_keeps_test_frames_out_of_training_clips():
    """Clips of 10 frames every `stride` frames: no test clip shares a frame with a training or validation clip."""
    for n, stride in ((185, 4), (39, 1), (61, 4)):
        s = time_split(n, stride)
        frames = lambda a, b: set(range(a * stride, (b - 1) * stride + 10))  # noqa: E731
        test = frames(*s["test_range"])
        assert not test & frames(*s["train_range"]) and not test & frames(*s["val_range"])
        assert not frames(*s["val_range"]) & frames(*s["train_range"])
        assert s["train_range"][1] > s["train_range"][0]
    with pytest.raises(ReproduceError, match="too few"):
        time_split(12, 1)


def test_profiles_fit_their_budgets():
    """cpu: a 32x32 table1 with 2-layer experts (the issue's 45 minutes on 2 cores); paper: the paper's setting."""
    cpu, paper = PROFILES["cpu"], PROFILES["paper"]
    assert (cpu.size, cpu.num_layers, cpu.n_train, cpu.n_test) == (32, 2, 250, 200)
    assert (paper.size, paper.patch_size, paper.num_layers, paper.num_hidden, paper.filter_size) == (128, 4, 4, 128, 5)
    assert Path(default_data_root()).name == "data"


@needs_data
def test_gpu_options_and_a_budget_override_reach_every_stage(tmp_path):
    """--steps-scale scales the profile's steps (and is recorded with the folder); --compile, --loader-workers and
    --checkpoint-minutes reach every stage's config without changing what is trained."""
    import dataclasses

    from stmoe.reproduce.runner import Data, RowRunner
    from stmoe.reproduce.spec import TABLE1

    prof = dataclasses.replace(PROFILES["smoke"], real_steps=8, syn_steps=4)
    log = lambda m: None  # noqa: E731
    runner = RowRunner(tmp_path, prof, Data(tmp_path / "data", prof, DATA, log), log,
                       {"compile": True, "loader_workers": 2, "checkpoint_minutes": 5.0})
    cfg = runner.config(TABLE1[-1], 0)  # STMoE-conv: every stage
    for stage in ("decoder", "experts", "gating", "global"):
        tc = cfg.stage(stage)
        assert tc.run.compile and tc.data.num_workers == 2 and tc.run.checkpoint_minutes == 5.0
    plain = RowRunner(tmp_path, PROFILES["smoke"], Data(tmp_path / "data", prof, DATA, log), log).config(TABLE1[-1], 0)
    assert not plain.stage("global").run.compile and plain.stage("global").run.checkpoint_minutes == 0
    with pytest.raises(ReproduceError, match="--steps-scale must be a number in"):
        reproduce("table1", "smoke", tmp_path / "x", steps_scale=0)


@needs_data
def test_rows_taken_from_an_earlier_reproduction_are_not_retrained(smoke_all, tmp_path):
    """--rows-from: a reproduction continues elsewhere from another folder's finished row records (same profile
    settings): nothing is retrained, the table has the same numbers, and each row keeps its machine."""
    out, results = smoke_all
    logged = []
    res = reproduce("table5", "smoke", tmp_path / "t5", rows_from=out / "rows", log=logged.append)["table5"]
    assert not any(m.startswith("train:") for m in logged)
    assert sum("taken from" in m for m in logged) == len(experiment_rows("table5", PROFILES["smoke"]))
    assert [list(r["stats"]["mse"]) for r in res["rows"]] == [list(r["stats"]["mse"])
                                                              for r in results["table5"]["rows"]]
    first = json.loads((out / "rows" / "stmoe-stmoe-id-dynamic-mnist-noise0.26-s0.json").read_text())
    assert first["machine"] in res["machines"] and first["profile_settings"]["name"] == "smoke"
    # a record made with other profile settings is retrained, never mixed into the table
    other = tmp_path / "other"
    other.mkdir()
    for src in (out / "rows").glob("*-s0.json"):
        rec = json.loads(src.read_text())
        rec["profile_settings"]["real_steps"] += 1
        (other / src.name).write_text(json.dumps(rec))
    again = []
    reproduce("table5", "smoke", tmp_path / "t5b", rows_from=other, log=again.append)
    assert any(m.startswith("train:") for m in again) and any("other profile settings" in m for m in again)
    with pytest.raises(ReproduceError, match="--rows-from"):
        reproduce("table5", "smoke", tmp_path / "t5c", rows_from=tmp_path / "missing", log=lambda m: None)


def test_machine_names_what_decides_the_floats():
    """Two VMs both called "AMD EPYC" gave different Table 1 numbers: the record names the CPU generation (family and
    model) and torch's CPU kernel set, which decide the rounding, beside the versions."""
    import torch

    text = machine()
    assert f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels)" in text
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "cpu family" in cpuinfo.read_text():
        assert "(family " in text and " model " in text
