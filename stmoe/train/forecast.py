"""Forecasting past the frames present: a free-running roll-out of ``horizon`` frames from l observed frames.

``stmoe predict --horizon H`` takes whole sequences -- sequence i of a physvid folder's split, or the i-th video /
frame folder / array sequence / radar event that :func:`stmoe.data.real.load_sequences` reads -- and feeds the model
the l frames starting at ``start`` (default: the last l frames, so the whole forecast lies beyond the data). The model
predicts H frames from them without ever seeing a true frame again (the models' roll-out feeds back their own
predictions; ``n`` of training does not limit H). The truth of a predicted frame is shown only where the sequence
has it; after that the outputs say so:

    forecast-00003.gif         truth | prediction; after the last true frame the truth panel is hatched and labelled
                               "no truth", and the bar under the prediction turns from red to purple
    forecast-00003-strip.png   rows truth, prediction, |error|: empty truth and error cells after the last true frame,
                               and a red line at the column where the truth ends
    forecast.h5                inputs (N, l, C, H, W) uint8, predictions (N, H, C, H, W) float32 in [0, 1],
                               truth (N, H, C, H, W) uint8 -- only the first truth_frames[i] frames of clip i are data,
                               the rest zeros --, truth_frames (N,), start (N,), sequence_frames (N,), clip_index (N,)
                               and, for mixtures, weights (N, H, m, P, Q)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.errors import DataError
from .config import TrainConfig
from .data import ClipDataset, _open_source, _shape, to_unit
from .errors import TrainConfigError
from .evaluate import is_physvid_dataset
from .predict import FORMATS, attention_image, gif_frames, model_for_pictures, strip_image

def load_sequences_for(data: Any, cfg: TrainConfig, model: torch.nn.Module, *, split: str = "test",
                       kind: str = "auto") -> tuple[list[np.ndarray], str]:
    """Whole sequences (T_i, C, H, W) uint8 at the model's size and a description of where they come from.

    A physvid folder gives the sequences of its ``split`` (the run's split ranges), centre-cropped like
    :class:`ClipDataset` (its checks: channels, frames smaller than the model); anything else is read by
    :func:`stmoe.data.real.load_sequences` (resized to the model's size). Raises DataError when nothing is there.
    """
    mc = model.config
    size, ch = (mc.height, mc.width), mc.in_channels
    if is_physvid_dataset(data):
        src, name = _open_source(data)
        T = _shape(src)[1]
        if T < 2:
            raise DataError(f"{name} has {T} frame(s) per sequence; a forecast needs at least the model's "
                            f"l = {cfg.data.input_frames}")
        # One "clip" per sequence: its whole length (l + n only set the clip length here).
        whole = dataclasses.replace(cfg.data, input_frames=1, output_frames=T - 1, window_stride=0, path=())
        ds = ClipDataset(data, whole, split, size, ch, seed=cfg.run.seed, dtype=torch.uint8)
        return [ds[j].numpy() for j in range(len(ds))], ds.describe().replace("clips", "sequences", 1)
    from ..data.real import ClipConfig, load_sequences

    if not Path(data).exists() and not any(c in str(data) for c in "*?["):
        raise DataError(f"--data {data} does not exist")
    seqs = load_sequences(data, ClipConfig(size=size, channels=ch), kind=kind)
    return seqs, f"{len(seqs)} sequence(s) from {data}"


@torch.no_grad()
def forecast(checkpoint: str | Path, data: Any, out: str | Path, *, horizon: int, indices: Sequence[int] = (0,),
             start: int | None = None, split: str = "test", formats: Sequence[str] = FORMATS, scale: int = 4,
             fps: int = 4, device: str = "auto", kind: str = "auto") -> dict[str, Any]:
    """Roll ``checkpoint``'s model out ``horizon`` frames from l frames of each chosen sequence of ``data``.

    ``start``: index of the first observed frame in each sequence (default: T_i - l, the last l frames, so that every
    predicted frame lies past the data); negative values count from the end like Python indices. Writes the files of
    the module docstring into ``out`` and returns {"files", "indices", "truth_frames", "data"}.
    Raises TrainConfigError (exit 2) for a horizon < 1, an unknown format, an index or start outside the sequences.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise TrainConfigError(f"--horizon must be an integer >= 1, got {horizon!r}")
    model, ckpt, cfg, dev = model_for_pictures(checkpoint, formats, device)
    seqs, where = load_sequences_for(data, cfg, model, split=split, kind=kind)
    if not seqs:
        raise DataError(f"no sequences to forecast from in {data} (split {split!r})")
    idx = [int(i) for i in indices] or [0]
    outside = [i for i in idx if not 0 <= i < len(seqs)]
    if outside:
        raise TrainConfigError(f"--index {outside[0]} is out of range: {where} (0..{len(seqs) - 1})")
    l = cfg.data.input_frames
    starts = []
    for i in idx:
        T = len(seqs[i])
        s = T - l if start is None else (start + T if start < 0 else start)
        if T < l or not 0 <= s <= T - l:
            raise TrainConfigError(f"--start {start if start is not None else s}: sequence {i} has {T} frames and the "
                                   f"model observes l = {l}; allowed: 0..{T - l} (or -{T}..-{l}), default {T - l} "
                                   f"(the last l frames)")
        starts.append(s)
    from physvid.dataset.export import check_scale  # pictures too big for memory are refused before any is drawn

    check_scale((len(idx), l + horizon) + tuple(seqs[idx[0]].shape[1:]), scale, len(idx), gif="gif" in formats)
    inputs_u8 = np.stack([seqs[i][s:s + l] for i, s in zip(idx, starts)])
    truth = [seqs[i][s + l:s + l + horizon] for i, s in zip(idx, starts)]
    res = model(to_unit(torch.from_numpy(inputs_u8).to(dev)), horizon)
    pred = res.pred.float().clamp(0, 1).cpu().numpy()
    weights = res.weights.float().cpu().numpy() if res.weights is not None else None
    names = tuple(getattr(model.config, "experts", None) or (ckpt["model"]["name"],))
    x = inputs_u8.astype(np.float32) / 255.0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for b, i in enumerate(idx):
        stem = out / f"forecast-{i:05d}"
        y = truth[b].astype(np.float32) / 255.0
        if "gif" in formats:
            frames = gif_frames(x[b], y, pred[b], scale=scale)
            frames[0].save(f"{stem}.gif", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
            files.append(f"{stem}.gif")
        if "png" in formats:
            strip_image(x[b], y, pred[b], scale=max(1, scale // 2)).save(f"{stem}-strip.png")
            files.append(f"{stem}-strip.png")
            if weights is not None:
                attention_image(pred[b], weights[b], names, scale=max(1, scale // 2)).save(f"{stem}-attention.png")
                files.append(f"{stem}-attention.png")
    counts = [len(t) for t in truth]
    if "h5" in formats:
        import h5py

        padded = np.zeros((len(idx), horizon) + inputs_u8.shape[2:], np.uint8)
        for b, t in enumerate(truth):
            padded[b, :len(t)] = t
        path = out / "forecast.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("inputs", data=inputs_u8)
            f.create_dataset("predictions", data=pred.astype(np.float32))
            f.create_dataset("truth", data=padded)
            f.create_dataset("truth_frames", data=np.asarray(counts, np.int64))
            f.create_dataset("start", data=np.asarray(starts, np.int64))
            f.create_dataset("sequence_frames", data=np.asarray([len(seqs[i]) for i in idx], np.int64))
            f.create_dataset("clip_index", data=np.asarray(idx, np.int64))
            if weights is not None:
                f.create_dataset("weights", data=weights.astype(np.float32))
            f.attrs["axes"] = "inputs/truth/predictions: N,T,C,H,W; weights: N,T,m,P,Q"
            f.attrs["truth"] = ("truth[i, :truth_frames[i]] are the frames that followed the inputs in the data; "
                                "truth[i, truth_frames[i]:] are zeros: the data ended (forecast past it)")
            f.attrs["horizon"] = horizon
            f.attrs["model"] = ckpt["model"]["name"]
            f.attrs["model_config"] = json.dumps(ckpt["model"]["config"], default=list)
            f.attrs["checkpoint"] = str(checkpoint)
            f.attrs["data"] = str(data)
            f.attrs["split"] = split if is_physvid_dataset(data) else "all"
            f.attrs["experts"] = json.dumps(list(names))
        files.append(str(path))
    return {"files": files, "indices": idx, "truth_frames": counts, "starts": starts, "data": where}
