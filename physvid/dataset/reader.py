"""Reading datasets: `open_dataset(DIR or shard FILE)` -> a random-access `Dataset` over every shard.

Files are opened lazily, per process: nothing is opened by the constructor, a handle opened in one process is never
used in another (a fork resets the table), and pickling drops the handles. So a `Dataset` can be handed to a PyTorch
DataLoader with `num_workers > 0` under fork or spawn; each worker opens the shards it touches.

Fast path: a dataset stored one sequence per chunk (`video`, `masks`, `property_map`) is read with
`read_direct_chunk` and its filter pipeline is undone here, in the reverse of the order the file records it: the
fletcher32 checksum is verified on every chunk exactly as HDF5 defines it (a numba kernel), then deflate (zlib, or
python-isal's 2-3x faster inflate when it is installed) or LZF (a numba decoder of any LZF stream, see FAST_FILTERS)
and byte shuffle. That skips HDF5's per-read selection machinery and, with isal, halves the inflate time that
dominates gzip reads. Any layout or filter not handled here falls back to the plain h5py read, so correctness never
depends on the fast path.
"""
from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import DatasetError, NotADatasetError
from .chunks import (FILTER_DEFLATE, FILTER_FLETCHER32, FILTER_LZF, FILTER_SHUFFLE, LZF_ERRORS, fast_pipeline as _fast_pipeline, fletcher32, lzf_decompress,
                     swap_halves as _swap_halves)
from .layout import MANIFEST
from .manifest import check_format, load_manifest
from .regular import file_kind, require_regular
from .schema import TOP_LEVEL
from .trust import foreign_objects, shard_problems

try:  # python-isal inflates the same zlib streams 2-3x faster; optional
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - depends on the environment
    import zlib as _inflater

PER_SEQUENCE = ("video", "index", *TOP_LEVEL)


class _ChunkReader:
    """One-row chunks of one HDF5 dataset, read raw and decoded here (see the module docstring)."""

    __slots__ = ("dset", "dsid", "steps", "row_shape", "dtype", "nbytes", "where")

    def __init__(self, dset, steps: tuple[tuple[int, int], ...], where: str):
        self.dset, self.dsid, self.steps = dset, dset.id, steps
        self.row_shape, self.dtype = tuple(dset.shape[1:]), dset.dtype
        self.nbytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.where = where

    def _corrupt(self, j: int, what: str) -> DatasetError:
        return DatasetError(f"{self.where}: row {j} is corrupt ({what}); run `physvid verify` on the dataset folder")

    def read(self, j: int) -> np.ndarray:
        """Row j as a fresh writable array of the dataset's dtype and row shape."""
        try:
            mask, raw = self.dsid.read_direct_chunk((j,) + (0,) * len(self.row_shape))
        except (OSError, RuntimeError, ValueError, KeyError):
            # An unallocated chunk (fill value) or damaged metadata: let HDF5 decide, with its own error.
            return self._plain(j)
        buf = self._decode(j, mask, raw)
        out = buf.view(self.dtype).reshape(self.row_shape)
        return out if out.flags.writeable else out.copy()

    def _plain(self, j: int) -> np.ndarray:
        return _PlainReader(self.dset, self.where).read(j)

    def _decode(self, j: int, mask: int, raw) -> np.ndarray:
        buf = np.frombuffer(raw, np.uint8)
        for pos in range(len(self.steps) - 1, -1, -1):  # writing applied the pipeline in order; undo it backwards
            if mask >> pos & 1:  # HDF5 skipped this optional filter: it could not shrink the chunk
                continue
            fid, size = self.steps[pos]
            if fid == FILTER_FLETCHER32:
                if buf.shape[0] < 4:
                    raise self._corrupt(j, "chunk shorter than its checksum")
                body = buf[:-4]
                stored = int(buf[-4]) | int(buf[-3]) << 8 | int(buf[-2]) << 16 | int(buf[-1]) << 24
                got = fletcher32(body)
                if stored != got and stored != _swap_halves(got):
                    raise self._corrupt(j, f"fletcher32 checksum {got:#010x} != stored {stored:#010x}")
                buf = body
            elif fid == FILTER_DEFLATE:
                try:
                    buf = np.frombuffer(_inflater.decompress(buf, bufsize=self.nbytes), np.uint8)
                except _inflater.error as exc:
                    raise self._corrupt(j, f"deflate: {exc}") from None
            elif fid == FILTER_LZF:
                out = np.empty(self.nbytes, np.uint8)  # filters after LZF in the pipeline (shuffle) keep the size
                got = lzf_decompress(buf, out)
                if got < 0:
                    raise self._corrupt(j, f"LZF stream: {LZF_ERRORS[got]}")
                buf = out[:got]
            elif fid == FILTER_SHUFFLE and size > 1 and buf.shape[0] >= size:
                whole = buf.shape[0] // size * size  # HDF5 leaves the trailing partial element as it is
                out = np.empty_like(buf)
                out[:whole] = buf[:whole].reshape(size, -1).T.ravel()
                out[whole:] = buf[whole:]
                buf = out
        if buf.shape[0] != self.nbytes:
            raise self._corrupt(j, f"chunk decodes to {buf.shape[0]} bytes, expected {self.nbytes}")
        return buf


