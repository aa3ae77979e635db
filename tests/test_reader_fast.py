"""physvid.dataset.reader fast path: raw chunk reads with the filter pipeline undone here must equal HDF5's own reads
byte for byte, verify fletcher32 on every chunk, and fall back to h5py for anything they do not handle."""
from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from physvid import NoiseConfig, RenderConfig, ShapeConfig
from physvid.dataset import generate, open_dataset
from physvid.dataset import reader as rd
from physvid.errors import DatasetError

NOISY = RenderConfig(property="all", height=16, width=16, frames=3, shape=ShapeConfig(num_objects=(1, 2)),
                     noise=NoiseConfig(ratio=0.26), masks=True, property_maps=True)


# ---------------------------------------------------------------------------------------------- slow, obvious twins
def fletcher32_twin(data) -> int:
    """HDF5's H5_checksum_fletcher32, transcribed literally: big-endian words, folds after every 360 words and twice
    at the end."""
    b = bytes(data)
    s1 = s2 = 0
    words = b[:len(b) // 2 * 2]
    for start in range(0, len(words), 720):
        for k in range(start, min(start + 720, len(words)), 2):
            s1 += (words[k] << 8) | words[k + 1]
            s2 += s1
        s1 = (s1 & 0xFFFF) + (s1 >> 16)
        s2 = (s2 & 0xFFFF) + (s2 >> 16)
    if len(b) % 2:
        s1 += b[-1] << 8
        s2 += s1
        s1 = (s1 & 0xFFFF) + (s1 >> 16)
        s2 = (s2 & 0xFFFF) + (s2 >> 16)
    s1 = (s1 & 0xFFFF) + (s1 >> 16)
    s2 = (s2 & 0xFFFF) + (s2 >> 16)
    assert s1 < 1 << 16 and s2 < 1 << 16
    return (s2 << 16) | s1


def stored_checksum(raw: bytes) -> int:
    return int.from_bytes(raw[-4:], "little")


def chunk_span(dset, j: int) -> tuple[int, int]:
    info = dset.id.get_chunk_info_by_coord((j,) + (0,) * (dset.ndim - 1))
    return info.byte_offset, info.size


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------- fletcher32 kernel
def test_fletcher32_equals_hdf5s_definition():
    rng = np.random.default_rng(3)
    cases = [np.zeros(0, np.uint8), np.array([7], np.uint8), np.zeros(11, np.uint8), np.full(2, 255, np.uint8),
             np.full(3, 255, np.uint8), np.full(65535 * 2 + 1, 255, np.uint8)]
    cases += [rng.integers(0, 256, n, dtype=np.uint8) for n in (1, 2, 3, 719, 720, 721, 722, 4097, 40960, 40961)]
    for data in cases:
        assert rd.fletcher32(data) == fletcher32_twin(data), len(data)
    big = rng.integers(0, 256, 40963, dtype=np.uint8)
    assert rd.fletcher32(big[1:]) == fletcher32_twin(big[1:])  # a buffer that is not 2-byte aligned


def test_fletcher32_blocks_past_two_mib():
    """Chunks over 2**20 words take the kernel's block loop; the exact sums (Python ints) give the reference."""
    data = np.random.default_rng(4).integers(0, 256, (1 << 21) + 4099, dtype=np.uint8)
    w = data[:len(data) // 2 * 2].reshape(-1, 2).astype(np.int64)
    w = (w[:, 0] << 8) | w[:, 1]
    n = len(w)
    s1 = int(w.sum()) + (int(data[-1]) << 8)
    s2 = n * int(w.sum()) - int((np.arange(n, dtype=np.int64) * w).sum()) + s1
    assert rd.fletcher32(data) == ((s2 - 1) % 65535 + 1) << 16 | ((s1 - 1) % 65535 + 1)


def test_fletcher32_matches_checksums_hdf5_stored(tmp_path):
    """Chunk sizes odd and even, raw and compressed: the kernel reproduces what HDF5 wrote after each chunk."""
    rng = np.random.default_rng(5)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        dsets = [f.create_dataset("odd", data=rng.integers(0, 256, (4, 3, 5, 7), dtype=np.uint8), chunks=(1, 3, 5, 7),
                                  fletcher32=True),
                 f.create_dataset("ff", data=np.full((2, 2), 255, np.uint8), chunks=(1, 2), fletcher32=True),
                 f.create_dataset("gz", data=rng.integers(0, 40, (6, 2, 1, 9, 9), dtype=np.uint8),
                                  chunks=(1, 2, 1, 9, 9), compression="gzip", shuffle=True, fletcher32=True)]
        lengths = set()
        for d in dsets:
            for j in range(d.shape[0]):
                _, raw = d.id.read_direct_chunk((j,) + (0,) * (d.ndim - 1))
                lengths.add(len(raw) % 2)
                assert rd.fletcher32(np.frombuffer(raw[:-4], np.uint8)) == stored_checksum(raw)
        assert lengths == {0, 1}


# ---------------------------------------------------------------------------------------------- whole datasets
@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("reads")
    for compression in ("gzip", "lzf", "none"):
        generate(NOISY, 7, root / compression, shard_size=3, workers=1, compression=compression)
    return root


def plain_h5py(folder: Path, name: str = "video") -> np.ndarray:
    parts = []
    for shard in sorted(folder.glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            parts.append(f[name][()])
    return np.concatenate(parts)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_reads_equal_plain_h5py_byte_for_byte(datasets, compression):
    folder = datasets / compression
    ref = plain_h5py(folder)
    ds = open_dataset(folder)
    for i in range(len(ds)):
        got = ds[i]
        assert got.dtype == np.uint8 and got.flags.writeable and got.flags.c_contiguous
        np.testing.assert_array_equal(got, ref[i])
    np.testing.assert_array_equal(ds[:], ref)
    np.testing.assert_array_equal(ds[1:6], ref[1:6])
    np.testing.assert_array_equal(ds[[6, 0, 2, 3]], ref[[6, 0, 2, 3]])
    masks, maps = plain_h5py(folder, "masks"), plain_h5py(folder, "property_map")
    for i in (0, 4, 6):
        one = ds.get(i)
        np.testing.assert_array_equal(one["video"], ref[i])
        np.testing.assert_array_equal(one["masks"], masks[i])
        np.testing.assert_array_equal(one["property_map"], maps[i])
        assert one["index"] == i
    # Every compression takes the fast path (LZF through physvid's own decoder).
    kind = rd._ChunkReader
    assert isinstance(ds._reader("video", 0), kind) and isinstance(ds._reader("masks", 2), kind)
    ds[0][:] = 0  # a returned array is the caller's own
    np.testing.assert_array_equal(ds[0], ref[0])

    single = open_dataset(folder / "shard-00001.h5")
    for j in range(len(single)):
        np.testing.assert_array_equal(single[j], ref[3 + j])
    np.testing.assert_array_equal(single[0:3], ref[3:6])


def test_stdlib_zlib_decodes_the_same(datasets, monkeypatch):
    monkeypatch.setattr(rd, "_inflater", zlib)
    ref = plain_h5py(datasets / "gzip")
    ds = open_dataset(datasets / "gzip")
    np.testing.assert_array_equal(np.stack([ds[i] for i in range(len(ds))]), ref)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_a_flipped_byte_in_a_chunk_raises(datasets, tmp_path, compression):
    shard = tmp_path / "shard-00000.h5"
    shard.write_bytes((datasets / compression / "shard-00000.h5").read_bytes())
    with h5py.File(shard, "r") as f:
        offset, size = chunk_span(f["video"], 1)
    flip(shard, offset + size // 2)
    ds = open_dataset(shard)
    np.testing.assert_array_equal(ds[0], plain_h5py(datasets / compression)[0])  # the other chunks still read
    for read in (lambda: ds[1], lambda: ds[0:3], lambda: ds.get(1)):
        with pytest.raises(DatasetError, match=r"shard-00000.h5:/video: rows? [01].*physvid verify") as err:
            read()
        assert "fletcher32" in str(err.value)
    with pytest.raises(OSError):  # what plain h5py says about the same chunk: it is corrupt, not just different
        with h5py.File(shard, "r") as f:
            f["video"][1]


def test_a_flipped_checksum_byte_raises(datasets, tmp_path):
    shard = tmp_path / "shard-00000.h5"
    shard.write_bytes((datasets / "none" / "shard-00000.h5").read_bytes())
    with h5py.File(shard, "r") as f:
        offset, size = chunk_span(f["video"], 2)
    flip(shard, offset + size - 1)
    with pytest.raises(DatasetError, match="fletcher32"):
        open_dataset(shard)[2]


# ---------------------------------------------------------------------------------------------- the fallback
def shard_like(path: Path, source: Path, **video_options) -> np.ndarray:
    """A copy of `source` whose `video` is rewritten with other storage options; returns the video."""
    path.write_bytes(source.read_bytes())
    with h5py.File(path, "r+") as f:
        video = f["video"][()]
        del f["video"]
        f.create_dataset("video", data=video, **video_options)
    return video


@pytest.mark.parametrize("options", [
    dict(chunks=(2, 3, 1, 16, 16), compression="gzip", shuffle=True, fletcher32=True),  # two rows per chunk
    dict(chunks=(1, 3, 1, 16, 16), scaleoffset=0),  # a filter not decoded here
    dict(chunks=None),  # contiguous
], ids=["two-rows-per-chunk", "scaleoffset", "contiguous"])
def test_other_storage_falls_back_to_h5py(datasets, tmp_path, options):
    video = shard_like(tmp_path / "s.h5", datasets / "gzip" / "shard-00000.h5", **options)
    ds = open_dataset(tmp_path / "s.h5")
    assert isinstance(ds._reader("video", 0), rd._PlainReader)
    for j in range(len(ds)):
        np.testing.assert_array_equal(ds[j], video[j])
    np.testing.assert_array_equal(ds[0:3], video)


def test_pipeline_details_are_followed(tmp_path):
    """Shuffle of 2-byte elements, a chunk whose optional deflate was skipped (filter mask), an unwritten chunk."""
    rng = np.random.default_rng(6)
    data = rng.integers(0, 3000, (4, 3, 5, 7), dtype=np.int16)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        d = f.create_dataset("v", shape=data.shape, dtype=np.int16, chunks=(1, 3, 5, 7), compression="gzip",
                             shuffle=True, fletcher32=True, fillvalue=-3)
        d[0:2] = data[0:2]
        # Row 2 stored with deflate skipped (mask bit 1), as HDF5 stores chunks an optional filter could not shrink.
        body = data[2].tobytes()
        shuffled = np.frombuffer(body, np.uint8).reshape(-1, 2).T.tobytes()
        checksum = fletcher32_twin(shuffled).to_bytes(4, "little")
        d.id.write_direct_chunk((2, 0, 0, 0), shuffled + checksum, filter_mask=0b010)
        # Row 3 never written: HDF5 returns the fill value.
    with h5py.File(tmp_path / "p.h5", "r") as f:
        d = f["v"]
        steps = rd._fast_pipeline(d)
        assert steps == ((rd.FILTER_SHUFFLE, 2), (rd.FILTER_DEFLATE, 2), (rd.FILTER_FLETCHER32, 2))
        reader = rd._ChunkReader(d, steps, "p.h5:/v")
        for j in range(4):
            got = reader.read(j)
            assert got.dtype == np.int16
            np.testing.assert_array_equal(got, d[j])
        np.testing.assert_array_equal(reader.read(2), data[2])
        assert (reader.read(3) == -3).all()
        with h5py.File(tmp_path / "q.h5", "w") as g:
            big_endian = g.create_dataset("v", data=data.astype(">i2"), chunks=(1, 3, 5, 7), fletcher32=True)
            assert rd._fast_pipeline(big_endian) is None


def test_pickled_dataset_reopens_and_reads(datasets):
    import pickle

    ds = open_dataset(datasets / "gzip")
    first = ds[5]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._readers == {} and clone._handles == {}
    np.testing.assert_array_equal(clone[5], first)


# ---------------------------------------------------------------------------------------------- the chunk encoder
@pytest.mark.parametrize("deflater", ["default", "zlib"])
@pytest.mark.parametrize("dtype,shuffle,compression", [(np.uint8, True, "gzip"), (np.int16, True, "gzip"),
                                                       (np.float32, False, "gzip"), (np.uint8, False, None),
                                                       (np.uint8, True, "lzf"), (np.int16, True, "lzf"),
                                                       (np.float32, False, "lzf")])
def test_chunk_writer_output_is_what_hdf5_reads(tmp_path, monkeypatch, deflater, dtype, shuffle, compression):
    """Chunks encoded by physvid (shuffle, deflate, fletcher32) and stored with write_direct_chunk are decoded and
    checksum-verified by HDF5's own filters into the original rows, and our reader agrees."""
    from physvid.dataset import chunks

    if deflater == "zlib":
        monkeypatch.setattr(chunks, "_deflater", zlib)
    rng = np.random.default_rng(7)
    data = (rng.random((5, 3, 1, 9, 11)) * 200).astype(dtype)
    data[1] = 0  # an all-zero chunk (fletcher32 of zeros is 0)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        d = f.create_dataset("v", data.shape, dtype, chunks=(1,) + data.shape[1:], compression=compression,
                             compression_opts=1 if compression == "gzip" else None, shuffle=shuffle,
                             fletcher32=True)
        writer = chunks.ChunkWriter.of(d)
        assert writer is not None
        for j in range(len(data)):
            writer.write(j, data[j])
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_array_equal(f["v"][...], data)  # HDF5 inflates and verifies every checksum
        reader = rd._ChunkReader(f["v"], rd._fast_pipeline(f["v"]), "c.h5:/v")
        for j in range(len(data)):
            np.testing.assert_array_equal(reader.read(j), data[j])


@pytest.mark.parametrize("dtype,shuffle,compression,fletcher32", [
    (np.uint8, True, "gzip", True), (np.int16, True, "gzip", True), (np.float64, True, "gzip", True),
    (np.float32, False, "gzip", True), (np.int64, True, "gzip", False), (np.uint8, True, "lzf", True),
    (np.float32, True, None, True)])
def test_batch_encoding_is_row_by_row_byte_for_byte(tmp_path, dtype, shuffle, compression, fletcher32):
    """Issue 22: write_batch encodes a batch's rows step by step over the batch (shuffle as one transpose) and writes
    them after; every chunk, and the whole file, must be the bytes `write` makes row by row."""
    from physvid.dataset import chunks

    rng = np.random.default_rng(3)
    data = (rng.random((7, 2, 1, 5, 3)) * 100).astype(dtype)
    data[2] = 0
    images = []
    for batched in (False, True):
        with h5py.File(tmp_path / f"b{batched}.h5", "w", libver="earliest") as f:
            d = f.create_dataset("v", data.shape, dtype, chunks=(1,) + data.shape[1:], compression=compression,
                                 compression_opts=1 if compression == "gzip" else None, shuffle=shuffle,
                                 fletcher32=fletcher32)
            writer = chunks.ChunkWriter.of(d)
            if batched:
                assert [writer.encode(row) for row in data[:4]] == writer.encode_batch(data[:4])
                writer.write_batch(0, data[:4])
                writer.write_batch(4, data[4:])
            else:
                for j in range(len(data)):
                    writer.write(j, data[j])
        images.append((tmp_path / f"b{batched}.h5").read_bytes())
        with h5py.File(tmp_path / f"b{batched}.h5", "r") as f:
            np.testing.assert_array_equal(f["v"][...], data)
    assert images[0] == images[1]


def test_batch_plan_names_the_pipelines_encoded_batch_wise():
    from physvid.dataset.chunks import (FILTER_DEFLATE, FILTER_FLETCHER32, FILTER_LZF, FILTER_SHUFFLE,
                                        batch_plan)

    assert batch_plan(((FILTER_SHUFFLE, 8), (FILTER_DEFLATE, 8), (FILTER_FLETCHER32, 8))) == 8
    assert batch_plan(((FILTER_DEFLATE, 1), (FILTER_FLETCHER32, 1))) == 1
    assert batch_plan(((FILTER_DEFLATE, 1),)) == 1
    assert batch_plan(((FILTER_SHUFFLE, 2), (FILTER_LZF, 2), (FILTER_FLETCHER32, 2))) is None
    assert batch_plan(((FILTER_FLETCHER32, 1),)) is None
    assert batch_plan(((FILTER_DEFLATE, 1), (FILTER_SHUFFLE, 2))) is None
    assert batch_plan(()) is None


# ---------------------------------------------------------------------------------------------- LZF codec
def lzf_decompress_twin(src: bytes, capacity: int) -> bytes | int:
    """liblzf's decoder spelled out token by token on Python bytes: the decoded bytes, or the LZF_* error code the
    kernel must return for the same stream."""
    from physvid.dataset import chunks

    out = bytearray()
    ip = 0
    while ip < len(src):
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:
            if ip + ctrl + 1 > len(src):
                return chunks.LZF_TRUNCATED
            if len(out) + ctrl + 1 > capacity:
                return chunks.LZF_OVERFLOW
            out += src[ip:ip + ctrl + 1]
            ip += ctrl + 1
            continue
        length = ctrl >> 5
        if length == 7:
            if ip >= len(src):
                return chunks.LZF_TRUNCATED
            length += src[ip]
            ip += 1
        if ip >= len(src):
            return chunks.LZF_TRUNCATED
        distance = ((ctrl & 0x1F) << 8) + src[ip] + 1
        ip += 1
        if distance > len(out):
            return chunks.LZF_BAD_DISTANCE
        if len(out) + length + 2 > capacity:
            return chunks.LZF_OVERFLOW
        for _ in range(length + 2):
            out.append(out[-distance])
    return bytes(out)


def lzf_tokens(stream: bytes) -> list[tuple[str, int]]:
    """(kind, length) of each token of a valid stream."""
    tokens, ip = [], 0
    while ip < len(stream):
        ctrl = stream[ip]
        if ctrl < 32:
            tokens.append(("literal", ctrl + 1))
            ip += ctrl + 2
        else:
            length = ctrl >> 5
            if length == 7:
                length += stream[ip + 1]
                ip += 1
            tokens.append(("match", length + 2))
            ip += 2
    return tokens


def frames(rng, n: int, noise: float) -> np.ndarray:
    """(n, 10, 1, 32, 32) uint8 frames: a dark background, a bright moving square, uniform noise of amplitude
    `noise` (0: clean)."""
    video = np.zeros((n, 10, 1, 32, 32), np.float64)
    for i in range(n):
        for t in range(10):
            y, x = rng.integers(0, 24, 2)
            video[i, t, 0, y:y + 8, x:x + 8] = 200
    video += rng.uniform(-noise, noise, video.shape)
    return np.clip(video, 0, 255).astype(np.uint8)


def encode(data: np.ndarray, min_match: int) -> bytes:
    from physvid.dataset import chunks

    src = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    dst = np.empty(src.size + src.size // 32 + 1, np.uint8)
    size = chunks.lzf_compress(src, dst, min_match)
    assert size > 0
    return dst[:size].tobytes()


@pytest.mark.parametrize("noise", [0.0, 40.0], ids=["clean", "noisy"])
def test_lzf_decoder_reads_chunks_hdf5_wrote(tmp_path, noise):
    """Chunks compressed by h5py's liblzf filter (raw liblzf output, no header) decode to what HDF5 reads; a chunk
    LZF could not shrink is stored raw with the filter's mask bit, and the reader honours it."""
    from physvid.dataset import chunks

    rng = np.random.default_rng(11)
    data = frames(rng, 4, noise)
    data[3] = rng.integers(0, 256, data[3].shape, dtype=np.uint8)  # incompressible
    with h5py.File(tmp_path / "h.h5", "w") as f:
        f.create_dataset("v", data=data, chunks=(1,) + data.shape[1:], compression="lzf", shuffle=True,
                         fletcher32=True)
    with h5py.File(tmp_path / "h.h5", "r") as f:
        d = f["v"]
        steps = rd._fast_pipeline(d)
        assert steps == ((rd.FILTER_SHUFFLE, 1), (rd.FILTER_LZF, 1), (rd.FILTER_FLETCHER32, 1))
        for j in range(3):
            mask, raw = d.id.read_direct_chunk((j, 0, 0, 0, 0))
            assert mask == 0
            out = np.empty(data[j].size, np.uint8)
            assert chunks.lzf_decompress(np.frombuffer(raw[:-4], np.uint8), out) == out.size
            np.testing.assert_array_equal(out, data[j].reshape(-1))
            assert lzf_decompress_twin(raw[:-4], out.size) == out.tobytes()
        mask, raw = d.id.read_direct_chunk((3, 0, 0, 0, 0))
        assert mask == 0b010 and raw[:-4] == data[3].tobytes()
        reader = rd._ChunkReader(d, steps, "h.h5:/v")
        for j in range(4):
            np.testing.assert_array_equal(reader.read(j), data[j])


@pytest.mark.parametrize("min_match", [3, 4, 5, 8, 13, 40])
def test_lzf_kernel_equals_twin_on_encoder_streams(min_match):
    """Streams of every token shape (short and long matches, overlapping references, literal runs, the 8 KiB window
    edge) decode the same in the kernel and the twin; every match is at least min_match bytes long."""
    from physvid.dataset import chunks

    rng = np.random.default_rng(min_match)
    pieces = [rng.integers(0, 256, 300, dtype=np.uint8), np.zeros(700, np.uint8), np.full(5, 9, np.uint8)]
    pieces += [rng.integers(0, 4, 2000, dtype=np.uint8), np.tile(rng.integers(0, 256, 7, dtype=np.uint8), 50)]
    far = rng.integers(0, 256, 8200, dtype=np.uint8)
    pieces += [far, far[:300], frames(rng, 1, 30.0).reshape(-1)]
    data = np.concatenate(pieces)
    for stop in (0, 1, 3, 4, 37, 1500, data.size):
        src = data[:stop]
        stream = encode(src, min_match) if stop else b""
        assert stream == encode(src, min_match) if stop else True  # deterministic
        out = np.empty(stop, np.uint8)
        assert chunks.lzf_decompress(np.frombuffer(stream, np.uint8), out) == stop
        np.testing.assert_array_equal(out, src)
        assert lzf_decompress_twin(stream, stop) == src.tobytes()
        tokens = lzf_tokens(stream)
        assert all(length >= max(min_match, 4) and length <= chunks.LZF_MAX_MATCH
                   for kind, length in tokens if kind == "match")
        assert all(length <= 32 for kind, length in tokens if kind == "literal")
    kinds = {kind for kind, _ in lzf_tokens(encode(data, min_match))}
    assert kinds == {"literal", "match"}


def test_lzf_corrupt_streams_return_errors_not_crashes():
    """Truncated, out-of-window and overlong streams give the error codes the twin gives; random bytes too."""
    from physvid.dataset import chunks

    good = encode(np.concatenate([np.arange(40, dtype=np.uint8), np.zeros(300, np.uint8)]), 8)
    cases = {
        bytes([5, 1, 2]): chunks.LZF_TRUNCATED,  # literal run longer than the stream
        bytes([0, 7, 0xE0]): chunks.LZF_TRUNCATED,  # long match without its length byte
        bytes([0, 7, 0x20]): chunks.LZF_TRUNCATED,  # match without its distance byte
        bytes([0, 7, 0x20, 1]): chunks.LZF_BAD_DISTANCE,  # distance 2 with one byte decoded
        bytes([0, 7, 0xE0, 255, 0]): chunks.LZF_OVERFLOW,  # 264 bytes into a chunk of 20
        good[:-1]: chunks.LZF_TRUNCATED,
    }
    for stream, code in cases.items():
        out = np.empty(20 if stream[:2] == bytes([0, 7]) and len(stream) == 5 else 340, np.uint8)
        assert chunks.lzf_decompress(np.frombuffer(stream, np.uint8), out) == code, stream
        assert lzf_decompress_twin(stream, out.size) == code
    out = np.empty(339, np.uint8)  # the good stream, one byte too little room
    assert chunks.lzf_decompress(np.frombuffer(good, np.uint8), out) == chunks.LZF_OVERFLOW
    rng = np.random.default_rng(12)
    for trial in range(300):
        stream = rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8)
        out = np.empty(int(rng.integers(0, 300)), np.uint8)
        got = chunks.lzf_decompress(stream, out)
        want = lzf_decompress_twin(stream.tobytes(), out.size)
        if isinstance(want, int):
            assert got == want, trial
        else:
            assert got == len(want) and out[:got].tobytes() == want, trial


def test_lzf_writer_round_trips_through_hdf5(tmp_path):
    """ChunkWriter's LZF chunks are decoded and checksum-verified by HDF5's own LZF filter; a chunk LZF cannot
    shrink is stored raw with the filter's mask bit; a corrupt LZF stream under a valid checksum raises
    DatasetError."""
    from physvid.dataset import chunks

    rng = np.random.default_rng(13)
    data = np.concatenate([frames(rng, 2, 0.0), frames(rng, 2, 40.0),
                           rng.integers(0, 256, (1, 10, 1, 32, 32), dtype=np.uint8)])
    with h5py.File(tmp_path / "w.h5", "w") as f:
        d = f.create_dataset("v", (6,) + data.shape[1:], np.uint8, chunks=(1,) + data.shape[1:], compression="lzf",
                             shuffle=True, fletcher32=True)
        writer = chunks.ChunkWriter.of(d)
        for j in range(len(data)):
            writer.write(j, data[j])
        body = bytes([0, 7, 0x20, 5])  # a back-reference to before the chunk's start
        d.id.write_direct_chunk((5, 0, 0, 0, 0), body + fletcher32_twin(body).to_bytes(4, "little"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        d = f["v"]
        np.testing.assert_array_equal(d[:5], data)
        masks = [d.id.read_direct_chunk((j, 0, 0, 0, 0))[0] for j in range(5)]
        assert masks[:2] == [0, 0] and masks[4] == 0b010 and set(masks) <= {0, 0b010}  # noisy: either
        sizes = [chunk_span(d, j)[1] for j in range(5)]
        assert sizes[0] < data[0].size // 4 and sizes[4] == data[4].size + 4
    with h5py.File(tmp_path / "w.h5", "r") as f:
        reader = rd._ChunkReader(f["v"], rd._fast_pipeline(f["v"]), "w.h5:/v")
        for j in range(5):
            np.testing.assert_array_equal(reader.read(j), data[j])
        with pytest.raises(DatasetError, match=r"w.h5:/v: row 5 is corrupt \(LZF stream: back-reference"):
            reader.read(5)
