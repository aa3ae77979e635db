"""One writer per dataset folder (docs/FORMAT.md, "Writers and readers at the same time").

A `generate` that writes the whole dataset holds an exclusive lock on DIR for as long as it runs; `--shard-range` jobs
of a cluster array hold a shared one, so they write side by side (each its own shards) but never beside a whole-range
run. A second writer is refused at once with one line instead of racing the first for the same shards and manifest.
The lock is `flock` on the folder itself: no lock file to leave behind or for `--overwrite` to delete, and the kernel
releases it when the holder exits, however it exits (kill -9 included). Where `flock` does not exist (Windows) or the
file system does not support it, writing goes on unlocked, as before.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import DatasetError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class FolderLock:
    """An flock held on a folder until `release()` (or the process ends)."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)  # closing the descriptor drops the lock
            finally:
                self.fd = None


def lock_folder(out: str | os.PathLike, exclusive: bool) -> FolderLock:
    """Lock the existing folder `out` for writing (exclusive: the whole dataset; shared: one `--shard-range` job).

    Raises DatasetError (exit 1) when another process holds a conflicting lock.
    """
    if fcntl is None:
        return FolderLock(None)
    try:
        fd = os.open(out, os.O_RDONLY)  # O_CLOEXEC by default: spawned workers do not inherit the lock
    except OSError:
        return FolderLock(None)  # the caller reports a folder it cannot use
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            what = "the dataset" if exclusive else "shards of the dataset"
            raise DatasetError(f"{Path(out)} is being written by another `physvid generate` (it holds the folder's "
                               f"lock), so this run would write {what} at the same time; wait for it to finish (it "
                               "resumes from what that run leaves) or choose another --out") from None
        return FolderLock(None)  # e.g. ENOLCK on a file system without locks: write unlocked, as before
    return FolderLock(fd)
