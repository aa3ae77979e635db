"""Issue 12, what a new user meets first: the first run's compile, default shard sizes, the spawn guard."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from physvid.dataset import generate, write_dataset
from physvid.dataset.writer import default_shard_size

from test_dataset import TINY

REPO = Path(__file__).resolve().parents[1]


class SlowStart:
    """A source whose warm-up takes a while, like a first run compiling the numba kernels."""

    name = "slow-start"

    def warm_up(self, notice):
        time.sleep(1.3)  # past the 1 s after which a warm-up counts as compiling
        if notice is not None:
            notice("compiling")
        return 1.3

    def __call__(self, indices):
        return np.zeros((len(indices), 2, 1, 4, 4), np.uint8), {"x": np.asarray(indices, np.float64)}


def test_compile_time_is_reported_apart_from_the_rate(tmp_path):
    lines: list[str] = []
    summary = write_dataset(tmp_path / "ds", SlowStart(), 5, {}, workers=1, notice=lines.append)
    assert lines == ["compiling"]
    assert summary.compile_seconds == 1.3 and summary.seconds < 1.0  # the rate is not diluted by the compile
    assert "(+ 1.3 s compiling numba kernels)" in summary.describe()


def test_the_default_shard_size_keeps_small_jobs_in_one_shard_and_spreads_large_ones():
    assert default_shard_size(10) == default_shard_size(1000) == 1000  # one shard: no worker start-up
    assert default_shard_size(4000) == 250  # 16 shards: every core of a 16-core machine
    assert default_shard_size(1500) == 250 and default_shard_size(100_000) == 1000


def test_resuming_keeps_the_shard_size_of_the_folder(tmp_path):
    out = tmp_path / "ds"
    generate(TINY, 1200, out, shard_size=600, workers=1, shard_range=(0, 1))
    summary = generate(TINY, 1200, out, workers=1)  # default would be 250: the folder's 600 wins
    assert summary.shards_kept == 1 and summary.shards_written == 1


def unguarded_program(tmp_path) -> str:
    """A main program that starts worker processes without `if __name__ == "__main__":` (the cli.md mistake)."""
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import physvid as pv
        from physvid.errors import PhysvidError
        cfg = pv.RenderConfig(property="rotation", height=16, width=16, frames=2)
        try:
            pv.generate(cfg, 4, {str(tmp_path / 'ds')!r}, shard_size=2, workers=2)
        except PhysvidError as exc:
            print("error:", exc)
    """)


def test_a_script_without_the_main_guard_is_named_not_blamed_on_memory(tmp_path):
    script = tmp_path / "gen.py"
    script.write_text(unguarded_program(tmp_path))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert 'if __name__ == "__main__":' in run.stdout, run.stdout + run.stderr
    assert "memory" not in run.stdout + run.stderr


