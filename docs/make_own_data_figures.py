"""The "your own data" walk-through of docs/training.md, run for real: every picture and number of that section.

    python docs/make_own_data_figures.py WORK        # minutes on 2 CPU cores; re-running skips finished steps

It runs the commands of WALKTHROUGH (the same lines the page shows, with `stmoe`/`physvid` run by this interpreter)
in WORK, with the highway video of ../shared/data as "your data", then:
  - copies the forecast pictures to docs/images/stmoe-own-forecast-strip.png and stmoe-own-forecast-gif.png (the GIF
    frame where the truth has ended),
  - writes WORK/compare.json and prints the comparison table of the page (the test split of the prepared clips, one
    row per model, plus copying the last observed frame, which `stmoe evaluate` reports beside every model).
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = "../shared/data/video/traffic-highway-video02.avi"  # "your data": ../shared is the folder beside the checkout
VIDEO = REPO.parent / CLIP[3:]
SYN = "data/translation,data/rotation,data/intensity"
TINY = "--preset tiny --epochs 4"

# (command, a file it writes: the step is skipped when that exists). The page shows these lines verbatim.
WALKTHROUGH = [
    # 1. prepare: your video -> clips of 8 frames (l + n of the tiny preset), 32x32, no overlap
    (f"stmoe prepare {CLIP} --frames 8 --size 32 --out data/mine", "data/mine/manifest.json"),
    # 2. synthetic data and experts (once, for every data set of yours)
    *[(f"physvid generate -p {p} --n 480 --size 32 --frames 8 --noise-ratio 0.26 --out data/{p}",
       f"data/{p}/manifest.json") for p in ("translation", "rotation", "intensity", "all")],
    (f"stmoe train decoder {TINY} --synthetic {SYN} --out runs/syn/decoder", "runs/syn/decoder/result.json"),
    (f"stmoe train experts {TINY} --synthetic {SYN} --decoder-checkpoint runs/syn/decoder/checkpoints/best.pt "
     "--out runs/syn/experts", "runs/syn/experts/expert-2/result.json"),
    (f"stmoe train baseline {TINY} --model convlstm --real data/all --out runs/syn/convlstm",
     "runs/syn/convlstm/result.json"),
    # 3. fine-tune on your data: the STMoE from the synthetic experts, a baseline from its D^all weights (--init)
    (f"stmoe train gating {TINY} --real data/mine --experts-dir runs/syn/experts "
     "--decoder-checkpoint runs/syn/decoder/checkpoints/best.pt --out runs/mine/gating", "runs/mine/gating/result.json"),
    (f"stmoe train global {TINY} --real data/mine --checkpoint runs/mine/gating/checkpoints/best.pt "
     "--out runs/mine/global", "runs/mine/global/result.json"),
    (f"stmoe train baseline {TINY} --model convlstm --real data/mine --init runs/syn/convlstm/checkpoints/best.pt "
     "--out runs/mine/convlstm-init", "runs/mine/convlstm-init/result.json"),
    (f"stmoe train baseline {TINY} --model convlstm --real data/mine --out runs/mine/convlstm",
     "runs/mine/convlstm/result.json"),
    # 4. forecast: 16 frames from frames -12..-9 of the video: 8 with a truth to compare, then 8 past its end
    (f"stmoe predict --checkpoint runs/mine/global/checkpoints/best.pt --data {CLIP} --horizon 16 --start -12 "
     "--out forecast", "forecast/forecast.h5"),
    # 5. compare on the test split of your clips
    *[(f"stmoe evaluate --checkpoint runs/{run}/checkpoints/best.pt --data data/mine --metrics mse,ssim "
       f"--out compare/{name}.json", f"compare/{name}.json")
      for name, run in (("stmoe", "mine/global"), ("convlstm-init", "mine/convlstm-init"),
                        ("convlstm", "mine/convlstm"), ("convlstm-dall-only", "syn/convlstm"))],
]
ROWS = (("STMoE-conv, experts from synthetic data, fine-tuned (gating, global)", "stmoe"),
        ("ConvLSTM pre-trained on D^all, fine-tuned (--init)", "convlstm-init"),
        ("ConvLSTM trained on your clips only", "convlstm"),
        ("ConvLSTM pre-trained on D^all, not fine-tuned", "convlstm-dall-only"))


def shell(command: str, work: Path) -> None:
    args = shlex.split(command.replace("../shared/", f"{REPO.parent / 'shared'}/"))
    args = [sys.executable, "-m", args[0], *args[1:]]
    t0 = time.perf_counter()
    res = subprocess.run(args, cwd=work, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {command}\n{res.stdout}{res.stderr}")
    print(f"{time.perf_counter() - t0:6.1f} s  {command}", flush=True)


def main(work: Path) -> None:
    from PIL import Image

    work.mkdir(parents=True, exist_ok=True)
    if not VIDEO.is_file():
        sys.exit(f"needs {VIDEO} (../shared/data beside the checkout, see README)")
    start = time.perf_counter()
    for command, done in WALKTHROUGH:
        if not (work / done).exists():
            shell(command, work)
    table = {name: json.loads((work / "compare" / f"{name}.json").read_text()) for _, name in ROWS}
    # evaluate scores copying the last observed frame on the same clips: the reference every model must beat
    table["copy-last-frame"] = {**table["stmoe"]["copy_last_frame"], "count": table["stmoe"]["count"]}
    (work / "compare.json").write_text(json.dumps({k: {"mean": v["mean"], "count": v["count"]}
                                                   for k, v in table.items()}, indent=2) + "\n")
    print(f"\n{table['stmoe']['count']} test clips; MSE per frame, SSIM (the page's table):")
    for label, name in (*ROWS, ("Copy the last observed frame", "copy-last-frame")):
        m = table[name]["mean"]
        print(f"| {label} | {m['mse']:.2f} | {m['ssim']:.3f} |")
    images = REPO / "docs" / "images"
    shutil.copyfile(work / "forecast" / "forecast-00000-strip.png", images / "stmoe-own-forecast-strip.png")
    gif = Image.open(work / "forecast" / "forecast-00000.gif")
    gif.seek(gif.n_frames - 1)  # the last frame: 8 frames past the end of the video
    gif.convert("RGB").save(images / "stmoe-own-forecast-gif.png")
    print(f"\nwrote docs/images/stmoe-own-forecast-strip.png, stmoe-own-forecast-gif.png "
          f"({time.perf_counter() - start:.0f} s this call)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve())
