"""HDF5 chunks encoded and decoded by physvid itself: the standard shuffle → deflate or LZF → fletcher32 pipeline, byte for byte
what HDF5's own filters accept, so a one-sequence chunk can be written with `write_direct_chunk` and read with
`read_direct_chunk` without HDF5's per-call filter machinery. Every file stays readable by plain h5py/HDF5 (the tests
read what the encoder wrote through HDF5's own filters, which verify the checksum).

Every chunk of every dataset physvid writes is encoded here, so that a shard's bytes are a pure function of its data
(docs/FORMAT.md, "Determinism"): HDF5's own filters are never used for writing. h5py's LZF filter (liblzf) hashes into
a table it does not initialise (lzfP.h, INIT_HTAB 0), so its output depends on stack garbage; HDF5 fills the padding of
partial edge chunks only when it must. Deflate is Python's zlib, whose output depends on the input, level, window and
memory level only (deflateInit clears its hash heads and the bytes past the input in its window). python-isal is
≈ 5× faster at level 1, but runs under load were seen to differ (issue 11; its level buffer is uninitialised PyMem
memory, the likely cause, not reproduced in isolation), so it is only used to inflate (reader.py), where any valid
stream decodes to the same bytes.
"""
from __future__ import annotations

import zlib

import numpy as np
from numba import njit

_deflater = zlib  # the encoder; see the module docstring for why not isal

# HDF5 filter ids (H5Zpublic.h; LZF is h5py's registered id 32000), all decoded by the reader's fast path. LZF chunks
# are encoded here with longer back-references only (MIN_MATCH): liblzf's noisy 40 KB chunks take ~150-200 us to decode
# (thousands of 3-4-byte matches, in C or numba alike), ours ~60 us, so random LZF reads roughly double. Chunks liblzf
# wrote (older files) still decode here: lzf_decompress takes any LZF stream.
FILTER_DEFLATE, FILTER_SHUFFLE, FILTER_FLETCHER32, FILTER_LZF = 1, 2, 3, 32000
FAST_FILTERS = frozenset({FILTER_DEFLATE, FILTER_SHUFFLE, FILTER_FLETCHER32, FILTER_LZF})


@njit(cache=True, nogil=True)
def _word_sums(words: np.ndarray) -> tuple[int, int]:
    """(sum w_i, sum i * w_i) of big-endian 16-bit words given as native uint16 loads; len(words) <= 2**20 so the
    second sum stays below 2**63."""
    a = np.int64(0)
    c = np.int64(0)
    for i in range(words.shape[0]):
        x = np.int64(words[i])
        w = ((x & 0xFF) << 8) | (x >> 8)
        a += w
        c += i * w
    return a, c


@njit(cache=True, nogil=True)
def fletcher32(data: np.ndarray) -> int:
    """HDF5's fletcher32 (H5_checksum_fletcher32) of a contiguous uint8 buffer.

    HDF5 runs sum1 += w, sum2 += sum1 over big-endian 16-bit words w (an odd last byte counts as a word's high byte),
    folding both sums with s = (s & 0xffff) + (s >> 16). A fold keeps s mod 65535 and keeps s > 0, and the final two
    folds leave s <= 65535, so each HDF5 sum is 0 when every word is 0 and otherwise the value in 1..65535 congruent to
    the exact sum. The exact sums are sum1 = sum w_i and sum2 = sum (n - i) w_i = n * sum1 - sum i w_i: sums with no
    carried dependency (so they vectorise), in blocks of 2**20 words so int64 cannot overflow.
    Result sum2 << 16 | sum1.
    """
    n = data.shape[0]
    nwords = n // 2
    words = data[:2 * nwords].view(np.uint16)
    s1 = np.int64(0)
    s2 = np.int64(0)
    nonzero = np.int64(0)
    block = 1 << 20
    for start in range(0, nwords, block):
        stop = min(start + block, nwords)
        a, c = _word_sums(words[start:stop])
        s2 = (s2 + (stop - start) * s1 + (stop - start) * a - c) % 65535
        s1 = (s1 + a) % 65535
        nonzero |= a
    if n % 2:
        w = np.int64(data[n - 1]) << 8
        s1 = (s1 + w) % 65535
        s2 = (s2 + s1) % 65535
        nonzero |= w
    if nonzero == 0:
        return 0
    if s1 == 0:
        s1 = 65535
    if s2 == 0:
        s2 = 65535
    return (s2 << 16) | s1


def swap_halves(value: int) -> int:
    """The checksum as HDF5 1.6.x stored it (bytes swapped inside each 16-bit half); HDF5 accepts both."""
    return ((value & 0x00FF00FF) << 8) | ((value >> 8) & 0x00FF00FF)


