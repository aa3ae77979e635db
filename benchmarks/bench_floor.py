"""The writer against its floor (issue 22): how close `generate` comes to the cost of the steps it cannot avoid.

The floor of a dataset is measured by pushing the same bytes through each unavoidable step alone, in the same process
and run as the writer: render (the same batches of the same shards), zlib level 1 of every chunk (one sequence of the
video and of each per-frame array, and each shard's table of small parameters), HDF5 `write_direct_chunk` of those
compressed chunks into an in-memory file and getting its image, writing the image to a file (no fsync), and sha256 of
the image. floor = the sum; the writer = `generate(..., workers=1)` of the same dataset in the same process, kernels
already loaded (so neither side pays process start or compiling). ratio = floor / writer (1.0: the writer adds
nothing to its steps).

Every time is CPU time of this process (time.process_time: user + system, all threads), not wall time: on a shared
machine the wall clock also counts the time other processes held the cores, which no ratio of two runs cancels. The
writer's "shards" is the CPU time of its shard-writing call (`run_tasks`: the shards and their records, what
`Summary.seconds` times on the wall clock), "call" the whole `generate`.

Also printed, not part of the floor: fletcher32 of every chunk and fsync (what the format and the crash safety add),
and, when the `deflate` package (libdeflate) is installed, the same chunks compressed with libdeflate level 1 (size
and time beside zlib's: the bytes differ, see docs/benchmarks.md for the decision).

Jobs: `readme` is the README's job `physvid generate --property rotation` (noise-free 64x64x10; --n sequences in the
default shards); `noisy-all` is `--property all --noise-ratio 0.26` with Gaussian + white + Perlin noise.

    python benchmarks/bench_floor.py                                  # this checkout, --n 2000 (a few minutes)
    python benchmarks/bench_floor.py --n 10000                        # the issue's 10k job
    python benchmarks/bench_floor.py --roots /work/main,/work/wt-22   # before/after in one run: each checkout's
                                                                      # code in its own process, alternately
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve()
JOBS = ("readme", "noisy-all")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="sequences per job (default 2,000; the issue's job is 10,000)")
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma list of {', '.join(JOBS)}")
    ap.add_argument("--repeats", type=int, default=2, help="rounds (each checkout once per round, in its own process); the best counts")
    ap.add_argument("--roots", default=None,
                    help="comma list of checkouts to compare (each one's physvid in its own process); default: this one")
    ap.add_argument("--root-dir", type=Path, default=None, help="where the datasets go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def job_config(job: str):
    import physvid as pv

    if job == "readme":
        return pv.RenderConfig(property="rotation")
    if job == "noisy-all":
        return pv.RenderConfig(property="all", noise=pv.NoiseConfig(ratio=0.26, gaussian=1.0, white=1.0, perlin=1.0))
    raise SystemExit(f"unknown job {job!r}; choose from {', '.join(JOBS)}")


def floor(config, n: int, folder: Path) -> dict:
    """Seconds of each unavoidable step for the shards `generate` would write, and bytes (module docstring)."""
    import h5py
    import numpy as np

    from physvid.dataset.chunks import fletcher32
    from physvid.dataset.layout import filter_options, shard_specs
    from physvid.dataset.schema import TOP_LEVEL
    from physvid.dataset.writer import BATCH, RenderSource, default_shard_size

    try:
        import deflate
    except ImportError:
        deflate = None
    source = RenderSource(config)
    t = {k: 0.0 for k in ("render", "zlib1", "direct_write", "file_write", "sha256", "fletcher32", "fsync",
                          "libdeflate1")}
    size = {"zlib1": 0, "libdeflate1": 0, "raw": 0}
    clock = time.process_time
    for spec in shard_specs(n, default_shard_size(n)):
        rows: dict[str, list] = {}
        tables: dict[str, list] = {}
        for a in range(spec.first_index, spec.first_index + spec.count, BATCH):
            b = min(a + BATCH, spec.first_index + spec.count)
            t0 = clock()
            video, params = source(np.arange(a, b, dtype=np.int64))
            t["render"] += clock() - t0
            for name, arr in (("video", video), *((k, v) for k, v in params.items() if k in TOP_LEVEL)):
                rows.setdefault(name, []).extend(np.ascontiguousarray(arr[r]) for r in range(b - a))
            for k, v in params.items():
                if k not in TOP_LEVEL:
                    tables.setdefault(k, []).append(v)
        chunks = {name: [r.reshape(-1).view(np.uint8) for r in rs] for name, rs in rows.items()}
        blobs = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in tables.items()}
        every = [c for cs in chunks.values() for c in cs] + [b.reshape(-1).view(np.uint8) for b in blobs.values()]
        size["raw"] += sum(c.nbytes for c in every)
        t0 = clock()
        packed = [zlib.compress(c, 1) for c in every]
        t["zlib1"] += clock() - t0
        size["zlib1"] += sum(map(len, packed))
        if deflate is not None:
            t0 = clock()
            size["libdeflate1"] += sum(len(deflate.zlib_compress(c, 1)) for c in every)
            t["libdeflate1"] += clock() - t0
        t0 = clock()
        for p in packed:
            fletcher32(np.frombuffer(p, np.uint8))
        t["fletcher32"] += clock() - t0
        opts = filter_options("gzip")
        with h5py.File(f"floor-{spec.shard}", "w", driver="core", backing_store=False, block_size=1 << 22,
                       libver="earliest") as f:
            dsets = {}
            for name, rs in rows.items():
                dsets[name] = f.create_dataset(name, (spec.count,) + rs[0].shape, rs[0].dtype,
                                               chunks=(1,) + rs[0].shape, **opts)
            for k, blob in blobs.items():
                dsets[k] = f.create_dataset(f"params/{k}", blob.shape, blob.dtype, chunks=blob.shape, **opts)
            it = iter(packed)
            t0 = clock()
            for name, rs in rows.items():
                tail = (0,) * rs[0].ndim
                for j in range(len(rs)):
                    dsets[name].id.write_direct_chunk((j,) + tail, next(it))
            for k, blob in blobs.items():
                dsets[k].id.write_direct_chunk((0,) * blob.ndim, next(it))
            f.flush()
            image = f.id.get_file_image()
            t["direct_write"] += clock() - t0
        path = folder / f"floor-{spec.shard}.h5"
        t0 = clock()
        with open(path, "wb") as fh:
            fh.write(image)
            t["file_write"] += clock() - t0
            t0 = clock()
            os.fsync(fh.fileno())
            t["fsync"] += clock() - t0
        path.unlink()
        t0 = clock()
        hashlib.sha256(image).hexdigest()
        t["sha256"] += clock() - t0
    t["floor"] = sum(t[k] for k in ("render", "zlib1", "direct_write", "file_write", "sha256"))
    return {"seconds": t, "bytes": size}


def writer(config, n: int, folder: Path) -> dict:
    """CPU seconds of `generate(..., workers=1)`: the whole call, and its shard-writing call alone (`run_tasks`,
    wrapped here; a checkout without it: Summary.seconds, wall time)."""
    from physvid.dataset import generate
    from physvid.dataset import writer as writer_mod

    out = folder / "ds"
    shutil.rmtree(out, ignore_errors=True)
    run_tasks = getattr(writer_mod, "run_tasks", None)
    shards = []

    def timed(*args, **kwargs):
        t0 = time.process_time()
        try:
            return run_tasks(*args, **kwargs)
        finally:
            shards.append(time.process_time() - t0)

    if run_tasks is not None:
        writer_mod.run_tasks = timed
    try:
        w0, t0 = time.perf_counter(), time.process_time()
        summary = generate(config, n, out, workers=1)
        call, wall = time.process_time() - t0, time.perf_counter() - w0
    finally:
        if run_tasks is not None:
            writer_mod.run_tasks = run_tasks
    disk = sum(p.stat().st_size for p in out.glob("shard-*.h5"))
    shutil.rmtree(out, ignore_errors=True)
    return {"call": call, "shards": sum(shards) if shards else summary.seconds, "bytes": disk,
            "wall": {"call": wall, "shards": summary.seconds}}


def child(args) -> None:
    """Measure this process's physvid (PYTHONPATH) and print one JSON line."""
    import physvid

    from physvid.dataset.writer import RenderSource

    results = {"physvid": physvid.__file__, "jobs": {}}
    base = Path(tempfile.mkdtemp(prefix="bench-floor-", dir=args.root_dir))
    try:
        for job in args.jobs.split(","):
            config = job_config(job)
            RenderSource(config).warm_up(None)  # kernels loaded before any clock starts
            runs = []
            for _ in range(args.repeats):
                runs.append({"floor": floor(config, args.n, base), "writer": writer(config, args.n, base)})
            results["jobs"][job] = runs
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results))


