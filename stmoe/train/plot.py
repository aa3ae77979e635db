"""Training curves of a run folder (or of every stage of a pipeline folder) as one PNG (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import TrainConfigError, TrainError


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
    return out


def find_runs(run_dir: str | Path) -> list[Path]:
    """Folders under ``run_dir`` (itself included) holding a metrics.jsonl, in pipeline order where it applies."""
    root = Path(run_dir)
    if not root.is_dir():
        raise TrainConfigError(f"{root} is not a run folder")
    runs = sorted({p.parent for p in root.rglob("metrics.jsonl")})
    order = {"decoder": 0, "experts": 1, "gating": 2, "global": 3}

    def key(p: Path):
        rel = p.relative_to(root).parts
        return (order.get(rel[0], 9) if rel else -1, str(p))

    return sorted(runs, key=key)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Loss (train per epoch and per logged step, validation per epoch) and learning rate of every run under
    ``run_dir`` -> PNG (default ``run_dir/curves.png``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TrainError("`stmoe plot` needs matplotlib (pip install matplotlib)") from None
    root = Path(run_dir)
    runs = find_runs(root)
    if not runs:
        raise TrainConfigError(f"no metrics.jsonl under {root}: nothing to plot (is it a run folder?)")
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 2.8 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        epochs = _read_jsonl(run / "metrics.jsonl")
        steps = _read_jsonl(run / "steps.jsonl")
        name = str(run.relative_to(root)) if run != root else root.name
        ax, ax_lr = row
        if steps:
            spe = max(1, max(r["step"] for r in epochs)) / max(1, max(r["epoch"] for r in epochs)) if epochs else 1
            ax.plot([r["step"] / spe for r in steps], [r["loss"] for r in steps], color="0.75", lw=0.8,
                    label="train (steps)")
        if epochs:
            e = [r["epoch"] for r in epochs]
            ax.plot(e, [r["train_loss"] for r in epochs], "o-", label="train")
            if any("val_loss" in r for r in epochs):
                ax.plot([r["epoch"] for r in epochs if "val_loss" in r],
                        [r["val_loss"] for r in epochs if "val_loss" in r], "s-", label="validation")
            best = [r for r in epochs if r.get("best_epoch") == r["epoch"]]
            if best:
                b = best[-1]
                ax.axvline(b["epoch"], color="tab:green", ls=":", lw=1, label=f"best (epoch {b['epoch']})")
            ax_lr.plot(e, [r["lr"] for r in epochs], "o-", color="tab:purple", label="learning rate")
            if any("teacher_forcing" in r for r in epochs):
                ax_tf = ax_lr.twinx()
                ax_tf.plot(e, [r.get("teacher_forcing", 0.0) for r in epochs], "--", color="tab:orange")
                ax_tf.set_ylabel("teacher forcing", color="tab:orange")
        ax.set_title(f"{name}: loss")
        ax.set_xlabel("epoch")
        ax.set_yscale("log") if all(r.get("train_loss", 1) > 0 for r in epochs) and epochs else None
        ax.legend(fontsize=7)
        ax_lr.set_title(f"{name}: learning rate")
        ax_lr.set_xlabel("epoch")
    fig.tight_layout()
    path = Path(out) if out is not None else root / "curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