# ---------------------------------------------------------------------------------------------------------------- LZF
# liblzf's format (what h5py's filter 32000 stores, with no header): a control byte c < 32 starts a literal run of
# c + 1 bytes; otherwise the token is a back-reference of length (c >> 5) + 2 (c >> 5 == 7: plus the next byte) at
# distance ((c & 0x1f) << 8 | next byte) + 1, copied forward byte by byte, so a reference may overlap its own output.
LZF_MAX_LITERAL, LZF_MAX_MATCH, LZF_MAX_DISTANCE = 32, 264, 8192
# Shortest back-reference lzf_compress takes (liblzf: 3). Measured on noisy 64x64x10 frames (size vs raw, decode us
# per chunk): 4: 0.64, 120; 6: 0.81, 63; 8: 0.91, 31; 12: 0.98, 11 (liblzf: 0.67, ~170). From 8 on, noise is stored as
# 32-byte literal runs while flat or black regions still compress. 6 keeps noisy chunks ~20 % larger than liblzf's
# (not ~35 % as with 8) and still decodes ~2.5x faster.
MIN_MATCH = 6
_LZF_HLOG = 14
# lzf_decompress's error codes (the decoded length otherwise).
LZF_TRUNCATED, LZF_OVERFLOW, LZF_BAD_DISTANCE = -1, -2, -3
LZF_ERRORS = {LZF_TRUNCATED: "stream ends inside a token", LZF_OVERFLOW: "decodes past the chunk's size",
              LZF_BAD_DISTANCE: "back-reference before the chunk's start"}


@njit(cache=True, nogil=True)
def lzf_decompress(src: np.ndarray, dst: np.ndarray) -> int:
    """Decode the LZF stream `src` (uint8) into `dst` (uint8); returns the decoded length, or a negative LZF_* error
    code for a corrupt stream (every read and write is bounds-checked first, so nothing outside either array is
    touched). Indices are unsigned: numba then drops its negative-index wraparound, which lets LLVM vectorise the
    literal copies (measured 15x faster on 32-byte runs)."""
    one = np.uint64(1)
    n_in = np.uint64(src.shape[0])
    n_out = np.uint64(dst.shape[0])
    ip = np.uint64(0)
    op = np.uint64(0)
    while ip < n_in:
        ctrl = np.uint64(src[ip])
        ip += one
        if ctrl < 32:
            run = ctrl + one
            if ip + run > n_in:
                return LZF_TRUNCATED
            if op + run > n_out:
                return LZF_OVERFLOW
            for k in range(run):
                dst[op + k] = src[ip + k]
            ip += run
            op += run
        else:
            length = ctrl >> np.uint64(5)
            if length == 7:
                if ip >= n_in:
                    return LZF_TRUNCATED
                length += np.uint64(src[ip])
                ip += one
            if ip >= n_in:
                return LZF_TRUNCATED
            back = ((ctrl & np.uint64(0x1F)) << np.uint64(8)) + np.uint64(src[ip]) + one
            ip += one
            length += np.uint64(2)
            if back > op:
                return LZF_BAD_DISTANCE
            if op + length > n_out:
                return LZF_OVERFLOW
            ref = op - back
            for k in range(length):  # forward, byte by byte: an overlapping reference repeats its own output
                dst[op + k] = dst[ref + k]
            op += length
    return np.int64(op)


@njit(cache=True, nogil=True)
def _flush_literals(src: np.ndarray, start: np.uint64, stop: np.uint64, dst: np.ndarray, op: np.uint64) -> int:
    """src[start:stop] as literal runs of at most 32 bytes at dst[op:]; the new op, or -1 when dst is too small."""
    one = np.uint64(1)
    while start < stop:
        run = min(stop - start, np.uint64(LZF_MAX_LITERAL))
        if op + one + run > np.uint64(dst.shape[0]):
            return -1
        dst[op] = run - one
        op += one
        for k in range(run):
            dst[op + k] = src[start + k]
        op += run
        start += run
    return np.int64(op)


@njit(cache=True, nogil=True, inline="always")
def _load4(src: np.ndarray, p: np.uint64) -> np.uint64:
    return (np.uint64(src[p]) | np.uint64(src[p + np.uint64(1)]) << np.uint64(8)
            | np.uint64(src[p + np.uint64(2)]) << np.uint64(16) | np.uint64(src[p + np.uint64(3)]) << np.uint64(24))


