"""Tables and figures of a reproduction: results.json, table.md (ours beside the paper's) and PNG figures.

MSE conventions (docs/METRICS.md): ours is the per-frame sum over C x H x W at the profile's frame size, averaged over
frames and test clips; the paper's Dynamic MNIST numbers are per-frame sums at 128 x 128. The two are only comparable
per pixel, so the table shows both as measured and both divided by H x W.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from physvid.files import atomic_write_text

from .spec import Profile

ROLE_COLORS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 60], [70, 110, 240]], np.uint8)  # bg, T, R, I


def _stat(values: list[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    arr = np.asarray(vals, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _fmt(stat: tuple[float, float] | None, digits: int, seeds: int) -> str:
    if stat is None:
        return "—"
    mean, std = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def summarise(evaluated: list[dict]) -> list[dict]:
    """One entry per row (in table order): mean and std over seeds of every metric, alignment of seed 0."""
    rows: dict[str, dict] = {}
    for rec in evaluated:
        r = rows.setdefault(rec["key"], {"row": rec["row"], "key": rec["key"], "model": rec["model"],
                                         "kind": rec["kind"], "real": rec["real"], "paper": rec["paper"],
                                         "seeds": [], "metrics": {}, "alignment": rec.get("alignment"),
                                         "checkpoint": rec["checkpoint"], "recipe": rec.get("recipe"),
                                         "search": rec.get("search")})
        r["seeds"].append(rec["seed"])
        for k, v in rec["mean"].items():
            r["metrics"].setdefault(k, []).append(v)
    out = []
    for r in rows.values():
        r["stats"] = {k: _stat(v) for k, v in r["metrics"].items()}
        out.append(r)
    # The trivial reference of each test set: repeat the last observed frame (the same clips for every row and seed).
    seen = {r["real"] for r in out}
    for real in sorted(seen, key=[r["real"] for r in out].index):
        rec = next((e for e in evaluated if e["real"] == real and e.get("copy_last_frame")), None)
        if rec is None:
            continue
        out.append({"row": COPY_LAST, "key": f"copy-last-{real}", "model": "copy-last-frame", "kind": "reference",
                    "real": real, "paper": {}, "seeds": [], "alignment": None, "checkpoint": None, "recipe": None,
                    "search": None, "metrics": {k: [v] for k, v in rec["copy_last_frame"]["mean"].items()},
                    "stats": {k: (v, 0.0) if v is not None else None
                              for k, v in rec["copy_last_frame"]["mean"].items()}})
    return out


COPY_LAST = "copy last frame"


def _machines(meta: dict) -> str:
    """This call's machine, or every machine whose rows the table holds (rows taken with --rows-from)."""
    machines = meta.get("machines") or [meta["machine"]]
    return machines[0] if len(machines) == 1 else "rows from " + " and ".join(machines)


