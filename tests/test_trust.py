"""Readers trust nothing they did not write (issue 11, docs/FORMAT.md "Security model"): manifests are validated in
one place, shard names never leave the folder, HDF5 links and storage that lead outside a shard are refused, and
each shard must be the one the manifest lists at its place. Every case is checked in every reader."""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.physvid_cmd import cli
from physvid import RenderConfig, ShapeConfig
from physvid.dataset import generate, open_dataset, verify_dataset
from physvid.dataset.layout import sha256_file
from physvid.errors import DatasetError

TINY = RenderConfig(property="all", height=16, width=16, frames=2, shape=ShapeConfig(num_objects=(1, 1)))
SECRET = b"SECRET-OUTSIDE-BYTES" * 8  # what an outside file holds; it must never show up in any output


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trust")
    generate(TINY, 10, root / "ds", shard_size=4, workers=1)
    generate(TINY.replace(seed=7), 10, root / "other", shard_size=4, workers=1)
    return root


@pytest.fixture
def ds(pristine, tmp_path) -> Path:
    import shutil

    shutil.copytree(pristine / "ds", tmp_path / "ds")
    (tmp_path / "outside.bin").write_bytes(SECRET * 64)
    return tmp_path / "ds"


def edit_manifest(d: Path, change) -> None:
    doc = json.loads((d / "manifest.json").read_text())
    change(doc)
    (d / "manifest.json").write_text(json.dumps(doc))


def reseal(d: Path) -> None:
    """Update the manifest's sha256 and size of every shard, as someone tampering with the files would."""
    def change(doc):
        for entry in doc["shards"]:
            entry["sha256"], entry["size"] = sha256_file(d / entry["file"])
    edit_manifest(d, change)


def run_everywhere(d: Path, tmp_path: Path, pattern: str, shard: str | None = None, index: int = 5) -> None:
    """Every reader refuses with one line that matches `pattern`, and no outside byte is written anywhere. For a
    problem inside `shard`, plain `info` (which reads only the manifest) may succeed; `info --verify` must fail."""
    runner = CliRunner()
    commands = [["verify", d, "--deep"], ["preview", d, "--out", tmp_path / "p.png", "-i", index],
                ["export", d, "--format", "npy", "--out", tmp_path / "x.npy"]]
    commands.append(["info", d, "--verify"] if shard else ["info", d])
    for args in commands:
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        if args[0] == "info" and shard:
            assert f"checksums:    FAILED: {shard}" in result.output
            continue
        assert re.search(pattern, result.output), (args, result.output)
        lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
        assert args[0] == "verify" or len(lines) == 1, result.output
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "p.png").exists()
    with pytest.raises(DatasetError, match=pattern):
        with open_dataset(d) as opened:
            opened[index]
            opened.params
    from stmoe.data.errors import DataError
    from stmoe.train.data import _open_source, _probe
    from stmoe.train.errors import DataReadError

    with pytest.raises((DataError, DataReadError), match=pattern):  # what stmoe train/evaluate do before reading
        src, name = _open_source(d)
        _probe(src, name, 0, len(src))


