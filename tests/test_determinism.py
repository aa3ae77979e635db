"""Same config, same bytes (issue 11): every chunk of every dataset is the one deterministic encoding of its data, and
runs that differ in workers, CPU load, a kill -9 or a full disk write identical files. The full-size check (three
runs of 4,000 `all` sequences under load) is benchmarks/check_determinism.py."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from physvid import RenderConfig, ShapeConfig
from physvid.dataset import generate
from physvid.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
CONFIG = RenderConfig(property="all", height=16, width=16, frames=4, shape=ShapeConfig(num_objects=(1, 3)),
                      masks=True, property_maps=True).replace(**{"noise.ratio": 0.26})


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def chunk_mismatches(path: Path) -> list[str]:
    """Chunks of `path` whose stored bytes are not ChunkWriter's encoding of the data HDF5 decodes from them."""
    from physvid.dataset.chunks import ChunkWriter

    bad: list[str] = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            writer = ChunkWriter.of(obj)
            assert writer is not None, f"{name}: layout or filters not encoded by physvid"
            data = obj[()]  # decoded (and fletcher32-checked) by HDF5's own filters
            for j in range(0, obj.shape[0], writer.rows):
                block = np.zeros((writer.rows,) + obj.shape[1:], obj.dtype)
                block[:min(writer.rows, obj.shape[0] - j)] = data[j:j + writer.rows]
                want, want_mask = writer.encode(block)
                mask, raw = obj.id.read_direct_chunk((j,) + (0,) * (obj.ndim - 1))
                if (bytes(raw), mask) != (want, want_mask):
                    bad.append(f"{name}[{j}]")

        f.visititems(visit)
    return bad


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_every_chunk_is_the_deterministic_encoding_of_its_data(tmp_path, monkeypatch, compression):
    """Chunks written through a filter whose output depends on anything but the data (h5py's LZF, isal, HDF5's fill
    of an edge chunk's padding) fail here, whatever the dataset: video, masks, property maps, params, index."""
    from physvid.dataset import shard

    monkeypatch.setattr(shard, "PARAM_CHUNK_BYTES", 64)  # several rows per params chunk, and a partial edge chunk
    out = tmp_path / "ds"
    generate(CONFIG, 11, out, shard_size=7, workers=1, compression=compression)
    for shard in sorted(out.glob("shard-*.h5")):
        assert chunk_mismatches(shard) == [], shard.name


def test_edge_chunk_padding_is_zero_not_memory(tmp_path):
    from physvid.dataset.chunks import ChunkWriter, FILTER_FLETCHER32

    with h5py.File(tmp_path / "e.h5", "w") as f:
        d = f.create_dataset("p", (5, 3), np.float32, chunks=(4, 3), fletcher32=True)
        ChunkWriter.of(d).write_all(np.arange(15, dtype=np.float32).reshape(5, 3))
        _mask, raw = d.id.read_direct_chunk((4, 0))
        assert ChunkWriter.of(d).steps == ((FILTER_FLETCHER32, 4),)
        np.testing.assert_array_equal(np.frombuffer(raw[:-4], np.float32).reshape(4, 3)[1:], 0)
    with h5py.File(tmp_path / "e.h5", "r") as f:
        np.testing.assert_array_equal(f["p"][()], np.arange(15, dtype=np.float32).reshape(5, 3))


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "physvid", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_workers_and_a_loaded_cpu_never_change_the_bytes(tmp_path, compression):
    generate(CONFIG, 24, tmp_path / "ref", shard_size=6, workers=1, compression=compression)
    # A concurrent CPU hog changes scheduling, timing and which memory each allocation reuses.
    hog = subprocess.Popen([sys.executable, "-c", "while True: sum(range(10**6))"])
    try:
        args = ["generate", "-p", "all", "--size", "16", "--frames", "4", "--objects", "1:3", "--masks",
                "--property-maps", "--noise-ratio", "0.26", "--n", "24", "--shard-size", "6", "--compression",
                compression, "--quiet"]
        runs = {w: _cli(*args, "--workers", w, "--out", f"w{w}", cwd=tmp_path) for w in ("1", "2")}
        for w, proc in runs.items():
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    finally:
        hog.kill()
        hog.wait()
    ref = files(tmp_path / "ref")
    assert files(tmp_path / "w1") == ref and files(tmp_path / "w2") == ref


def test_disk_full_then_rerun_is_byte_identical(tmp_path, monkeypatch):
    from physvid.dataset import chunks

    generate(CONFIG, 18, tmp_path / "ref", shard_size=6, workers=1, compression="lzf")
    real = chunks.ChunkWriter.write_rows
    calls = {"n": 0}

    def full_disk(self, j, block):  # the third shard's first chunk meets a full disk
        if h5py.Dataset(self.dsid).file.attrs["shard"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls["n"] += 1
        return real(self, j, block)

    monkeypatch.setattr(chunks.ChunkWriter, "write_rows", full_disk)
    with pytest.raises(DatasetError, match="no space left on device while writing .*shard-00002.h5"):
        generate(CONFIG, 18, tmp_path / "ds", shard_size=6, workers=1, compression="lzf")
    assert calls["n"] > 0 and not list((tmp_path / "ds").glob("*.tmp"))
    monkeypatch.setattr(chunks.ChunkWriter, "write_rows", real)
    summary = generate(CONFIG, 18, tmp_path / "ds", shard_size=6, workers=1, compression="lzf")
    assert (summary.shards_kept, summary.shards_written) == (2, 1)
    assert files(tmp_path / "ds") == files(tmp_path / "ref")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_kill_9_then_resume_with_lzf_is_byte_identical(tmp_path, kill_9_when):
    args = ["generate", "-p", "all", "--size", "24", "--frames", "4", "--noise-ratio", "0.26", "--n", "400",
            "--shard-size", "20", "--workers", "1", "--compression", "lzf", "--quiet", "--out", "ds"]
    proc = _cli(*args, cwd=tmp_path)
    kill_9_when(proc, tmp_path / "ds" / "shard-00001.h5")
    assert not (tmp_path / "ds" / "manifest.json").exists(), "the run finished before it could be killed"
    resumed = _cli(*args, cwd=tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    config = RenderConfig(property="all", height=24, width=24, frames=4).replace(**{"noise.ratio": 0.26})
    generate(config, 400, tmp_path / "ref", shard_size=20, workers=1, compression="lzf")
    assert files(tmp_path / "ds") == files(tmp_path / "ref")
