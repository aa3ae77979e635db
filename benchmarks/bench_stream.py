"""Streaming generation (issue 21): samples/s that physvid.stream.RenderStream delivers through a DataLoader, against
the samples/s one training step consumes, measured in the same run, at 64x64 and 128x128.

Workload: the `mixed` preset, 10 frames, noise ratio 0.26 (Gaussian + white + Perlin: the costly case), whole
batches of 16 rendered per worker call. The consumer is a forward + backward + Adam step of the `small` preset's
STMoE-conv (three two-layer MIM experts, 32 hidden), and of the `tiny` one (three ConvLSTMs, 16 hidden), on
l = 4, n = 6 clips, on this machine's CPU (there is no GPU
here: on a GPU the step is far faster, which is the case the ratio is about).

    python benchmarks/bench_stream.py            # ~2 minutes on 2 cores
    python benchmarks/bench_stream.py --quick
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import physvid as pv
from physvid.stream import RenderStream


def workload(size: int) -> pv.RenderConfig:
    return pv.RenderConfig(property="mixed", height=size, width=size, frames=10,
                           noise=pv.NoiseConfig(ratio=0.26, gaussian=1.0, white=1.0, perlin=1.0))


def stream_rate(size: int, batches: int, workers: int) -> float:
    """Sequences per second out of a DataLoader over a RenderStream (workers started and warm outside the clock)."""
    stream = RenderStream(workload(size), 16 * (batches + 2 * max(1, workers)), batch_size=16)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                         multiprocessing_context="fork" if workers else None)
    it = iter(loader)
    for _ in range(max(1, workers)):  # the first batch of each worker includes its start-up
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)["video"].shape[0]
    return n / (time.perf_counter() - t0)


def step_rate(size: int, steps: int, preset: str = "small") -> float:
    """Sequences per second that training steps of a preset's STMoE-conv consume (batch 16, l = 4, n = 6)."""
    from stmoe.train import load_config

    cfg = load_config(preset, overrides={"model.height": size, "model.width": size}).base
    model = cfg.model.build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    clip = torch.rand(16, 10, 1, size, size)

    def step():
        out = model(clip[:, :4], 6)
        loss = (out.pred - clip[:, 4:]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return 16 * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    batches, steps = (6, 1) if args.quick else (40, 3)
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for size in (64, 128):
        pv.render(workload(size), [0])  # compile or load the kernels before any clock
        one = stream_rate(size, batches, 0)
        many = stream_rate(size, batches, cores)
        small, tiny = step_rate(size, steps), step_rate(size, steps, "tiny")
        print(f"{size}x{size}: stream {one:,.0f} seq/s in-process, {many:,.0f} seq/s with {cores} workers; "
              f"training steps consume {small:,.1f} seq/s (small) and {tiny:,.1f} seq/s (tiny); stream / step = "
              f"{many / small:,.0f}x and {many / tiny:,.0f}x")


if __name__ == "__main__":
    main()
