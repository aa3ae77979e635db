"""One shard file: a source's sequences -> one HDF5 file, written whole or not at all, and its record.

A *source* is a picklable callable `source(indices) -> (video uint8 [n, T, C, H, W], params)` where `params` maps a
name to an array whose first axis is n; `masks` and `property_map` are stored at the top level, everything else under
`params/` (docs/FORMAT.md). A source whose every call returns new arrays and keeps no reference to them may say so
with `fresh_arrays = True`: the writer then calls it for several batches before writing them (write_h5).

Why the bytes of a shard depend only on (source, shard size, compression): batches of BATCH sequences are written in
index order, and every chunk is encoded by dataset/chunks.py (never by HDF5's own filters), then stored with
`write_direct_chunk`.
"""
from __future__ import annotations

import errno as errno_mod
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from ..errors import DatasetError
from ..files import atomic_path
from .chunks import ChunkWriter, encodable, pipeline_steps, plist_deflate_level
from .generation import RenderSource
from .layout import ShardSpec, atomic_write_text, dumps, filter_options, record_path, tmp_name
from .schema import TOP_LEVEL, describe, h5_attributes  # TOP_LEVEL: stored beside `video`, one sequence per chunk

Source = Callable[[np.ndarray], "tuple[np.ndarray, dict[str, np.ndarray]]"]

# Sequences per source call. Fixed (never derived from the worker count) so that the write order, hence every byte of
# a shard, is the same in every run.
BATCH = 16
# Bytes of a fresh-array source's batches held before the first of them is written (write_h5); budget.py counts them.
AHEAD_BYTES = 1 << 24
PARAM_CHUNK_BYTES = 1 << 20
CORE_BLOCK = 1 << 22  # growth step of the in-memory shard image
_NAME = re.compile(r"[A-Za-z0-9_]+")


def io_error(exc: OSError, path: Path) -> DatasetError:
    """A one-line, actionable message for an operating-system failure while writing `path` (exit code 1)."""
    code = exc.errno
    if code is None:  # HDF5 reports the errno inside its message text
        m = re.search(r"errno = (\d+)", str(exc))
        code = int(m.group(1)) if m else None
    resume = "finished shards are kept; re-run the same command to resume"
    if code == errno_mod.ENOSPC:
        msg = f"no space left on device while writing {path}; free some space or choose another --out ({resume})"
    elif code == errno_mod.EFBIG:
        msg = (f"file too large while writing {path} (a file-size limit was hit); lower --shard-size or lift the limit "
               f"({resume})")
    elif code == errno_mod.EDQUOT:
        msg = f"disk quota exceeded while writing {path}; free some space or choose another --out ({resume})"
    elif code in (errno_mod.EACCES, errno_mod.EPERM):
        msg = f"permission denied while writing {path}; choose a writable --out"
    elif code == errno_mod.EROFS:
        msg = f"read-only file system while writing {path}; choose a writable --out"
    else:
        reason = exc.strerror or str(exc).splitlines()[0]
        msg = f"cannot write {path}: {reason}"
    return DatasetError(msg)


# --------------------------------------------------------------------------- the schema
def schema_of(video: np.ndarray, params: dict[str, np.ndarray], rendered: bool) -> dict[str, Any]:
    """Per-sequence dtype and shape of every dataset (the leading sequence axis left out), as stored in the manifest,
    with its axes (and labels, units, columns where known: schema.describe)."""
    out: dict[str, Any] = {"video": {"dtype": str(video.dtype), "shape": list(video.shape[1:]),
                                     **describe("video", video.ndim, rendered)},
                           "index": {"dtype": "int64", "shape": [], **describe("index", 1, rendered)}}
    for name in sorted(params):
        arr = params[name]
        key = name if name in TOP_LEVEL else f"params/{name}"
        entry: dict[str, Any] = {"dtype": str(arr.dtype), "shape": list(arr.shape[1:])}
        entry.update(describe(name, arr.ndim, rendered))
        if key.startswith("params/"):
            entry["fill_value"] = fill_value(arr.dtype)
        out[key] = entry
    return out


