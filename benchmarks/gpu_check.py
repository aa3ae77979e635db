"""One prepared GPU check (issue 17): trainer-level throughput of the paper's models, then a short reproduction.

Part 1 -- samples/s measured by the real Trainer (its metrics.jsonl, the second epoch, so compilation and warm-up are
not counted) for ConvLSTM, PredRNN++, MIM, PhyDNet, STMoE-Id and STMoE-conv at the reference setting of
REFERENCE-NOTES.md (64x64, patch 4, 4 x 128 hidden, 5x5 filters, batch 16, 4 + 6 frames), eager fp32 and compiled
bf16, with the peak memory, printed beside OpenSTL's H100 figures (fp32 eager, one step incl. Adam).
Part 2 -- `stmoe reproduce table1 --profile gpu` with its steps scaled down (--steps-scale), compiled.

    python benchmarks/gpu_check.py --out runs/gpu-check                 # one H100/H200: about 8 minutes
    python benchmarks/gpu_check.py --tiny --out /tmp/gc                 # CPU, seconds: what CI runs so it cannot rot

--tiny: 16x16, 2 x 8 hidden, 3x3, batch 4, 3 steps per epoch, "compiled" traced with Dynamo's eager backend (no
code generation on a CPU without a GPU toolchain), and part 2 at the smoke profile. Writes OUT/gpu_check.json and
prints a Markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout that was not pip-installed
from benchmarks.bench_models import OPENSTL_H100  # noqa: E402
from stmoe.train import ClipDataset, TrainConfig  # noqa: E402
from stmoe.train.trainer import Trainer  # noqa: E402

MODELS = ("convlstm", "predrnnpp", "mim", "phydnet", "stmoe-id", "stmoe-conv")
REFERENCE = dict(height=64, width=64, patch_size=4, num_layers=4, num_hidden=128, filter_size=5)
TINY = dict(height=16, width=16, patch_size=4, num_layers=2, num_hidden=8, filter_size=3)
L, N = 4, 6


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the JSON, the runs and the reproduction")
    ap.add_argument("--tiny", action="store_true", help="CPU, seconds (CI)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default="eager-fp32,compiled-bf16")
    ap.add_argument("--steps", type=int, default=None, help="steps per epoch (default 40; 3 with --tiny)")
    ap.add_argument("--steps-scale", type=float, default=0.05, help="budget of the table1 reproduction (gpu profile)")
    ap.add_argument("--skip-table1", action="store_true", help="part 1 only")
    return ap.parse_args(argv)


def _clips(n: int, size: int) -> np.ndarray:
    """(n, l + n, 1, H, W) uint8 physvid `mixed` clips rendered in memory (no files)."""
    import physvid

    cfg = physvid.RenderConfig(property="mixed", height=size, width=size, frames=L + N, seed=0)
    video, _ = physvid.render(cfg, range(n))
    return np.asarray(video)


def measure(name: str, mode: str, clips: np.ndarray, args, device: str, run_dir: Path) -> dict:
    """samples/s of the second epoch of a real Trainer run, and the peak memory."""
    sizes = TINY if args.tiny else REFERENCE
    model = {"name": name, **sizes}
    if name == "phydnet":
        model.update(phy_channels=8 if args.tiny else 64, phy_kernel=3 if args.tiny else 7)
    if name.startswith("stmoe"):
        model.update(gate_channels=4 if args.tiny else 16)
    compiled = mode.startswith("compiled")
    steps = args.steps or (3 if args.tiny else 40)
    batch = 4 if args.tiny else 16
    doc = {"model": model,
           "data": {"input_frames": L, "output_frames": N, "batch_size": batch, "split": [1.0, 0.0, 0.0]},
           "optim": {"epochs": 2, "max_steps_per_epoch": steps, "lr": 1e-4},
           "run": {"device": device, "precision": "bf16" if mode.endswith("bf16") else "fp32", "compile": compiled,
                   "compile_backend": "eager" if (compiled and args.tiny) else "inductor", "progress": "off",
                   "tensorboard": "off", "log_every": 10_000, "checkpoint_minutes": 60.0}}
    cfg = TrainConfig.from_dict(doc)
    torch.manual_seed(0)
    net = cfg.model.build()
    ds = ClipDataset(clips, cfg.data, "all", (sizes["height"], sizes["width"]), 1, dtype=torch.uint8)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    history = Trainer(net, cfg, run_dir / f"{name}-{mode}", train_set=ds).fit().history
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.startswith("cuda") else None
    ref = OPENSTL_H100.get(name, {}).get((L, N))
    rate = history[-1]["samples_per_s"]
    return {"model": name, "mode": mode, "samples_per_s": rate, "first_epoch_s": history[0]["seconds"],
            "peak_gib": peak, "openstl_h100_fp32": ref, "ratio_to_openstl": rate / ref if ref else None,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    size = (TINY if args.tiny else REFERENCE)["height"]
    clips = _clips(64 if args.tiny else 512, size)
    info = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU {platform.processor() or ''}",
            "torch": torch.__version__, "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M"),
            "setting": "tiny (16x16, 2 x 8, 3x3, batch 4)" if args.tiny else
            "reference (64x64, patch 4, 4 x 128, 5x5, batch 16, 4 + 6)"}
    print(f"# {info['device']}, torch {info['torch']} (CUDA {info['cuda']}), {info['setting']}, {info['date']}")
    print("| model | mode | samples/s | OpenSTL H100 fp32 | ratio | peak GiB | first epoch s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        for mode in modes:
            try:
                r = measure(name, mode, clips, args, device, args.out / "throughput")
            except Exception as exc:  # noqa: BLE001 - one failed row (e.g. out of memory) must not lose the others
                r = {"model": name, "mode": mode, "error": str(exc).splitlines()[0][:200]}
                print(f"| {name} | {mode} | failed: {r['error']} | | | | |", flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
                rows.append(r)
                continue
            rows.append(r)
            fmt = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
            print(f"| {name} | {mode} | {r['samples_per_s']:.1f} | {fmt(r['openstl_h100_fp32'], 'd')} | "
                  f"{fmt(r['ratio_to_openstl'], '.2f')} | {fmt(r['peak_gib'], '.2f')} | {r['first_epoch_s']:.1f} |",
                  flush=True)
    result = {**info, "rows": rows}
    if not args.skip_table1:
        from stmoe.reproduce import reproduce

        profile, scale = ("smoke", 1.0) if args.tiny else ("gpu", args.steps_scale)
        t0 = time.perf_counter()
        table = reproduce("table1", profile, args.out / "table1", resume=(args.out / "table1").exists(),
                          steps_scale=scale, compile=not args.tiny, loader_workers=0 if args.tiny else 4,
                          jobs=1 if args.tiny else 3, log=lambda m: print(m, flush=True))["table1"]
        result["table1"] = {"profile": profile, "steps_scale": scale, "wall_s": round(time.perf_counter() - t0, 1),
                            "table": str(args.out / "table1" / "table1" / "table.md"),
                            "rows": {r["row"]: r["stats"].get("mse") for r in table["rows"]}}
        print((args.out / "table1" / "table1" / "table.md").read_text())
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    failed = [r for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
