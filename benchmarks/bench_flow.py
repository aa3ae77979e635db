"""What `--flow` costs (issue 20): render time with the motion ground truth on vs off, in one run.

Blocks of sequences are rendered alternately with flow off and on (same sequences, same process), so that a change of
the machine's load hits both; the ratio of the median block times is reported (target: on <= 1.5 x off). Times are
the worker's CPU time (time.process_time), not wall time: on a shared machine another job's load then shows only
through caches and memory bandwidth, not as time the worker spent waiting for a core. With
`--baseline PATH` (a checkout of another physvid version, e.g. `git worktree add /tmp/main main`), a second process
imports physvid from PATH and its flow-less render time is interleaved too: "flow off costs nothing measurable" is
the ratio off / baseline (target: 1.00 within the run's noise).

    python benchmarks/bench_flow.py                        # blocks of 16 (the writer's batch); ~1 minute on 2 cores
    python benchmarks/bench_flow.py --baseline /tmp/main   # + the version before the flow option
    python benchmarks/bench_flow.py --block 200 --rounds 7 # large render calls (see docs/benchmarks.md: huge pages)
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time


def _init(path):
    if path:
        sys.path.insert(0, path)


def _time_block(args):
    """CPU seconds to render sequences [start, start + count) of the config (a dict; flow set only when on)."""
    import physvid as pv

    config, start, count = args
    cfg = pv.RenderConfig.from_dict(config)
    t0 = time.process_time()
    pv.render(cfg, range(start, start + count))
    return time.process_time() - t0


def workload(noise: bool) -> dict:
    """bench_render's workload (64x64, 10 frames, 2 textured objects, mixed properties), with or without noise."""
    return {"property": "mixed", "shape": {"num_objects": [2, 2]}, "texture": {"object_probability": 1.0},
            "noise": {"ratio": 0.26 if noise else 0.0}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    ap.add_argument("--baseline", help="a physvid checkout to compare the flow-off render time with")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--block", type=int, default=16,
                    help="sequences per render call (default: the writer's batch; at 200 a fresh 155 MB flow output "
                         "per call makes the kernel zero and compact huge pages, docs/benchmarks.md)")
    args = ap.parse_args()
    block, rounds = (20, 3) if args.quick else (args.block, args.rounds)
    ctx = mp.get_context("spawn")
    pools = {"here": ctx.Pool(1, _init, (None,))}
    if args.baseline:
        pools["baseline"] = ctx.Pool(1, _init, (os.path.abspath(args.baseline),))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; {block} sequences per block, {rounds} rounds, one process at a time, CPU time (process_time)")
    for noise in (False, True):
        cases = {"off": ("here", workload(noise)), "on": ("here", {**workload(noise), "flow": True})}
        if args.baseline:
            cases["baseline"] = ("baseline", workload(noise))
        for pool, cfg in cases.values():  # compile or load the kernels outside the clock
            pools[pool].apply(_time_block, ((cfg, 10**6, 4),))
        times = {name: [] for name in cases}
        for r in range(rounds):
            for name, (pool, cfg) in cases.items():
                times[name].append(pools[pool].apply(_time_block, ((cfg, r * block, block),)))
        med = {name: statistics.median(v) for name, v in times.items()}
        label = "noise 0.26" if noise else "noise-free"
        for name in cases:
            print(f"{label:10} flow {name:8}: {block * 10 / med[name]:9.0f} frames per CPU second")
        print(f"{label:10} on / off      : {med['on'] / med['off']:9.2f} x   (target <= 1.5)")
        if args.baseline:
            print(f"{label:10} off / baseline: {med['off'] / med['baseline']:9.2f} x   (target 1.00)")
    for pool in pools.values():
        pool.close()


if __name__ == "__main__":
    main()
