"""What a receiving team gets beside the shards (issue 21): SHA256SUMS, a dataset card, Croissant metadata, named
splits in the manifest (and stmoe using them), and messages that make sense without the generator."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from physvid import RenderConfig, ShapeConfig
from physvid.dataset import generate, open_dataset, verify_dataset
from physvid.dataset.manifest import load_manifest
from physvid.dataset.splits import parse_splits, split_ranges
from physvid.errors import ConfigError, DatasetError

TINY = RenderConfig(property="rotation", height=16, width=16, frames=3, shape=ShapeConfig(num_objects=(1, 2)))


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recv") / "ds"
    generate(TINY, 20, out, shard_size=8, workers=1, splits="train=0.7,val=0.2,test=0.1")
    return out


def test_sha256sum_c_round_trip(ds, tmp_path):
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum (coreutils) is not installed")
    copy = tmp_path / "received"
    shutil.copytree(ds, copy)  # what a receiver unpacks elsewhere
    ok = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    listed = [line.split("  ", 1)[1] for line in (copy / "SHA256SUMS").read_text().splitlines()]
    assert sorted(listed) == sorted(p.name for p in copy.iterdir() if p.name != "SHA256SUMS")
    data = bytearray((copy / "shard-00001.h5").read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "shard-00001.h5").write_bytes(bytes(data))
    bad = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
    assert bad.returncode != 0 and "shard-00001.h5: FAILED" in bad.stdout


def test_card_describes_config_counts_splits_and_sources(ds):
    card = (ds / "README.md").read_text()
    assert "**20 sequences** of 3 frames, 1 channel(s), 16x16 pixels" in card
    assert "| train | 14 | 0 .. 13 |" in card and "| test | 2 | 18 .. 19 |" in card
    assert '"property": "rotation"' in card and "no third-party content" in card
    assert "](preview.png)" in card and (ds / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for how in ("h5py.File", "physvid.open_dataset", "load_hf_dataset", "sha256sum -c SHA256SUMS"):
        assert how in card


def test_card_names_mnist_and_its_licence(tmp_path, shared_data):
    digits = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    cfg = RenderConfig(property="dynamic-mnist", height=32, width=32, frames=3,
                       shape=ShapeConfig(digits=str(digits), digit_range=(0, 100), num_objects=(1, 1)))
    generate(cfg, 4, tmp_path / "m", workers=1)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "MNIST digits" in card and "CC BY-SA 3.0" in card and "images 0..99 of" in card
    assert json.loads((tmp_path / "m" / "croissant.json").read_text())["license"].endswith("by-sa/3.0/")


def test_croissant_validates_with_mlcroissant(ds):
    mlc = pytest.importorskip("mlcroissant")  # the `dev` extra installs it
    dataset = mlc.Dataset(jsonld=str(ds / "croissant.json"))  # raises ValidationError on any error
    assert not dataset.metadata.issues.errors
    shards = list(dataset.records("shards"))
    manifest = json.loads((ds / "manifest.json").read_text())
    assert [r["shards/file"].decode() for r in shards] == [s["file"] for s in manifest["shards"]]
    assert [r["shards/sha256"].decode() for r in shards] == [s["sha256"] for s in manifest["shards"]]
    splits = {r["splits/name"].decode() if isinstance(r["splits/name"], bytes) else r["splits/name"]:
              (r["splits/first"], r["splits/stop"]) for r in dataset.records("splits")}
    assert splits == {"train": (0, 14), "val": (14, 18), "test": (18, 20)}


def test_splits_are_index_ranges_in_the_manifest_and_shards_do_not_change(ds, tmp_path):
    manifest = load_manifest(ds)
    assert manifest["splits"] == {"train": [0, 14], "val": [14, 18], "test": [18, 20]}
    plain = tmp_path / "plain"
    generate(TINY, 20, plain, shard_size=8, workers=1)
    assert "splits" not in json.loads((plain / "manifest.json").read_text())
    for s in manifest["shards"]:  # splits are metadata: the shards are the bytes they were
        assert (plain / s["file"]).read_bytes() == (ds / s["file"]).read_bytes()
    # Asking for splits on a finished dataset rewrites the manifest and card only; the manifest then differs from
    # the unsplit one by exactly the `splits` key.
    generate(TINY, 20, plain, shard_size=8, workers=1, splits="train=0.7,val=0.2,test=0.1")
    assert (plain / "manifest.json").read_bytes() == (ds / "manifest.json").read_bytes()
    assert (plain / "README.md").read_bytes() == (ds / "README.md").read_bytes()


@pytest.mark.parametrize("spec, needle", [("train=0.8,val=0.1", "sum to 0.9"), ("train:0.8", "NAME=FRACTION"),
                                          ("train=2", "fraction in [0, 1]"), ("1x=1", "not allowed"),
                                          ("a=0.5,a=0.5", "given twice")])
def test_bad_splits_are_one_line_usage_errors(spec, needle, tmp_path):
    with pytest.raises(ConfigError) as err:
        generate(TINY, 5, tmp_path / "x", workers=1, splits=spec)
    assert needle in str(err.value) and "\n" not in str(err.value) and not (tmp_path / "x").exists()


def test_split_ranges_cover_every_index_once():
    for n in (1, 7, 20, 1001):
        r = split_ranges(n, parse_splits("train=0.8,val=0.1,test=0.1"))
        covered = np.concatenate([np.arange(a, b) for a, b in r.values()])
        np.testing.assert_array_equal(covered, np.arange(n))


def test_edited_splits_are_refused(ds, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(ds, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    doc["splits"]["val"] = [13, 18]  # overlaps train
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="splits.val is"):
        open_dataset(copy)


def test_stmoe_uses_the_recorded_splits_by_default(ds):
    pytest.importorskip("torch")
    from stmoe.train import ClipDataset
    from stmoe.train.config import DataConfig

    d = DataConfig(input_frames=2, output_frames=1)  # fractions 0.8/0.1/0.1 would give val 16..17
    val = ClipDataset(str(ds), d, "val", (16, 16), 1)
    assert val.index[:, 1].tolist() == [14, 15, 16, 17]
    assert ClipDataset(str(ds), d, "test", (16, 16), 1).index[:, 1].tolist() == [18, 19]
    frac = ClipDataset(str(ds), DataConfig(input_frames=2, output_frames=1, split_source="fractions"), "val",
                       (16, 16), 1)
    assert frac.index[:, 1].tolist() == [16, 17]
    quick = ClipDataset(str(ds), DataConfig(input_frames=2, output_frames=1, max_sequences=10), "val", (16, 16), 1)
    assert quick.index[:, 1].tolist() == [14, 15]  # the first half of the recorded val split
    pinned = ClipDataset(str(ds), DataConfig(input_frames=2, output_frames=1, val_range=(3, 5)), "val", (16, 16), 1)
    assert pinned.index[:, 1].tolist() == [3, 4]  # an explicit range still wins


def test_split_source_dataset_needs_recorded_splits(tmp_path):
    pytest.importorskip("torch")
    from stmoe.data.errors import DataError
    from stmoe.train import ClipDataset
    from stmoe.train.config import DataConfig

    generate(TINY, 6, tmp_path / "p", workers=1)
    with pytest.raises(DataError, match="records no splits"):
        ClipDataset(str(tmp_path / "p"), DataConfig(input_frames=2, output_frames=1, split_source="dataset"), "val",
                    (16, 16), 1)


class _Clips:
    """A source that is not the renderer: nobody but the sender can rebuild its shards."""

    name = "test.clips"

    def __call__(self, indices):
        video = np.repeat(indices.astype(np.uint8)[:, None, None, None, None], 4, axis=3).repeat(4, axis=4)
        return np.repeat(video, 2, axis=1), {"clip": indices.copy()}


def test_a_missing_or_corrupt_shard_names_its_sha256_and_says_ask_the_sender(ds, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(ds, copy)
    (copy / "shard-00000.h5").unlink()
    data = bytearray((copy / "shard-00002.h5").read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "shard-00002.h5").write_bytes(bytes(data))
    manifest = load_manifest(copy)
    text = verify_dataset(copy).describe()
    for k in (0, 2):
        entry = manifest["shards"][k]
        assert f"expected: {entry['file']} sha256 {entry['sha256']}" in text
    assert "ask the sender for shard-00000.h5, shard-00002.h5" in text
    assert f"physvid generate --config {copy / 'manifest.json'} --out {copy}" in text  # rendered: rebuildable here

    from physvid.dataset import write_dataset

    write_dataset(tmp_path / "w", _Clips(), 6, {"what": "clips"}, shard_size=3, workers=1)
    (tmp_path / "w" / "shard-00001.h5").unlink()
    text = verify_dataset(tmp_path / "w").describe()
    assert "ask the sender for shard-00001.h5" in text and "physvid generate" not in text


def test_prepare_records_the_input_s_name_and_sha256_not_its_path(tmp_path):
    pytest.importorskip("torch")
    import hashlib

    from stmoe.train import prepare_dataset

    arr = tmp_path / "deep" / "clips.npy"
    arr.parent.mkdir()
    np.save(arr, np.zeros((2, 6, 8, 8), np.uint8))
    prepare_dataset(arr, tmp_path / "p", clip_length=3, size=8, layout="NTHW")
    config = json.loads((tmp_path / "p" / "manifest.json").read_text())["config"]
    assert config["source"] == {"name": "clips.npy", "sha256": hashlib.sha256(arr.read_bytes()).hexdigest(),
                                "size": arr.stat().st_size}
    assert str(tmp_path) not in json.dumps(config)
    assert hashlib.sha256(arr.read_bytes()).hexdigest() in (tmp_path / "p" / "README.md").read_text()