# ------------------------------------------------------------------------------------------------ the manifest
MANIFEST_EDITS = {
    "parent_path": (lambda m: m["shards"][1].update(file="../outside.bin"),
                    r"shards\[1\]\.file is \"\.\./outside\.bin\"; shard 1 must be shard-00001\.h5, a plain file name"),
    "absolute_path": (lambda m: m["shards"][0].update(file="/etc/passwd"), r"shards\[0\]\.file is \"/etc/passwd\""),
    "sub_folder": (lambda m: m["shards"][0].update(file="sub/shard-00000.h5"), r"shards\[0\]\.file"),
    "sha_number": (lambda m: m["shards"][0].update(sha256=12345), r"shards\[0\]\.sha256 is 12345"),
    "shards_null": (lambda m: m.update(shards=None), r"shards is null; 10 sequences in shards of 4 make 3"),
    "video_shape": (lambda m: m["datasets"]["video"].update(shape=[2, 1, 16, 800000]), r"datasets\.video"),
    "huge_shape": (lambda m: m["datasets"]["params/size"].update(shape=[10**9, 10**9]),
                   r"datasets\.params/size\.shape .* GiB per sequence"),
    "bad_dtype": (lambda m: m["datasets"]["video"].update(dtype="object"), r"datasets\.video\.dtype is 'object'"),
    "last_count": (lambda m: m["shards"][2].update(count=3), r"shards\[2\] .*count 3; 10 sequences .* put 8, 2"),
    "total": (lambda m: m.update(total_sequences=11), r"shards\[2\] .*count 2; 11 sequences"),
    "total_string": (lambda m: m.update(total_sequences="10"), r"total_sequences is \"10\""),
    "datasets_list": (lambda m: m.update(datasets=[]), r"datasets must map names"),
    "config_null": (lambda m: m.update(config=None), r"config is NoneType, not a mapping"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_a_malformed_manifest_is_one_line_in_every_reader(ds, tmp_path, case):
    change, pattern = MANIFEST_EDITS[case]
    edit_manifest(ds, change)
    run_everywhere(ds, tmp_path, r"manifest\.json is not a valid physvid manifest: " + pattern)


# ------------------------------------------------------------------------------------------------ the shards
def _external_link(f, outside):
    del f["video"]
    f["video"] = h5py.ExternalLink(str(outside.with_name("evil.h5")), "/video")


def _soft_link(f, outside):
    f["params/alias"] = h5py.SoftLink("/video")


def _external_storage(f, outside):
    shape, dtype = f["video"].shape, f["video"].dtype
    del f["video"]
    f.create_dataset("video", shape, dtype, external=[(str(outside), 0, h5py.h5f.UNLIMITED)])


def _virtual(f, outside):
    shape = f["video"].shape
    del f["video"]
    layout = h5py.VirtualLayout(shape, np.uint8)
    layout[...] = h5py.VirtualSource(str(outside.with_name("evil.h5")), "video", shape=shape)
    f.create_virtual_dataset("video", layout)


def _plugin_filter(f, outside):
    shape = f["params/size"].shape
    del f["params/size"]
    f.create_dataset("params/size", shape, np.float32, chunks=shape, compression=32001, allow_unknown_filter=True)


SHARD_EDITS = {
    "external_link": (_external_link, r"shard-00001\.h5: /video is an external link \(to .*evil\.h5:/video\)"),
    "soft_link": (_soft_link, r"shard-00001\.h5: /params/alias is a soft link"),
    "external_storage": (_external_storage, r"shard-00001\.h5: /video keeps its data in external raw file"),
    "virtual": (_virtual, r"shard-00001\.h5: /video is a virtual dataset"),
    "plugin_filter": (_plugin_filter, r"shard-00001\.h5: /params/size uses HDF5 filter 32001, a plugin"),
}


@pytest.mark.parametrize("case", sorted(SHARD_EDITS))
def test_links_and_storage_outside_a_shard_are_refused_everywhere(ds, tmp_path, case):
    edit, pattern = SHARD_EDITS[case]
    outside = tmp_path / "outside.bin"
    with h5py.File(tmp_path / "evil.h5", "w") as evil:
        evil["video"] = np.frombuffer(SECRET * 64, np.uint8)[:4 * 2 * 16 * 16].reshape(4, 2, 1, 16, 16)
    with h5py.File(ds / "shard-00001.h5", "a") as f:
        edit(f, outside)
    reseal(ds)  # the sha256 no longer protects: the checks must not rely on it
    run_everywhere(ds, tmp_path, pattern, "shard-00001.h5")
    with pytest.raises(DatasetError, match=pattern.split(": ", 1)[1]):
        open_dataset(ds / "shard-00001.h5")  # a shard opened on its own


def test_swapped_or_foreign_shards_are_refused(ds, pristine, tmp_path):
    import shutil

    a, b = ds / "shard-00000.h5", ds / "shard-00001.h5"
    a.rename(tmp_path / "t.h5"), b.rename(a), (tmp_path / "t.h5").rename(b)
    reseal(ds)
    run_everywhere(ds, tmp_path, r"shard-0000[01]\.h5: attribute shard is [01], the manifest says [01]",
                   "shard-00000.h5")
    shutil.rmtree(ds)
    shutil.copytree(pristine / "ds", ds)
    shutil.copy(pristine / "other" / "shard-00001.h5", ds / "shard-00001.h5")  # same place, another seed
    reseal(ds)
    run_everywhere(ds, tmp_path, r"shard-00001\.h5.* attribute seed is 7, the manifest says 0", "shard-00001.h5")


def test_a_shard_with_fewer_rows_than_listed_is_refused(ds, tmp_path):
    with h5py.File(ds / "shard-00002.h5", "a") as f:
        f.attrs["count"] = 2  # as written, but the datasets lose a row
        video = f["video"][:1]
        del f["video"]
        f.create_dataset("video", data=video, chunks=(1, 2, 1, 16, 16))
    reseal(ds)
    run_everywhere(ds, tmp_path, r"shard-00002\.h5.* dataset video is uint8 \(1, 2, 1, 16, 16\), manifest says uint8 "
                                 r"\(2, 2, 1, 16, 16\)", "shard-00002.h5", index=9)


def test_a_clean_dataset_still_reads_and_verifies(ds):
    assert verify_dataset(ds, deep=True).ok
    with open_dataset(ds) as opened:
        assert opened[9].shape == (2, 1, 16, 16) and len(opened.params["size"]) == 10


def test_damaged_metadata_and_chunks_name_the_shard(ds, pristine):
    data = bytearray((ds / "shard-00001.h5").read_bytes())
    data[0:8] = b"\0" * 8  # the superblock's signature
    (ds / "shard-00001.h5").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"cannot open shard .*shard-00001\.h5"):
        open_dataset(ds)[5]
    (ds / "shard-00001.h5").write_bytes((pristine / "ds" / "shard-00001.h5").read_bytes())
    with h5py.File(ds / "shard-00002.h5", "r") as f:
        offset = f["params/size"].id.get_chunk_info(0).byte_offset
    data = bytearray((ds / "shard-00002.h5").read_bytes())
    data[offset + 2] ^= 0xFF  # a params chunk: its fletcher32 no longer matches
    (ds / "shard-00002.h5").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"shard-00002\.h5:/params/size: its rows cannot be read"):
        open_dataset(ds).params
