"""Training straight from the generator: sequences rendered on the fly in PyTorch DataLoader workers, no files.

`RenderStream(config, n)` is a `torch.utils.data.IterableDataset` over the global sequence indices
[first_index, first_index + n). Sequence i is `render(config, [i])`, the very sequence `physvid generate` writes at
index i, so a stream and a dataset folder with the same config hold the same data. The indices are cut into blocks
(of `batch_size` sequences when the stream yields batches, else of `block`); block b goes to DDP rank b mod R and,
inside the rank, to DataLoader worker (b div R) mod K. Every index is rendered exactly once per pass, by one worker
of one rank, whatever R and K; when the stream yields whole batches, the loader hands a rank's batches out in index
order (it takes one item from each worker in turn). With `batch_size` set and R > 1, the trailing blocks that would
give ranks unequal step counts are dropped (`drop_last`), as DDP needs the same number of steps on every rank.

Needs torch (the `train` extra); physvid itself does not import this module.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .config import RenderConfig
from .errors import ConfigError

PER_SEQUENCE_EXTRAS = ("masks", "property_map")


def stream_blocks(first_index: int, n: int, block: int, rank: int = 0, world_size: int = 1, worker: int = 0,
                  num_workers: int = 1, drop_last: bool = False) -> list[tuple[int, int]]:
    """The [start, stop) index blocks that (rank, worker) renders, in order (see the module docstring).

    `drop_last` keeps only whole blocks, as many on every rank (their count rounded down to a multiple of
    `world_size`), so that every rank yields the same number of blocks.
    """
    blocks = -(-n // block)
    if drop_last:
        blocks = (n // block) // world_size * world_size
    out = []
    for b in range(rank, blocks, world_size):
        if (b // world_size) % num_workers == worker:
            out.append((first_index + b * block, first_index + min(n, (b + 1) * block)))
    return out


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RenderStream(IterableDataset):
    """Sequences of `config` rendered on the fly: an IterableDataset for DataLoader workers and DDP ranks.

    Args:
        config: a RenderConfig (or its dict); its seed and every setting decide sequence i.
        n: sequences per pass (an epoch), from `first_index`.
        fields: what each item holds besides `index` and `video`: "masks", "property_map" (stored only when the
            config asks for them: `RenderConfig(masks=True, property_maps=True)`) and ground-truth parameter names
            (`vx`, `num_objects`, ... as in docs/FORMAT.md), or "params" for all of them.
        batch_size: None yields one sequence per item (let the DataLoader batch them); B yields whole batches of B
            consecutive indices (use `DataLoader(stream, batch_size=None)`), which renders them in one call.
        block: sequences per render call when `batch_size` is None.
        fresh: each `set_epoch(e)` moves the pass to indices first_index + e * n ... (new data every epoch).
        rank, world_size: the DDP partition; default: torch.distributed's when it is initialised, else 0 and 1.
        drop_last: drop trailing blocks so that every rank yields as many items (default: when world_size > 1 and
            batch_size is set).

    Items are dicts: `index` (int64), `video` uint8 (T, C, H, W) — with a leading batch axis B when `batch_size` is
    set — and the asked fields as tensors. Raises ConfigError for a bad config or fields it cannot deliver.
    """

    def __init__(self, config: RenderConfig | dict, n: int, *, first_index: int = 0, fields: Sequence[str] = (),
                 batch_size: int | None = None, block: int = 16, fresh: bool = False, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool | None = None) -> None:
        super().__init__()
        self.config = RenderConfig.from_dict(config) if isinstance(config, dict) else config
        if not isinstance(self.config, RenderConfig):
            raise ConfigError(f"config must be a RenderConfig or a dict, got {type(config).__name__}")
        for name, value, low in (("n", n, 1), ("first_index", first_index, 0), ("block", block, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ConfigError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
        self.n, self.first_index, self.block, self.batch_size = int(n), int(first_index), int(block), batch_size
        self.fields = self._check_fields(tuple(fields))
        self.fresh = bool(fresh)
        self._rank, self._world = rank, world_size
        self.drop_last = drop_last
        self.epoch = 0

    def _check_fields(self, fields: tuple[str, ...]) -> tuple[str, ...]:
        from .render import render

        probe = render(self.config, [0])[1]  # also compiles or loads the kernels once, before workers fork
        names = [k for k in probe if k not in PER_SEQUENCE_EXTRAS]
        out: list[str] = []
        for f in fields:
            if f == "params":
                out += [k for k in sorted(names) if k not in out]
            elif f in probe:
                out.append(f)
            elif f in PER_SEQUENCE_EXTRAS:
                flag = "masks=True" if f == "masks" else "property_maps=True"
                raise ConfigError(f"field {f!r} needs a config with {flag}")
            else:
                raise ConfigError(f"unknown field {f!r}; allowed: masks, property_map, params, "
                                  f"{', '.join(sorted(names))}")
        return tuple(out)

    # ------------------------------------------------------------------ partition
    @property
    def rank(self) -> int:
        return _dist()[0] if self._rank is None else self._rank

    @property
    def world_size(self) -> int:
        return _dist()[1] if self._world is None else self._world

    def set_epoch(self, epoch: int) -> None:
        """With `fresh`, pass e renders indices first_index + e * n ... (call it before creating the iterator)."""
        self.epoch = int(epoch)

    @property
    def start(self) -> int:
        return self.first_index + (self.epoch * self.n if self.fresh else 0)

    def _drop_last(self) -> bool:
        return self.drop_last if self.drop_last is not None else (self.batch_size is not None and self.world_size > 1)

    def blocks(self, worker: int = 0, num_workers: int = 1) -> list[tuple[int, int]]:
        """[start, stop) index blocks of this rank's `worker` (of `num_workers`) in the current epoch."""
        size = self.batch_size or self.block
        return stream_blocks(self.start, self.n, size, self.rank, self.world_size, worker, num_workers,
                             self._drop_last())

    def __len__(self) -> int:
        """Items this rank yields per pass: batches when `batch_size` is set, else sequences."""
        blocks = self.blocks()
        return len(blocks) if self.batch_size else sum(b - a for a, b in blocks)

    # ------------------------------------------------------------------ rendering
    def render_block(self, a: int, b: int) -> dict[str, Any]:
        """Sequences a..b-1 as one dict of tensors with a leading axis b - a."""
        from .render import render

        video, params = render(self.config, np.arange(a, b, dtype=np.int64))
        out: dict[str, Any] = {"index": torch.arange(a, b, dtype=torch.int64), "video": torch.from_numpy(video)}
        for f in self.fields:
            out[f] = torch.from_numpy(np.ascontiguousarray(params[f]))
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for a, b in self.blocks(worker, workers):
            batch = self.render_block(a, b)
            if self.batch_size:
                yield batch
            else:
                for r in range(b - a):
                    yield {k: v[r] for k, v in batch.items()}


__all__ = ["RenderStream", "stream_blocks"]
