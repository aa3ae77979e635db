"""Evaluation of a checkpoint (paper §4 tables): metrics per predicted frame and averaged, with stmoe.metrics.

Data: a physvid folder (its ``split`` -- by default the test range the run was configured with) or any file or
folder that :func:`stmoe.data.real.load_clips` reads (video, frame folder, .npy/.npz, radar), cut into clips of l + n
frames at the model's size. Conventions of every metric: docs/METRICS.md.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.errors import DataError
from ..metrics import DEFAULT_METRICS, MetricAccumulator, MetricConfig, field_endpoint_error, flow_endpoint_error
from ..models.addl import recording_fields
from .checkpoint import checkpoint_config, load_model
from .config import TrainConfig
from .data import ClipDataset, crop_notes, split_clip, to_unit
from .distributed import resolve_device
from .errors import TrainConfigError, TrainError


def is_physvid_dataset(path: str | Path) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / "manifest.json").is_file()) or (p.is_file() and p.suffix.lower() in (".h5", ".hdf5"))


def eval_dataset(data: Any, cfg: TrainConfig, model: torch.nn.Module, *, split: str = "test",
                 output_frames: int | None = None, kind: str = "auto", stride: int | None = None,
                 frame_step: int = 1) -> tuple[ClipDataset, TrainConfig]:
    """The clips to evaluate/predict on and the data config used (``output_frames`` may change n)."""
    dcfg = cfg.data
    if output_frames is not None:
        dcfg = dataclasses.replace(dcfg, output_frames=int(output_frames))
    dcfg = dataclasses.replace(dcfg, path=())
    mc = model.config
    size, ch = (mc.height, mc.width), mc.in_channels
    if isinstance(data, np.ndarray) or is_physvid_dataset(data):
        ds = ClipDataset(data, dcfg, split if not isinstance(data, np.ndarray) else "all", size, ch,
                         seed=cfg.run.seed, dtype=torch.uint8)
    else:
        from ..data.real import load_clips

        if not Path(data).exists() and not any(c in str(data) for c in "*?["):
            raise DataError(f"--data {data} does not exist")
        clips = load_clips(data, clip_length=dcfg.clip_length, stride=stride or dcfg.clip_length,
                           frame_step=frame_step, size=size, channels=ch, kind=kind)
        ds = ClipDataset(clips, dataclasses.replace(dcfg, window_stride=0, max_sequences=None), "all", size, ch,
                         seed=cfg.run.seed, dtype=torch.uint8)
        ds.names = [str(data)]
    if len(ds) == 0:
        raise DataError(f"no clips to evaluate in {data} (split {split!r})")
    return ds, dataclasses.replace(cfg, data=dcfg)


@torch.no_grad()
def evaluate(checkpoint: str | Path, data: Any, out: str | Path | None = None, *, split: str = "test",
             batch_size: int | None = None, metrics: Sequence[str] | None = None, output_frames: int | None = None,
             device: str = "auto", kind: str = "auto", max_clips: int | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``data`` -> {"per_frame": {metric: [n]}, "mean": {metric: float}, ...}.

    ``copy_last_frame`` holds the same metrics for the trivial forecast that repeats the last observed frame (same
    clips, same code): the reference a model must beat. Written as JSON to ``out`` when given. ``metrics`` defaults to stmoe.metrics.DEFAULT_METRICS (everything but the
    slow optical-flow MSE).
    """
    model, ckpt = load_model(checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint)
    try:
        mcfg = MetricConfig(metrics=tuple(metrics) if metrics else DEFAULT_METRICS)
    except ValueError as exc:
        raise TrainConfigError(str(exc)) from None
    dev = resolve_device(device)
    model.to(dev)
    ds, cfg = eval_dataset(data, cfg, model, split=split, output_frames=output_frames, kind=kind)
    idx = list(range(len(ds) if max_clips is None else min(len(ds), max_clips)))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx),
                                         batch_size=batch_size or cfg.data.eval_batch_size or cfg.data.batch_size)
    l, n = cfg.data.input_frames, cfg.data.output_frames
    acc = MetricAccumulator(mcfg)
    # The trivial reference, by the same code on the same clips: repeat the last observed frame n times. A model
    # that does not beat it has learned less than "nothing moves" (on small real clips it is often a high bar).
    copy_acc = MetricAccumulator(mcfg)
    # Attention alignment (stmoe.alignment) when the model gates m = 3 experts and the data knows each pixel's physics.
    meter = None
    if getattr(model, "num_experts", 1) == 3 and getattr(model, "gate", None) is not None and idx \
            and ds.property_map(idx[0]) is not None:
        from ..alignment import AlignmentMeter

        meter = AlignmentMeter(model.config.patch_size)
    # Endpoint error of the motion in the predictions against physvid's exact flow, when the data carry it (--flow):
    # the paper's Fig. 5(b) measured against the truth instead of Farneback on the true frames.
    epe = [] if idx and ds.flow(idx[0]) is not None else None
    # ... and, for models with an ADDL (baseline or expert), the EPE of ADDL's own advection field against the exact
    # displacement of each predicted frame pair, with the zero field ("nothing moves") as the reference.
    fields_epe: dict[str, list[np.ndarray]] = {}
    zero_epe: list[np.ndarray] = []
    offset = 0
    start = time.perf_counter()
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc="evaluate", file=sys.stderr, unit="batch")
    for clip in loader:
        inputs, targets = split_clip(to_unit(clip.to(dev)), l)
        with recording_fields(model) as fields:
            output = model(inputs, n)
        pred = output.pred.float().clamp(0.0, 1.0)
        acc.update(pred.cpu(), targets.cpu(), last_input=inputs[:, -1].cpu())
        copy_acc.update(inputs[:, -1:].expand_as(targets).float().cpu(), targets.cpu(), last_input=inputs[:, -1].cpu())
        if meter is not None:
            maps = torch.stack([ds.property_map(idx[offset + b]) for b in range(clip.shape[0])])[:, l:l + n]
            meter.update(output.weights.float().cpu(), maps)
        if epe is not None:
            true = torch.stack([ds.flow(idx[offset + b]) for b in range(clip.shape[0])])[:, l - 1:l - 1 + n]
            epe.append((flow_endpoint_error(pred.cpu(), true, inputs[:, -1].cpu()),
                        flow_endpoint_error(targets.cpu(), true, inputs[:, -1].cpu())))
            if fields:
                # ADDL predicts frame t+1 as I_t(x - w(x)) on t+1's grid, and x + flow_backward(x) is where x's
                # content was at t: the exact field is minus the backward flow of the pair (l-1+i, l+i).
                back = torch.stack([ds.flow(idx[offset + b], "backward") for b in range(clip.shape[0])])
                exact = -back[:, l - 1:l - 1 + n]
                zero_epe.append(field_endpoint_error(torch.zeros_like(exact), exact))
                for name, ws in fields.items():  # its last n fields are the n prediction steps'
                    fields_epe.setdefault(name, []).append(
                        field_endpoint_error(torch.stack(ws[-n:], 1).float().cpu(), exact))
        offset += clip.shape[0]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    result = {
        "notes": crop_notes(ds),
        "checkpoint": str(checkpoint), "model": ckpt["model"]["name"], "stage": ckpt.get("stage"),
        "epoch": ckpt.get("epoch"), "data": str(data) if not isinstance(data, np.ndarray) else "array",
        "split": split if not isinstance(data, np.ndarray) and is_physvid_dataset(data) else "all",
        "input_frames": l, "output_frames": n,
        "conventions": "docs/METRICS.md: mse/mae are per-frame sums over C*H*W, *_pixel per-pixel means, "
                       "frames in [0, 1]",
        **acc.result(), "seconds": round(time.perf_counter() - start, 3),
        "copy_last_frame": {k: v for k, v in copy_acc.result().items() if k != "count"},
    }
    if meter is not None:
        result["alignment"] = meter.result()
    if epe:
        model_epe, truth_epe = (np.concatenate([e[k] for e in epe]) for k in (0, 1))
        result["flow_epe"] = {"per_frame": model_epe.mean(0).tolist(), "mean": float(model_epe.mean()),
                              "true_frames": float(truth_epe.mean()), "units": "pixels",
                              "note": "Farneback flow of the predicted (true_frames: the true) frames against "
                                      "physvid's exact flow; true_frames is Farneback's own error"}
    if fields_epe:
        zero = float(np.concatenate(zero_epe).mean())
        result["field_epe"] = {
            name: {"per_frame": e.mean(0).tolist(), "mean": float(e.mean()), "zero_field": zero, "units": "pixels",
                   "note": "ADDL's advection field w (prediction I_{t+1}(x) = I_t(x - w(x))) of each predicted frame "
                           "against the exact one, minus physvid's flow_backward of the pair t -> t+1; zero_field: "
                           "the same for w = 0 (the mean true motion)"}
            for name, e in ((name, np.concatenate(v)) for name, v in fields_epe.items())}
    if out is not None:
        _write_result(Path(out), result)
    return result


def _write_result(out: Path, result: dict[str, Any]) -> None:
    """All or nothing: a full disk leaves no half-written JSON behind (one line, exit code 1)."""
    from physvid.files import atomic_write_text

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise TrainError(f"cannot write {out}: {exc.strerror or exc}") from None