def markdown(name: str, prof: Profile, rows: list[dict], meta: dict) -> str:
    seeds = meta["seeds"]
    paper_hw = 128 * 128  # the paper's Dynamic MNIST frames
    lines = [f"### `{name}` — {meta['description']}", "",
             f"Profile `{prof.name}` ({prof.size}×{prof.size}, patch {prof.patch_size}, {prof.num_layers} × "
             f"{prof.num_hidden} hidden, {prof.filter_size}×{prof.filter_size} filters); budget per row: "
             f"{prof.real_steps} optimiser steps on the real training set (batch {prof.batch_size}; an STMoE: half "
             f"gating, half global), plus {prof.syn_steps} steps per network trained on synthetic data (STMoE experts "
             f"and F^0, MIM w/ D^all's pre-training); {prof.n_train} real training sequences unless the row says "
             f"otherwise; seeds: {seeds}; {_machines(meta)}; {meta['date']}.", ""]
    has_bmse = any(r["stats"].get("bmse") and r["real"] == "radar" for r in rows) or name == "noise"
    head = ["row", "data", "recipe (chosen on validation)", "MSE / frame", "MSE / pixel ×1e3", "SSIM", "paper MSE",
            "paper MSE / pixel ×1e3", "paper SSIM"]
    if has_bmse:
        head += ["B-MSE", "paper B-MSE"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        st, paper = r["stats"], r["paper"]
        paper_px = paper.get("mse") / paper_hw * 1e3 if "mse" in paper and name == "table1" else None
        px = st.get("mse_pixel")
        recipe = r["recipe"]["describe"] if r.get("recipe") else "—"
        cells = [r["row"], r["real"], recipe, _fmt(st.get("mse"), 2, seeds),
                 _fmt((px[0] * 1e3, px[1] * 1e3) if px else None, 3, seeds), _fmt(st.get("ssim"), 4, seeds),
                 f"{paper['mse']:g}" if "mse" in paper else "—",
                 f"{paper_px:.3f}" if paper_px is not None else "—",
                 f"{paper['ssim']:.3f}" if "ssim" in paper else "—"]
        if has_bmse:
            cells += [_fmt(st.get("bmse"), 2, seeds) if r["real"] == "radar" else "—",
                      f"{paper['bmse']:g}" if "bmse" in paper else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"`{COPY_LAST}`: the trivial forecast that repeats the last observed frame, scored on the same test "
              "clips by the same code (no training): a row that does not beat it has learned less than \"nothing "
              "moves\"."]
    searched = [r for r in rows if r.get("search")]
    if searched:
        names = list(dict.fromkeys(t["recipe"] for r in searched for t in r["search"]))
        lines += ["", "Recipe search (seed 0): validation MSE / frame of each candidate's selected checkpoint; the "
                  "lowest is kept (**bold**) and trained for every seed. The test split is read once, after the choice.",
                  ""]
        # `real` repeats a row name once per data set: name the set then, or the rows cannot be told apart.
        by_data = len({r["real"] for r in searched}) > 1
        first = "| row | data | " if by_data else "| row | "
        lines += [first + " | ".join(names) + " |", "|---|" + "---|" * (len(names) + by_data)]
        for r in searched:
            got = {t["recipe"]: t["val_mse"] for t in r["search"]}
            best = r["recipe"]["name"] if r.get("recipe") else None
            cells = [("**{:.3f}**" if n == best else "{:.3f}").format(got[n]) if n in got else "—" for n in names]
            label = f"{r['row']} | {r['real']}" if by_data else r["row"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if name == "real":
        from .spec import REAL_SKIPPED

        lines += [""] + [f"Not run: `{k}`: {why}." for k, why in REAL_SKIPPED.items()]
    aligned = [r for r in rows if r.get("alignment")]
    if aligned:
        lines += ["", "Attention alignment on the Dynamic MNIST test set (stmoe.alignment; expert k = translation, "
                  "rotation, intensity): the share of each expert's weight over object cells that lies on cells of "
                  "its own property (physics-blind gate: the property's share of object cells, in brackets), the IoU "
                  "of argmax_k W^k with the property map on the P×Q grid, and the mean weights.", "",
                  "| row | own share T (frac) | own share R (frac) | own share I (frac) | IoU T / R / I | mean IoU | "
                  "mean W |", "|---|---|---|---|---|---|---|"]
        for r in aligned:
            a = r["alignment"]
            own = [f"{a['own_share'].get(k, float('nan')):.3f} ({a['role_fraction'].get(k, float('nan')):.3f})"
                   for k in ("translation", "rotation", "intensity")]
            iou = " / ".join(f"{a['iou'].get(k, 0.0):.3f}" for k in ("translation", "rotation", "intensity"))
            lines.append(f"| {r['row']} | {' | '.join(own)} | {iou} | {a['mean_iou']:.3f} | "
                         f"{', '.join(f'{w:.2f}' for w in a['mean_weight'])} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- figures
def _predictions_figure(path: Path, rows: list[dict], runner: Any, alignment: bool) -> Path | None:
    """Ground truth and each row's prediction of the first test clip (paper Fig. 4(a)); with ``alignment`` the
    property map beside the argmax attention of each STMoE row (Fig. 4(b))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..train.checkpoint import load_model
    from ..train.config import TrainConfig
    from ..train.data import split_clip, to_unit
    from ..train.evaluate import eval_dataset

    preds, weights = [], []
    base = None
    for r in rows:
        model, ckpt = load_model(runner.out / r["checkpoint"])
        cfg = TrainConfig.from_dict(ckpt["config"])
        _, test, _ = runner._real(runner_row(r))
        ds, cfg = eval_dataset(test, cfg, model, split="all" if r["real"] == "dynamic-mnist" else "test")
        clip = to_unit(ds[0][None])
        x, y = split_clip(clip, cfg.data.input_frames)
        with torch.no_grad():
            out = model(x, y.shape[1])
        preds.append(out.pred.clamp(0, 1)[0, :, 0].numpy())
        weights.append(None if out.weights is None else out.weights[0].numpy())
        if base is None:
            base = (x[0, :, 0].numpy(), y[0, :, 0].numpy(), ds.property_map(0), model.config.patch_size)
    if base is None:
        return None
    x, y, pm, p = base
    n = y.shape[0]
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(1.3 * n, 1.3 * (len(rows) + 1)), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(y[j], cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"t+{j + 1}", fontsize=7)
    axes[0, 0].set_ylabel("truth", fontsize=7)
    for i, (r, pr) in enumerate(zip(rows, preds), 1):
        for j in range(n):
            axes[i, j].imshow(pr[j], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(textwrap.fill(r["row"], 16), fontsize=7)  # wrapped, not cut: labels differ at the end
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if alignment and pm is not None and any(w is not None and w.shape[1] == 3 for w in weights):
        att = [(r, w) for r, w in zip(rows, weights) if w is not None and w.shape[1] == 3]
        fig, axes = plt.subplots(1, len(att) + 2, figsize=(1.8 * (len(att) + 2), 2.0), squeeze=False)
        t = n - 1  # the last predicted frame
        axes[0, 0].imshow(y[t], cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_title("truth", fontsize=7)
        axes[0, 1].imshow(ROLE_COLORS[pm[x.shape[0] + t].numpy()])
        axes[0, 1].set_title("property map", fontsize=7)
        for i, (r, w) in enumerate(att, 2):
            wk = w[t]  # (3, P, Q)
            rgb = (np.stack([wk[0], wk[1], wk[2]], -1) @ (ROLE_COLORS[1:] / 255.0)).clip(0, 1)
            axes[0, i].imshow(np.kron(rgb, np.ones((p, p, 1))))
            axes[0, i].set_title(textwrap.fill(r["row"], 20), fontsize=7)
        for a in axes.flat:
            a.set_xticks([])
            a.set_yticks([])
        fig.suptitle("red translation, green rotation, blue intensity", fontsize=7)
        fig.tight_layout()
        fig.savefig(path.with_name("attention.png"), dpi=110)
        plt.close(fig)
    return path


def runner_row(r: dict):
    from .spec import Row

    return Row(r["row"], r["kind"], r["model"], real=r["real"])


def _convergence_figure(path: Path, rows: list[dict], runner: Any) -> Path | None:
    """Validation MSE per epoch of the gating and global stages, one line per row (paper Fig. 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    drawn = False
    for r in rows:
        for ax, stage in zip(axes, ("gating", "global")):
            if not r.get("checkpoint"):
                continue
            f = runner.out / Path(r["checkpoint"]).parents[2] / stage / "metrics.jsonl"
            if not f.is_file():
                continue
            hist = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
            ax.plot([h["epoch"] for h in hist], [h.get("val_mse", np.nan) for h in hist], label=r["row"])
            ax.set_title(f"{stage} stage", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation MSE / frame")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _datasize_figure(path: Path, rows: list[dict]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    reference = None
    for r in rows:
        if r["kind"] == "reference":
            reference = r["stats"].get("ssim")
            continue
        method, _, n = r["row"].rpartition(", ")
        stat = r["stats"].get("ssim")
        if stat is not None:
            series.setdefault(method, []).append((int(n.split()[0]), stat[0]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for method, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    if reference is not None:
        ax.axhline(reference[0], color="gray", linestyle="--", linewidth=1, label=COPY_LAST)
    ax.set_xscale("log")
    sizes = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("real training sequences")
    ax.set_ylabel("SSIM")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: Path, name: str, prof: Profile, evaluated: list[dict], meta: dict, runner: Any) -> dict:
    """results.json, table.md and the experiment's figures in ``out``; returns the results dict."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(evaluated)
    figures = []
    if name == "noise":
        figures.append(_convergence_figure(out / "convergence.png", rows, runner))
    if name == "datasize":
        figures.append(_datasize_figure(out / "datasize.png", rows))
    else:
        by_data: dict[str, list[dict]] = {}
        for r in rows:
            # trained rows whose networks are in this folder (not the copy-last reference, not rows taken from
            # another reproduction's records)
            if r["checkpoint"] and (runner.out / r["checkpoint"]).is_file():
                by_data.setdefault(r["real"], []).append(r)
        for real, group in by_data.items():
            fname = "predictions.png" if len(by_data) == 1 else f"predictions-{real}.png"
            figures.append(_predictions_figure(out / fname, group, runner, alignment=real == "dynamic-mnist"))
            if (out / "attention.png").is_file():
                figures.append(out / "attention.png")
    result = {**meta, "rows": [{k: v for k, v in r.items() if k != "metrics"} for r in rows],
              "figures": sorted({str(Path(f).name) for f in figures if f})}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "table.md", markdown(name, prof, rows, meta))
    return result
