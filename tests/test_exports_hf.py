"""Reading physvid datasets with other tools (issue 21): Hugging Face `datasets` with uint8 video, the ground truth
as one parquet/csv table joined across shards, WebDataset tar shards read back with the webdataset package."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from physvid import RenderConfig, ShapeConfig
from physvid.dataset import export_dataset, generate, open_dataset

TINY = RenderConfig(property="mixed", height=16, width=16, frames=3, shape=ShapeConfig(num_objects=(1, 3)),
                    property_maps=True)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "ds"
    generate(TINY, 13, out, shard_size=5, workers=1, splits="train=0.6,val=0.2,test=0.2")  # 3 shards
    return out


def test_hf_datasets_loads_uint8_video_splits_and_config(ds, tmp_path):
    pytest.importorskip("datasets")
    from physvid.dataset.hf import load_hf_dataset

    raw = open_dataset(ds)
    splits = load_hf_dataset(ds, cache_dir=tmp_path / "hf")
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 2, "test": 3}
    val = splits["val"]
    row = val[1]  # global sequence 9, in the second shard
    assert row["index"] == 9 and row["video"].dtype == np.uint8 and row["video"].shape == (3, 1, 16, 16)
    np.testing.assert_array_equal(row["video"], raw[9])
    np.testing.assert_array_equal(row["property_map"], raw.get(9)["property_map"])
    np.testing.assert_array_equal(np.asarray(row["params"]["vx"], float), raw.params["vx"][9])
    assert val[0:2]["video"].dtype == np.uint8
    assert json.loads(val.info.description) == raw.config
    every = load_hf_dataset(ds, "all", cache_dir=tmp_path / "hf")
    assert [r for r in every["index"]] == list(range(13))


def _expected_rows(raw):
    p = raw.params
    return [(i, k) for i in range(len(raw)) for k in range(int(p["num_objects"][i]))]


def test_parquet_has_one_row_per_sequence_and_object_across_shards(ds, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    raw = open_dataset(ds)
    out = export_dataset(ds, "parquet", tmp_path / "gt.parquet")[0]
    t = pq.read_table(out).to_pydict()
    rows = list(zip(t["sequence"], t["object"]))
    assert rows == _expected_rows(raw) and len({s for s, _ in rows}) == 13  # every shard joined
    for r, (i, k) in enumerate(rows):
        assert t["vx"][r] == raw.params["vx"][i, k] and t["role"][r] == raw.params["role"][i, k]
        assert t["noise_ratio"][r] == raw.params["noise_ratio"][i]
        np.testing.assert_array_equal(np.asarray(t["vertices"][r], float), raw.params["vertices"][i, k].ravel())
    assert json.loads(pq.read_schema(out).metadata[b"physvid_config"]) == raw.config


def test_csv_table_matches_the_parquet_rows(ds, tmp_path):
    raw = open_dataset(ds)
    out = export_dataset(ds, "csv", tmp_path / "gt.csv")[0]
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["sequence"]), int(r["object"])) for r in rows] == _expected_rows(raw)
    assert float(rows[4]["x0"]) == raw.params["x0"][int(rows[4]["sequence"]), int(rows[4]["object"])]
    assert "vertices" not in rows[0]


def test_webdataset_shards_read_back_with_the_webdataset_package(ds, tmp_path):
    wds = pytest.importorskip("webdataset")
    raw = open_dataset(ds)
    tars = export_dataset(ds, "webdataset", tmp_path / "wds")
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [f"seq-{i:07d}" for i in range(13)]
    for i, s in enumerate(samples):
        assert s["video.npy"].dtype == np.uint8
        np.testing.assert_array_equal(s["video.npy"], raw[i])
        np.testing.assert_array_equal(s["property_map.npy"], raw.get(i)["property_map"])
        vx = np.array([np.nan if v is None else v for v in s["params.json"]["vx"]])
        np.testing.assert_array_equal(vx, raw.params["vx"][i])
