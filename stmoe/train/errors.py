"""Error types of the training package. The CLI prints each as `error: <one line>` and exits with `exit_code`."""
from __future__ import annotations


class TrainError(Exception):
    """A training, evaluation or prediction run cannot go on (runtime problem, exit code 1)."""

    exit_code = 1


class TrainConfigError(TrainError, ValueError):
    """A configuration value is invalid or unknown (usage error, exit code 2). The message names the dotted key."""

    exit_code = 2


class NonFiniteLossError(TrainError):
    """The loss became NaN or infinite; the last good checkpoint is kept and named in the message."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line.

    Errors re-raised by a DataLoader worker carry "Caught X in DataLoader worker process k. Original Traceback ..." in
    front of the original message; the original one is the last line.
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines[0].startswith("Caught ") and len(lines) > 1:
        last = lines[-1]
        # "stmoe.data.errors.DataError: message" -> "message"
        head, sep, tail = last.partition(": ")
        return tail if sep and "." in head and " " not in head else last
    return lines[0] if len(lines) == 1 else " ".join(lines)


class DataReadError(TrainError):
    """A dataset file exists but cannot be read (corrupt or truncated shard): a runtime error, exit code 1."""
