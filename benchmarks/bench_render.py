"""Rendering throughput: physvid's numba renderer vs a straightforward NumPy + scikit-image + `noise` reference.

Workload (issue 2): 64×64, 10-frame sequences, 2 textured objects, Gaussian + white + Perlin noise on.
Prints frames/s on one core and on all cores, the reference's frames/s on one core, and the ratios.

    python benchmarks/bench_render.py            # ~1 minute on 2 cores
    python benchmarks/bench_render.py --quick    # a few seconds
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import numpy as np

import physvid as pv
from physvid.reference import render_reference


def workload(height=64, width=64, frames=10) -> pv.RenderConfig:
    return pv.RenderConfig(property="mixed", height=height, width=width, frames=frames,
                           shape=pv.ShapeConfig(num_objects=(2, 2)), texture=pv.TextureConfig(object_probability=1.0),
                           noise=pv.NoiseConfig(ratio=0.26, gaussian=1.0, white=1.0, perlin=1.0))


def _render_block(args):
    cfg, start, count = args
    pv.render(cfg, range(start, start + 2))  # compile / load kernels and build the Perlin bank outside the clock
    t0 = time.perf_counter()
    pv.render(cfg, range(start, start + count))
    return time.perf_counter() - t0


def fast_one_core(cfg, n):
    _render_block((cfg, 0, 4))
    t0 = time.perf_counter()
    pv.render(cfg, range(n))
    return n * cfg.frames / (time.perf_counter() - t0)


def fast_all_cores(cfg, n, workers):
    per = n // workers
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_render_block, [(cfg, 10**6 + w, 4) for w in range(workers)])  # warm every worker
        t0 = time.perf_counter()
        pool.map(_render_block, [(cfg, w * per, per) for w in range(workers)])
        wall = time.perf_counter() - t0
    return per * workers * cfg.frames / wall


def reference_one_core(cfg, n):
    render_reference(cfg, 0)
    t0 = time.perf_counter()
    for i in range(n):
        render_reference(cfg, i)
    return n * cfg.frames / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    cfg = workload()
    n_fast, n_ref = (200, 2) if args.quick else (3000, 10)
    one = fast_one_core(cfg, n_fast)
    allc = fast_all_cores(cfg, n_fast * args.workers, args.workers)
    ref = reference_one_core(cfg, n_ref)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print("workload: 64x64, 10 frames, 2 textured objects, gaussian+white+perlin noise at ratio 0.26")
    print(f"physvid, 1 core      : {one:10.0f} frames/s")
    print(f"physvid, {args.workers} cores     : {allc:10.0f} frames/s   (target >= 20,000 on 2 cores)")
    print(f"reference, 1 core    : {ref:10.1f} frames/s")
    print(f"speed-up per core    : {one / ref:10.1f} x   (target >= 50 x)")


if __name__ == "__main__":
    main()
