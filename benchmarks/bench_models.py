"""Training throughput (samples/s: forward + backward + Adam step) of every registered model.

Reference setting (REFERENCE-NOTES.md, "Training throughput of OpenSTL's implementations"): 64x64 frames, 1 channel,
batch 16, patch 4, 4 layers x 128 hidden, 5x5 filters, 4 input + 6 predicted frames and 10 + 10. OpenSTL's H100 fp32
figures are printed next to ours with the ratio (ours / OpenSTL; only comparable when run on an H100 in fp32).

    python benchmarks/bench_models.py --tiny                      # seconds, CPU: 16x16, 2 x 16 hidden, 3x3, batch 4
    python benchmarks/bench_models.py --models convlstm --steps 2 # reference setting on whatever device is present
    python benchmarks/bench_models.py --compile --bf16 --channels-last --models convlstm,mim
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout that was not pip-installed
import stmoe  # noqa: E402
from stmoe.models import ModelConfigError  # noqa: E402

# samples/s, one training step incl. Adam, fp32, one H100 (OpenSTL implementations, reference setting)
OPENSTL_H100 = {
    "convlstm": {(4, 6): 534, (10, 10): 241},
    "predrnnpp": {(4, 6): 191, (10, 10): 85},
    "mim": {(4, 6): 120, (10, 10): 68},
    "phydnet": {(4, 6): 113, (10, 10): 74},
}
REFERENCE = dict(height=64, width=64, in_channels=1, patch_size=4, num_layers=4, num_hidden=128, filter_size=5)
TINY = dict(height=16, width=16, in_channels=1, patch_size=4, num_layers=2, num_hidden=16, filter_size=3)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="all", help="comma-separated names from list_models(), or 'all'")
    ap.add_argument("--tiny", action="store_true", help="16x16, 2 x 16 hidden, 3x3, batch 4: runs in seconds on a CPU")
    ap.add_argument("--device", default="auto", help="'auto' (cuda when present), 'cpu' or 'cuda'")
    ap.add_argument("--batch-size", type=int, default=None, help="default 16 (4 with --tiny)")
    ap.add_argument("--settings", default="4+6,10+10", help="comma-separated input+predicted frame counts")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3, 5 with --compile)")
    ap.add_argument("--compile", action="store_true", help="also time each row torch.compile'd (fresh cache per row)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true", help="channels_last weights and activations")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    return ap.parse_args(argv)


def bench_one(name: str, l: int, n: int, args: argparse.Namespace, device: torch.device,
              compiled: bool = False) -> dict:
    sizes = TINY if args.tiny else REFERENCE
    batch = args.batch_size or (4 if args.tiny else 16)
    torch.manual_seed(0)
    model = stmoe.create_model(name, **sizes, input_frames=l).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    from torch import _dynamo

    if compiled:  # a fresh cache per row: earlier rows' graphs must not push this one past the recompile limit
        _dynamo.reset()
    forward = torch.compile(model) if compiled else model
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, l, sizes["in_channels"], sizes["height"], sizes["width"], generator=g).to(device)
    y = torch.rand(batch, n, sizes["in_channels"], sizes["height"], sizes["width"], generator=g).to(device)

    def train_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = forward(x, n)
            loss = torch.nn.functional.mse_loss(out.pred.float(), y)
            if out.aux:
                loss = loss + 1e-3 * sum(out.aux.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup = args.warmup if args.warmup is not None else (5 if compiled else (1 if device.type == "cpu" else 3))
    steps = args.steps or (20 if device.type == "cuda" else 3)
    before = _dynamo.config.error_on_recompile
    _dynamo.config.error_on_recompile = compiled  # a silent fall-back to eager would time the wrong thing
    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            train_step()
        sync()
        t1 = time.perf_counter()
        for _ in range(steps):
            train_step()
        sync()
        t2 = time.perf_counter()
    finally:
        _dynamo.config.error_on_recompile = before
    rate = batch * steps / (t2 - t1)
    ref = None if args.tiny else OPENSTL_H100.get(name, {}).get((l, n))
    return dict(model=name, setting=f"{l}+{n}", samples_per_s=rate, openstl_h100=ref,
                ratio=(rate / ref if ref else None), warmup_s=t1 - t0, params=sum(p.numel() for p in model.parameters()))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = stmoe.list_models() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in stmoe.list_models()]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; allowed: {', '.join(stmoe.list_models())}", file=sys.stderr)
        return 2
    settings = [tuple(int(v) for v in s.split("+")) for s in args.settings.split(",")]
    what = "tiny (16x16, 2x16, 3x3)" if args.tiny else "reference (64x64, 4x128, 5x5, patch 4)"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    flags = ", ".join(f for f, on in (("eager vs compiled", args.compile), ("bf16", args.bf16),
                                      ("channels_last", args.channels_last)) if on) or "fp32 eager"
    print(f"# {what}, batch {args.batch_size or (4 if args.tiny else 16)}, {dev}, {flags}, torch {torch.__version__}")
    print(f"{'model':<12} {'setting':>8} {'mode':>9} {'samples/s':>10} {'OpenSTL H100':>13} {'ratio':>7} "
          f"{'params':>10} {'warmup s':>9}")
    rows = []
    for name in names:
        for l, n in settings:
            # --compile: the eager row first, then the compiled one, side by side
            for compiled in ((False, True) if args.compile else (False,)):
                mode = "compiled" if compiled else "eager"
                try:
                    row = bench_one(name, l, n, args, device, compiled)
                except (ModelConfigError, RuntimeError) as err:  # out of memory, a model that rejects the sizes, or
                    # a recompilation (torch._dynamo RecompileError is a RuntimeError)
                    print(f"{name:<12} {l}+{n:>6} {mode:>9} failed: {str(err).splitlines()[0]}")
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                row["mode"] = mode
                rows.append(row)
                ref = f"{row['openstl_h100']}" if row["openstl_h100"] else "-"
                ratio = f"{row['ratio']:.2f}" if row["ratio"] else "-"
                print(f"{name:<12} {row['setting']:>8} {mode:>9} {row['samples_per_s']:>10.2f} {ref:>13} {ratio:>7} "
                      f"{row['params']:>10,} {row['warmup_s']:>9.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(dict(device=dev, flags=flags, tiny=args.tiny, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
