"""Checkpoints: model, optimiser, scheduler, RNG states, config, epoch and metrics in one file, written atomically.

A checkpoint holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
``load_model(path)`` rebuilds the model from the registry name and config stored in it (no code or pickle needed).

Integrity (docs/training.md, "What a checkpoint is checked for"): every checkpoint carries ``digest``, the sha256 of
its whole contents in a canonical order (tensors by dtype, shape and bytes; everything else by type and value), and
every load recomputes it, so a byte changed inside a tensor or an edited config is refused instead of evaluated.
Checkpoints written before digests existed still load, with a one-line notice. Every load also checks the structure
(what is stored where), that the stored config agrees with the stored model description and that the weights are
finite; ``load_model`` also checks that every tensor has the name and shape the model expects, on PyTorch's meta
device, so an edited ``num_hidden`` is refused before anything is allocated.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from physvid.files import atomic_path

from .errors import TrainError

FORMAT = "stmoe-checkpoint"
VERSION = 1
DIGEST = "digest"  # key of the sha256 of everything else in the file (see payload_digest)


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
    body = {"format": FORMAT, "version": VERSION, **payload}
    body.pop(DIGEST, None)
    body[DIGEST] = payload_digest(body)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(body, f)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write (e.g. a full disk) as RuntimeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise TrainError(f"cannot save checkpoint {path}: {reason}; free some space or choose another --out "
                         "(the previous checkpoint is kept)") from None
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, checked (module docstring): TrainError (exit 1) with one line otherwise."""
    path = Path(path)
    if not path.exists():
        raise TrainError(f"checkpoint {path} does not exist")
    if not path.is_file():  # a FIFO would block torch.load forever, a folder fails with an unrelated message
        from physvid.dataset.regular import file_kind

        raise TrainError(f"checkpoint {path} is {file_kind(path)}, not a regular file; give a .pt file written by "
                         "stmoe")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle error, wrong file: all mean "not a checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainError(f"cannot read checkpoint {path}: {first[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainError(f"{path} is not an stmoe checkpoint")
    check_digest(ckpt, path)
    check_structure(ckpt, path)
    return ckpt


# --------------------------------------------------------------------------------------------------- integrity
def payload_digest(body: dict[str, Any]) -> str:
    """sha256 (hex) of everything in ``body`` but its digest, in a canonical order: dict items sorted by key, tensors as
    dtype, shape and raw bytes (whatever their device or strides), other values by type and exact value (floats by
    repr, which round-trips). The same contents give the same digest before saving and after loading."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in body.items() if k != DIGEST})
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}|".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):  # a list and a tuple of the same items mean the same here
        h.update(f"L{len(obj)}|".encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}|".encode() + data)
    elif isinstance(obj, bytes):
        h.update(f"Y{len(obj)}|".encode() + obj)
    elif obj is None or isinstance(obj, (bool, int, float)):
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())
    else:  # torch.dtype, torch.device and the like: stable reprs
        h.update(f"R{type(obj).__name__}:{obj!r}|".encode())


_NOTICED: set[str] = set()


def _notice(message: str) -> None:
    """A one-line note on stderr, once per process and message (a resumed run loads its checkpoint twice)."""
    if message not in _NOTICED:
        _NOTICED.add(message)
        print(f"note: {message}", file=sys.stderr)


def check_digest(ckpt: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose contents no longer match the digest stored when it was written."""
    stored = ckpt.get(DIGEST)
    if stored is None:
        _notice(f"checkpoint {path} was written before checkpoints carried a digest, so its integrity cannot be "
                "checked; it loads as before")
        return
    if not isinstance(stored, str) or len(stored) != 64:
        raise TrainError(f"checkpoint {path} has a damaged digest ({type(stored).__name__} {str(stored)[:20]!r}); "
                         "it was modified after it was written - use another checkpoint")
    got = payload_digest(ckpt)
    if got != stored:
        raise TrainError(f"checkpoint {path} fails its integrity check: the sha256 of its contents is {got[:16]}..., "
                         f"it was written as {stored[:16]}...; it was modified or damaged after it was written - "
                         "use another checkpoint (e.g. last.pt beside best.pt) or retrain")


def check_structure(ckpt: dict[str, Any], path: Path) -> None:
    """What every reader relies on: a model description, a state of named tensors, a config that agrees with the
    model description, and finite weights. One TrainError line names the first thing that is not so."""
    bad = f"checkpoint {path}"
    version = ckpt.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TrainError(f"{bad} has version {version!r}; an stmoe checkpoint has a positive integer version")
    if version > VERSION:
        raise TrainError(f"{bad} has version {version}, newer than this stmoe reads ({VERSION}); upgrade stmoe")
    meta = ckpt.get("model")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(meta.get("config"), dict):
        raise TrainError(f"{bad} lacks its model description (model: {{name: str, config: mapping}}, got "
                         f"{type(meta).__name__}); it was not written by stmoe or was edited")
    state = ckpt.get("model_state")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                           for k, v in state.items()):
        raise TrainError(f"{bad} lacks its weights (model_state: a mapping of names to tensors, got "
                         f"{type(state).__name__}); it was not written by stmoe or was edited")
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise TrainError(f"{bad} holds a config that is a {type(config).__name__}, not a mapping of settings; it was "
                         "edited or damaged - use another checkpoint")
    _check_config_agrees(config, meta, bad)
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                count = int((~finite).sum())
                raise TrainError(f"{bad} holds non-finite weights: {count} of {tensor.numel()} value(s) of {name} are "
                                 "nan or inf, so every prediction would be nan; use an earlier checkpoint of the run")


def _check_config_agrees(config: dict[str, Any], meta: dict[str, Any], bad: str) -> None:
    """The stored TrainConfig and the model description are written from the same model: any disagreement (e.g. an
    edited input_frames, which changes what evaluation feeds the model) means one of them was edited."""
    from .config.document import _plain  # tuples as lists, so that a config dict and a dataclass's asdict compare equal

    model_cfg = _plain(meta["config"])
    section = config.get("model")
    if isinstance(section, dict):
        name = section.get("name", meta["name"])
        if name != meta["name"]:
            raise TrainError(f"{bad}: its config names model {name!r} but its weights are a {meta['name']!r}; the "
                             "config was edited - use another checkpoint")
        for key, value in section.items():
            if key != "name" and key in model_cfg and _plain(value) != model_cfg[key]:
                raise TrainError(f"{bad}: its config says model.{key} = {value!r} but its model was built with "
                                 f"{model_cfg[key]!r}; the config was edited - use another checkpoint")
    data = config.get("data")
    frames = data.get("input_frames") if isinstance(data, dict) else None
    if frames is not None and "input_frames" in model_cfg and frames != model_cfg["input_frames"]:
        raise TrainError(f"{bad}: its config says data.input_frames = {frames!r} but its model was built for "
                         f"{model_cfg['input_frames']!r} input frames; the config was edited - use another checkpoint")


def checkpoint_config(ckpt: dict[str, Any], path: str | Path):
    """The TrainConfig stored in a checkpoint; an invalid one means a damaged file (TrainError, exit 1), not a usage
    error."""
    from .config import TrainConfig

    try:
        return TrainConfig.from_dict(ckpt["config"])
    except TrainError as exc:
        raise TrainError(f"checkpoint {path} holds an invalid config ({exc}); it was edited or written by another "
                         "version - use another checkpoint") from None


def build_model(meta: dict[str, Any]) -> torch.nn.Module:
    """The architecture described by ``model_meta`` (fresh weights)."""
    from ..models import create_model
    from ..models.base import as_tuple

    return create_model(meta["name"], **{k: as_tuple(v) for k, v in meta["config"].items()})


def check_fits(meta: dict[str, Any], state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse (TrainError) a state whose tensor names or shapes are not those of the described model, before any
    memory is allocated: the model is built on PyTorch's meta device, which only records shapes. A config edited to
    an absurd size (num_hidden 10^9) therefore fails here on the shapes instead of exhausting memory."""
    from ..models.errors import ModelConfigError

    try:
        with torch.device("meta"):
            model = build_model(meta)
    except (ModelConfigError, TypeError, ValueError, RuntimeError, OverflowError, KeyError) as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TrainError(f"checkpoint {path}: its model {meta['name']!r} cannot be built from the stored config "
                         f"({why}); it was edited or damaged - use another checkpoint") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        parts = ([f"{len(missing)} tensor(s) of the model are missing (first: {missing[0]})"] if missing else []) + \
                ([f"{len(extra)} tensor(s) do not belong to it (first: {extra[0]})"] if extra else [])
        raise TrainError(f"checkpoint {path} does not fit its model {meta['name']!r}: {'; '.join(parts)}; it was "
                         "edited or written by another version - use another checkpoint")
    for k in want:
        if want[k] != got[k]:
            raise TrainError(f"checkpoint {path} does not fit its model {meta['name']!r}: tensor {k} has shape "
                             f"{list(got[k])}, the stored config builds {list(want[k])}; the config or the weights "
                             "were edited - use another checkpoint")


def load_model(path: str | Path, map_location: Any = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model with the checkpoint's weights, in eval mode; the checkpoint dict). TrainError for a checkpoint that
    fails any check of the module docstring."""
    ckpt = load_checkpoint(path, map_location)
    check_fits(ckpt["model"], ckpt["model_state"], path)
    model = build_model(ckpt["model"])
    load_state_into(model, ckpt["model_state"], f"the weights of {path}")
    model.eval()
    return model, ckpt


def _resolved(value: Any) -> Any:
    """Paths as the files they name (``data`` and ``./data`` are one folder); other values unchanged."""
    if isinstance(value, (list, tuple)):
        return [_resolved(v) for v in value]
    if isinstance(value, str) and value:
        return os.path.realpath(value)
    return value


# The parts of a run's meta that name its inputs: its data and the checkpoints it started from.
INPUT_KEYS = ("data", "decoder_checkpoint", "expert_checkpoints", "init_checkpoint")


def check_resume_inputs(last: str | Path, meta: dict[str, Any], run_dir: str | Path) -> None:
    """Refuse (TrainConfigError, exit 2) to resume the run whose checkpoint is ``last`` with other inputs than it was
    started with: training would continue on other data while the run's record (config.yaml, checkpoints) said the
    old data, or the new data silently replaced it."""
    from .errors import TrainConfigError

    stored = load_checkpoint(last).get("meta") or {}
    for key in INPUT_KEYS:
        if key not in stored and key not in meta:
            continue
        was, now = stored.get(key), meta.get(key)
        if _resolved(was) != _resolved(now):
            def show(v: Any) -> str:
                return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

            option = "--real / --synthetic / data.path" if key == "data" else f"the {key.replace('_', ' ')}"
            raise TrainConfigError(f"cannot resume {run_dir}: it was started with {key} {show(was)}, this command "
                                   f"gives {show(now)}; give the same {option} to continue it, or another --out for a "
                                   "new run")


def load_state_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming ``what`` when the shapes do not fit."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise TrainError(f"cannot load {what}: {detail[:300]}") from None