class _PlainReader:
    """The plain h5py read, for datasets the fast path does not handle; HDF5's errors become DatasetError."""

    __slots__ = ("dset", "where")

    def __init__(self, dset, where: str):
        self.dset, self.where = dset, where

    def _error(self, rows: str, exc: OSError) -> DatasetError:
        return DatasetError(f"{self.where}: {rows} cannot be read, the file is damaged (HDF5: "
                            f"{str(exc).splitlines()[0]}); run `physvid verify` on the dataset folder")

    def read(self, j: int) -> np.ndarray:
        try:
            return self.dset[j]
        except OSError as exc:
            raise self._error(f"row {j}", exc) from None

    def read_run(self, out: np.ndarray, j: int, row: int, run: int) -> None:
        try:
            self.dset.read_direct(out, np.s_[j:j + run], np.s_[row:row + run])
        except OSError as exc:
            raise self._error(f"rows {j}..{j + run - 1}", exc) from None


class _WholeReader:
    """A small dataset held in memory (a copy per row, so callers may modify what they get)."""

    __slots__ = ("rows",)

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def read(self, j: int):
        return self.rows[j].copy()


def open_dataset(path: str | os.PathLike) -> "Dataset":
    """Open a dataset folder written by `physvid generate` (or one of its shard files)."""
    return Dataset(path)


def _shard_manifest(path: Path) -> dict[str, Any]:
    """A manifest-like description of a single shard file, read from its attributes."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            foreign = foreign_objects(f)
            if foreign:
                raise DatasetError(f"refusing {path}: {foreign[0]}")
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
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path} has unreadable attributes ({exc}); it was not written by physvid") from None
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
        elif p.exists():  # a FIFO would block the HDF5 open forever
            raise DatasetError(f"{p} is {file_kind(p)}, not a dataset folder or shard file; give the folder written "
                               "by `physvid generate` or one shard file")
        else:
            raise NotADatasetError(f"no dataset at {p}: give the folder written by `physvid generate` or one shard "
                                   "file")
        self.path = p
        self._folder = p.is_dir()
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
        self._readers: dict[tuple[str, int], Any] = {}
        self._pid: int | None = None
        self._n = self._starts[-1]
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
        return self._n

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, sequences={len(self)}, shape={self.shape})"

    # ------------------------------------------------------------------ files, per process
    def _file(self, k: int):
        pid = os.getpid()
        if pid != self._pid:
            # After a fork the parent's handles must not be used (nor closed) here: start a fresh table.
            self._handles, self._readers, self._pid = {}, {}, pid
        f = self._handles.get(k)
        if f is None:
            import h5py

            require_regular(self._files[k], "shard")  # a FIFO in its place would block the open forever
            try:
                f = h5py.File(self._files[k], "r")
                # Before any data is read: nothing that leads outside the shard, and the shard is the one the
                # manifest lists at this place (not a copy from another dataset, not two shards swapped).
                problems = (shard_problems(f, self.manifest["shards"][k], self.manifest, k) if self._folder
                            else [])
            except (OSError, RuntimeError, KeyError) as exc:  # h5py's errors for damaged metadata
                raise DatasetError(f"cannot open shard {self._files[k]} ({str(exc).splitlines()[0]}); run "
                                   "`physvid verify` on the dataset folder") from None
            if problems:
                f.close()
                raise DatasetError(f"refusing shard {self._files[k]}: {problems[0]}"
                                   + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
                                   + "; run `physvid verify` on the dataset folder")
            self._handles[k] = f
        return f

    def _reader(self, name: str, k: int):
        """Per process: a `_ChunkReader` for dataset `name` of shard k, or the h5py dataset when the fast path does
        not apply (both answer `.read(j)` / `[j]` with row j)."""
        key = (name, k)
        r = self._readers.get(key) if self._pid == os.getpid() else None
        if r is None:
            dset = self._file(k)[name]
            where = f"{self._files[k]}:/{name}"
            steps = _fast_pipeline(dset)
            if steps is not None:
                r = _ChunkReader(dset, steps, where)
            elif name == "index":  # n int64 in one chunk: read (and checksum) it once, not once per `get`
                r = _WholeReader(_PlainReader(dset, where).read(slice(None)))
            else:
                r = _PlainReader(dset, where)
            self._readers[key] = r
        return r

    def _locate(self, i: int) -> tuple[int, int]:
        n = self._n
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
        self._handles, self._readers = {}, {}

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_handles={}, _readers={}, _pid=None)
        return state

    # ------------------------------------------------------------------ reading
    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            k, j = self._locate(key)
            return self._reader("video", k).read(j)
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
            reader = self._reader("video", k)
            if isinstance(reader, _ChunkReader):
                for q in range(run):
                    out[row + q] = reader.read(j + q)
            elif run == 1:  # h5py's plain indexing is the faster path for one chunk
                out[row] = reader.read(j)
            else:
                reader.read_run(out, j, row, run)
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
                    try:
                        parts[name].append(group[name][()])
                    except OSError as exc:
                        raise _PlainReader(group[name], f"{self._files[k]}:/params/{name}")._error("its rows",
                                                                                                  exc) from None
            self._params = {name: np.concatenate(v) if v else np.empty((0,)) for name, v in parts.items()}
        return self._params

    def get(self, i: int, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """One sequence as a dict: video, index, every parameter, masks and property_map when stored."""
        k, j = self._locate(i)
        stored = [name for name in PER_SEQUENCE if name in self.datasets]
        wanted = set(fields) if fields is not None else None
        out: dict[str, Any] = {}
        for name in stored:
            if wanted is None or name in wanted:
                out[name] = self._reader(name, k).read(j)
        for name in self.param_names:
            if wanted is None or name in wanted:
                out[name] = self.params[name][self._starts[k] + j]
        if wanted is not None and wanted - set(out):
            raise KeyError(f"unknown field(s) {sorted(wanted - set(out))}; stored: "
                           f"{[*stored, *self.param_names]}")
        return out

