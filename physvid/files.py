"""Files written whole or not at all, for both packages (datasets, records, checkpoints, metrics, reports).

A reader never sees a half-written file: everything is written under a temporary name in the target's folder and
renamed into place (``os.replace`` is atomic on POSIX and Windows). ``durable`` adds the fsyncs that make the new file
survive a power cut, for files that are the record of finished work (shards, manifests, checkpoints); logs that are
rewritten every epoch skip them.
"""
from __future__ import annotations

import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def writer_tag() -> str:
    """host-pid: unique among the processes writing into one shared folder (job arrays on several machines)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or, best effort, a directory entry) to stable storage before it is renamed into place."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, tmp: str | os.PathLike | None = None,
                durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block ends without an exception, the file written there
    replaces ``path``. On an exception (or Ctrl-C) the temporary file is removed and ``path`` is left as it was.

    ``tmp`` names the temporary file (default ``<name>.<host>-<pid>.tmp``: two processes never share one).
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f"{path.name}.{writer_tag()}.tmp")
    try:
        yield tmp
        if durable:  # a failed fsync of the file is a failed write (e.g. ENOSPC on write-back): it must raise
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (see atomic_path)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all (see atomic_path)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
