"""Test-wide fixtures: the repository root on sys.path and the location of ../shared/data."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # lets the suite run from a checkout that was not pip-installed
    sys.path.insert(0, str(REPO))

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (third-party data, never copied into the repo); tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party data folder {SHARED_DATA} is absent (put it beside the checkout: README, Tests)")
    return SHARED_DATA


def _kill_9_when(proc: subprocess.Popen, path: Path, timeout: float = 120.0,
                 before: Callable[[], Any] | None = None) -> Any:
    """kill -9 of a running command at a chosen moment: as soon as `path` exists (or the process ended, or `timeout`
    seconds passed). `before()` runs just before the kill (e.g. to list the workers); its result is returned."""
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    seen = before() if before is not None else None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return seen


@pytest.fixture
def kill_9_when() -> Callable[..., Any]:
    """The function `_kill_9_when(proc, path, timeout=120, before=None)`."""
    return _kill_9_when


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions gain nothing from threads; on a shared 2-core machine extra threads only oversubscribe it.
    Modules that train tiny models use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_physvid_folders(root: Path, n: int, frames: int = 8, size: int = 16, shard_size: int | None = None,
                         props: tuple[str, ...] = ("translation", "rotation", "intensity", "mixed")) -> dict[str, Path]:
    """Tiny physvid folders, one per property (seed = its position), for training tests: D^k and a "real" set."""
    from physvid import RenderConfig
    from physvid.dataset import generate

    out = {}
    for k, prop in enumerate(props):
        cfg = RenderConfig.from_dict({"property": prop, "height": size, "width": size, "frames": frames, "seed": k,
                                      "shape": {"size": [4.0, 8.0], "thickness": [1.0, 2.0]}})
        generate(cfg, n, root / prop, shard_size=shard_size or n, workers=1)
        out[prop] = root / prop
    return out
