"""Training from the generator with no files: ``data.synthetic`` (issue 21).

A stage's data section may give a physvid render config instead of folders::

    stages:
      experts: {data: {synthetic: {property: [translation, rotation, intensity], n: 2048, val: 128}}}
      decoder: {data: {synthetic: {property: all, noise: {ratio: 0.26}}}}

``synthetic`` holds RenderConfig keys (nested as in a physvid config file) plus ``n`` (training sequences per epoch,
default 1024), ``val`` (validation sequences, default 128) and ``fresh`` (default true: every epoch renders new
sequences). ``property`` may be a list with one entry per expert, for the experts stage. ``height``/``width`` default
to the model's and ``frames`` to ``input_frames + output_frames``.

Training clips come from :class:`physvid.stream.RenderStream`, rendered in the DataLoader workers, split over workers
and DDP ranks without overlap; validation sequences are global indices 0..val-1, rendered once into memory, and
epoch e trains on indices val + e*n ... (val + n ... without ``fresh``): the two never share a sequence.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np
import torch

from .errors import TrainConfigError

EXTRA_KEYS = {"n": 1024, "val": 128, "fresh": True}


def check_synthetic(spec: Any, where: str = "data.synthetic") -> dict[str, Any]:
    """Validate a ``data.synthetic`` mapping (TrainConfigError naming the key); returns a plain dict."""
    from physvid.config import RenderConfig
    from physvid.errors import ConfigError

    if not isinstance(spec, Mapping):
        raise TrainConfigError(f"{where} must be a physvid render config (a mapping), got {spec!r}")
    spec = copy.deepcopy(dict(spec))
    for key, default in EXTRA_KEYS.items():
        value = spec.get(key, default)
        ok = isinstance(value, bool) if key == "fresh" else (
            isinstance(value, int) and not isinstance(value, bool) and value >= (1 if key == "n" else 0))
        if not ok:
            raise TrainConfigError(f"{where}.{key} must be {'true or false' if key == 'fresh' else 'an integer >= 1'}"
                                   f", got {value!r}")
    props = spec.get("property", "all")
    for prop in props if isinstance(props, list) else [props]:
        try:
            RenderConfig.from_dict(_render_part({**spec, "property": prop}))
        except ConfigError as exc:
            raise TrainConfigError(f"{where}: {exc}") from None
    return spec


def _render_part(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in EXTRA_KEYS}


def for_expert(spec: dict[str, Any], k: int | None, where: str = "data.synthetic") -> dict[str, Any]:
    """The spec with a per-expert ``property`` list resolved to expert k's entry (k None: not the experts stage)."""
    props = spec.get("property", "all")
    if not isinstance(props, list):
        return spec
    if k is None:
        raise TrainConfigError(f"{where}.property is a list (one property per expert), which only the experts stage "
                               "reads; give this stage one property (e.g. all)")
    if not 0 <= k < len(props):
        raise TrainConfigError(f"{where}.property lists {len(props)} properties; expert {k} has none")
    return {**spec, "property": props[k]}


def render_config(spec: Mapping[str, Any], size: tuple[int, int], clip_length: int):
    """The RenderConfig of a resolved spec, with the model's frame size and the clip length as defaults."""
    from physvid.config import RenderConfig

    body = {"height": size[0], "width": size[1], "frames": clip_length, **_render_part(spec)}
    cfg = RenderConfig.from_dict(body)
    if cfg.height < size[0] or cfg.width < size[1] or cfg.frames < clip_length:
        raise TrainConfigError(f"data.synthetic renders {cfg.frames} frames of {cfg.height}x{cfg.width}; the model "
                               f"needs {clip_length} frames of at least {size[0]}x{size[1]}")
    return cfg


def _crop(video: torch.Tensor, size: tuple[int, int], clip_length: int) -> torch.Tensor:
    """(..., T, C, H, W) -> the first clip_length frames, centre-cropped to size (as ClipDataset does)."""
    H, W = video.shape[-2:]
    y0, x0 = (H - size[0]) // 2, (W - size[1]) // 2
    return video[..., :clip_length, :, y0:y0 + size[0], x0:x0 + size[1]].contiguous()


class SyntheticClips(torch.utils.data.IterableDataset):
    """Training clips uint8 (B, l + n, C, h, w) rendered on the fly; :func:`stmoe.train.data.make_loader` batches it.

    The batch size and the DDP partition are set by :meth:`configure` (make_loader calls it); until then ``len``
    counts batches of 1.
    """

    def __init__(self, render_cfg, n: int, size: tuple[int, int], clip_length: int, *, first_index: int,
                 fresh: bool) -> None:
        super().__init__()
        from physvid.stream import RenderStream

        self._args = dict(config=render_cfg, n=n, first_index=first_index, fresh=fresh)
        self.stream = RenderStream(batch_size=1, **self._args)
        self.size, self.clip_length = size, clip_length
        self.names = [f"synthetic:{render_cfg.property} (seed {render_cfg.seed}, {n} sequences per epoch"
                      f"{', new every epoch' if fresh else ''})"]

    def configure(self, batch_size: int, rank: int, world_size: int) -> None:
        from physvid.stream import RenderStream

        epoch = self.stream.epoch
        self.stream = RenderStream(batch_size=batch_size, rank=rank, world_size=world_size, **self._args)
        self.stream.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.stream)

    def describe(self) -> str:
        return f"{len(self.stream)} batches per epoch from {self.names[0]}"

    def __iter__(self):
        for batch in self.stream:
            yield _crop(batch["video"], self.size, self.clip_length)


def synthetic_datasets(spec: Mapping[str, Any], data, size: tuple[int, int], channels: int, seed: int):
    """(training stream, validation ClipDataset) of a resolved ``data.synthetic`` spec."""
    from physvid.render import render

    from .data import ClipDataset

    cfg = render_config(spec, size, data.clip_length)
    if cfg.channels != channels:
        raise TrainConfigError(f"data.synthetic renders {cfg.channels} channel(s) but the model expects in_channels "
                               f"= {channels}; set data.synthetic.channels")
    n, val, fresh = (spec.get(k, EXTRA_KEYS[k]) for k in ("n", "val", "fresh"))
    train = SyntheticClips(cfg, n, size, data.clip_length, first_index=val, fresh=fresh)
    val_clips = render(cfg, np.arange(val, dtype=np.int64))[0] if val else np.zeros((0, cfg.frames, channels, *size),
                                                                                      np.uint8)
    vdata = type(data)(**{**{f: getattr(data, f) for f in data.__dataclass_fields__}, "synthetic": None,
                          "window_stride": 0, "max_sequences": None, "split_source": "fractions"})
    return train, ClipDataset(val_clips, vdata, "all", size, channels, seed=seed, dtype=torch.uint8)


__all__ = ["check_synthetic", "for_expert", "render_config", "SyntheticClips", "synthetic_datasets"]
