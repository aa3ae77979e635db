"""Regenerate the STMoE pictures and numbers of docs/training.md from a run of scripts/tiny_end_to_end.sh.

    python docs/make_stmoe_figures.py runs/tiny-e2e      # WORK folder of the tiny run

Writes docs/images/stmoe-tiny-{strip,attention,curves,gif-frame,alignment}.png and prints the test metrics and the
attention alignment (stmoe.alignment) that docs/training.md quotes, for the real set's test split (metrics.json) and
the larger held-out set (heldout.json), so the page never drifts from a real run.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

IMAGES = Path(__file__).resolve().parent / "images"
ROLE_RGB = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 60], [70, 110, 240]], np.uint8)  # bg, T, R, I


def alignment_picture(work: Path, out: Path, clips=(0, 1, 2)) -> None:
    """Per test clip, the last predicted frame: truth | property map (physvid) | W as colour (the STGN)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from stmoe.train.checkpoint import load_model
    from stmoe.train.config import TrainConfig
    from stmoe.train.data import split_clip, to_unit
    from stmoe.train.evaluate import eval_dataset

    model, ckpt = load_model(work / "run" / "global" / "checkpoints" / "best.pt")
    cfg = TrainConfig.from_dict(ckpt["config"])
    ds, cfg = eval_dataset(work / "data" / "real", cfg, model, split="test")
    l, p = cfg.data.input_frames, model.config.patch_size
    fig, axes = plt.subplots(len(clips), 3, figsize=(5.4, 1.9 * len(clips)), squeeze=False)
    for row, j in enumerate(clips):
        x, y = split_clip(to_unit(ds[j][None]), l)
        with torch.no_grad():
            w = model(x, y.shape[1]).weights[0, -1].numpy()  # (m, P, Q), last predicted frame
        pm = ds.property_map(j)[l + y.shape[1] - 1].numpy()
        rgb = np.einsum("kpq,kc->pqc", w, ROLE_RGB[1:] / 255.0).clip(0, 1)
        for ax, img, title in zip(axes[row], (y[0, -1, 0].numpy(), ROLE_RGB[pm], np.kron(rgb, np.ones((p, p, 1)))),
                                  ("truth", "property map (physvid)", "attention W (STGN)")):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1 if img.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle("red translation, green rotation, blue intensity", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(work: Path) -> None:
    from PIL import Image

    pred = work / "predict"
    shutil.copy(pred / "clip-00000-strip.png", IMAGES / "stmoe-tiny-strip.png")
    shutil.copy(pred / "clip-00000-attention.png", IMAGES / "stmoe-tiny-attention.png")
    shutil.copy(work / "curves.png", IMAGES / "stmoe-tiny-curves.png")
    with Image.open(pred / "clip-00000.gif") as gif:
        gif.seek(gif.n_frames - 1)
        gif.convert("RGB").save(IMAGES / "stmoe-tiny-gif-frame.png")
    alignment_picture(work, IMAGES / "stmoe-tiny-alignment.png")
    for name in ("metrics.json", "heldout.json"):  # the real set's test split, the larger held-out set
        if not (work / name).exists():
            continue
        metrics = json.loads((work / name).read_text())
        print(name, json.dumps({"mean": {k: metrics["mean"][k] for k in ("mse", "ssim")}, "clips": metrics.get("count"),
                                "alignment": metrics.get("alignment")}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/make_stmoe_figures.py WORK   (the folder of scripts/tiny_end_to_end.sh)")
    main(Path(sys.argv[1]))
