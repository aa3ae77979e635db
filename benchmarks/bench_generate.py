"""End-to-end dataset generation: `physvid generate` vs rendering alone, for each compression, plus read speed.

Workload (issue 3): `--property all`, 10,000 sequences of 64x64x10, Gaussian + white + Perlin noise at ratio 0.26.
For each of gzip, lzf and none it times the real command (a subprocess: interpreter start, workers, rendering,
compression, checksums, manifest) and prints frames/s, the ratio to rendering alone (the same shards rendered by the
same number of spawned workers, nothing written, measured in this run), the bytes on disk, and how fast
`open_dataset` serves random and sequential reads in one process.

Targets on a 2-core machine: the whole dataset in <= 15 s with lzf and <= 30 s with gzip; random reads >= 5,000
sequences/s.

    python benchmarks/bench_generate.py                 # the issue's workload (a few minutes on 2 cores)
    python benchmarks/bench_generate.py --n 1000        # quicker
    python benchmarks/bench_generate.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout that was not pip-installed
import physvid as pv  # noqa: E402
from physvid.dataset.layout import shard_specs  # noqa: E402

TARGETS_2_CORES = {"lzf": 15.0, "gzip": 30.0}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="sequences (default 10,000)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--noise-ratio", type=float, default=0.26)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--compressions", default="gzip,lzf,none")
    ap.add_argument("--reads", type=int, default=5000, help="random reads timed per dataset")
    ap.add_argument("--root", type=Path, default=None, help="where the datasets go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the datasets")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return ap.parse_args(argv)


def workload(args) -> pv.RenderConfig:
    return pv.RenderConfig(property="all", height=args.size, width=args.size, frames=args.frames,
                           noise=pv.NoiseConfig(ratio=args.noise_ratio, gaussian=1.0, white=1.0, perlin=1.0))


def _render_shard(job):
    config, start, count = job
    pv.render(config, range(start, start + count))
    return count


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of every child it has waited for (workers, subprocesses)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def render_only(config: pv.RenderConfig, n: int, shard_size: int, workers: int) -> tuple[float, float]:
    """(wall, CPU) seconds to render every shard with `workers` spawned processes (start included), writing nothing."""
    jobs = [(config, s.first_index, s.count) for s in shard_specs(n, shard_size)]
    t0, c0 = time.perf_counter(), cpu_seconds()
    if min(workers, len(jobs)) <= 1:
        for job in jobs:
            _render_shard(job)
    else:
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            pool.map(_render_shard, jobs, chunksize=1)
    return time.perf_counter() - t0, cpu_seconds() - c0


def generate_command(args, compression: str, out: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "physvid", "generate", "--property", "all", "--n", str(args.n),
           "--size", str(args.size), "--frames", str(args.frames), "--noise-ratio", str(args.noise_ratio),
           "--noise-types", "gaussian,white,perlin", "--compression", compression, "--workers", str(args.workers),
           "--shard-size", str(args.shard_size), "--out", str(out), "--overwrite", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0, c0 = time.perf_counter(), cpu_seconds()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return time.perf_counter() - t0, cpu_seconds() - c0


def read_speed(path: Path, reads: int) -> tuple[float, float]:
    """(random reads/s, sequential reads/s) of `ds[i]` in one process."""
    ds = pv.open_dataset(path)
    idx = np.random.default_rng(0).integers(0, len(ds), reads)
    for i in range(0, len(ds), 97):  # open every shard (and load the reader's kernels) before the clock starts
        ds[int(i)]
    t0 = time.perf_counter()
    for i in idx:
        ds[int(i)]
    random_rate = reads / (time.perf_counter() - t0)
    m = min(len(ds), reads)
    t0 = time.perf_counter()
    for i in range(m):
        ds[i]
    seq_rate = m / (time.perf_counter() - t0)
    ds.close()
    return random_rate, seq_rate


def main(argv=None) -> None:
    args = parse_args(argv)
    config = workload(args)
    frames = args.n * args.frames
    root = args.root or Path(tempfile.mkdtemp(prefix="physvid-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; workers {args.workers}; "
          f"{args.n} sequences of {args.size}x{args.size}x{args.frames}, property all, noise ratio {args.noise_ratio} "
          f"(gaussian + white + perlin), shards of {args.shard_size}")
    pv.render(config, range(2))  # compile or load the kernels once, outside every clock
    t_render, c_render = render_only(config, args.n, args.shard_size, args.workers)
    print(f"render only:                {t_render:6.1f} s wall {frames / t_render:9,.0f} frames/s | "
          f"{c_render:6.1f} CPU s, {1e6 * c_render / frames:5.0f} CPU us/frame")
    rows = []
    for compression in args.compressions.split(","):
        out = root / compression
        t, c = generate_command(args, compression, out)
        size = sum(p.stat().st_size for p in out.glob("shard-*.h5"))
        rand, seq = read_speed(out, args.reads)
        target = TARGETS_2_CORES.get(compression)
        rows.append({"compression": compression, "seconds": t, "frames_per_s": frames / t, "cpu_seconds": c,
                     "ratio_to_render_only": t_render / t, "cpu_ratio_to_render_only": c_render / c, "bytes": size,
                     "bytes_per_sequence": size / args.n, "random_reads_per_s": rand, "sequential_reads_per_s": seq,
                     "target_s_2_cores": target})
        flag = "" if target is None else f"  [2-core target <= {target:.0f} s; CPU s / 2 = {c / 2:.1f}]"
        print(f"generate --compression {compression:<4}: {t:6.1f} s wall {frames / t:9,.0f} frames/s | "
              f"{c:6.1f} CPU s, {1e6 * c / frames:5.0f} CPU us/frame | {t_render / t:4.2f}x render-only speed (wall), "
              f"{c_render / c:4.2f}x (CPU) | {size / 1e6:7.1f} MB | reads {rand:7,.0f} random/s, "
              f"{seq:7,.0f} sequential/s{flag}")
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if not args.keep and args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"render_only_seconds": t_render, "render_only_cpu_seconds": c_render,
                                         "frames": frames, "workers": args.workers,
                                         "cpu_count": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