@njit(cache=True, nogil=True, inline="always")
def _hash4(v: np.uint64) -> np.uint64:
    return ((v * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) >> np.uint64(32 - _LZF_HLOG)


@njit(cache=True, nogil=True)
def lzf_compress(src: np.ndarray, dst: np.ndarray, min_match: int) -> int:
    """LZF-encode `src` (uint8) into `dst`; returns the encoded length, or 0 when it does not fit in `dst`.

    Greedy and deterministic. Every position's 4-byte window is hashed (the table keeps the last position per hash),
    but a candidate is looked up only every max(min_match - 3, 1) positions: any match of min_match bytes holds such a
    lookup in its first min_match - 3 positions with its window inside, and is extended backwards from there. A match
    is taken at max(min_match, 4) bytes or more within LZF's 8 KiB window; everything else becomes literal runs of up
    to 32 bytes. Inside a match only the last positions are hashed, which keeps long runs cheap to encode.
    """
    one = np.uint64(1)
    n = np.uint64(src.shape[0])
    cap = np.uint64(dst.shape[0])
    shortest = np.uint64(max(min_match, 4))
    stride = shortest - np.uint64(3)
    htab = np.zeros(1 << _LZF_HLOG, np.uint32)  # position + 1 of the last 4-byte window with this hash; 0: none
    ip = np.uint64(0)
    anchor = np.uint64(0)  # first byte not yet written
    lookup = np.uint64(0)  # next position that looks up a candidate
    op = np.uint64(0)
    while ip + np.uint64(4) <= n:
        v = _load4(src, ip)
        h = _hash4(v)
        cand = np.uint64(htab[h])
        htab[h] = ip + one
        if ip < lookup:
            ip += one
            continue
        lookup = ip + stride
        if cand == 0 or ip - (cand - one) > np.uint64(LZF_MAX_DISTANCE) or _load4(src, cand - one) != v:
            ip += one
            continue
        ref = cand - one
        back = np.uint64(0)
        while (back < np.uint64(LZF_MAX_MATCH - 4) and ip - back > anchor and ref - back > 0
               and src[ref - back - one] == src[ip - back - one]):
            back += one
        start = ip - back
        rstart = ref - back
        limit = min(n - start, np.uint64(LZF_MAX_MATCH))
        length = back + np.uint64(4)
        while length < limit and src[rstart + length] == src[start + length]:
            length += one
        if length < shortest:
            ip += one
            continue
        flushed = _flush_literals(src, anchor, start, dst, op)
        if flushed < 0 or np.uint64(flushed) + np.uint64(3) > cap:
            return 0
        op = np.uint64(flushed)
        code = length - np.uint64(2)
        dist = ip - ref - one
        if code < 7:
            dst[op] = (code << np.uint64(5)) | (dist >> np.uint64(8))
            op += one
        else:
            dst[op] = np.uint64(7 << 5) | (dist >> np.uint64(8))
            dst[op + one] = code - np.uint64(7)
            op += np.uint64(2)
        dst[op] = dist & np.uint64(0xFF)
        op += one
        stop = start + length
        p = max(ip + one, stop - np.uint64(3))
        while p < stop and p + np.uint64(4) <= n:
            htab[_hash4(_load4(src, p))] = p + one
            p += one
        ip = stop
        anchor = stop
        lookup = stop
    return max(_flush_literals(src, anchor, n, dst, op), 0)


def fast_pipeline(dset) -> tuple[tuple[int, int], ...] | None:
    """The (filter id, shuffle element size) steps of `dset`'s pipeline in file order, or None where the fast path
    does not apply: not one row per chunk, a non-native dtype, or a filter not decoded here."""
    if dset.chunks is None or dset.ndim < 1 or dset.chunks[0] != 1:
        return None
    return row_pipeline(dset)


def row_pipeline(dset) -> tuple[tuple[int, int], ...] | None:
    """Like `fast_pipeline` for chunks of any number of whole rows ((rows,) + row shape): what ChunkWriter encodes."""
    import h5py

    dtype = dset.dtype
    if (dset.chunks is None or dset.ndim < 1 or tuple(dset.chunks[1:]) != tuple(dset.shape[1:])
            or not encodable(dtype)):
        return None
    plist = dset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CHUNKED:
        return None
    return pipeline_steps(plist, dtype)


def encodable(dtype: np.dtype) -> bool:
    """Whether ChunkWriter encodes and the reader's fast path decodes elements of `dtype`."""
    return dtype.kind in "uif" and dtype.isnative and dtype.itemsize <= 8


def pipeline_steps(plist, dtype: np.dtype) -> tuple[tuple[int, int], ...] | None:
    """The (filter id, shuffle element size) steps of a dataset creation property list's filters in file order, for
    elements of `dtype`; None when a filter is not one this module encodes. The shuffle's element size is HDF5's
    cd_values[0], which HDF5 sets to the element size when the dataset is created (a list not yet used to create a
    dataset has none: the element size then)."""
    steps = []
    for pos in range(plist.get_nfilters()):
        fid, _flags, cd, _name = plist.get_filter(pos)
        if fid not in FAST_FILTERS:
            return None
        steps.append((int(fid), int(cd[0]) if fid == FILTER_SHUFFLE and len(cd) else dtype.itemsize))
    return tuple(steps)


def plist_deflate_level(plist) -> int:
    """The deflate level recorded in a dataset creation property list (HDF5's cd_values[0]), or -1 without deflate."""
    for pos in range(plist.get_nfilters()):
        fid, _flags, cd, _name = plist.get_filter(pos)
        if fid == FILTER_DEFLATE:
            return int(cd[0]) if len(cd) else 6
    return -1


def deflate_level(dset) -> int:
    """The deflate level recorded in `dset`'s filter pipeline (HDF5's cd_values[0]), or -1 without deflate."""
    return plist_deflate_level(dset.id.get_create_plist())


def batch_plan(steps: tuple[tuple[int, int], ...]) -> int | None:
    """The shuffle's element size (1: no shuffle) of a pipeline that `ChunkWriter.encode_batch` runs batch-wise: an
    optional shuffle, deflate, an optional fletcher32, in that order; None for any other pipeline."""
    ids = [fid for fid, _size in steps]
    if ids and ids[-1] == FILTER_FLETCHER32:
        ids.pop()
    shuffle = 1
    if ids and ids[0] == FILTER_SHUFFLE:
        shuffle = max(steps[0][1], 1)
        ids.pop(0)
    return shuffle if ids == [FILTER_DEFLATE] else None


class ChunkWriter:
    """Writes chunks of a dataset chunked as (rows,) + row shape as finished chunks: the file's filters applied here in
    file order (shuffle, deflate or LZF, fletcher32), then `write_direct_chunk`. `ChunkWriter.of(dset)` is None when
    the dataset's layout or filters are not ones this module encodes; a writer of a dataset just created (whose shape,
    chunks and pipeline the caller knows) is made directly, without asking HDF5 for them."""

    __slots__ = ("dsid", "steps", "level", "tail", "min_match", "rows", "row_shape", "dtype", "length", "batched")

    def __init__(self, dsid, steps: tuple[tuple[int, int], ...], *, length: int, rows: int,
                 row_shape: tuple[int, ...], dtype: np.dtype, level: int, min_match: int = MIN_MATCH):
        self.dsid, self.steps = dsid, steps
        self.level = max(0, min(level, 9))
        self.tail = (0,) * len(row_shape)
        self.min_match = min_match
        self.rows, self.row_shape, self.dtype = int(rows), tuple(row_shape), np.dtype(dtype)
        self.length = int(length)
        self.batched = batch_plan(steps)

    @classmethod
    def of(cls, dset) -> "ChunkWriter | None":
        steps = row_pipeline(dset)
        if steps is None:
            return None
        return cls(dset.id, steps, length=dset.shape[0], rows=dset.chunks[0], row_shape=dset.shape[1:],
                   dtype=dset.dtype, level=deflate_level(dset))

    def with_id(self, dsid) -> "ChunkWriter":
        """A writer like this one (the same shape, chunks, dtype and pipeline) for the dataset `dsid`: what a shard's
        plan hands each new dataset, without deriving it all again."""
        new = object.__new__(type(self))
        for name in ChunkWriter.__slots__:
            setattr(new, name, getattr(self, name))
        new.dsid = dsid
        return new

    def encode(self, row: np.ndarray) -> tuple[bytes, int]:
        """(chunk bytes, HDF5 filter mask) of one whole chunk's data: LZF, an optional filter, is skipped (its mask
        bit set, as HDF5 does) when it cannot shrink the chunk. Each step makes one buffer: the deflate stream is used
        as zlib returns it, and fletcher32 is appended in the one copy that makes the chunk's bytes."""
        buf = np.ascontiguousarray(row).reshape(-1).view(np.uint8)
        mask = 0
        for pos, (fid, size) in enumerate(self.steps):
            if fid == FILTER_SHUFFLE and size > 1 and len(buf) >= size:
                buf = np.frombuffer(buf, np.uint8) if isinstance(buf, bytes) else buf
                whole = buf.shape[0] // size * size  # HDF5 leaves a trailing partial element as it is
                shuffled = buf[:whole].reshape(-1, size).T.reshape(-1)
                buf = shuffled if whole == buf.shape[0] else np.concatenate([shuffled, buf[whole:]])
            elif fid == FILTER_DEFLATE:
                buf = _deflater.compress(buf, self.level)
            elif fid == FILTER_LZF:
                buf = np.frombuffer(buf, np.uint8) if isinstance(buf, bytes) else buf
                out = np.empty(max(buf.shape[0] - 1, 0), np.uint8)  # room for strictly smaller output only
                size_out = lzf_compress(buf, out, self.min_match) if buf.shape[0] else 0
                if size_out > 0:
                    buf = out[:size_out]
                else:
                    mask |= 1 << pos
            elif fid == FILTER_FLETCHER32:
                words = np.frombuffer(buf, np.uint8) if isinstance(buf, bytes) else buf
                buf = b"".join((buf, fletcher32(words).to_bytes(4, "little")))
        return (buf if isinstance(buf, bytes) else buf.tobytes()), mask

    def write(self, j: int, row: np.ndarray) -> None:
        """Row j of a one-row-per-chunk dataset."""
        if (self.rows == 1 and 0 <= j < self.length and isinstance(row, np.ndarray) and row.dtype == self.dtype
                and row.shape == self.row_shape):
            data, mask = self.encode(row)
            self.dsid.write_direct_chunk((j,) + self.tail, data, filter_mask=mask)
        else:  # write_rows checks the chunk, converts the data, and says what is wrong
            self.write_rows(j, np.asarray(row)[None])

    def write_batch(self, j: int, block: np.ndarray) -> None:
        """Rows j, j + 1, ... of a one-row-per-chunk dataset from `block` (the rows stacked on its first axis): the
        chunks `write` makes row by row, written in the same order, but each filter step runs over the batch's rows in
        one loop and every row is compressed before the first is written (≈ 15-35 µs less per chunk than row by row,
        docs/benchmarks.md)."""
        if not (self.rows == 1 and isinstance(block, np.ndarray) and block.ndim == len(self.row_shape) + 1
                and block.dtype == self.dtype and block.shape[1:] == self.row_shape
                and 0 <= j and j + block.shape[0] <= self.length):
            for r in range(len(block)):  # write checks each row and says what is wrong
                self.write(j + r, block[r])
            return
        write, tail = self.dsid.write_direct_chunk, self.tail
        for r, (data, mask) in enumerate(self.encode_batch(block)):
            write((j + r,) + tail, data, filter_mask=mask)

    def encode_batch(self, block: np.ndarray) -> list[tuple[bytes, int]]:
        """[encode(row) for row in block], the same bytes: the shuffle is one transpose of the whole batch, then
        deflate and fletcher32 row by row without the per-step dispatch (pipelines of shuffle, deflate, fletcher32;
        any other pipeline row by row through `encode`)."""
        k = block.shape[0]
        shuffle = self.batched
        if k == 0:
            return []
        rows = np.ascontiguousarray(block).reshape(k, -1).view(np.uint8)
        if shuffle is None or (shuffle > 1 and (rows.shape[1] % shuffle or rows.shape[1] < shuffle)):
            return [self.encode(row) for row in block]
        if shuffle > 1:  # HDF5's shuffle of each row: its elements' byte 0s, then their byte 1s, ...
            rows = rows.reshape(k, -1, shuffle).transpose(0, 2, 1).reshape(k, -1)
        compress, level = _deflater.compress, self.level
        packed = [compress(row, level) for row in rows]
        if self.steps[-1][0] == FILTER_FLETCHER32:
            return [(b"".join((p, fletcher32(np.frombuffer(p, np.uint8)).to_bytes(4, "little"))), 0) for p in packed]
        return [(p, 0) for p in packed]

    def write_rows(self, j: int, block: np.ndarray) -> None:
        """The chunk that starts at row j (a multiple of the chunk's rows): `block` holds its rows inside the dataset.
        An edge chunk's rows past the end are stored as zeros (HDF5 ignores them; never left uninitialised)."""
        if j % self.rows or block.shape[0] != min(self.rows, self.length - j):
            raise ValueError(f"chunk at row {j} needs {min(self.rows, self.length - j)} rows, got {block.shape[0]}")
        if block.shape[0] < self.rows:
            full = np.zeros((self.rows,) + self.row_shape, self.dtype)
            full[:block.shape[0]] = block
            block = full
        data, mask = self.encode(np.asarray(block, self.dtype))
        self.dsid.write_direct_chunk((j,) + self.tail, data, filter_mask=mask)

    def write_all(self, data: np.ndarray) -> None:
        """Every chunk of the dataset from `data` (its whole contents)."""
        for j in range(0, self.length, self.rows):
            self.write_rows(j, data[j:j + self.rows])
