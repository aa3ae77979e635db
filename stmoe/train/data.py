"""Training data: clips of l input + n target frames from physvid shard folders, split by index ranges (paper §3.2, §4).

Every dataset the trainer reads is a physvid folder (``physvid generate`` for D^k, ``stmoe prepare`` for real videos,
frame folders, arrays and radar), so there is one reader and one format. Frames stay uint8 until they reach the
device (a quarter of the bytes through the DataLoader); :func:`to_unit` turns them into floats in [0, 1].

Determinism: which sequences a split holds depends only on the folder and the config; the random training crop of
clip j in epoch e is drawn from ``default_rng((seed, e, j))``, so it never depends on the worker that loads the clip
nor on where a resumed run restarted.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..data.errors import DataError
from .config import DataConfig

SPLITS = ("train", "val", "test", "all")


# Names a dataset's recorded splits may use for stmoe's train/val/test.
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "validation", "valid", "dev"), "test": ("test",)}


def split_ranges(num_sequences: int, data: DataConfig,
                 recorded: dict[str, list[int]] | None = None) -> dict[str, tuple[int, int]]:
    """[first, stop) sequence indices of train/val/test (and "all") for a folder of ``num_sequences`` sequences.

    ``recorded`` are the splits a physvid manifest records (``physvid generate --splits``); with
    ``data.split_source`` "auto" (default) or "dataset" they are used, a split the dataset does not name being empty,
    and ``max_sequences`` keeps the first share of each. Otherwise fractions ``data.split`` are cut in index order
    (train first). Explicit ``*_range`` settings win and are clipped to the folder.
    """
    n = num_sequences if data.max_sequences is None else min(num_sequences, data.max_sequences)
    if data.split_source == "dataset" and not recorded:
        raise DataError("data.split_source is 'dataset' but the dataset records no splits; make it with "
                        "`physvid generate ... --splits train=0.8,val=0.1,test=0.1` or set data.split_source=auto")
    if recorded and data.split_source != "fractions":
        out = {"all": (0, n)}
        for name, aliases in SPLIT_ALIASES.items():
            first, stop = next((tuple(recorded[a]) for a in aliases if a in recorded), (0, 0))
            keep = (stop - first) * n // max(1, num_sequences)  # max_sequences: the same share of every split
            out[name] = (first, first + keep)
    else:
        a = int(round(n * data.split[0]))
        b = int(round(n * (data.split[0] + data.split[1])))
        out = {"train": (0, a), "val": (a, b), "test": (b, n), "all": (0, n)}
    for name in ("train", "val", "test"):
        explicit = getattr(data, f"{name}_range")
        if explicit is not None:
            out[name] = (min(explicit[0], n), min(explicit[1], n))
    return out


def _open_source(source: Any) -> tuple[Any, str]:
    """A physvid Dataset (from a folder or shard file) or an in-memory uint8 array (N, T, C, H, W), and its name."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 5:
            raise DataError(f"clip arrays must be uint8 (N, T, C, H, W), got {source.dtype} {source.shape}")
        return source, "array"
    from physvid.dataset import open_dataset
    from physvid.errors import PhysvidError

    path = Path(source)
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist (give a folder written by `physvid generate` or "
                        f"`stmoe prepare`)")
    if path.is_file() and path.suffix.lower() not in (".h5", ".hdf5", ".json"):
        raise DataError(f"{path} is not a physvid dataset; convert videos, frame folders, arrays and radar files with "
                        f"`stmoe prepare {path} --out DIR` first")
    try:
        return open_dataset(path), str(path)
    except PhysvidError as exc:
        raise DataError(str(exc)) from None


def _shape(src: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in src.shape)


def _probe(src: Any, name: str, first: int, stop: int) -> None:
    """Read one sequence of every shard the range touches, so a corrupt or truncated shard fails now, in one line."""
    if isinstance(src, np.ndarray) or stop <= first:
        return
    starts = np.cumsum([0] + [int(s["count"]) for s in src.manifest["shards"]])
    picks = {first, stop - 1}
    picks.update(int(s) for s in starts[:-1] if first <= s < stop)
    try:
        for i in sorted(picks):
            src[i]
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError or RuntimeError on damaged files
        from .errors import DataReadError, one_line

        detail = one_line(exc)
        hint = "" if "physvid verify" in detail else f"; run `physvid verify {name}`"
        raise DataReadError(f"cannot read {name} (sequence {i}): {detail}{hint}") from None
    finally:
        src.close()


