"""The worker processes of a run: one spawned process per shard at a time, each rendering and writing its own file (so
compression runs in parallel too), their progress, and how they are stopped.

What a worker needs besides its task (the progress queue and the parent's pid) is handed to its initializer and held
in one `Worker` object per process; its watcher thread gets that object explicitly.
"""
from __future__ import annotations

import ast
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, DatasetError
from .layout import ShardSpec
from .shard import Source, remove_temp_files, write_shard

# Seconds a stopped worker gets to exit after SIGTERM before SIGKILL, and the executor's thread to notice.
STOP_GRACE = 3.0
# How often an idle worker looks for its parent (kill -9 of the parent leaves it waiting for work otherwise).
ORPHAN_POLL = 0.5


class Worker:
    """One worker process's state: where its progress goes, whose child it is, and whether it is writing a shard."""

    def __init__(self, progress: Any, parent: int) -> None:
        self.progress = progress
        self.parent = parent
        self.busy = threading.Event()

    def write(self, out: Path, spec: ShardSpec, source: Source, plan: dict[str, Any]) -> dict[str, Any]:
        self.busy.set()
        try:
            return write_shard(out, spec, source, plan, report=self.progress.put, parent=self.parent)
        finally:
            self.busy.clear()

    def exit_when_orphaned(self) -> None:
        """An idle worker whose parent was killed (kill -9) would wait for work forever: leave instead. A busy worker
        notices at its next batch and removes its temporary file itself (shard.write_h5)."""
        while True:
            time.sleep(ORPHAN_POLL)
            if os.getppid() != self.parent and not self.busy.is_set():
                os._exit(3)


# The worker of this process: set once, by the pool's initializer, in each worker process (a ProcessPoolExecutor task
# reaches per-process state only through its module); None in the parent.
_worker: Worker | None = None


def _start_worker(progress: Any, parent: int) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    _worker = Worker(progress, parent)
    threading.Thread(target=_worker.exit_when_orphaned, name="physvid-orphan-watch", daemon=True).start()


def _write_in_worker(args: tuple) -> dict[str, Any]:
    assert _worker is not None, "runs in a pool worker only"
    return _worker.write(*args)


# --------------------------------------------------------------------------- the spawn guard
def check_main_guard() -> None:
    """Spawned workers re-run the main program (multiprocessing's spawn imports it as __mp_main__); one that calls
    the writer from its top level, not under `if __name__ == "__main__":`, would start the run again in every worker,
    which multiprocessing refuses by killing the worker. Say so before starting any (a dead worker otherwise looks
    like a lack of memory).

    What the workers re-run is what multiprocessing's spawn says it will (its preparation data); whether the call is
    guarded is read from the program's syntax: the top-level statement of the main program that is running now (the
    one that called us) must sit in the body of an `if __name__ == "__main__":`.
    """
    from multiprocessing import spawn

    main = sys.modules.get("__main__")
    prep = spawn.get_preparation_data("physvid-worker")
    if "init_main_from_name" in prep:  # python -m NAME
        name = prep["init_main_from_name"]
        if name == "__main__" or name.endswith(".__main__"):  # spawn never re-runs a package's __main__
            return
        path = getattr(main, "__file__", None)
    elif "init_main_from_path" in prep:
        path = getattr(main, "__file__", None)
        if path and not Path(prep["init_main_from_path"]).is_file():  # read from a pipe: `python - <<EOF`
            raise ConfigError(f"the main program was read from {path}, which spawned worker processes cannot "
                              "re-import; save it as a script with an `if __name__ == \"__main__\":` guard, or pass "
                              "workers=1")
    else:  # python -c, an interactive session: workers re-run nothing
        return
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=str(path)) if path else None
    except (OSError, SyntaxError, ValueError):
        return  # no text to judge by: let multiprocessing speak for itself
    if tree is not None and not _guarded(tree, _running_line(main)):
        raise ConfigError(f"{path} starts worker processes from its top level: each spawned worker re-imports the "
                          "script, so put the calls under `if __name__ == \"__main__\":` (or pass workers=1)")


def _running_line(main: Any) -> int | None:
    """The line of the main program's top-level code that is running now (it led to this call), or None when that
    code is not on this thread's stack."""
    frame = sys._getframe(1)
    namespace = getattr(main, "__dict__", None)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is namespace:
            return frame.f_lineno
        frame = frame.f_back
    return None


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"` (either side), alone or inside a larger condition."""
    for node in ast.walk(test):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            sides = [node.left, *node.comparators]
            if (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
                    and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)):
                return True
    return False


def _guarded(tree: ast.Module, line: int | None) -> bool:
    """Whether top-level line `line` lies in the body of a main guard; with no line known, whether the program has a
    main guard at all."""
    guards = [s for s in tree.body if isinstance(s, ast.If) and _is_main_test(s.test)]
    if line is None:
        return bool(guards)
    return any(s.body[0].lineno <= line <= s.body[-1].end_lineno for s in guards)