def test_a_program_read_from_a_pipe_is_named_not_blamed_on_memory(tmp_path):
    run = subprocess.run([sys.executable, "-"], input=unguarded_program(tmp_path), capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert "error: the main program was read from <stdin>" in run.stdout, run.stdout + run.stderr
    assert "memory" not in run.stdout + run.stderr and "Traceback" not in run.stderr


GUARD_CASES = {  # program text -> whether check_main_guard accepts it
    "check_main_guard()\n": False,
    'if __name__ == "__main__":\n    pass\ncheck_main_guard()\n': False,  # a guard, but not around the call
    '# if __name__ == "__main__": in a comment\ncheck_main_guard()\n': False,
    'if __name__ == "__main__":\n    check_main_guard()\n': True,
    "def main():\n    check_main_guard()\n\n\nif '__main__' == __name__:\n    main()\n": True,
}


@pytest.mark.parametrize("text", list(GUARD_CASES))
def test_the_spawn_guard_is_read_from_the_programs_syntax_not_its_text(tmp_path, text):
    """Issue 22: the check used to grep the script for "__main__", which a guard elsewhere (or a comment) satisfied
    while the call itself stayed unguarded; now the running top-level statement must sit in the guard's body."""
    import runpy

    from physvid.errors import ConfigError

    script = tmp_path / "prog.py"
    script.write_text("from physvid.dataset.pool import check_main_guard\n" + text)
    if GUARD_CASES[text]:
        runpy.run_path(str(script), run_name="__main__")
    else:
        with pytest.raises(ConfigError, match="put the calls under `if __name__ == \"__main__\":`"):
            runpy.run_path(str(script), run_name="__main__")


def test_usage_errors_are_one_line_with_the_error_prefix(capsys):
    import pytest

    from cli.physvid_cmd import main as physvid_main
    from cli.stmoe_cmd import main as stmoe_main

    for main, argv in ((physvid_main, ["generate", "-p", "rotation", "--n", "0"]), (physvid_main, ["generat"]),
                       (stmoe_main, ["train", "--bogus"])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert err.count("\n") == 1 and err.startswith("error: ") and "--help" in err, err
    with pytest.raises(SystemExit):
        physvid_main([])  # a bare command shows its help, not an error line
    shown = capsys.readouterr()
    assert "Usage: physvid" in shown.out + shown.err and "error:" not in shown.err


def test_index_option_help_shows_no_none_bound():
    from click.testing import CliRunner

    from cli.physvid_cmd import cli

    for command in ("preview", "export"):
        out = CliRunner().invoke(cli, [command, "--help"]).output
        assert "None" not in out, out


def test_metrics_refuse_frames_on_the_0_255_scale():
    import pytest

    from stmoe.metrics import MetricsError, evaluate_batch

    rng = np.random.default_rng(0)
    frames = rng.random((2, 3, 1, 8, 8))
    assert evaluate_batch(frames, frames)["mse"].max() == 0
    with pytest.raises(MetricsError, match=r"pred \(uint8\) has values 0\.\.25\d, outside \[0, 1\]"):
        evaluate_batch((frames * 255).astype(np.uint8), frames)
    with pytest.raises(MetricsError, match=r"target \(float64\) has values .*outside \[0, 1\]"):
        evaluate_batch(frames, frames * 255)
    evaluate_batch(frames * 1.1 - 0.05, frames)  # a model's unclamped overshoot is still scored


def test_export_then_load_round_trips_the_default_layout(tmp_path):
    import pytest

    from physvid.dataset import export_dataset, open_dataset
    from stmoe.data import load_clips
    from stmoe.data.errors import DataError

    from physvid import RenderConfig

    cfg = RenderConfig(property="rotation", height=16, width=16, frames=20)
    generate(cfg, 8, tmp_path / "ds", workers=1)  # 8 sequences of 20 frames: (T, N, H, W) = (20, 8, 16, 16)
    npy = export_dataset(tmp_path / "ds", "npy")[0]
    clips = load_clips(npy, clip_length=None, size=16)
    with open_dataset(tmp_path / "ds") as ds:
        np.testing.assert_array_equal(clips, ds.read_video(list(range(8))))
    npy.with_name(npy.name + ".json").unlink()  # a bare 4-D array: refused, not guessed
    with pytest.raises(DataError, match="pass layout"):
        load_clips(npy, clip_length=None, size=16)


def test_prepare_chooses_an_npz_array_and_takes_the_layout_in_any_case(tmp_path):
    from click.testing import CliRunner

    from cli.stmoe_cmd import cli

    a = np.zeros((2, 4, 8, 8), np.uint8)
    np.savez(tmp_path / "two.npz", a=a, b=a + 7)
    result = CliRunner().invoke(cli, ["prepare", str(tmp_path / "two.npz"), "--array-key", "b", "--layout", "nthw",
                                      "--frames", "4", "--size", "8", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    from physvid.dataset import open_dataset

    with open_dataset(tmp_path / "p") as ds:
        assert len(ds) == 2 and int(ds[0].max()) == 7


def test_stmoe_help_lists_only_the_data_options_a_stage_reads_and_both_stage_spellings():
    from click.testing import CliRunner

    from cli.stmoe_cmd import cli

    def help_of(*args):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, result.output
        return result.output

    assert "--synthetic" not in help_of("train", "gating") and "--real" in help_of("train", "gating")
    assert "--real" not in help_of("train", "experts") and "--all" in help_of("train", "decoder")
    assert all(o in help_of("pipeline") for o in ("--synthetic", "--real", "--all"))
    assert "OUT/<stage>/checkpoints/last.pt" in help_of("pipeline")
    assert "end_to_end" in help_of("train", "end_to_end")  # the config's spelling runs the command
    for spelling in ("end-to-end", "end_to_end"):
        result = CliRunner().invoke(cli, ["config", "--preset", "tiny", "--stage", spelling])
        assert result.exit_code == 0 and "model:" in result.output, result.output


def test_evaluate_says_it_crops_and_reports_on_rank_0_only(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli.stmoe_cmd import cli
    from physvid import RenderConfig

    generate(RenderConfig(property="translation", height=32, width=32, frames=8), 16, tmp_path / "d", workers=1)
    tiny = ["--preset", "tiny", "--set", "model.height=16", "--set", "model.width=16", "--set", "model.num_hidden=8",
            "-n", "3", "-b", "4", "--threads", "1", "--epochs", "1", "--steps-per-epoch", "1"]
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "baseline", *tiny, "--model", "unet", "--real", str(tmp_path / "d"),
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    evaluate = ["evaluate", "--checkpoint", str(tmp_path / "b" / "checkpoints" / "best.pt"), "--data",
                str(tmp_path / "d"), "--metrics", "mse", "--out", str(tmp_path / "m.json")]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(cli, evaluate)
    assert result.exit_code == 0 and result.output == "" and not (tmp_path / "m.json").exists(), result.output
    monkeypatch.setenv("RANK", "0")
    result = runner.invoke(cli, evaluate)
    assert result.exit_code == 0, result.output
    assert "note:" in result.output and "32x32 frames: the 16x16 model is scored on their centre 16x16 crop" in \
        result.output and "mse" in result.output


def _variable_frame_rate_video(path: Path) -> Path:
    """10 frames of levels 0, 20, ..., 180 at irregular timestamps (ms): what a phone or screen recorder writes."""
    import fractions

    import pytest

    av = pytest.importorskip("av")
    ms = fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = ms
        for k, pts in enumerate([0, 40, 80, 400, 440, 1200, 1240, 1280, 1800, 2000]):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, ms
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_both_video_backends_give_the_stored_frames_of_a_variable_frame_rate_video(tmp_path):
    import pytest

    from stmoe.data import load_clips
    from stmoe.data.prepare import prepare_dataset

    pytest.importorskip("imageio_ffmpeg")
    video = _variable_frame_rate_video(tmp_path / "vfr.mp4")
    by_backend = {b: load_clips(video, clip_length=None, size=32, video_backend=b) for b in ("av", "ffmpeg")}
    for clips in by_backend.values():
        assert clips.shape == (1, 10, 1, 32, 32)  # no gap padded with repeated frames
        levels = clips[0, :, 0, 16, 16].astype(int)
        assert np.abs(levels - 20 * np.arange(10)).max() <= 3  # H.264 rounding
    assert np.abs(by_backend["av"].astype(int) - by_backend["ffmpeg"].astype(int)).max() <= 2
    prepare_dataset(video, tmp_path / "p", clip_length=5, size=32)
    from physvid.dataset import open_dataset

    with open_dataset(tmp_path / "p") as ds:
        (entry,) = ds.config["videos"]
    assert entry["backend"] == "pyav" and entry["frames_decoded"] == 10 and "path" not in entry
    # the receiver's view: the file's name and checksum, never the path as typed on the sender's machine
    assert entry["name"] == "vfr.mp4" and entry["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()


def test_the_tiny_script_puts_a_relative_work_folder_under_the_callers_folder(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PHYSVID": "true", "STMOE": "true"}  # the commands themselves: tests/test_train*
    run = subprocess.run(["bash", str(REPO / "scripts" / "tiny_end_to_end.sh"), "work"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "work" / "data").is_dir() and not (REPO / "work").exists()


def test_the_compile_notice_comes_only_when_numba_compiles_with_its_time(monkeypatch):
    """Issue 18: a slow load of cached kernels (a loaded machine) is not a compile; a real compile says so, timed."""
    import numba

    pr = sys.modules["physvid.render"]  # `physvid.render` the attribute is the function of that module

    lines: list[str] = []
    monkeypatch.setattr(pr, "render", lambda config, indices: time.sleep(1.3))  # slow, compiles nothing
    assert pr.compile_kernels(TINY, lines.append) == 0.0 and lines == []

    def compiles(config, indices):
        @numba.njit  # a new function: numba compiles it on this first call (no cache)
        def f(x):
            return x + 1

        f(1)

    monkeypatch.setattr(pr, "render", compiles)
    seconds = pr.compile_kernels(TINY, lines.append)
    assert seconds > 0 and len(lines) == 2
    assert lines[0].startswith("compiling the numba kernels") and f"in {seconds:.1f} s" in lines[1]


def test_the_dry_run_counts_cores_not_workers_and_times_its_sample_several_times(tmp_path):
    """Issue 18: 16 workers on 2 cores are not 8x faster than 2; one timing varied by a third from run to run."""
    from physvid.dataset import estimate
    from physvid.dataset.writer import usable_cores

    cores = usable_cores()
    est = estimate(TINY, 40, tmp_path / "x", shard_size=1, workers=cores * 8, sample=4)
    assert est.workers == min(40, cores * 8) and len(est.timings) == 3
    assert est.estimated_seconds == pytest.approx(sorted(est.timings)[1] * 40 / cores)
    assert any(f"{est.workers} worker processes on {cores} core(s)" in n for n in est.notes)
    assert "median of 3 timings" in est.describe() and "each alone" in est.describe()
    assert not (tmp_path / "x").exists()