class ClipDataset(torch.utils.data.Dataset):
    """Clips (l + n, C, H, W) from one or more physvid folders (read as one dataset), restricted to one split.

    ``size`` is the model's (height, width): larger frames are cropped (centre, or random for training when
    ``data.crop == "random"``), smaller ones are an error. ``dtype=torch.uint8`` returns the raw bytes; a float dtype
    returns values in [0, 1].
    """

    def __init__(self, sources: Sequence[Any] | Any, data: DataConfig, split: str, size: tuple[int, int],
                 channels: int, *, seed: int = 0, random_crop: bool | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        if split not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(sources, (str, Path, np.ndarray)):
            sources = [sources]
        sources = list(sources)
        if not sources:
            raise DataError("data.path: no dataset given")
        self.data = data
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        self.channels = int(channels)
        self.seed = int(seed)
        self.epoch = 0
        self.random_crop = (data.crop == "random" and split == "train") if random_crop is None else random_crop
        self.dtype = dtype
        # Items are (clip, property map) pairs when set (the trainer sets it for loss.gate_target_weight > 0).
        self.with_property_map = False
        self.sources: list[Any] = []
        self.names: list[str] = []
        self.frame_sizes: list[tuple[int, int]] = []  # (H, W) of each source, before any crop
        rows: list[np.ndarray] = []
        L = data.clip_length
        for k, source in enumerate(sources):
            src, name = _open_source(source)
            N, T, C, H, W = _shape(src)
            if C != self.channels:
                raise DataError(f"{name} has {C} channel(s) per frame but the model expects in_channels = "
                                f"{self.channels}; make the data with {self.channels} channel(s) (physvid generate / "
                                f"stmoe prepare --channels {self.channels}) or set model.in_channels={C}")
            if H < self.size[0] or W < self.size[1]:
                raise DataError(f"{name} has {H}x{W} frames, smaller than the model's {self.size[0]}x{self.size[1]} "
                                f"crop; set model.height/width <= {H}x{W} or prepare the data at a larger size")
            if L > T:
                raise DataError(f"data.input_frames + data.output_frames = {data.input_frames} + {data.output_frames} "
                                f"= {L} exceeds the {T} frames per sequence of {name}")
            recorded = getattr(src, "manifest", {}).get("splits") if not isinstance(src, np.ndarray) else None
            first, stop = split_ranges(N, data, recorded)[split]
            _probe(src, name, first, stop)
            starts = [0] if data.window_stride == 0 else list(range(0, T - L + 1, data.window_stride))
            seq = np.arange(first, stop, dtype=np.int64)
            grid = np.stack(np.meshgrid(seq, np.asarray(starts, np.int64), indexing="ij"), -1).reshape(-1, 2)
            rows.append(np.concatenate([np.full((len(grid), 1), k, np.int64), grid], axis=1))
            self.sources.append(src)
            self.names.append(name)
            self.frame_sizes.append((H, W))
        self.index = np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)  # (clips, [source, sequence, start])

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Random crops depend on the epoch (set before each epoch's DataLoader iterator is created)."""
        self.epoch = int(epoch)

    def describe(self) -> str:
        return f"{len(self)} clips ({self.split}) from {', '.join(self.names)}"

    def __getitem__(self, j: int) -> torch.Tensor:
        k, i, s = (int(v) for v in self.index[j])
        src = self.sources[k]
        try:
            video = np.asarray(src[i])  # (T, C, H, W) uint8
        except Exception as exc:  # noqa: BLE001 - make a damaged shard one line, even from a worker process
            from .errors import DataReadError, one_line

            raise DataReadError(f"cannot read sequence {i} of {self.names[k]}: {one_line(exc)}") from None
        clip = video[s:s + self.data.clip_length]
        y0, x0 = self._crop_origin(j, *clip.shape[-2:])
        h, w = self.size
        clip = np.ascontiguousarray(clip[..., y0:y0 + h, x0:x0 + w])
        out = torch.from_numpy(clip)
        if self.dtype != torch.uint8:
            out = out.to(self.dtype).div_(255.0)
        return (out, self.property_map(j)) if self.with_property_map else out


    def _crop_origin(self, j: int, H: int, W: int) -> tuple[int, int]:
        h, w = self.size
        if self.random_crop and (H > h or W > w):
            rng = np.random.default_rng((self.seed, self.epoch, int(j)))
            return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        return (H - h) // 2, (W - w) // 2

    def property_map(self, j: int) -> torch.Tensor | None:
        """The physvid property map of clip j, (l + n, h, w) int64 role codes cropped like the clip; None when the
        dataset was generated without property maps (``--property-maps``) or is not a physvid folder."""
        k, i, s = (int(v) for v in self.index[j])
        src = self.sources[k]
        if isinstance(src, np.ndarray) or not getattr(src, "manifest", {}).get("config", {}).get("property_maps"):
            return None
        pm = np.asarray(src.get(i, fields=("property_map",))["property_map"])  # (T, H, W), no video read again
        pm = pm[s:s + self.data.clip_length]
        y0, x0 = self._crop_origin(j, *pm.shape[-2:])
        h, w = self.size
        return torch.from_numpy(np.ascontiguousarray(pm[..., y0:y0 + h, x0:x0 + w]).astype(np.int64))

    def flow(self, j: int, direction: str = "forward") -> torch.Tensor | None:
        """physvid's exact flow of clip j's frame pairs, (l + n - 1, 2, h, w) float32 (u, v) in pixels, cropped like
        the clip (docs/flow.md): direction "forward", [t] = from clip frame t to t + 1 on frame t's pixels;
        "backward", [t] = from frame t + 1 back to t on frame t + 1's pixels. None when the dataset was made without
        --flow."""
        if direction not in ("forward", "backward"):
            raise ValueError(f"flow direction must be 'forward' or 'backward', got {direction!r}")
        k, i, s = (int(v) for v in self.index[j])
        src = self.sources[k]
        if isinstance(src, np.ndarray) or not getattr(src, "manifest", {}).get("config", {}).get("flow"):
            return None
        name = f"flow_{direction}"
        f = np.asarray(src.get(i, fields=(name,))[name])[s:s + self.data.clip_length - 1]
        y0, x0 = self._crop_origin(j, *f.shape[-2:])
        h, w = self.size
        return torch.from_numpy(np.ascontiguousarray(f[..., y0:y0 + h, x0:x0 + w]).astype(np.float32))


def crop_notes(ds: ClipDataset, what: str = "is scored") -> list[str]:
    """One line per source of ``ds`` whose frames are larger than the model: only their crop is seen, and a user who
    prepared 64x64 data for a 32x32 model should hear it (``what``: "is scored", "trains")."""
    h, w = ds.size
    crop = "random" if ds.random_crop else "centre"
    return [f"{name} has {H}x{W} frames: the {h}x{w} model {what} on their {crop} {h}x{w} crop only (set "
            f"model.height/width to {H}x{W} to use whole frames)"
            for name, (H, W) in zip(ds.names, ds.frame_sizes) if (H, W) != (h, w)]


def to_unit(batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames -> floats in [0, 1] (float batches pass through)."""
    if batch.dtype == torch.uint8:
        return batch.to(dtype).div_(255.0)
    return batch.to(dtype)


def split_clip(clip: torch.Tensor, input_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, l + n, C, H, W) -> inputs (B, l, C, H, W), targets (B, n, C, H, W)."""
    return clip[:, :input_frames], clip[:, input_frames:]


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; NumPy and random follow it.
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


def make_loader(dataset: ClipDataset, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                world_size: int = 1, num_workers: int = 0, pin_memory: bool = False,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader with a DistributedSampler (also for one process: the order is a function of seed and epoch only).
    ``drop_last`` drops the last partial batch (a compiled model then sees one batch shape: no recompilation).

    A stream rendered on the fly (``data.synthetic``: an IterableDataset that yields whole batches, split over ranks
    and workers by itself) gets a loader without sampler; ``loader.sampler.set_epoch`` then reaches the stream."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        dataset.configure(batch_size, rank, world_size)
        gen = torch.Generator()
        gen.manual_seed(seed)
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, generator=gen, pin_memory=pin_memory,
                            worker_init_fn=_seed_worker, multiprocessing_context=_context(num_workers))
        loader.sampler.set_epoch = dataset.set_epoch  # the trainer calls it each epoch, as on a DistributedSampler
        return loader
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=False)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      worker_init_fn=_seed_worker, generator=gen, pin_memory=pin_memory,
                      drop_last=drop_last and len(sampler) >= batch_size,
                      # Not persistent: each epoch's workers must see the dataset's new epoch (its random crops).
                      persistent_workers=False,
                      multiprocessing_context=_context(num_workers))


def _context(num_workers: int) -> str | None:
    return "fork" if num_workers and "fork" in _mp_methods() else None


def _mp_methods() -> list[str]:
    import multiprocessing as mp

    return mp.get_all_start_methods() if os.name != "nt" else []
