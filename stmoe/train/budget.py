"""Memory the models of a configuration need to train, checked before any is allocated.

A model is built on PyTorch's meta device, which only counts parameters; training holds each float32 weight, its
gradient and Adam's two moments. A model that needs more than 80 % of this machine's memory is refused with one line
(TrainConfigError, exit 2) instead of swapping the machine to a halt or being killed an hour later.
"""
from __future__ import annotations

from typing import Any

import torch

from .errors import TrainConfigError

# Bytes per parameter while training: the float32 weight, its gradient and Adam's two moments.
TRAIN_BYTES_PER_PARAMETER = 16


def check_model_memory(spec: Any, stage: str) -> None:
    """Refuse (TrainConfigError) the model ``spec`` (a ModelSpec) of ``stage`` when it cannot train in this machine's
    memory. Models the meta device cannot build are left to their real build, which reports its own error."""
    from physvid.dataset.budget import human, machine_memory

    total = machine_memory()
    if total <= 0:
        return
    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in spec.build().parameters())
    except Exception:  # noqa: BLE001 - checked when it is built for real
        return
    need = params * TRAIN_BYTES_PER_PARAMETER
    if need > 0.8 * total:
        raise TrainConfigError(f"model {spec.name} of stage {stage} would have {params:,} parameters, "
                               f"{human(need)} to train; this machine has {human(total)}: lower model.num_hidden, "
                               "model.num_layers or the frame size")


def check_model_sizes(cfg: Any, stage: str | None = None) -> None:
    """check_model_memory for each model of ``stage`` of the Config ``cfg`` (every stage when None, e.g. before a
    pipeline, so that stage 4 is not refused after hours of stages 1-3)."""
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
        check_model_memory(spec, name)
