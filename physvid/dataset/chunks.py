"""HDF5 chunks encoded and decoded by physvid itself: the standard shuffle → deflate → fletcher32 pipeline, byte for byte
what HDF5's own filters accept, so a one-sequence chunk can be written with `write_direct_chunk` and read with
`read_direct_chunk` without HDF5's per-call filter machinery. Every file stays readable by plain h5py/HDF5 (the tests
read what the encoder wrote through HDF5's own filters, which verify the checksum).

Deflate uses python-isal when it is installed (level 1: ≈ 5× faster than zlib's level 1 on noisy frames, and smaller)
and zlib otherwise; the choice changes the compressed bytes, never the data.
"""
from __future__ import annotations

import zlib

import numpy as np
from numba import njit

try:
    from isal import isal_zlib as _deflater
except ImportError:  # pragma: no cover - depends on the platform (isal ships wheels for x86-64 and ARM64)
    _deflater = zlib

# HDF5 filter ids (H5Zpublic.h). LZF (h5py's id 32000) is left to h5py: a numba LZF decoder measured 10-15 % slower
# than h5py's C one on noisy 40 KB chunks, where the decoder itself (~200 us, two unpredictable branches per token)
# is most of the cost, not h5py's overhead.
FILTER_DEFLATE, FILTER_SHUFFLE, FILTER_FLETCHER32 = 1, 2, 3
FAST_FILTERS = frozenset({FILTER_DEFLATE, FILTER_SHUFFLE, FILTER_FLETCHER32})


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


def fast_pipeline(dset) -> tuple[tuple[int, int], ...] | None:
    """The (filter id, shuffle element size) steps of `dset`'s pipeline in file order, or None where the fast path
    does not apply: not one row per chunk, a non-native dtype, or a filter not decoded here."""
    import h5py

    dtype = dset.dtype
    if (dset.chunks is None or dset.ndim < 1 or tuple(dset.chunks) != (1,) + tuple(dset.shape[1:])
            or dtype.kind not in "uif" or not dtype.isnative or dtype.itemsize > 8):
        return None
    plist = dset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CHUNKED:
        return None
    steps = []
    for pos in range(plist.get_nfilters()):
        fid, _flags, cd, _name = plist.get_filter(pos)
        if fid not in FAST_FILTERS:
            return None
        steps.append((int(fid), int(cd[0]) if fid == FILTER_SHUFFLE and len(cd) else dtype.itemsize))
    return tuple(steps)


def deflate_level(dset) -> int:
    """The deflate level recorded in `dset`'s filter pipeline (HDF5's cd_values[0]), or -1 without deflate."""
    plist = dset.id.get_create_plist()
    for pos in range(plist.get_nfilters()):
        fid, _flags, cd, _name = plist.get_filter(pos)
        if fid == FILTER_DEFLATE:
            return int(cd[0]) if len(cd) else 6
    return -1


class ChunkWriter:
    """Writes row j of a one-row-per-chunk dataset as a finished chunk: the file's filters applied here in file order
    (shuffle, deflate, fletcher32), then `write_direct_chunk`. `ChunkWriter.of(dset)` is None when the dataset's
    layout or filters are not ones this module encodes (the caller then writes through h5py)."""

    __slots__ = ("dsid", "steps", "level", "tail")

    def __init__(self, dset, steps):
        self.dsid, self.steps = dset.id, steps
        self.level = max(0, min(deflate_level(dset), 3 if _deflater is not zlib else 9))
        self.tail = (0,) * (dset.ndim - 1)

    @classmethod
    def of(cls, dset) -> "ChunkWriter | None":
        steps = fast_pipeline(dset)
        return None if steps is None else cls(dset, steps)

    def encode(self, row: np.ndarray) -> bytes:
        buf = np.ascontiguousarray(row).reshape(-1).view(np.uint8)
        for fid, size in self.steps:
            if fid == FILTER_SHUFFLE and size > 1 and buf.shape[0] >= size:
                whole = buf.shape[0] // size * size  # HDF5 leaves a trailing partial element as it is
                buf = np.concatenate([buf[:whole].reshape(-1, size).T.reshape(-1), buf[whole:]])
            elif fid == FILTER_DEFLATE:
                buf = np.frombuffer(_deflater.compress(buf, self.level), np.uint8)
            elif fid == FILTER_FLETCHER32:
                buf = np.concatenate([buf, np.frombuffer(fletcher32(buf).to_bytes(4, "little"), np.uint8)])
        return buf.tobytes()

    def write(self, j: int, row: np.ndarray) -> None:
        self.dsid.write_direct_chunk((j,) + self.tail, self.encode(row), filter_mask=0)
