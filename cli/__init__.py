"""Command-line front ends. Installed as the package `physvid_cli` (see pyproject.toml); inside the repository it is
importable as `cli`. Commands only parse options and call the libraries (`physvid`, `stmoe`).

Shared here: the one-line error contract (`error: <message>` on stderr, exit 2 for usage and 1 for runtime problems,
130 when interrupted, never a traceback) and the `--help` example epilogs.
"""
from __future__ import annotations

import functools
from typing import Callable

import click


def fail(message: str, code: int, prefix: str = "") -> None:
    click.echo(f"{prefix}error: {message}", err=True)
    raise click.exceptions.Exit(code)


def one_line_errors(translate: Callable[[BaseException], tuple[str, int] | None], interrupted: str,
                    prefix: Callable[[], str] = lambda: "", cleanup: Callable[[], None] | None = None) -> Callable:
    """Decorator: library errors become one line. `translate(exc)` gives (message, exit code) for the errors a command
    knows, or None; an untranslated OSError still gets one line (exit 1); anything else is a bug and propagates."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            try:
                return f(*args, **kwargs)
            except KeyboardInterrupt:
                fail(interrupted, 130, prefix())
            except Exception as exc:  # noqa: BLE001 - re-raised below unless it is a known error
                known = translate(exc)
                if known is None and isinstance(exc, OSError):
                    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
                    known = (f"{exc.strerror or str(exc).splitlines()[0]}{where}", 1)
                if known is None:
                    raise
                fail(known[0], known[1], prefix())
            finally:
                if cleanup is not None:
                    cleanup()

        return wrapper

    return decorate


def examples(*lines: str) -> str:
    """A --help epilog; \\b keeps click from re-wrapping the lines."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
