"""physvid.dataset: the HDF5 format, resume, shard ranges, verification, reading (also under a DataLoader), export."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from physvid import RenderConfig, ShapeConfig, render
from physvid.dataset import (FORMAT_NAME, FORMAT_VERSION, estimate, export_dataset, finalize_dataset, generate,
                             open_dataset, preview_dataset, verify_dataset, write_dataset)
from physvid.errors import ConfigError, DatasetError

TINY = RenderConfig(property="all", height=16, width=16, frames=3, shape=ShapeConfig(num_objects=(1, 2)))
MAPS = TINY.replace(masks=True, property_maps=True)


def files(d: Path) -> dict[str, bytes]:
    """Every file of a dataset folder (hidden bookkeeping included) by name -> bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_round_trip_equals_the_renderer(tmp_path, compression):
    out = tmp_path / "ds"
    summary = generate(MAPS, 7, out, shard_size=3, workers=1, compression=compression)
    assert summary.sequences_written == 7 and summary.shards_written == 3 and summary.finalized
    assert sorted(os.listdir(out)) == ["README.md", "SHA256SUMS", "croissant.json", "manifest.json", "preview.png",
                                       "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]

    video, params = render(MAPS, range(7))
    ds = open_dataset(out)
    assert len(ds) == 7 and ds.shape == (7, 3, 1, 16, 16)
    np.testing.assert_array_equal(ds[0:7], video)
    np.testing.assert_array_equal(ds[5], video[5])
    np.testing.assert_array_equal(ds[[6, 0, 4]], video[[6, 0, 4]])
    np.testing.assert_array_equal(ds[-1], video[6])
    for name in ds.param_names:
        np.testing.assert_array_equal(ds.params[name], params[name])
    one = ds.get(4)
    np.testing.assert_array_equal(one["masks"], params["masks"][4])
    np.testing.assert_array_equal(one["property_map"], params["property_map"][4])
    assert one["index"] == 4 and np.isnan(one["x0"][-1]) == (params["num_objects"][4] < 2)
    assert ds.render_config == MAPS and ds.seed == 0
    with pytest.raises(IndexError):
        ds[7]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == FORMAT_NAME and manifest["format_version"] == FORMAT_VERSION
    assert manifest["total_sequences"] == 7 and manifest["config"] == MAPS.to_dict()
    assert [(s["file"], s["first_index"], s["count"]) for s in manifest["shards"]] == [
        ("shard-00000.h5", 0, 3), ("shard-00001.h5", 3, 3), ("shard-00002.h5", 6, 1)]
    assert manifest["datasets"]["params/x0"]["fill_value"] == "NaN"
    assert manifest["datasets"]["params/role"]["fill_value"] == -1
    assert manifest["datasets"]["masks"]["shape"] == [3, 2, 16, 16]

    with h5py.File(out / "shard-00001.h5", "r") as f:  # what another team sees with plain h5py
        v = f["video"]
        assert v.dtype == np.uint8 and v.shape == (3, 3, 1, 16, 16) and v.chunks == (1, 3, 1, 16, 16)
        assert v.fletcher32
        assert v.compression == {"gzip": "gzip", "lzf": "lzf", "none": None}[compression]
        assert v.shuffle == (compression != "none")
        np.testing.assert_array_equal(f["index"][()], [3, 4, 5])
        assert json.loads(f.attrs["config"]) == MAPS.to_dict()
        assert f.attrs["format_version"] == FORMAT_VERSION and f.attrs["seed"] == 0
        assert f.attrs["first_index"] == 3 and f.attrs["count"] == 3
        assert np.isnan(f["params/x0"].attrs["fill_value"]) and f["params/role"].attrs["fill_value"] == -1


def test_a_single_shard_file_opens_with_global_indices(tmp_path):
    generate(TINY, 5, tmp_path / "ds", shard_size=2, workers=1)
    ds = open_dataset(tmp_path / "ds" / "shard-00001.h5")
    assert len(ds) == 2 and list(ds.indices) == [2, 3]
    np.testing.assert_array_equal(ds[1], render(TINY, [3])[0][0])


class Clips:
    """A non-renderer source, as `stmoe prepare` will use: deterministic in the index, with per-object padding."""

    name = "test.clips"

    def __call__(self, indices):
        video = np.stack([np.full((2, 1, 8, 8), i % 251, np.uint8) for i in indices])
        boxes = np.full((len(indices), 2), np.nan)
        boxes[:, 0] = indices
        return video, {"boxes": boxes, "flag": np.asarray(indices) % 2 == 0, "label": np.asarray(indices) * 10}


def test_write_dataset_takes_any_source(tmp_path):
    write_dataset(tmp_path / "clips", Clips(), 5, {"clips": "street", "fps": 5}, shard_size=2, workers=1)
    ds = open_dataset(tmp_path / "clips")
    assert ds.config == {"clips": "street", "fps": 5} and ds.seed is None
    assert ds[3][0, 0, 0, 0] == 3 and list(ds.params["label"]) == [0, 10, 20, 30, 40]
    assert list(ds.params["flag"]) == [1, 0, 1, 0, 1] and np.isnan(ds.params["boxes"][:, 1]).all()
    with pytest.raises(DatasetError, match="not the renderer"):
        ds.render_config

    def bad(indices):
        return np.zeros((len(indices), 2, 1, 8, 8), np.float32), {}

    with pytest.raises(DatasetError, match="uint8"):
        write_dataset(tmp_path / "bad", bad, 3, {}, workers=1)
    assert not (tmp_path / "bad").exists()  # nothing partial left


class Changes:
    """A source whose parameters change dtype after the first batch (float64 -> float32)."""

    def __call__(self, indices):
        video = np.zeros((len(indices), 2, 1, 4, 4), np.uint8)
        return video, {"x": np.asarray(indices, np.float64 if indices[0] == 0 else np.float32)}


def test_the_schema_is_derived_once_per_layout_and_every_batch_still_checked(tmp_path, monkeypatch):
    """Issue 22: deriving the schema for every 16-sequence batch cost 13 % of a rotation run; it is derived once per
    layout and process (the free-space estimate's sample and both shards share it), every shard's record still holds
    it, and a batch whose layout differs from the first's is still refused."""
    from physvid.dataset import shard

    calls = []
    real = shard.schema_of
    monkeypatch.setattr(shard, "schema_of", lambda *a: calls.append(1) or real(*a))
    shard._shared_maker.cache_clear()  # a maker shared with earlier tests would know this layout already
    write_dataset(tmp_path / "clips", Clips(), 70, {}, shard_size=35, workers=1, finalize=False)
    assert len(calls) == 1
    records = [json.loads((tmp_path / "clips" / ".physvid" / f"shard-0000{i}.json").read_text()) for i in (0, 1)]
    assert records[0]["datasets"] == records[1]["datasets"] == real(*shard.as_arrays(Clips()(np.arange(2)), 2, ""), False)
    with pytest.raises(DatasetError, match="changed shapes, dtypes or parameter names .sequences 16..31"):
        write_dataset(tmp_path / "bad", Changes(), 40, {}, workers=1)


def test_a_record_is_written_from_its_schema_text_as_dumps_writes_it():
    """Issue 22: a shard's record is spliced from the schema's JSON text, derived once per layout; the text must be
    the one `dumps` writes for the whole record (escapes, nesting, lists and the final newline included)."""
    from physvid.dataset.layout import dumps
    from physvid.dataset.shard import record_text

    entry = {"file": "shard-00003.h5", "first_index": 750, "count": 250, "sha256": "0f" * 32, "size": 123456}
    schemas = [{"video": {"dtype": "uint8", "shape": [10, 1, 64, 64], "axes": "N,T,C,H,W"}},
               {"params/x": {"dtype": "float64", "shape": [], "fill_value": "NaN", "labels": {"1": "a \"b\"\nc"},
                             "columns": ["u", "v"], "empty": [], "nested": {"k": [1, {"z": None}]}}}]
    for schema in schemas:
        assert record_text(entry, dumps(schema)) == dumps({"shard": entry, "datasets": schema})


class FreshClips(Clips):
    """Clips that promise new arrays on every call (as the renderer does), logging each call and progress report."""

    fresh_arrays = True

    def __init__(self, log: list):
        self.log = log

    def __call__(self, indices):
        self.log.append(("call", int(indices[0])))
        return super().__call__(indices)


def test_a_fresh_array_source_is_called_ahead_of_the_writes_and_gives_the_same_bytes(tmp_path):
    """Issue 22: a source with `fresh_arrays` (the renderer) is called for several batches before they are written
    (its code stays in the caches); the shards are the bytes a source called batch by batch writes."""
    log: list = []
    write_dataset(tmp_path / "a", Clips(), 70, {}, shard_size=40, workers=1)
    write_dataset(tmp_path / "b", FreshClips(log), 70, {}, shard_size=40, workers=1, source_name=Clips.name,
                  progress=lambda k, total: log.append(("done", k)))
    for name in ("shard-00000.h5", "shard-00001.h5"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    first_done = next(n for n, (kind, k) in enumerate(log) if kind == "done" and k > 0)
    # the free-space estimate's sample, then all three batches of shard 0 before the first is written
    assert [i for kind, i in log[:first_done] if kind == "call"] == [0, 0, 16, 32]


class Reshuffled(Clips):
    """Clips' data, every other batch as plain lists in another order (as_arrays' slow path) -- and, with `short`, a
    later batch with a row missing."""

    def __init__(self, short: bool = False):
        self.short = short

    def __call__(self, indices):
        video, params = super().__call__(indices)
        if self.short and indices[0] == 32:
            params["label"] = params["label"][1:]
        if indices[0] % 32 == 16:
            params = {k: params[k].tolist() for k in reversed(params)}
        return video, params


def test_batches_like_the_first_skip_the_checks_and_write_the_same_bytes(tmp_path):
    """Issue 22: a batch whose arrays have the first batch's names, dtypes and shapes skips as_arrays' checks; the
    bools are still stored as int8, other batches still go through the checks, and the files are the same bytes."""
    write_dataset(tmp_path / "a", Clips(), 70, {}, shard_size=40, workers=1)
    write_dataset(tmp_path / "b", Reshuffled(), 70, {}, shard_size=40, workers=1, source_name=Clips.name)
    for name in ("shard-00000.h5", "shard-00001.h5"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert open_dataset(tmp_path / "b").params["flag"].dtype == np.int8
    with pytest.raises(DatasetError, match=r"'label' must be .* with 8 rows, got int64 \(7,\) \(sequences 32..39\)"):
        write_dataset(tmp_path / "c", Reshuffled(short=True), 70, {}, shard_size=40, workers=1)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_low_level_datasets_and_attributes_are_h5py_high_level_byte_for_byte(compression):
    """Issue 22: a shard's datasets and attributes are made through h5py's low-level API (h5py's high level cost
    ≈ 0.5 ms per attribute); the file image must be the one h5py's create_dataset and attrs[...] = value give, and the
    chunk writers must encode the pipeline HDF5 stored."""
    from physvid.dataset.chunks import ChunkWriter
    from physvid.dataset.layout import filter_options
    from physvid.dataset.shard import _Maker

    datasets = [("video", (7, 3, 1, 8, 8), np.uint8, (1, 3, 1, 8, 8), {"axes": "N,T,C,H,W"}),
                ("params/x0", (7, 2), np.float32, (7, 2), {"fill_value": np.nan, "axes": "N,object", "units": "px"}),
                ("params/shape", (7, 2), np.int8, (7, 2), {"fill_value": -1, "labels": '{"1": "circle"}'}),
                ("params/n", (7,), np.int64, (3,), {"axes": "N", "bit_flags": 1}),
                ("params/z", (7, 3, 2), np.float64, (5, 3, 2), {"axes": "N,d1,d2"}),
                ("masks", (7, 3, 2, 8, 8), np.uint8, (1, 3, 2, 8, 8), {}),
                ("flow", (7, 2, 2, 8, 8), np.float32, (1, 2, 2, 8, 8), {"columns": '["u", "v"]'}),
                ("params/u", (7, 4), np.uint16, (7, 4), {"axes": "N,d1"})]
    top = {"format": "physvid-hdf5", "config": "{\n  \"a\": 1\n}", "shard": 0, "count": 7, "seed": 2 ** 62,
           "ratio": 0.26, "flag": True, "big": 2 ** 63 + 5, "numpy": np.int32(3)}  # the last three: h5py's own path
    images, steps = [], []
    for low in (False, True):
        with h5py.File(f"cmp-{low}", "w", driver="core", backing_store=False, block_size=1 << 22,
                       libver="earliest") as f:
            maker = _Maker(compression)
            if low:
                maker.attrs(f["/"].id, top)
            else:
                for k, v in top.items():
                    f.attrs[k] = v
            f.create_group("params")
            for name, shape, dtype, chunks, attrs in datasets:
                parent, _, leaf = name.rpartition("/")
                if low:
                    writer = maker.dataset(f[parent or "/"].id, leaf, shape, np.dtype(dtype), chunks, attrs)
                else:
                    d = f.create_dataset(name, shape, dtype, chunks=chunks, **filter_options(compression))
                    for k, v in attrs.items():
                        d.attrs[k] = v
                    writer = ChunkWriter.of(d)
                steps.append((writer.steps, writer.level, writer.rows, writer.row_shape, writer.dtype, writer.length))
                data = np.arange(np.prod(shape)).astype(dtype).reshape(shape)
                writer.write_all(data)
            f.flush()
            images.append(f.id.get_file_image())
    assert steps[:len(datasets)] == steps[len(datasets):]
    assert images[0] == images[1]
    with h5py.File(io.BytesIO(images[1]), "r") as f:  # HDF5's own filters decode it and verify every checksum
        for name, shape, dtype, _chunks, attrs in datasets:
            np.testing.assert_array_equal(f[name][()], np.arange(np.prod(shape)).astype(dtype).reshape(shape))
            assert set(f[name].attrs) == set(attrs)
        assert f.attrs["config"] == top["config"] and f.attrs["seed"] == 2 ** 62 and np.isnan(f["params/x0"].attrs["fill_value"])


class Pids:
    """A source that records which process rendered each batch."""

    def __init__(self, log: Path):
        self.log = log

    def __call__(self, indices):
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return np.zeros((len(indices), 2, 1, 4, 4), np.uint8), {"i": np.asarray(indices)}


def test_a_job_of_one_shard_starts_no_worker_process(tmp_path):
    """Issue 22: a worker costs ~1.7 CPU s to start (imports, kernels); a job that fits in one shard -- by default
    every job up to 1,000 sequences -- is written by this process whatever --workers says."""
    log = tmp_path / "pids"
    write_dataset(tmp_path / "ds", Pids(log), 40, {}, workers=4)
    assert set(log.read_text().split()) == {str(os.getpid())}


def test_resume_keeps_verified_shards_and_is_byte_identical(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    generate(TINY, 9, ref, shard_size=3, workers=1)
    # An interrupted run: every shard recorded but no manifest yet; then one shard lost, one corrupt, a stale temp file.
    generate(TINY, 9, run, shard_size=3, workers=1, finalize=False)
    assert not (run / "manifest.json").exists()
    (run / "shard-00001.h5").unlink()
    flip_byte(run / "shard-00002.h5")
    (run / "shard-00000.host-1.h5.tmp").write_bytes(b"partial")
    summary = generate(TINY, 9, run, shard_size=3, workers=1)
    assert (summary.shards_kept, summary.shards_written, summary.sequences_kept) == (1, 2, 3)
    assert files(run) == files(ref)  # manifest included; the bookkeeping folder is gone
    # A finished dataset whose shard was damaged later: the manifest's checksums decide what is redone.
    flip_byte(run / "shard-00000.h5")
    again = generate(TINY, 9, run, shard_size=3, workers=1)
    assert (again.shards_kept, again.shards_written) == (2, 1) and files(run) == files(ref)
    done = generate(TINY, 9, run, shard_size=3, workers=1)
    assert (done.shards_kept, done.shards_written) == (3, 0) and files(run) == files(ref)


def test_shard_range_halves_then_finalize_equal_one_run(tmp_path):
    ref, arr = tmp_path / "ref", tmp_path / "array"
    generate(TINY, 8, ref, shard_size=3, workers=1)
    first = generate(TINY, 8, arr, shard_size=3, workers=1, shard_range="0:2")
    assert not first.finalized and not (arr / "manifest.json").exists()
    with pytest.raises(DatasetError, match="shard-00002.h5"):
        finalize_dataset(arr)
    generate(TINY, 8, arr, shard_size=3, workers=1, shard_range=(2, 3))
    finalize_dataset(arr)
    assert files(arr) == files(ref)
    with pytest.raises(ConfigError, match="shard"):
        generate(TINY, 8, arr, shard_size=3, workers=1, shard_range="3:5")


def test_a_folder_with_another_dataset_is_refused(tmp_path):
    out = tmp_path / "ds"
    generate(TINY, 4, out, shard_size=2, workers=1)
    with pytest.raises(ConfigError, match=r"different dataset.*seed.*--overwrite"):
        generate(TINY.replace(seed=1), 4, out, shard_size=2, workers=1)
    with pytest.raises(ConfigError, match="total_sequences"):
        generate(TINY, 6, out, shard_size=2, workers=1)
    generate(TINY.replace(seed=1), 4, out, shard_size=2, workers=1, overwrite=True)
    np.testing.assert_array_equal(open_dataset(out)[0:4], render(TINY.replace(seed=1), range(4))[0])
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="todo.txt"):
        generate(TINY, 2, foreign, workers=1)
    assert os.listdir(foreign) == ["todo.txt"]


def test_verify_names_the_bad_shard(tmp_path):
    out = tmp_path / "ds"
    generate(TINY, 6, out, shard_size=2, workers=1)
    assert verify_dataset(out).ok
    flip_byte(out / "shard-00001.h5")
    report = verify_dataset(out)
    assert not report.ok and report.bad_shards == ["shard-00001.h5"]
    assert "sha256" in report.problems["shard-00001.h5"][0]
    (out / "shard-00002.h5").unlink()
    assert verify_dataset(out).bad_shards == ["shard-00001.h5", "shard-00002.h5"]


def test_failed_shard_leaves_no_temp_file_and_finished_shards_resume(tmp_path, monkeypatch):
    from physvid.dataset import chunks

    real_write = chunks.ChunkWriter.write_batch  # the video's chunks are encoded by physvid and stored directly
    fail_from = {"index": 0}

    def disk_full(self, j, rows):  # HDF5 failing to write a chunk, as on a full disk
        if h5py.Dataset(self.dsid).file.attrs["first_index"] >= fail_from["index"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, j, rows)

    monkeypatch.setattr(chunks.ChunkWriter, "write_batch", disk_full)
    fresh = tmp_path / "fresh"
    with pytest.raises(DatasetError, match="no space left on device while writing .*shard-00000.h5"):
        write_dataset(fresh, Clips(), 4, {}, shard_size=2, workers=1)
    assert not fresh.exists()  # nothing partial left

    part = tmp_path / "part"
    fail_from["index"] = 4
    with pytest.raises(DatasetError, match="no space left"):
        write_dataset(part, Clips(), 6, {}, shard_size=2, workers=1)
    assert sorted(p.name for p in part.iterdir() if not p.name.startswith(".")) == ["shard-00000.h5", "shard-00001.h5"]
    monkeypatch.setattr(chunks.ChunkWriter, "write_batch", real_write)
    summary = write_dataset(part, Clips(), 6, {}, shard_size=2, workers=1)
    assert (summary.shards_kept, summary.shards_written) == (2, 1) and verify_dataset(part).ok

    def broken(indices):
        raise OSError(errno.ENOENT, "No such file or directory", "clip-7.mp4")

    with pytest.raises(DatasetError, match="source failed on sequences 0..1.*clip-7.mp4"):
        write_dataset(tmp_path / "src", broken, 2, {}, workers=1)


def test_dataset_pickles_without_handles_and_reopens_per_process(tmp_path):
    generate(TINY, 4, tmp_path / "ds", shard_size=2, workers=1)
    ds = open_dataset(tmp_path / "ds")
    first = ds[3].copy()
    assert ds._handles  # opened lazily by the read above
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    np.testing.assert_array_equal(clone[3], first)
    ds.close()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_open_dataset_under_a_dataloader_with_two_workers(tmp_path, start_method):
    torch = pytest.importorskip("torch")
    out = tmp_path / "ds"
    generate(TINY, 10, out, shard_size=3, workers=1)
    ds = open_dataset(out)
    ds[0]  # the parent has handles open before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, num_workers=2,
                                         multiprocessing_context=start_method)
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, render(TINY, range(10))[0])


def test_export_npy_png_mp4(tmp_path):
    out = tmp_path / "ds"
    generate(TINY, 5, out, shard_size=2, workers=1)
    video = render(TINY, range(5))[0]
    (npy,) = export_dataset(out, "npy")
    assert npy == tmp_path / "ds.npy"
    arr = np.load(npy)
    assert arr.shape == (3, 5, 16, 16)  # Moving-MNIST layout (T, N, H, W)
    np.testing.assert_array_equal(arr, video[:, :, 0].transpose(1, 0, 2, 3))
    (nthwc,) = export_dataset(out, "npy", tmp_path / "x.npy", layout="nthwc", indices=[4, 1])
    np.testing.assert_array_equal(np.load(nthwc), video[[4, 1]].transpose(0, 1, 3, 4, 2))

    pngs = export_dataset(out, "png", tmp_path / "png", indices=[2])
    from PIL import Image

    frame = np.asarray(Image.open(pngs[0] / "frame-01.png"))
    np.testing.assert_array_equal(frame[..., 0], video[2, 1, 0])

    av = pytest.importorskip("av")
    (mp4,) = export_dataset(out, "mp4", tmp_path / "mp4", indices=[0], scale=2)
    with av.open(str(mp4)) as container:
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (32, 32)
    assert np.abs(frames[1][::2, ::2].astype(int) - video[0, 1, 0]).mean() < 12  # lossy but the same picture

    gif = preview_dataset(out, tmp_path / "p.gif", indices=[0, 1])
    assert Image.open(gif).n_frames == 3
    with pytest.raises(ConfigError, match="property maps"):
        preview_dataset(out, tmp_path / "p.png", property_map=True)


def test_estimate_writes_nothing(tmp_path):
    plan = estimate(TINY, 25, tmp_path / "nope", shard_size=10, workers=2)
    assert (plan.shards, plan.shards_todo, plan.sequences_todo, plan.workers) == (3, 3, 25, 2)
    assert plan.estimated_bytes > 0 and plan.estimated_seconds > 0 and plan.raw_bytes == 25 * 3 * 16 * 16
    assert not (tmp_path / "nope").exists()


def test_bad_arguments_are_config_errors(tmp_path):
    for kwargs, match in [({"n": 0}, "n must be"), ({"n": 3, "shard_size": 0}, "shard_size"),
                          ({"n": 3, "compression": "zstd"}, "gzip, lzf, none"), ({"n": 3, "workers": 0}, "workers")]:
        with pytest.raises(ConfigError, match=match):
            generate(TINY, out=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


class DiesAtThree:
    """A source whose worker process dies (as if killed for memory) on sequence 3."""

    def __call__(self, indices):
        if 3 in indices:
            os._exit(9)
        return Clips()(indices)


def test_a_dead_worker_fails_the_run_instead_of_hanging(tmp_path):
    with pytest.raises(DatasetError, match="worker process died"):
        write_dataset(tmp_path / "ds", DiesAtThree(), 6, {}, shard_size=2, workers=2)
    assert not list(tmp_path.rglob("*.tmp"))