def layout_of(video: np.ndarray, params: dict[str, np.ndarray]) -> tuple:
    """What the schema is a function of (names, dtypes, per-sequence shapes): equal layouts give equal schemas, so a
    shard derives its schema once and compares every later batch's layout with the first's. dtype objects, not their
    names: str(dtype) for the renderer's ~50 parameters was 3 % of a rotation run (the keys are unique, so sorting never
    compares dtypes)."""
    return (video.dtype, video.shape[1:], *sorted((k, v.dtype, v.shape[1:]) for k, v in params.items()))


def fill_value(dtype: np.dtype) -> Any:
    """What pads per-object arrays past num_objects: NaN for floats (stored as the string "NaN" in JSON), -1 for ints."""
    if np.issubdtype(dtype, np.floating):
        return "NaN"
    if np.issubdtype(dtype, np.signedinteger):
        return -1
    return None


def as_arrays(result: Any, count: int, where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A source's return value checked and converted: (video, params), bools stored as int8."""
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
        raise DatasetError(f"the source must return (video, params dict), got {type(result).__name__} {where}")
    video = np.asarray(result[0])
    if video.dtype != np.uint8 or video.ndim != 5 or video.shape[0] != count:
        raise DatasetError(f"the source must return video uint8 of shape ({count}, T, C, H, W), got {video.dtype} "
                           f"{video.shape} {where}")
    params = {}
    for name, value in result[1].items():
        arr = np.asarray(value)
        if not _NAME.fullmatch(str(name)) or name in ("video", "index"):
            raise DatasetError(f"parameter name {name!r} is not allowed (letters, digits and _; not video or index)")
        if arr.ndim == 0 or arr.shape[0] != count or arr.dtype.kind not in "biuf":
            raise DatasetError(f"parameter {name!r} must be a numeric array with {count} rows, got {arr.dtype} "
                               f"{arr.shape} {where}")
        params[name] = arr.astype(np.int8) if arr.dtype == np.bool_ else arr
    return video, params


class BatchCheck:
    """`as_arrays` for every batch of a shard, and the check that each batch has the first one's layout. A batch of
    plain ndarrays with the first batch's parameter names in the same order, its dtypes and per-sequence shapes, and
    `count` rows each would pass as_arrays' checks exactly as the first did, so it skips them (≈ 0.1 ms of a
    16-sequence batch of the renderer's ~50 parameters); anything else goes through as_arrays. That comparison is one
    list of (type, dtype, shape) per batch against the one expected for its row count (≈ 15 µs for ~50 parameters;
    the tuple `raw_layout` builds cost ≈ 90 µs a batch)."""

    def __init__(self) -> None:
        self.raw: tuple | None = None  # the first batch's raw_layout
        self.layout: tuple | None = None  # the first batch's layout_of, after as_arrays
        self.bools: frozenset[str] = frozenset()  # parameters stored as int8
        self.expected: dict[int, tuple[list, list]] = {}  # row count -> (parameter names, [(type, dtype, shape)])

    def __call__(self, result: Any, count: int, where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raw = None
        if self.raw is not None:
            if self._like_first(result, count):
                return self._as_first(result)
            raw = raw_layout(result, count)
            if raw == self.raw:  # _like_first's own answer, for a batch it could not judge
                return self._as_first(result)
        elif self.layout is None:
            raw = raw_layout(result, count)
        video, params = as_arrays(result, count, where)
        layout = layout_of(video, params)
        if self.layout is None:
            self.raw, self.layout = raw, layout
            self.bools = frozenset(k for k, v in result[1].items() if np.asarray(v).dtype == np.bool_)
        elif layout != self.layout:
            raise DatasetError(f"the source changed shapes, dtypes or parameter names {where}; every batch must match")
        return video, params

    def _as_first(self, result: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A batch laid out as the first, as as_arrays returned that one (booleans stored as int8)."""
        video, params = result
        if self.bools:
            params = {k: v.astype(np.int8) if k in self.bools else v for k, v in params.items()}
        return video, params

    def _like_first(self, result: Any, count: int) -> bool:
        """Whether raw_layout(result, count) == self.raw, answered without building that tuple."""
        if type(result) is not tuple or len(result) != 2 or type(result[1]) is not dict:
            return False
        want = self.expected.get(count)
        if want is None:
            raw = self.raw
            items = [(np.ndarray, raw[0], (count,) + raw[1])]
            items += [(np.ndarray, dtype, (count,) + shape) for _name, dtype, shape in raw[2:]]
            want = self.expected[count] = ([name for name, _dtype, _shape in raw[2:]], items)
        video, params = result
        try:
            got = [(type(v), v.dtype, v.shape) for v in (video, *params.values())]
        except AttributeError:  # not an array
            return False
        return got == want[1] and list(params) == want[0]


def raw_layout(result: Any, count: int) -> tuple | None:
    """(video dtype, video's per-sequence shape, (name, dtype, per-sequence shape) of each parameter in order) of a
    source's return value made of plain ndarrays with `count` rows each; None for anything else."""
    if type(result) is not tuple or len(result) != 2:
        return None
    video, params = result
    if type(video) is not np.ndarray or type(params) is not dict or video.shape[:1] != (count,):
        return None
    out: list = [video.dtype, video.shape[1:]]
    for name, arr in params.items():
        if type(arr) is not np.ndarray or arr.shape[:1] != (count,):
            return None
        out.append((name, arr.dtype, arr.shape[1:]))
    return tuple(out)


# --------------------------------------------------------------------------- HDF5
class _Maker:
    """The datasets and attributes of a shard, made through h5py's low-level API: the very calls h5py's
    `create_dataset(..., **filter_options(...))` and `attrs[name] = value` make (the same property list settings, types
    and dataspaces in the same order, so the same bytes; tests/test_dataset.py compares whole files with h5py's
    high-level path). Through h5py's high level, a shard's ~50 datasets and ~120 attributes cost about as much as
    compressing its noise-free video (≈ 0.5 ms per attribute, mostly making the same HDF5 types again).

    One maker serves every shard a process writes (`shard_maker`): the HDF5 types, property lists and dataspaces
    belong to no file, so they are made once per process; so is everything that follows from a shard's layout
    (`plan`: each dataset's name, shape, chunks, attribute values and chunk writer), which used to be derived again for
    every shard (≈ 2.5 of the ≈ 6 ms it took to create a `readme` shard's 52 datasets). The chunk writers' pipeline
    follows from the filter options and the dtype, so it is read from the property list once per dtype, not from the
    file for every dataset."""

    LAYOUTS = 16  # plans kept (one per layout and shard size; a run has one or two)

    def __init__(self, compression: str, track_order: Any = "config"):
        import h5py
        from h5py import h5s

        self.h5py = h5py
        self.opts = filter_options(compression)
        # what h5py's create_dataset applies when given none
        self.track_order = h5py.get_config().track_order if track_order == "config" else track_order
        self.scalar = h5s.create_simple(())
        self.attr_types: dict[type, tuple[Any, Any]] = {}
        self.dtypes: dict[np.dtype, Any] = {}
        self.plists: dict[tuple[int, ...], Any] = {}
        self.spaces: dict[tuple[int, ...], Any] = {}
        self.pipelines: dict[np.dtype, tuple[tuple, int]] = {}
        self.plans: dict[tuple, "_Plan"] = {}
        self.schemas: dict[tuple, str] = {}

    def _plist(self, chunks: tuple[int, ...]):
        """h5py's filters.fill_dcpl + make_new_dset settings for filter_options (chunks, shuffle, deflate or LZF,
        fletcher32, no times, the attribute creation order h5py's configuration asks for)."""
        plist = self.plists.get(chunks)
        if plist is None:
            h5p, h5z = self.h5py.h5p, self.h5py.h5z
            plist = h5p.create(h5p.DATASET_CREATE)
            plist.set_chunk(chunks)
            if self.opts.get("shuffle"):
                plist.set_shuffle()
            if self.opts.get("compression") == "gzip":
                plist.set_deflate(self.opts["compression_opts"])
            elif self.opts.get("compression") == "lzf":
                plist.set_filter(h5z.FILTER_LZF, h5z.FLAG_OPTIONAL)
            if self.opts.get("fletcher32"):
                plist.set_fletcher32()
            plist.set_obj_track_times(False)
            if self.track_order is True:
                plist.set_attr_creation_order(h5p.CRT_ORDER_TRACKED | h5p.CRT_ORDER_INDEXED)
            elif self.track_order is False:
                plist.set_attr_creation_order(0)
            self.plists[chunks] = plist
        return plist

    def prepare(self, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
                attrs: dict[str, Any]) -> "_Dataset":
        """Everything `create` needs to make dataset `name` with its attributes: types, property list, dataspace,
        the attributes' values as arrays, and a chunk writer to copy."""
        dtype = np.dtype(dtype)
        tid = self.dtypes.get(dtype)
        if tid is None:
            tid = self.dtypes[dtype] = self.h5py.h5t.py_create(dtype, logical=1)
        plist = self._plist(chunks)
        space = self.spaces.get(shape)
        if space is None:
            space = self.spaces[shape] = self.h5py.h5s.create_simple(shape, None)
        pipeline = self.pipelines.get(dtype)
        if pipeline is None:
            steps = pipeline_steps(plist, dtype) if encodable(dtype) else None
            if steps is None:  # as_arrays admits only dtypes and layouts ChunkWriter encodes
                raise DatasetError(f"internal error: dataset {name} ({dtype}, chunks {chunks}) cannot be encoded "
                                   "deterministically")
            pipeline = self.pipelines[dtype] = (steps, plist_deflate_level(plist))
        writer = ChunkWriter(None, pipeline[0], length=shape[0], rows=chunks[0], row_shape=shape[1:], dtype=dtype,
                             level=pipeline[1])
        return _Dataset(name.encode(), tid, space, plist, self.prepare_attrs(attrs), writer)

    def create(self, parent, spec: "_Dataset") -> ChunkWriter:
        """Create the prepared dataset under the group id `parent` with its attributes; its chunk writer."""
        dsid = self.h5py.h5d.create(parent, spec.name, spec.tid, spec.space, dcpl=spec.plist)
        self.write_attrs(dsid, spec.attrs)
        return spec.writer.with_id(dsid)

    def dataset(self, parent, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
                attrs: dict[str, Any]) -> ChunkWriter:
        """Create dataset `name` under the group id `parent` with its attributes; its chunk writer."""
        return self.create(parent, self.prepare(name, shape, dtype, chunks, attrs))

    def prepare_attrs(self, attrs: dict[str, Any]) -> tuple:
        """(name, (file type, memory type), value as an array) of each item, for `write_attrs`; (name, None, value)
        for a value h5py itself writes."""
        out = []
        for name, value in attrs.items():
            kind = type(value)
            if kind is str:
                data = np.array(value, dtype=object)
            elif kind is float:
                data = np.array(value, np.float64)
            elif kind is int and -(1 << 63) <= value < (1 << 63):
                data = np.array(value, np.int64)
            else:
                out.append((name, None, value))
                continue
            types = self.attr_types.get(kind)
            if types is None:  # as attrs.create: the file type from the logical dtype, the memory type bit for bit
                dtype = self.h5py.string_dtype() if kind is str else data.dtype
                h5t = self.h5py.h5t
                types = self.attr_types[kind] = (h5t.py_create(dtype, logical=True), h5t.py_create(dtype))
            out.append((name.encode(), types, data))
        return tuple(out)

    def write_attrs(self, oid, prepared: tuple) -> None:
        h5a = self.h5py.h5a
        for name, types, data in prepared:
            if types is None:
                self.h5py.AttributeManager(_Handle(oid))[name] = data
                continue
            attr = h5a.create(oid, name, types[0], self.scalar)
            try:
                attr.write(data, mtype=types[1])
            finally:
                attr.close()

    def attrs(self, oid, attrs: dict[str, Any]) -> None:
        """`obj.attrs[name] = value` for each item in order: str, float and int64 scalars as h5py stores them (a
        variable-length UTF-8 string, float64, int64); any other value through h5py itself."""
        self.write_attrs(oid, self.prepare_attrs(attrs))

    def plan(self, layout: tuple, count: int, video: np.ndarray, params: dict[str, np.ndarray],
             rendered: bool) -> "_Plan":
        """The datasets of a shard of `count` sequences whose batches have `layout` (layout_of(video, params))."""
        key = (layout, count, rendered)
        plan = self.plans.get(key)
        if plan is None:
            if len(self.plans) >= self.LAYOUTS:
                self.plans.clear()
            plan = self.plans[key] = _plan(self, count, video, params, rendered)
        return plan

    def schema(self, layout: tuple, video: np.ndarray, params: dict[str, np.ndarray], rendered: bool) -> str:
        """schema_of(video, params, rendered) as the records' JSON text (`dumps`), once per layout."""
        key = (layout, rendered)
        text = self.schemas.get(key)
        if text is None:
            if len(self.schemas) >= self.LAYOUTS:
                self.schemas.clear()
            text = self.schemas[key] = dumps(schema_of(video, params, rendered))
        return text


class _Dataset(NamedTuple):
    """A dataset `_Maker.create` makes: its name (bytes), type, dataspace, creation property list, prepared
    attributes and a chunk writer (with no dataset yet) to copy."""

    name: bytes
    tid: Any
    space: Any
    plist: Any
    attrs: tuple
    writer: ChunkWriter


class _Plan(NamedTuple):
    """A shard's datasets in the order they are made: `top` (under the root, before the `params` group), `rest`
    ((in the params group?, dataset) in h5py's former order) and `index` (made last)."""

    top: _Dataset
    rest: tuple[tuple[bool, _Dataset], ...]
    index: _Dataset


@functools.lru_cache(maxsize=8)
def _shared_maker(compression: str, track_order: Any) -> _Maker:
    return _Maker(compression, track_order)


def shard_maker(compression: str) -> _Maker:
    """The maker of this process for `compression` (and h5py's current track_order setting)."""
    import h5py

    return _shared_maker(compression, h5py.get_config().track_order)


class _Handle:
    """What h5py's AttributeManager needs of an object: its id."""

    __slots__ = ("id",)

    def __init__(self, oid):
        self.id = oid


def _plan(maker: _Maker, count: int, video: np.ndarray, params: dict[str, np.ndarray], rendered: bool) -> _Plan:
    """Every dataset of a shard, prepared in the order h5py's path created them (see _create_datasets)."""
    top = maker.prepare("video", (count,) + video.shape[1:], np.uint8, (1,) + video.shape[1:],
                        h5_attributes(describe("video", video.ndim, rendered)))
    rest = []
    for name in sorted(params):
        arr = params[name]
        shape = (count,) + arr.shape[1:]
        attrs: dict[str, Any] = {}
        if name in TOP_LEVEL:  # per-frame images: one sequence per chunk like the video
            in_group, chunks = False, (1,) + arr.shape[1:]
        else:
            row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
            in_group, chunks = True, (int(min(count, max(1, PARAM_CHUNK_BYTES // row))),) + arr.shape[1:]
            fill = fill_value(arr.dtype)
            if fill is not None:
                attrs["fill_value"] = np.nan if fill == "NaN" else fill
        attrs.update(h5_attributes(describe(name, arr.ndim, rendered)))
        rest.append((in_group, maker.prepare(name, shape, arr.dtype, chunks, attrs)))
    index = maker.prepare("index", (count,), np.dtype(np.int64), (min(count, PARAM_CHUNK_BYTES // 8),),
                          h5_attributes(describe("index", 1, True)))
    return _Plan(top, tuple(rest), index)


def _create_datasets(f, count: int, video: np.ndarray, params: dict[str, np.ndarray], maker: _Maker,
                     rendered: bool, layout: tuple | None = None) -> dict[str, ChunkWriter]:
    """Every dataset of the shard but `index`, in the order h5py's path created them; their chunk writers. Every chunk
    of every dataset is encoded by dataset/chunks.py and stored with write_direct_chunk, never through HDF5's filters:
    that is what makes the bytes a pure function of the data (dataset/chunks.py says which filters are not)."""
    plan = maker.plan(layout_of(video, params) if layout is None else layout, count, video, params, rendered)
    root = f.id
    writers = {"video": maker.create(root, plan.top)}
    group = f.create_group("params").id
    for in_group, spec in plan.rest:
        writers[spec.name.decode()] = maker.create(group if in_group else root, spec)
    return writers


def write_h5(f, spec: ShardSpec, source: Source, plan: dict[str, Any], report: Callable[[int], None] | None,
             parent: int | None) -> dict[str, Any]:
    """Fill an open h5py File with shard `spec`; returns the schema. Batches are written in index order.

    `parent`: the pid of the process that started this worker; when it is gone (kill -9), stop at the next batch."""
    return _fill(f, spec, source, plan, report, parent)[0]


def _fill(f, spec: ShardSpec, source: Source, plan: dict[str, Any], report: Callable[[int], None] | None,
          parent: int | None) -> tuple[dict[str, Any], str]:
    """write_h5, and the schema's JSON text (`dumps`)."""
    maker = shard_maker(plan["compression"])
    attrs = {"format": plan["format"], "format_version": plan["format_version"],
             "physvid_version": plan["physvid_version"], "source": plan["source"],
             "config": dumps(plan["config"]).strip(), "total_sequences": plan["total_sequences"],
             "shard_size": plan["shard_size"], "compression": plan["compression"], "shard": spec.shard,
             "first_index": spec.first_index, "count": spec.count}
    if plan["seed"] is not None:
        attrs["seed"] = plan["seed"]
    maker.attrs(f["/"].id, attrs)
    schema, direct, layout, fills = "", {}, None, []
    checked = BatchCheck()
    rendered = plan["source"] == RenderSource.name
    stop = spec.first_index + spec.count
    # A source that returns new arrays on every call and keeps none (`fresh_arrays`, e.g. the renderer) is called for
    # up to AHEAD_BYTES of batches before they are written: rendering batch after batch keeps the renderer's code and
    # data in the caches (a noise-free shard's CPU time -2.5 %, docs/benchmarks.md). Any other source may reuse its
    # buffers, so each of its batches is written before the next call.
    ahead = AHEAD_BYTES if getattr(source, "fresh_arrays", False) is True else 0
    a = spec.first_index
    while a < stop:
        got, held = [], 0
        while a < stop and (not got or held < ahead):
            if parent is not None and os.getppid() != parent:
                raise SystemExit(3)  # the parent was killed (e.g. kill -9): stop, and let the caller remove the temp file
            b = min(a + BATCH, stop)
            try:
                result = source(np.arange(a, b, dtype=np.int64))
            except OSError as exc:
                raise DatasetError(f"the source failed on sequences {a}..{b - 1}: {exc}") from None
            video, params = checked(result, b - a, f"(sequences {a}..{b - 1})")
            got.append((a, b, video, params))
            held += video.nbytes + sum(v.nbytes for v in params.values())
            a = b
        del result
        for lo, hi, video, params in got:
            if layout is None:
                layout = checked.layout
                schema = maker.schema(layout, video, params, rendered)
                direct = _create_datasets(f, spec.count, video, params, maker, rendered, layout)
                # Small per-sequence parameters are gathered and written once per shard: one HDF5 call per batch
                # and parameter would cost as much as compressing the video.
                fills = [(k, np.empty((spec.count,) + v.shape[1:], v.dtype)) for k, v in params.items()
                         if k not in TOP_LEVEL]
                rows = [(direct[k].write_batch, k) for k in ("video", *TOP_LEVEL) if k == "video" or k in params]
            for write, name in rows:
                write(lo - spec.first_index, video if name == "video" else params[name])
            if report is not None:
                report(hi - lo)
        first, last = got[0][0] - spec.first_index, got[-1][1] - spec.first_index
        for name, table in fills:  # the held batches' rows in one call per parameter
            np.concatenate([batch[3][name] for batch in got], out=table[first:last])
        del got
    table = dict(fills)
    check = getattr(source, "check_shard", None)
    if check is not None and table:
        check(table, spec)
    for name in sorted(table):
        direct[name].write_all(table[name])
    index = maker.create(f.id, maker.plan(layout, spec.count, video, params, rendered).index)
    index.write_all(np.arange(spec.first_index, stop, dtype=np.int64))
    return json.loads(schema), schema


def record_text(entry: dict[str, Any], schema_text: str) -> str:
    """dumps({"shard": entry, "datasets": schema}) from dumps(schema): json.dumps with an indent writes a nested
    value as it writes it alone, each line but the first indented once more (no string holds a raw newline)."""
    inner = (dumps(entry).rstrip("\n"), schema_text.rstrip("\n"))
    return ('{\n  "shard": ' + inner[0].replace("\n", "\n  ") + ',\n  "datasets": ' + inner[1].replace("\n", "\n  ")
            + "\n}\n")


# --------------------------------------------------------------------------- the file
def remove_temp_files(out: Path, shard: int) -> None:
    for stale in out.glob(f"shard-{shard:05d}.*.h5.tmp"):
        stale.unlink(missing_ok=True)


def write_shard(out: Path, spec: ShardSpec, source: Source, plan: dict[str, Any], *,
                report: Callable[[int], None] | None = None, parent: int | None = None) -> dict[str, Any]:
    """Write one shard atomically and record its checksum; returns the record {shard, datasets}."""
    import h5py

    final = out / spec.file
    remove_temp_files(out, spec.shard)  # left by a killed run
    try:
        with atomic_path(final, tmp=out / tmp_name(spec.shard)) as tmp:
            # HDF5 builds the shard in memory and Python writes it: a full disk is then a plain OSError here. (HDF5
            # 2.0 crashes the process when its own flush fails at close.) The image is byte-identical to an on-disk
            # write.
            with h5py.File(f"{tmp.name}-image", "w", driver="core", backing_store=False, block_size=CORE_BLOCK,
                           libver="earliest") as f:
                schema, schema_text = _fill(f, spec, source, plan, report, parent)
                f.flush()
                image = f.id.get_file_image()
            sha, size = hashlib.sha256(image).hexdigest(), len(image)
            with open(tmp, "wb") as fh:
                fh.write(image)
            del image
        entry = {"file": spec.file, "first_index": spec.first_index, "count": spec.count, "sha256": sha, "size": size}
        record = {"shard": entry, "datasets": schema}
        record_path(out, spec.shard).parent.mkdir(exist_ok=True)
        atomic_write_text(record_path(out, spec.shard), record_text(entry, schema_text))
        return record
    except OSError as exc:
        raise io_error(exc, final) from None
