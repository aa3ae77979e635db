"""Checkpoints: model, optimiser, scheduler, RNG states, config, epoch and metrics in one file, written atomically.

A checkpoint holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
``load_model(path)`` rebuilds the model from the registry name and config stored in it (no code or pickle needed).
"""
from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import TrainError

FORMAT = "stmoe-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "python": _plain_random_state(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain_random_state(s: tuple) -> list:
    return [s[0], list(s[1]), s[2]]


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def model_meta(model: torch.nn.Module) -> dict[str, Any]:
    """What rebuilds the architecture: the registry name and the config dataclass as a dict."""
    name = getattr(model, "model_name", "")
    if not name:
        raise TrainError("the model has no registry name (build it with stmoe.create_model)")
    return {"name": name, "config": dataclasses.asdict(model.config)}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (a temporary file, fsync, rename): a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = {"format": FORMAT, "version": VERSION, **payload}
    try:
        with open(tmp, "wb") as f:
            torch.save(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write (e.g. a full disk) as RuntimeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise TrainError(f"cannot save checkpoint {path}: {reason}; free some space or choose another --out "
                         "(the previous checkpoint is kept)") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle error, wrong file: all mean "not a checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainError(f"cannot read checkpoint {path}: {first[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainError(f"{path} is not an stmoe checkpoint")
    return ckpt


def build_model(meta: dict[str, Any]) -> torch.nn.Module:
    """The architecture described by ``model_meta`` (fresh weights)."""
    from ..models import create_model
    from ..models.base import as_tuple

    return create_model(meta["name"], **{k: as_tuple(v) for k, v in meta["config"].items()})


def load_model(path: str | Path, map_location: Any = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model with the checkpoint's weights, in eval mode; the checkpoint dict)."""
    ckpt = load_checkpoint(path, map_location)
    model = build_model(ckpt["model"])
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, ckpt


def load_state_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming ``what`` when the shapes do not fit."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise TrainError(f"cannot load {what}: {detail[:300]}") from None


# Bytes per parameter while training: the float32 weight, its gradient and Adam's two moments.
TRAIN_BYTES_PER_PARAMETER = 16


def check_model_sizes(cfg: Any, stage: str | None = None) -> None:
    """Refuse (TrainConfigError, exit 2) a config whose models cannot fit in this machine's memory, before any is
    allocated: each model of `stage` (every stage when None) is built on PyTorch's meta device, which only counts."""
    from physvid.dataset.budget import human, machine_memory

    from .errors import TrainConfigError

    total = machine_memory()
    if total <= 0:
        return
    names = [stage] if stage else ["decoder", "gating", "global", "end_to_end", "baseline"]
    specs = []
    for name in names:
        try:
            specs.append((name, cfg.stage(name).model))
        except Exception:  # noqa: BLE001 - a stage this config does not have
            continue
    for k in range(getattr(cfg, "num_experts", 0) or 0):
        specs.append((f"expert {k}", cfg.expert(k).model))
    for name, spec in specs:
        try:
            with torch.device("meta"):
                params = sum(p.numel() for p in spec.build().parameters())
        except Exception:  # noqa: BLE001 - a model the meta device cannot build is checked when it is built
            continue
        need = params * TRAIN_BYTES_PER_PARAMETER
        if need > 0.8 * total:
            raise TrainConfigError(f"model {spec.name} of stage {name} would have {params:,} parameters, "
                                   f"{human(need)} to train; this machine has {human(total)}: lower model.num_hidden, "
                                   "model.num_layers or the frame size")