# --------------------------------------------------------------------------- the pool
def stop_pool(pool: ProcessPoolExecutor, grace: float = STOP_GRACE) -> None:
    """Stop every worker now and return within about 2 * grace seconds whatever state the pool is in.

    `shutdown(wait=True)` after terminating workers could wait without bound: the executor's manager thread joins
    queues and processes that a worker killed mid-message (or while being spawned) never releases. So: SIGTERM each
    worker, SIGKILL the ones still alive after `grace`, shut the executor down without waiting, and give its manager
    thread `grace` seconds; if it is still stuck, drop it from the executor's exit-time join list so that the
    interpreter can exit (it is a daemon-less thread that only bookkeeps futures nobody waits for any more).
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())  # private, but the only way to stop workers
    for proc in procs:
        try:
            proc.terminate()  # stop the other shards now rather than after they finish
        except (OSError, ValueError, AttributeError):  # already gone, or not started yet
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        except (OSError, ValueError, AttributeError, AssertionError):
            pass
    thread = getattr(pool, "_executor_manager_thread", None)  # shutdown() forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    if thread is not None:
        thread.join(grace)
        if thread.is_alive():
            import concurrent.futures.process as cfp

            getattr(cfp, "_threads_wakeups", {}).pop(thread, None)
            # threading's shutdown joins every non-daemon thread: without this the stuck one would block exit.
            getattr(threading, "_shutdown_locks", set()).discard(getattr(thread, "_tstate_lock", None))


class _Start:
    """The pool, its progress queue and the submitted shards, built on a thread of their own (see run_tasks)."""

    def __init__(self, out: Path, tasks: list[ShardSpec], source: Source, plan: dict[str, Any], n_proc: int):
        self.args = out, tasks, source, plan, n_proc
        self.progress: Any = None
        self.pool: ProcessPoolExecutor | None = None
        self.futures: dict[Future, ShardSpec] = {}
        self.error: BaseException | None = None

    def __call__(self) -> None:
        out, tasks, source, plan, n_proc = self.args
        try:
            ctx = mp.get_context("spawn")  # safe with numba, HDF5 and threads on every platform
            self.progress = ctx.Queue()
            # An executor (unlike multiprocessing.Pool) fails the run when a worker dies instead of waiting forever.
            self.pool = ProcessPoolExecutor(n_proc, mp_context=ctx, initializer=_start_worker,
                                            initargs=(self.progress, os.getpid()))
            for t in tasks:  # spawn-context executors start their processes inside submit
                self.futures[self.pool.submit(_write_in_worker, (out, t, source, plan))] = t
        except BaseException as exc:  # handed to the main thread
            self.error = exc


def run_tasks(out: Path, tasks: list[ShardSpec], source: Source, plan: dict[str, Any], workers: int,
              report: Callable[[int], None]) -> list[dict[str, Any]]:
    """Write `tasks` with min(workers, shards) processes (none: in this process); returns their records in order.

    The pool is built and the shards submitted on a thread of their own: a SIGTERM or Ctrl-C raises in the main thread
    only, so it can never land half-way through starting a worker process (queues, semaphores and a child half made,
    which the clean-up then waits on or leaks); the main thread waits for the start to finish before stopping it.
    """
    n_proc = min(workers, len(tasks))
    if n_proc <= 1:
        return [write_shard(out, t, source, plan, report=report) for t in tasks]
    start = _Start(out, tasks, source, plan, n_proc)
    starter = threading.Thread(target=start, name="physvid-pool-start", daemon=True)
    done: dict[int, dict] = {}

    def drain(timeout: float) -> None:
        if start.progress is None:
            time.sleep(timeout)
            return
        try:
            report(start.progress.get(timeout=timeout))
            while True:
                report(start.progress.get_nowait())
        except queue_mod.Empty:
            pass

    try:
        starter.start()
        while starter.is_alive():
            drain(0.05)
        if start.error is not None:
            raise start.error
        pending = set(start.futures)
        while pending:
            drain(0.05)
            finished = {f for f in pending if f.done()}
            for f in finished:
                done[start.futures[f].shard] = f.result()  # re-raises the worker's exception here
            pending -= finished
        start.pool.shutdown(wait=True)
        drain(0.01)
    except BaseException as exc:
        if starter.ident is not None:
            starter.join()  # never stop a pool half-started
        if start.pool is not None:
            stop_pool(start.pool)
        for t in tasks:
            if t.shard not in done:
                remove_temp_files(out, t.shard)
        if isinstance(exc, BrokenProcessPool):
            raise DatasetError("a worker process died while writing shards (killed for lack of memory?); finished "
                               "shards are kept: re-run the same command to resume, with fewer --workers or a smaller "
                               "--shard-size if memory is short") from None
        raise
    finally:
        if start.progress is not None:
            start.progress.close()
    return [done[t.shard] for t in tasks]
