"""The writer against its floor (issue 22): how close `generate` comes to the cost of the steps it cannot avoid.

What the floor is
-----------------
The same shards (the same sequences, rendered in the same 16-sequence batches) pushed through each step the writer
cannot avoid, each step alone and timed on its own:

  floor         = render + zlib-1 (+ shuffle of the parameter tables, the format's filter before deflate)
                  + write_direct_chunk of every chunk into an in-memory HDF5 file (its open, flush, image and close)
                  + writing the image to a file + sha256 of it                  (the issue's definition)
  format floor  = floor + creating the shard's datasets and attributes (HDF5's H5Dcreate/H5Acreate, made through the
                  checkout's own low-level calls and its writer's maker: types, property lists and the layout's plan
                  once per process where the checkout shares them, else once per shard) + fletcher32 of every
                  chunk + fsync of the shard file     (what the file format and the crash safety require as well)

The floor writes the chunks in the writer's order into a file made like the writer's, so its image is the writer's
shard byte for byte: the bench compares the sha256 of every shard ("same bytes" in the report). Releasing a step's
buffers counts with the step (the writer releases its own). Not in either floor, so counted as the writer's own
overhead: the Python around each batch and chunk (checking the source's arrays, gathering the parameter tables), the
shard's record (JSON, fsync'd), the temporary name and the rename. Untimed in the floor: only its own bookkeeping
(lists of the chunks to write, the tables concatenated).

How it is measured, and why
---------------------------
- CPU time of this process (time.process_time: user + system), not the wall clock: on a shared machine the wall clock
  counts the time other processes held the cores.
- Floor and writer in ONE process, interleaved: every round runs both back to back (which goes first alternates), the
  ratio is taken per round, and the report gives the median of the per-round ratios (and their range). CPU time alone
  does not cancel the load: on a 2-vCPU VM the same work takes 10-20 % more CPU time while the other vCPU is busy
  (shared core and caches), and that load drifts over minutes. The earlier version took the best floor and the best
  writer over separate processes (one of each per process, the floor first, straight after loading the kernels), so
  its ratio compared processes minutes apart: on 2026-12-03 the second process's floor came out 7-16 % lower than the
  first's for the same code while the load was falling, which is why its ratio did not follow the faster writer.
- Warm start for both: before the first timed round, one untimed round of each side (kernels loaded; h5py, zlib,
  hashlib and numba's fletcher32 dispatch used once; the heap grown to the run's size), so that neither side pays
  first-touch page faults, imports or compiling that the other does not. Process start (≈ 1.7 CPU s) and kernel
  compiling are in neither (`generate` writes a one-shard job in the calling process; docs/benchmarks.md).
- The writer is `generate(..., workers=1)`; its "shards" time is its shard-writing call alone (`run_tasks`: every
  shard and its record), "call" the whole `generate` (free-space check, manifest and receiver files too).

Jobs (`name` or `name:n`; n defaults to --n): `readme` is the README's job `physvid generate --property rotation`
(noise-free 64x64x10; the README runs it with --n 1000: one shard of 1,000; 2,000 sequences make 8 shards of 250);
`noisy-all` is `--property all --noise-ratio 0.26` with Gaussian + white + Perlin noise.

    python benchmarks/bench_floor.py                                   # this checkout (a few minutes)
    python benchmarks/bench_floor.py --jobs readme:10000               # the issue's 10k job
    python benchmarks/bench_floor.py --roots /tmp/before,/work/wt-22   # before/after: each checkout's code in its
                                                                       # own process, alternately
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve()
JOBS = ("readme", "noisy-all")
STEPS = ("render", "zlib1", "direct_write", "file_write", "sha256")  # the floor (the definition)
FORMAT_STEPS = ("create", "fletcher32", "fsync")  # added by the format floor
clock = time.process_time


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="sequences of a job given without :n (default 2,000)")
    ap.add_argument("--jobs", default="readme:1000,readme,noisy-all",
                    help=f"comma list of name[:n], names {', '.join(JOBS)} (default: readme:1000,readme,noisy-all)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per process, floor and writer each (default 5)")
    ap.add_argument("--repeats", type=int, default=1, help="processes per checkout, alternately (default 1)")
    ap.add_argument("--roots", default=None,
                    help="comma list of checkouts to compare (each one's physvid in its own process); default: this one")
    ap.add_argument("--root-dir", type=Path, default=None, help="where the datasets go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def parse_jobs(text: str, n: int) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, count = item.strip().partition(":")
        if name not in JOBS:
            raise SystemExit(f"unknown job {name!r}; choose from {', '.join(JOBS)}")
        out.append((name, int(count) if count else n))
    return out


def job_config(job: str):
    import physvid as pv

    if job == "readme":
        return pv.RenderConfig(property="rotation")
    if job == "noisy-all":
        return pv.RenderConfig(property="all", noise=pv.NoiseConfig(ratio=0.26, gaussian=1.0, white=1.0, perlin=1.0))
    raise SystemExit(f"unknown job {job!r}; choose from {', '.join(JOBS)}")


def _rendered_shard(source, spec, batch: int):
    """The shard's batches as the writer gets them, (first row, video, params) with bools stored as int8; the CPU
    seconds of the source calls."""
    import numpy as np

    batches, seconds = [], 0.0
    for a in range(spec.first_index, spec.first_index + spec.count, batch):
        b = min(a + batch, spec.first_index + spec.count)
        t0 = clock()
        video, params = source(np.arange(a, b, dtype=np.int64))
        seconds += clock() - t0
        params = {k: (v.astype(np.int8) if v.dtype == np.bool_ else v) for k, v in params.items()}
        batches.append((a - spec.first_index, video, params))
    return batches, seconds


def _encode(data, itemsize: int) -> bytes:
    """Shuffle (elements wider than a byte, as HDF5's shuffle filter) and zlib level 1."""
    import numpy as np

    buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if itemsize > 1:
        buf = buf.reshape(-1, itemsize).T.reshape(-1)
    return zlib.compress(buf, 1)


def floor(config, n: int, folder: Path) -> dict:
    """CPU seconds of each unavoidable step for the shards `generate` would write (module docstring), and the sha256
    of every shard image."""
    import h5py
    import numpy as np

    from physvid.dataset import shard as sh
    from physvid.dataset.layout import shard_specs
    from physvid.dataset.manifest import make_plan
    from physvid.dataset.schema import TOP_LEVEL, describe, h5_attributes
    from physvid.dataset.writer import RenderSource, default_shard_size

    size = default_shard_size(n)
    plan = make_plan(source=RenderSource.name, config=config.to_dict(), seed=config.seed, n=n, shard_size=size,
                     compression="gzip")
    source = RenderSource(config)
    t = dict.fromkeys(STEPS + FORMAT_STEPS, 0.0)
    shas = []
    for spec in shard_specs(n, size):
        batches, seconds = _rendered_shard(source, spec, sh.BATCH)
        t["render"] += seconds
        video, params = batches[0][1], batches[0][2]
        root = {"format": plan["format"], "format_version": plan["format_version"],
                "physvid_version": plan["physvid_version"], "source": plan["source"],
                "config": sh.dumps(plan["config"]).strip(), "total_sequences": plan["total_sequences"],
                "shard_size": plan["shard_size"], "compression": plan["compression"], "shard": spec.shard,
                "first_index": spec.first_index, "count": spec.count}
        if plan["seed"] is not None:
            root["seed"] = plan["seed"]
        t0 = clock()
        with h5py.File(f"floor-{spec.shard}", "w", driver="core", backing_store=False, block_size=sh.CORE_BLOCK,
                       libver="earliest") as f:
            t["direct_write"] += clock() - t0  # the in-memory file's open and close count as writing into it
            t0 = clock()
            # the writer's own maker: the shared one where the checkout has it (types, property lists and each
            # layout's plan once per process), else one per shard as that checkout's writer made it
            maker = sh.shard_maker("gzip") if hasattr(sh, "shard_maker") else sh._Maker("gzip")
            maker.attrs(f["/"].id, root)
            writers = sh._create_datasets(f, spec.count, video, params, maker, True)
            t["create"] += clock() - t0
            # the chunks in the writer's order: per batch the video's rows, then the per-frame arrays'; then each
            # parameter table (whole-row chunks, the last one padded with zeros)
            raw = []
            for lo, video, params in batches:
                for name, arr in (("video", video), *((k, params[k]) for k in TOP_LEVEL if k in params)):
                    raw += [(writers[name], lo + r, arr[r]) for r in range(arr.shape[0])]
            for name in sorted(k for k in params if k not in TOP_LEVEL):
                table = np.concatenate([p[name] for _, _, p in batches])
                raw += _table_chunks(writers[name], table)
            packed = _push(raw, t)
            t0 = clock()
            index = maker.dataset(f.id, "index", (spec.count,), np.dtype(np.int64),
                                  (min(spec.count, sh.PARAM_CHUNK_BYTES // 8),),
                                  h5_attributes(describe("index", 1, True)))
            t["create"] += clock() - t0
            chunks = _push(_table_chunks(index, np.arange(spec.first_index, spec.first_index + spec.count,
                                                          dtype=np.int64)), t)
            t0 = clock()
            f.flush()
            image = f.id.get_file_image()
        t["direct_write"] += clock() - t0
        t0 = clock()  # releasing each step's buffers counts with the step (the writer releases its own too)
        del packed, chunks
        t["zlib1"] += clock() - t0
        t0 = clock()
        del raw, batches, video, params
        t["render"] += clock() - t0
        path = folder / f"floor-{spec.shard}.h5"
        t0 = clock()
        shas.append(hashlib.sha256(image).hexdigest())
        t["sha256"] += clock() - t0
        with open(path, "wb") as fh:
            t0 = clock()
            fh.write(image)
            t["file_write"] += clock() - t0
            t0 = clock()
            os.fsync(fh.fileno())
            t["fsync"] += clock() - t0
        t0 = clock()
        del image
        t["file_write"] += clock() - t0
        path.unlink()
    t["floor"] = sum(t[k] for k in STEPS)
    t["format_floor"] = t["floor"] + sum(t[k] for k in FORMAT_STEPS)
    return {"seconds": t, "sha256": shas}


def _push(chunks: list, t: dict) -> list:
    """Encode (shuffle + zlib-1, then fletcher32) and write_direct_chunk every (writer, first row, rows) chunk, each
    step over all of them and timed alone into `t`; the encoded chunks (the caller releases them, timed)."""
    import numpy as np

    from physvid.dataset.chunks import fletcher32

    t0 = clock()
    packed = [(w, j, _encode(a, a.dtype.itemsize)) for w, j, a in chunks]
    t["zlib1"] += clock() - t0
    t0 = clock()
    packed = [(w, j, b"".join((p, fletcher32(np.frombuffer(p, np.uint8)).to_bytes(4, "little")))) for w, j, p in packed]
    t["fletcher32"] += clock() - t0
    t0 = clock()
    for w, j, p in packed:
        w.dsid.write_direct_chunk((j,) + w.tail, p)
    t["direct_write"] += clock() - t0
    return packed


def _table_chunks(writer, table) -> list:
    """(writer, first row, rows) of every chunk of a (rows,)-chunked table, the last one padded with zeros."""
    import numpy as np

    out = []
    for j in range(0, table.shape[0], writer.rows):
        block = table[j:j + writer.rows]
        if block.shape[0] < writer.rows:
            full = np.zeros((writer.rows,) + block.shape[1:], block.dtype)
            full[:block.shape[0]] = block
            block = full
        out.append((writer, j, block))
    return out


def writer(config, n: int, folder: Path) -> dict:
    """CPU seconds of `generate(..., workers=1)`: the whole call, and its shard-writing call alone (`run_tasks`,
    wrapped here); the sha256 of every shard it wrote."""
    from physvid.dataset import generate
    from physvid.dataset import writer as writer_mod

    out = folder / "ds"
    shutil.rmtree(out, ignore_errors=True)
    run_tasks = writer_mod.run_tasks
    shards, records = [], []

    def timed(*args, **kwargs):
        t0 = clock()
        try:
            got = run_tasks(*args, **kwargs)
        finally:
            shards.append(clock() - t0)
        records.extend(got)
        return got

    writer_mod.run_tasks = timed
    try:
        w0, t0 = time.perf_counter(), clock()
        summary = generate(config, n, out, workers=1)
        call, wall = clock() - t0, time.perf_counter() - w0
    finally:
        writer_mod.run_tasks = run_tasks
    shutil.rmtree(out, ignore_errors=True)
    return {"call": call, "shards": sum(shards), "sha256": [r["shard"]["sha256"] for r in records],
            "wall": {"call": wall, "shards": summary.seconds}}


def child(args) -> None:
    """Measure this process's physvid (PYTHONPATH) and print one JSON line."""
    import physvid

    from physvid.dataset.writer import RenderSource

    results = {"physvid": physvid.__file__, "jobs": {}}
    base = Path(tempfile.mkdtemp(prefix="bench-floor-", dir=args.root_dir))
    try:
        for job, n in parse_jobs(args.jobs, args.n):
            config = job_config(job)
            RenderSource(config).warm_up(None)  # kernels loaded before any clock starts
            floor(config, n, base), writer(config, n, base)  # the warm round, untimed (module docstring)
            rounds = []
            for r in range(args.rounds):
                got = {}
                for side in (("floor", "writer") if r % 2 == 0 else ("writer", "floor")):
                    got[side] = (floor if side == "floor" else writer)(config, n, base)
                rounds.append(got)
            results["jobs"][f"{job}:{n}"] = rounds
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results))


def summarise(rounds: list[dict]) -> dict:
    """Medians over the rounds: each floor step, the writer, and the per-round ratios."""
    med = statistics.median
    fl = {k: med(r["floor"]["seconds"][k] for r in rounds) for k in rounds[0]["floor"]["seconds"]}
    ratio = [r["floor"]["seconds"]["floor"] / r["writer"]["shards"] for r in rounds]
    fratio = [r["floor"]["seconds"]["format_floor"] / r["writer"]["shards"] for r in rounds]
    return {"floor": fl, "shards": med(r["writer"]["shards"] for r in rounds),
            "call": med(r["writer"]["call"] for r in rounds),
            "wall_shards": med(r["writer"]["wall"]["shards"] for r in rounds),
            "ratio": med(ratio), "ratio_range": (min(ratio), max(ratio)),
            "format_ratio": med(fratio), "format_ratio_range": (min(fratio), max(fratio)),
            "same_bytes": all(r["floor"]["sha256"] == r["writer"]["sha256"] for r in rounds), "rounds": len(rounds)}


def report(root: str, results: dict) -> dict:
    print(f"\n== {root} ({results['physvid']})")
    out = {}
    for job, rounds in results["jobs"].items():
        s = out[job] = summarise(rounds)
        fl = s["floor"]
        steps = ", ".join(f"{k} {fl[k]:.3f}" for k in STEPS)
        extra = ", ".join(f"{k} {fl[k]:.3f}" for k in FORMAT_STEPS)
        print(f"{job:15s} floor {fl['floor']:.3f} CPU s ({steps}); format floor {fl['format_floor']:.3f} (+ {extra})")
        print(f"{'':15s} writer: shards {s['shards']:.3f} CPU s, whole call {s['call']:.3f} (wall clock of the shards "
              f"{s['wall_shards']:.2f} s); same bytes as the floor: {'yes' if s['same_bytes'] else 'NO'}")
        print(f"{'':15s} median of {s['rounds']} per-round ratios: floor/shards {s['ratio']:.3f} "
              f"({s['ratio_range'][0]:.3f}-{s['ratio_range'][1]:.3f}), format floor/shards {s['format_ratio']:.3f} "
              f"({s['format_ratio_range'][0]:.3f}-{s['format_ratio_range'][1]:.3f})")
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    parse_jobs(args.jobs, args.n)
    roots = args.roots.split(",") if args.roots else [str(HERE.parents[1])]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"bench_floor: jobs {args.jobs}, {args.rounds} rounds x {args.repeats} process(es) per checkout, "
          f"{os.cpu_count()} CPU(s), load {load}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    results: dict[str, dict] = {}
    for _ in range(args.repeats):  # checkouts alternately: a machine whose speed drifts shifts every one alike
        for root in roots:  # one process per checkout: its own imports, nothing shared
            env = {**os.environ, "PYTHONPATH": root}
            cmd = [sys.executable, "-P", str(HERE), "--child", "--n", str(args.n), "--jobs", args.jobs,
                   "--rounds", str(args.rounds)] + (["--root-dir", str(args.root_dir)] if args.root_dir else [])
            res = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{root}: {res.stderr.strip()}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            if root not in results:
                results[root] = got
            else:
                for job, rounds in got["jobs"].items():
                    results[root]["jobs"][job] += rounds
    summary = {root: report(root, results[root]) for root in roots}
    if len(roots) > 1:
        print("\nwriter (shards) of each checkout against the first, medians (across processes: the per-round ratios "
              "above are the figures that cancel the load)")
        for job in summary[roots[0]]:
            first = summary[roots[0]][job]
            for root in roots[1:]:
                s = summary[root][job]
                print(f"{job:15s} {root}: shards {s['shards'] / first['shards']:.3f}x, floor/shards "
                      f"{first['ratio']:.3f} -> {s['ratio']:.3f}, format floor/shards {first['format_ratio']:.3f} -> "
                      f"{s['format_ratio']:.3f}")
    print(f"\nload at the end {os.getloadavg() if hasattr(os, 'getloadavg') else None}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"root_dir": str(args.root_dir), "json": None},
                                         "results": results, "summary": summary}, indent=1, default=str))


if __name__ == "__main__":
    main()