def best(runs: list[dict]) -> dict:
    """The fastest floor and the fastest writer of the repeats (a shared machine only ever slows a run down)."""
    fl = min((r["floor"] for r in runs), key=lambda f: f["seconds"]["floor"])
    wr = min((r["writer"] for r in runs), key=lambda w: w["shards"])
    return {"floor": fl, "writer": wr}


def report(root: str, results: dict, n: int) -> None:
    print(f"\n== {root} ({results['physvid']}), n = {n}")
    for job, runs in results["jobs"].items():
        b = best(runs)
        s, sz, w = b["floor"]["seconds"], b["floor"]["bytes"], b["writer"]
        steps = ", ".join(f"{k} {s[k]:.2f}" for k in ("render", "zlib1", "direct_write", "file_write", "sha256"))
        print(f"{job:10s} floor {s['floor']:.2f} CPU s ({steps})")
        print(f"{'':10s} writer: shards {w['shards']:.2f} CPU s, whole call {w['call']:.2f} CPU s (disk check, manifest "
              f"and receiver files too); ratio floor/shards {s['floor'] / w['shards']:.3f}, floor/call "
              f"{s['floor'] / w['call']:.3f}")
        if "wall" in w:
            print(f"{'':10s} (wall clock, shared machine: shards {w['wall']['shards']:.2f} s, call {w['wall']['call']:.2f} s)")
        print(f"{'':10s} not in the floor: fletcher32 {s['fletcher32']:.2f} s, fsync {s['fsync']:.2f} s; "
              f"bytes: raw {sz['raw']:,}, zlib-1 {sz['zlib1']:,} (writer's shards {w['bytes']:,})")
        if sz["libdeflate1"]:
            print(f"{'':10s} libdeflate-1: {s['libdeflate1']:.2f} s vs zlib-1 {s['zlib1']:.2f} s "
                  f"({s['zlib1'] / s['libdeflate1']:.2f}x faster), {sz['libdeflate1']:,} bytes "
                  f"({sz['libdeflate1'] / sz['zlib1'] - 1:+.1%} vs zlib-1)")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    roots = args.roots.split(",") if args.roots else [str(HERE.parents[1])]
    print(f"bench_floor: n {args.n}, jobs {args.jobs}, {args.repeats} repeat(s), {os.cpu_count()} CPU(s), "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    results: dict[str, dict] = {}
    for _ in range(args.repeats):  # checkouts alternately: a machine whose speed drifts shifts every one alike
        for root in roots:  # one process per checkout: its own imports, nothing shared
            env = {**os.environ, "PYTHONPATH": root}
            cmd = [sys.executable, "-P", str(HERE), "--child", "--n", str(args.n), "--jobs", args.jobs,
                   "--repeats", "1"] + (["--root-dir", str(args.root_dir)] if args.root_dir else [])
            res = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{root}: {res.stderr.strip()}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            if root not in results:
                results[root] = got
            else:
                for job, runs in got["jobs"].items():
                    results[root]["jobs"][job] += runs
    for root in roots:
        report(root, results[root], args.n)
    if args.json is not None:
        args.json.write_text(json.dumps({"n": args.n, "results": results}, indent=1))


if __name__ == "__main__":
    main()
