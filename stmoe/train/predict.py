"""Predictions of a checkpoint as files: HDF5 arrays, animated GIFs, PNG strips and attention overlays per expert.

Pictures follow the paper's Figures 4(b) and 9: the predicted frame in grey with the attention weight W_t^k of expert k
laid over it in that expert's colour (weights live on the P x Q feature grid; each grid cell covers a p x p patch of
the frame, drawn as a block -- nearest-neighbour upsampling, so the picture shows the resolution the gate really has).

    clip-00003.gif            ground truth | prediction, observed frames first, then the predicted ones
    clip-00003-strip.png      rows: ground truth, prediction, |error|, and H(Z~^k) of each expert alone
    clip-00003-attention.png  rows: one per expert, columns: predicted frames (mixtures only)
    predictions.h5            inputs, targets, predictions, weights, expert_frames for every chosen clip
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import checkpoint_config, load_model
from .data import split_clip, to_unit
from .distributed import resolve_device
from .errors import TrainConfigError

FORMATS = ("h5", "gif", "png")
# Expert colours (RGB): translation red, rotation green, intensity blue, then more for larger m.
PALETTE = ((235, 64, 52), (60, 200, 75), (50, 120, 245), (240, 200, 40), (200, 70, 220), (40, 210, 220))
LABEL_W = 40  # minimum pixels of the label column of the strips
TRUTH_ENDS = (200, 30, 30)  # the line / label where the ground truth of a forecast ends
FORECAST = (150, 60, 200)  # the GIF's bar under frames predicted past the data


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _grey_rgb(frame: np.ndarray) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, 3) uint8 (grey repeated; RGB kept)."""
    f = np.clip(frame, 0.0, 1.0)
    img = np.repeat(f[:1], 3, axis=0) if f.shape[0] == 1 else f[:3]
    return (img.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def _scale(img: np.ndarray, s: int) -> np.ndarray:
    return img if s == 1 else np.repeat(np.repeat(img, s, axis=0), s, axis=1)


def overlay(frame: np.ndarray, weight: np.ndarray, color: Sequence[int], alpha: float = 0.75) -> np.ndarray:
    """Frame (C, H, W) in [0, 1] with ``weight`` (H, W) in [0, 1] painted over it in ``color`` -> (H, W, 3) uint8."""
    base = _grey_rgb(frame).astype(np.float32)
    w = np.clip(weight, 0.0, 1.0)[..., None] * alpha
    out = base * (1.0 - w) + np.asarray(color, np.float32)[None, None, :] * w
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _upsample(w: np.ndarray, h: int, wd: int) -> np.ndarray:
    """(P, Q) grid -> (H, W), each cell a block."""
    P, Q = w.shape
    return np.repeat(np.repeat(w, h // P, axis=0), wd // Q, axis=1)


def _grid(rows: list[tuple[str, list[np.ndarray | None]]], cell: tuple[int, int], scale: int, gap: int = 2) -> "Image":
    """Labelled rows of equally sized RGB cells (None = empty) -> one PIL image."""
    from PIL import Image, ImageDraw

    h, w = cell[0] * scale, cell[1] * scale
    cols = max(len(r[1]) for r in rows)
    font = _font()
    label_w = max(LABEL_W, 6 + max(int(font.getbbox(r[0])[2]) for r in rows))
    W = label_w + cols * (w + gap)
    H = len(rows) * (h + gap)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    canvas.info["label_width"] = label_w  # where the first column starts (the forecast strip marks a column edge)
    draw = ImageDraw.Draw(canvas)
    for i, (label, cells) in enumerate(rows):
        y = i * (h + gap)
        draw.text((2, y + h // 2 - 5), label, fill=(0, 0, 0), font=font)
        for j, c in enumerate(cells):
            x = label_w + j * (w + gap)
            if c is None:
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=(235, 235, 235))
            else:
                canvas.paste(Image.fromarray(_scale(c, scale)), (x, y))
    return canvas


def strip_image(inputs: np.ndarray, targets: np.ndarray, pred: np.ndarray, expert_frames: np.ndarray | None = None,
                expert_names: Sequence[str] = (), scale: int = 2) -> "Image":
    """PNG strip of one clip: (l, C, H, W) inputs, (k, C, H, W) targets, (n, C, H, W) prediction, (n, m, C, H, W)
    experts. A forecast past the data has fewer targets than predicted frames (k < n): the truth and error cells
    after the k-th are empty and a red line marks where the truth ends."""
    l, n, k = len(inputs), len(pred), len(targets)
    cell = inputs.shape[-2:]
    blank: list[np.ndarray | None] = [None] * l
    gone: list[np.ndarray | None] = [None] * (n - k)
    err = np.abs(pred[:k] - targets)
    rows = [("truth", [_grey_rgb(f) for f in inputs] + [_grey_rgb(f) for f in targets] + gone),
            ("pred", blank + [_grey_rgb(f) for f in pred]),
            ("|error|", blank + [_grey_rgb(f) for f in err] + gone)]
    if expert_frames is not None:
        for e in range(expert_frames.shape[1]):
            name = expert_names[e] if e < len(expert_names) else f"expert {e}"
            rows.append((f"H(Z~{e}) {name}", blank + [_grey_rgb(expert_frames[t, e]) for t in range(n)]))
    img = _grid(rows, cell, scale)
    if k < n:
        from PIL import ImageDraw

        gap = 2
        x = img.info["label_width"] + (l + k) * (cell[1] * scale + gap) - gap
        ImageDraw.Draw(img).rectangle([x - 1, 0, x + 1, img.height - 1], fill=TRUTH_ENDS)
    return img


def attention_image(pred: np.ndarray, weights: np.ndarray, expert_names: Sequence[str] = (), scale: int = 2) -> "Image":
    """Attention overlays (Fig. 4b): rows = experts, columns = predicted frames; pred (n, C, H, W), weights (n, m, P, Q)."""
    n, m = weights.shape[:2]
    H, W = pred.shape[-2:]
    rows = [("pred", [_grey_rgb(f) for f in pred])]
    for k in range(m):
        color = PALETTE[k % len(PALETTE)]
        name = expert_names[k] if k < len(expert_names) else str(k)
        rows.append((f"W{k} {name}", [overlay(pred[t], _upsample(weights[t, k], H, W), color) for t in range(n)]))
    return _grid(rows, (H, W), scale)


def gif_frames(inputs: np.ndarray, targets: np.ndarray, pred: np.ndarray, scale: int = 4) -> list["Image"]:
    """Frames of the GIF: ground truth | prediction side by side; a bar under the prediction marks observed (grey)
    and predicted (red) frames. With fewer targets than predicted frames (a forecast past the data), the truth panel
    says "no truth" after the last target and the bar turns purple ("forecast")."""
    from PIL import Image, ImageDraw

    l, n, k = len(inputs), len(pred), len(targets)
    truth = list(inputs) + list(targets)
    shown = list(inputs) + list(pred)
    h, w = inputs.shape[-2] * scale, inputs.shape[-1] * scale
    gap, bar, head = 4, 4, 12
    font = _font()
    frames = []
    for t in range(l + n):
        img = Image.new("RGB", (2 * w + gap, h + bar + head), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        beyond = t >= l + k
        draw.text((2, 0), "no truth" if beyond else "truth", fill=TRUTH_ENDS if beyond else (0, 0, 0), font=font)
        label = f"input {t + 1}/{l}" if t < l else ("forecast" if beyond else "prediction")
        draw.text((w + gap + 2, 0), label, fill=(0, 0, 0), font=font)
        if beyond:  # the data ended: a hatched panel, never a frame that could pass for the truth
            panel = Image.new("RGB", (w, h), (235, 235, 235))
            hatch = ImageDraw.Draw(panel)
            for d in range(-h, w, 8):
                hatch.line([(d, 0), (d + h, h)], fill=(200, 200, 200))
            img.paste(panel, (0, head))
        else:
            img.paste(Image.fromarray(_scale(_grey_rgb(truth[t]), scale)), (0, head))
        img.paste(Image.fromarray(_scale(_grey_rgb(shown[t]), scale)), (w + gap, head))
        color = FORECAST if beyond else (220, 40, 40) if t >= l else (150, 150, 150)
        draw.rectangle([w + gap, head + h, 2 * w + gap - 1, head + h + bar - 1], fill=color)
        frames.append(img)
    return frames


def model_for_pictures(checkpoint: str | Path, formats: Sequence[str], device: str):
    """(model on its device, checkpoint, its TrainConfig, device) after checking ``formats`` (one-line error)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise TrainConfigError(f"--format: unknown value {bad[0] if bad else formats!r}; allowed: {', '.join(FORMATS)}")
    model, ckpt = load_model(checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint)
    dev = resolve_device(device)
    return model.to(dev), ckpt, cfg, dev


@torch.no_grad()
def predict(checkpoint: str | Path, data: Any, out: str | Path, *, indices: Sequence[int] = (0,), split: str = "test",
            formats: Sequence[str] = FORMATS, output_frames: int | None = None, scale: int = 4, fps: int = 4,
            device: str = "auto", kind: str = "auto", horizon: int | None = None,
            start: int | None = None) -> dict[str, Any]:
    """Predict clips ``indices`` of ``data`` (split ``split`` of a physvid folder, or a video/frames/array file).

    Returns {"files": [...], "indices": [...]} and writes the files described in the module docstring into ``out``.
    With ``horizon`` it forecasts past the frames present instead (:func:`stmoe.train.forecast.forecast`:
    ``indices`` are then whole sequences and ``start`` their first observed frame).
    """
    from ..data.errors import DataError
    from .evaluate import eval_dataset

    if horizon is not None:
        if output_frames is not None:
            raise TrainConfigError("give --horizon (forecast, any length) or --output-frames (clips of l + n "
                                   "frames), not both")
        from .forecast import forecast

        return forecast(checkpoint, data, out, horizon=horizon, indices=indices, start=start, split=split,
                        formats=formats, scale=scale, fps=fps, device=device, kind=kind)
    if start is not None:
        raise TrainConfigError("--start goes with --horizon (the first observed frame of a forecast)")

    model, ckpt, cfg, dev = model_for_pictures(checkpoint, formats, device)
    try:
        ds, cfg = eval_dataset(data, cfg, model, split=split, output_frames=output_frames, kind=kind)
    except DataError as exc:
        if output_frames is None or "exceeds the" not in str(exc):
            raise
        raise DataError(f"{exc}; to forecast past the frames present, use --horizon {output_frames} "
                        f"instead of -n") from None
    idx = [int(i) for i in indices] or [0]
    out_of_range = [i for i in idx if not 0 <= i < len(ds)]
    if out_of_range:
        raise TrainConfigError(f"--index {out_of_range[0]} is out of range: {ds.describe()} (0..{len(ds) - 1})")
    from physvid.dataset.export import check_scale  # pictures too big for memory are refused before any is drawn

    check_scale((len(idx),) + tuple(ds[idx[0]].shape), scale, len(idx), gif="gif" in formats)
    clips = torch.stack([ds[i] for i in idx])
    l, n = cfg.data.input_frames, cfg.data.output_frames
    inputs, targets = split_clip(to_unit(clips.to(dev)), l)
    mixture = getattr(model.config, "experts", None)
    res = model(inputs, n, return_expert_frames=True)
    pred = res.pred.float().clamp(0, 1).cpu().numpy()
    x, y = inputs.cpu().numpy(), targets.cpu().numpy()
    weights = res.weights.float().cpu().numpy() if res.weights is not None else None
    experts = res.expert_frames.float().clamp(0, 1).cpu().numpy() if res.expert_frames is not None else None
    names = tuple(mixture) if mixture else (ckpt["model"]["name"],)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for b, i in enumerate(idx):
        stem = out / f"clip-{i:05d}"
        if "gif" in formats:
            frames = gif_frames(x[b], y[b], pred[b], scale=scale)
            frames[0].save(f"{stem}.gif", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
            files.append(f"{stem}.gif")
        if "png" in formats:
            strip_image(x[b], y[b], pred[b], experts[b] if experts is not None and mixture else None, names,
                        scale=max(1, scale // 2)).save(f"{stem}-strip.png")
            files.append(f"{stem}-strip.png")
            if weights is not None:
                attention_image(pred[b], weights[b], names, scale=max(1, scale // 2)).save(f"{stem}-attention.png")
                files.append(f"{stem}-attention.png")
    if "h5" in formats:
        import h5py

        path = out / "predictions.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("inputs", data=clips[:, :l].numpy())
            f.create_dataset("targets", data=clips[:, l:].numpy())
            f.create_dataset("predictions", data=pred.astype(np.float32))
            f.create_dataset("clip_index", data=np.asarray(idx, np.int64))
            if weights is not None:
                f.create_dataset("weights", data=weights.astype(np.float32))
            if experts is not None:
                f.create_dataset("expert_frames", data=experts.astype(np.float32))
            f.attrs["axes"] = "inputs/targets/predictions: N,T,C,H,W; weights: N,T,m,P,Q; expert_frames: N,T,m,C,H,W"
            f.attrs["model"] = ckpt["model"]["name"]
            f.attrs["model_config"] = json.dumps(ckpt["model"]["config"], default=list)
            f.attrs["checkpoint"] = str(checkpoint)
            f.attrs["data"] = str(data)
            f.attrs["split"] = split
            f.attrs["experts"] = json.dumps(list(names))
        files.append(str(path))
    return {"files": files, "indices": idx, "data": ds.describe()}
