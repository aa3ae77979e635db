"""Command-line front ends. Installed as the package `physvid_cli` (see pyproject.toml); inside the repository it is
importable as `cli`. Commands only parse options and call the libraries (`physvid`, `stmoe`).

Shared here: the one-line error contract (`error: <message>` on stderr, exit 2 for usage and 1 for runtime problems,
130 when interrupted, never a traceback), the `--help` example epilogs, and options that set dotted config keys.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

import click
from click.core import ParameterSource


def fail(message: str, code: int, prefix: str = "") -> None:
    click.echo(f"{prefix}error: {message}", err=True)
    raise click.exceptions.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (workers stopped, temporary files removed,
    multiprocessing's semaphores released instead of reported as leaked); exit code 143 = 128 + SIGTERM."""


def _cleaning_up() -> bool:
    """Is the main thread handling a Terminated right now (inside an except, finally or __exit__ on its way out)?"""
    exc = sys.exc_info()[1]
    while exc is not None:
        if isinstance(exc, Terminated):
            return True
        exc = exc.__context__
    return False


@contextlib.contextmanager
def sigterm_as_interrupt(redeliver_every: float = 1.0):
    """Inside: SIGTERM raises Terminated in the main thread (elsewhere the handler cannot be set: left as it is).

    Two ways a SIGTERM could be lost, and what is done about them:
    - the exception is swallowed where it lands (a ctypes callback -- numba loading its kernels -- or a __del__
      reports it to sys.unraisablehook, "Exception ignored ...", and carries on, and the run goes on for minutes):
      from the first SIGTERM on, a thread sends SIGTERM again every `redeliver_every` seconds until the block is
      left, and the swallowed Terminated is not printed (it is delivered again);
    - a repeated SIGTERM (redelivered, or a supervisor signalling again) would interrupt the clean-up half-way
      (temporary files left, workers not stopped): while a Terminated is being handled it is ignored, and after the
      block it is ignored too (the default action would kill the exiting process: exit code -15 instead of 143).
    """
    done = threading.Event()
    started: list[threading.Thread] = []

    def redeliver() -> None:
        while not done.wait(redeliver_every):
            os.kill(os.getpid(), signal.SIGTERM)

    def raise_terminated(signum, frame):
        if _cleaning_up():
            return
        if not started:
            started.append(threading.Thread(target=redeliver, name="sigterm-redeliver", daemon=True))
            started[0].start()
        raise Terminated()

    previous_hook = sys.unraisablehook

    def unraisable(info) -> None:
        if not isinstance(info.exc_value, Terminated):
            previous_hook(info)

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        done.set()
        signal.signal(signal.SIGTERM, signal.SIG_IGN if started else previous)
        sys.unraisablehook = previous_hook


NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2 (8.1 prints the help itself)


def run(group: click.Group, argv: list[str] | None, prog_name: str) -> None:
    """Console-script entry: run `group`, keeping the one-line promise for click's own usage errors too (standalone
    click prints three lines: Usage / Try / Error), as `error: <message> (see <command> --help)`, exit 2."""
    try:
        code = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except NO_ARGS_IS_HELP as exc:  # a bare `physvid`: the help is the answer, not an error
        exc.show()
        code = exc.exit_code
    except click.exceptions.ClickException as exc:
        where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else prog_name
        message = " ".join(exc.format_message().split())
        hint = f" (see `{where} --help`)" if isinstance(exc, click.UsageError) else ""
        click.echo(f"error: {message}{hint}", err=True)
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


def one_line_errors(translate: Callable[[BaseException], tuple[str, int] | None], interrupted: str,
                    prefix: Callable[[], str] = lambda: "", cleanup: Callable[[], None] | None = None) -> Callable:
    """Decorator: library errors become one line. `translate(exc)` gives (message, exit code) for the errors a command
    knows, or None; an untranslated OSError still gets one line (exit 1); anything else is a bug and propagates."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            try:
                return f(*args, **kwargs)
            except KeyboardInterrupt as exc:
                if isinstance(exc, Terminated):
                    fail("terminated; " + interrupted.split("; ", 1)[-1], 143, prefix())
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


MAX_CONFIG_BYTES = 1 << 20


def check_config_file(path: Any, prefix: str = "") -> None:
    """A --config file must be small UTF-8 text: refuse a binary or garbage file with one line (exit 2) before any
    parser sees it (parsers fail on such bytes with errors of their own kinds)."""
    if path is None or not os.path.exists(path):
        return  # the loader says what is missing
    if not os.path.isfile(path):  # a FIFO would block the read below forever
        from physvid.dataset.regular import file_kind

        fail(f"config file {path} is {file_kind(path)}, not a regular file; give a YAML, JSON or TOML text file", 2,
             prefix)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read config file {path}: {exc.strerror or exc}", 2, prefix)
    if len(data) > MAX_CONFIG_BYTES:
        fail(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MB; give a YAML, JSON or TOML text file", 2,
             prefix)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"config file {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); give a YAML, JSON "
             "or TOML text file", 2, prefix)
    if "\0" in text:
        fail(f"config file {path} holds NUL bytes, so it is binary, not text; give a YAML, JSON or TOML text file", 2,
             prefix)


def examples(*lines: str) -> str:
    """A --help epilog; \\b keeps click from re-wrapping the lines."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@dataclass(frozen=True)
class KeyOption:
    """A command-line option that sets dotted config key(s). Its click default is None and only a value the user typed
    counts (`given`), so an option left out never overrides a config file; `to_config` maps the value to keys when it
    is not simply {key: value}."""

    decls: tuple[str, ...]
    key: str
    type: Any
    help: str
    flag: bool = False
    to_config: Callable[[Any], dict[str, Any]] | None = None

    @property
    def dest(self) -> str:
        return self.key.replace(".", "__")

    def values(self, value: Any) -> dict[str, Any]:
        return self.to_config(value) if self.to_config else {self.key: value}

    def option(self) -> Callable:
        if self.flag:
            return click.option(*self.decls, self.dest, default=None, help=self.help)
        return click.option(*self.decls, self.dest, type=self.type, default=None, help=self.help)


def given(ctx: click.Context, name: str) -> bool:
    """Was the option typed (or set through the environment)? Defaults never count, whatever their value."""
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
