"""Readers open regular files only (docs/FORMAT.md, "What readers check").

Opening a FIFO (named pipe) for reading blocks until some process writes to it, i.e. forever; a device or socket is no
dataset file either. `os.stat` never blocks on such a file, so every reader asks it first and refuses, with what it
found, anything that is not a regular file (symbolic links are followed: a link to a regular file is fine).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import DatasetError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(path: str | os.PathLike) -> str:
    """What is at `path`, in words: "a regular file", "a FIFO (named pipe)", ..., or "missing"."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return "a regular file"
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file (or a link to one); never opens, so never blocks."""
    return file_kind(path) == "a regular file"


def require_regular(path: str | os.PathLike, what: str, hint: str = "run `physvid verify` on the dataset folder") -> Path:
    """`path` when it is a regular file; otherwise DatasetError "<what> <path> is <kind>, not a regular file; <hint>"."""
    kind = file_kind(path)
    if kind != "a regular file":
        if kind == "missing":
            raise DatasetError(f"{what} {path} is missing; {hint}")
        raise DatasetError(f"{what} {path} is {kind}, not a regular file; {hint}")
    return Path(path)
