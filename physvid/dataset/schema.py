"""What every stored dataset means, written into the files themselves (docs/FORMAT.md, "Attributes of every dataset").

Each HDF5 dataset carries `axes` (comma-separated axis names, first N = sequence), and, where they apply, `labels`
(JSON object: stored code -> name, for coded values), `units` and `columns` (names along the last axis). The manifest
repeats them per dataset. Names physvid does not know (parameters of other sources) get `axes` "N,d1,d2,...".
"""
from __future__ import annotations

import json
from typing import Any

from ..config import ROLES
from ..kernels.motion import STATE_FIELDS, WALLS
from ..kernels.raster import SHAPE_IDS

# Per-frame images stored beside `video`, one sequence per chunk; every other parameter goes to the `params/` group.
FLOW_FIELDS = ("flow_forward", "flow_backward", "occlusion_forward", "occlusion_backward", "motion_boundary_forward",
               "motion_boundary_backward", "appearance_change")
TOP_LEVEL = ("masks", "property_map") + FLOW_FIELDS
# Bits of `appearance_change` (docs/flow.md): what changes a pixel's value besides motion.
APPEARANCE_BITS = {1: "intensity change (growth/decay kernel)", 2: "texture drift", 4: "noise"}

_ROLE_LABELS = {str(code): name for code, name in enumerate(ROLES) if code > 0}
_AXES = {"video": "N,T,C,H,W", "index": "N", "masks": "N,T,object,H,W", "property_map": "N,T,H,W",
         "vertices": "N,object,vertex,xy", "wall_events": "N,T,object,wall",
         **{name: "N,T,C,H,W" for name in ("flow_forward", "flow_backward")},
         **{name: "N,T,H,W" for name in FLOW_FIELDS[2:]},
         **{name: "N,T,object" for name in STATE_FIELDS}}
_EXTRA: dict[str, dict[str, Any]] = {
    "role": {"labels": _ROLE_LABELS},
    "sequence_role": {"labels": {"0": "mixed", **_ROLE_LABELS}},
    "shape": {"labels": {str(code): name for name, code in SHAPE_IDS.items()}},
    "property_map": {"labels": {str(code): name for code, name in enumerate(ROLES)}},
    "wall_events": {"columns": list(WALLS), "units": "count"},
    "appearance_change": {"labels": {str(bit): name for bit, name in APPEARANCE_BITS.items()}, "bit_flags": 1},
    "flow_forward": {"columns": ["u", "v"], "units": "pixels"},
    "flow_backward": {"columns": ["u", "v"], "units": "pixels"},
    "state_x": {"units": "pixels"}, "state_y": {"units": "pixels"},
    "state_vx": {"units": "pixels/frame"}, "state_vy": {"units": "pixels/frame"},
    "state_angle": {"units": "degrees"}, "state_angular_velocity": {"units": "degrees/frame"},
}
# Per-object parameters of the renderer: (N, object).
_PER_SEQUENCE = ("num_objects", "sequence_role", "background_level", "background_frequency", "background_orientation",
                 "background_phase", "background_contrast", "background_drift", "frame_gain", "frame_spread",
                 "noise_scale", "noise_ratio")


def describe(name: str, ndim: int, rendered: bool) -> dict[str, Any]:
    """Attributes of dataset `name` (its full rank `ndim`, N included): axes, and labels/units/columns when known.

    `rendered`: the source is physvid's renderer, whose parameter names have a fixed meaning; for other sources only
    the top-level names are known."""
    known = rendered or name in ("video", "index") or name in TOP_LEVEL
    axes = _AXES.get(name) if known else None
    if axes is None and rendered:
        axes = "N" if name in _PER_SEQUENCE else "N,object"
    if axes is None or len(axes.split(",")) != ndim:
        axes = ",".join(["N"] + [f"d{i}" for i in range(1, ndim)])
    out: dict[str, Any] = {"axes": axes}
    if known:
        out.update(_EXTRA.get(name, {}))
    return out


def h5_attributes(meta: dict[str, Any]) -> dict[str, Any]:
    """`describe`'s dict as HDF5 attribute values (strings; mappings and lists as JSON)."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in meta.items()}
