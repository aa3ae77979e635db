"""Reading datasets: `open_dataset(DIR or shard FILE)` -> a random-access `Dataset` over every shard.

Files are opened lazily, per process: nothing is opened by the constructor, a handle opened in one process is never
used in another (a fork resets the table), and pickling drops the handles. So a `Dataset` can be handed to a PyTorch
DataLoader with `num_workers > 0` under fork or spawn; each worker opens the shards it touches.
"""
from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import DatasetError
from .layout import MANIFEST
from .manifest import check_format, load_manifest

TOP_LEVEL = ("masks", "property_map")


def open_dataset(path: str | os.PathLike) -> "Dataset":
    """Open a dataset folder written by `physvid generate` (or one of its shard files)."""
    return Dataset(path)


def _shard_manifest(path: Path) -> dict[str, Any]:
    """A manifest-like description of a single shard file, read from its attributes."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            check_format(attrs, str(path))
            datasets: dict[str, Any] = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    datasets[name] = {"dtype": str(obj.dtype), "shape": list(obj.shape[1:])}

            f.visititems(visit)
    except OSError as exc:
        raise DatasetError(f"cannot open {path} as an HDF5 shard ({str(exc).splitlines()[0]}); run `physvid verify` on "
                           "its folder") from None
    except KeyError as exc:
        raise DatasetError(f"{path} lacks the attribute {exc}; it was not written by physvid") from None
    return {
        "format": attrs["format"], "format_version": attrs["format_version"],
        "physvid_version": attrs.get("physvid_version"), "source": attrs.get("source"),
        "config": json.loads(attrs["config"]), "seed": attrs.get("seed"),
        "total_sequences": attrs.get("total_sequences"), "shard_size": attrs.get("shard_size"),
        "compression": attrs.get("compression"), "datasets": datasets,
        "shards": [{"file": path.name, "first_index": int(attrs["first_index"]), "count": int(attrs["count"])}],
    }


class Dataset:
    """Random access to sequences by index: `ds[i]` -> video uint8 (T, C, H, W); `ds[a:b]` -> (n, T, C, H, W).

    For a folder, position i is global sequence i; for a single shard file, position j is global index
    `ds.indices[j]` (the shard's first index + j). `ds.params` holds every ground-truth parameter as one array per name
    (per-object arrays padded with NaN or -1, docs/FORMAT.md); `ds.get(i)` returns one sequence with everything.
    """

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        if p.is_dir():
            self.manifest = load_manifest(p)
            root = p
        elif p.is_file():
            if p.name == MANIFEST:
                return self.__init__(p.parent)
            self.manifest = _shard_manifest(p)
            root = p.parent
        else:
            raise DatasetError(f"no dataset at {p}: give the folder written by `physvid generate` or one shard file")
        self.path = p
        shards = self.manifest["shards"]
        self._files = [str(root / s["file"]) for s in shards]
        counts = [int(s["count"]) for s in shards]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
        first = int(shards[0]["first_index"]) if shards else 0
        expected = [first + s for s in self._starts[:-1]]
        if [int(s["first_index"]) for s in shards] != expected:
            raise DatasetError(f"{p}: shards do not cover consecutive indices; run `physvid verify` on it")
        self.first_index = first
        self._handles: dict[int, Any] = {}
        self._videos: dict[int, Any] = {}
        self._pid: int | None = None
        self._params: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ description
    @property
    def config(self) -> dict[str, Any]:
        """The config dict stored with the data (for physvid-rendered data, `RenderConfig.to_dict()`)."""
        return self.manifest["config"]

    @property
    def render_config(self):
        """The RenderConfig that rendered this dataset (sequence i == render(render_config, [i]))."""
        from ..config import RenderConfig

        if self.manifest.get("source") != "physvid.render":
            raise DatasetError(f"{self.path} was written by source {self.manifest.get('source')!r}, not the renderer")
        return RenderConfig.from_dict(self.config)

    @property
    def seed(self) -> int | None:
        return self.manifest.get("seed")

    @property
    def datasets(self) -> dict[str, Any]:
        return self.manifest["datasets"]

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, T, C, H, W) of the whole video array."""
        return (len(self),) + tuple(self.datasets["video"]["shape"])

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.first_index, self.first_index + len(self), dtype=np.int64)

    @property
    def param_names(self) -> list[str]:
        return sorted(k.split("/", 1)[1] for k in self.datasets if k.startswith("params/"))

    @property
    def has_masks(self) -> bool:
        return "masks" in self.datasets

    @property
    def has_property_maps(self) -> bool:
        return "property_map" in self.datasets

    def __len__(self) -> int:
        return self._starts[-1]

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, sequences={len(self)}, shape={self.shape})"

    # ------------------------------------------------------------------ files, per process
    def _file(self, k: int):
        pid = os.getpid()
        if pid != self._pid:
            # After a fork the parent's handles must not be used (nor closed) here: start a fresh table.
            self._handles, self._videos, self._pid = {}, {}, pid
        f = self._handles.get(k)
        if f is None:
            import h5py

            try:
                f = h5py.File(self._files[k], "r")
            except OSError as exc:
                raise DatasetError(f"cannot open shard {self._files[k]} ({str(exc).splitlines()[0]}); run "
                                   "`physvid verify` on the dataset folder") from None
            self._handles[k] = f
        return f

    def _video(self, k: int):
        d = self._videos.get(k) if self._pid == os.getpid() else None
        if d is None:
            d = self._file(k)["video"]
            self._videos[k] = d
        return d

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence {i} out of range for a dataset of {n}")
        k = bisect.bisect_right(self._starts, i) - 1
        return k, i - self._starts[k]

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._handles.values():
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - closing at interpreter exit may race h5py's own teardown
                    pass
        self._handles, self._videos = {}, {}

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_handles={}, _videos={}, _pid=None)
        return state

    # ------------------------------------------------------------------ reading
    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            k, j = self._locate(key)
            return self._video(k)[j]
        if isinstance(key, slice):
            return self.read_video(range(*key.indices(len(self))))
        return self.read_video(key)

    def read_video(self, indices: Iterable[int]) -> np.ndarray:
        """Videos of `indices` stacked as (n, T, C, H, W) uint8; contiguous runs inside one shard are read at once."""
        idx = [int(i) for i in np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices).ravel()]
        out = np.empty((len(idx),) + tuple(self.datasets["video"]["shape"]), np.uint8)
        row = 0
        while row < len(idx):
            k, j = self._locate(idx[row])
            run = 1
            while (row + run < len(idx) and idx[row + run] == idx[row] + run
                   and j + run < self._starts[k + 1] - self._starts[k]):
                run += 1
            if run == 1:  # h5py's plain indexing is the faster path for one chunk
                out[row] = self._video(k)[j]
            else:
                self._video(k).read_direct(out, np.s_[j:j + run], np.s_[row:row + run])
            row += run
        return out

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every ground-truth parameter over the whole dataset, one array per name (loaded on first use)."""
        if self._params is None:
            parts: dict[str, list[np.ndarray]] = {name: [] for name in self.param_names}
            for k in range(len(self._files)):
                group = self._file(k)["params"]
                for name in parts:
                    parts[name].append(group[name][()])
            self._params = {name: np.concatenate(v) if v else np.empty((0,)) for name, v in parts.items()}
        return self._params

    def get(self, i: int, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """One sequence as a dict: video, index, every parameter, masks and property_map when stored."""
        k, j = self._locate(i)
        f = self._file(k)
        wanted = set(fields) if fields is not None else None
        out: dict[str, Any] = {}
        for name in ["video", "index", *TOP_LEVEL]:
            if name in f and (wanted is None or name in wanted):
                out[name] = f[name][j]
        for name in self.param_names:
            if wanted is None or name in wanted:
                out[name] = self.params[name][self._starts[k] + j]
        if wanted is not None and wanted - set(out):
            raise KeyError(f"unknown field(s) {sorted(wanted - set(out))}; stored: "
                           f"{['video', 'index', *[n for n in TOP_LEVEL if n in f], *self.param_names]}")
        return out
