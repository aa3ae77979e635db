"""Attention alignment: does the STGN give each pixel to the expert of the physics that drives it?

physvid knows which property drives every pixel (the ``property_map`` of a dataset: 0 background, 1 translation,
2 rotation, 3 intensity; docs/FORMAT.md). The STGN weights W_t^k (paper Eq. 5) live on the P x Q feature grid. With
expert k assigned to property ``roles[k]`` (default: expert 0 translation, 1 rotation, 2 intensity, the paper's §4
order), two numbers say whether the attention follows the physics:

* ``weight_by_role[r][k]``: the mean W^k over the grid cells whose pooled role is r. Row r of this matrix is "who
  gets the pixels of property r"; attention follows the physics when every row's largest entry is on the diagonal
  (the expert of that property), i.e. ``diagonal_wins`` is true for every role.
* ``own_share[k]``: the share of expert k's weight mass over object cells that lies on cells of its own property,
  sum_{role = r_k} W^k / sum_{role != 0} W^k, to compare with ``role_fraction[r_k]``, the share those cells have
  among object cells (what an expert that ignores the physics would get).
* ``iou[r]``: the IoU of {cells where argmax_k W^k is the expert of r} with {cells whose pooled role is r}, over
  object cells (background cells are left out of both sets); ``mean_iou`` averages the roles present.

Pooling: a cell's role is the most frequent non-background role among its p x p pixels (ties: the lower code); a
cell with no object pixel is background. Everything is summed over clips and predicted frames before dividing, so
the result does not depend on how the clips were batched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

ROLE_NAMES = {1: "translation", 2: "rotation", 3: "intensity"}
DEFAULT_ROLES = (1, 2, 3)


def pool_roles(property_map: Tensor, patch_size: int, num_roles: int = 3) -> Tensor:
    """(B, n, H, W) integer role codes -> (B, n, P, Q): the most frequent non-background role of each p x p cell."""
    B, n, H, W = property_map.shape
    p = patch_size
    cells = property_map.reshape(B, n, H // p, p, W // p, p).permute(0, 1, 2, 4, 3, 5).reshape(B, n, H // p, W // p, p * p)
    counts = torch.stack([(cells == r).sum(-1) for r in range(1, num_roles + 1)], -1)  # (B, n, P, Q, R)
    best = counts.argmax(-1) + 1  # first maximum: ties go to the lower code
    return torch.where(counts.sum(-1) > 0, best, torch.zeros_like(best))


@dataclass
class AlignmentMeter:
    """Accumulates weights (B, n, m, P, Q) against property maps (B, n, H, W) over a test set; see the module doc."""

    patch_size: int
    roles: tuple[int, ...] = DEFAULT_ROLES  # property code of expert k
    _mass: np.ndarray = field(init=False)  # (R+1, m) sum of W^k over cells of role r (row 0 = background)
    _cells: np.ndarray = field(init=False)  # (R+1,) number of cells of role r
    _inter: np.ndarray = field(init=False)
    _pred: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        R, m = max(max(self.roles), 3), len(self.roles)
        self._mass = np.zeros((R + 1, m))
        self._cells = np.zeros(R + 1)
        self._inter = np.zeros(R + 1)
        self._pred = np.zeros(R + 1)

    def update(self, weights: Tensor, property_map: Tensor) -> None:
        """weights (B, n, m, P, Q) W_t^k of the predicted frames; property_map (B, n, H, W) of the same frames."""
        if weights.dim() != 5 or weights.shape[2] != len(self.roles):
            raise ValueError(f"weights must be (B, n, m={len(self.roles)}, P, Q), got {tuple(weights.shape)}")
        R = self._cells.shape[0] - 1
        role = pool_roles(property_map.to(weights.device), self.patch_size, R)  # (B, n, P, Q)
        if role.shape != weights.shape[:2] + weights.shape[3:]:
            raise ValueError(f"property_map {tuple(property_map.shape)} does not match weights {tuple(weights.shape)} "
                             f"with patch size {self.patch_size}")
        w = weights.double()
        winner = torch.as_tensor(self.roles, device=w.device)[w.argmax(2)]  # (B, n, P, Q) role of the argmax expert
        fg = role > 0
        for r in range(R + 1):
            sel = role == r
            self._cells[r] += float(sel.sum())
            self._mass[r] += w.permute(0, 1, 3, 4, 2)[sel].sum(0).cpu().numpy()
            if r:
                self._inter[r] += float((sel & (winner == r)).sum())
                self._pred[r] += float((fg & (winner == r)).sum())

    def result(self) -> dict:
        """JSON-ready summary (see the module docstring)."""
        R = self._cells.shape[0] - 1
        present = [r for r in range(1, R + 1) if self._cells[r] > 0]
        obj_cells = self._cells[1:].sum()
        obj_mass = self._mass[1:].sum(0)  # (m,) W^k mass over object cells
        out: dict = {"roles": {str(k): ROLE_NAMES.get(r, str(r)) for k, r in enumerate(self.roles)},
                     "cells": {ROLE_NAMES.get(r, str(r)): int(self._cells[r]) for r in range(1, R + 1)},
                     "weight_by_role": {}, "own_share": {}, "role_fraction": {}, "iou": {}, "diagonal_wins": {}}
        for r in present:
            name = ROLE_NAMES.get(r, str(r))
            row = self._mass[r] / self._cells[r]
            out["weight_by_role"][name] = [round(float(v), 4) for v in row]
            if r in self.roles:
                out["diagonal_wins"][name] = bool(int(np.argmax(row)) == self.roles.index(r))
            union = self._cells[r] + self._pred[r] - self._inter[r]
            out["iou"][name] = round(float(self._inter[r] / union), 4) if union else 0.0
            out["role_fraction"][name] = round(float(self._cells[r] / obj_cells), 4)
        for k, r in enumerate(self.roles):
            if obj_mass[k] > 0 and self._cells[r] > 0:
                out["own_share"][ROLE_NAMES.get(r, str(r))] = round(float(self._mass[r, k] / obj_mass[k]), 4)
        out["mean_iou"] = round(float(np.mean([out["iou"][ROLE_NAMES.get(r, str(r))] for r in present])), 4) \
            if present else 0.0
        out["mean_weight"] = [round(float(v), 4) for v in (self._mass.sum(0) / max(1.0, self._cells.sum()))]
        return out


def attention_alignment(weights: Tensor, property_map: Tensor, patch_size: int,
                        roles: tuple[int, ...] = DEFAULT_ROLES) -> dict:
    """One-shot :class:`AlignmentMeter` over one batch; weights (B, n, m, P, Q), property_map (B, n, H, W)."""
    meter = AlignmentMeter(patch_size, tuple(roles))
    meter.update(weights, property_map)
    return meter.result()
