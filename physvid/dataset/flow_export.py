"""Frame pairs with their exact flow in the layouts optical-flow code loads unchanged (docs/flow.md, "Exports").

- `flo`: FlyingChairs2's layout (Ilg et al. 2018, "Occlusions, Motion and Depth Boundaries"): OUT/train/ and OUT/val/
  hold, per pair, `NNNNNNN-img_0.png`, `-img_1.png`, `-flow_01.flo`, `-flow_10.flo` (Middlebury .flo: "PIEH", width,
  height, float32 (u, v) interleaved, row-major), `-occ_01.png`, `-occ_10.png`, `-mb_01.png`, `-mb_10.png` (0/255).
  The split file `FlyingChairs_train_val.txt` has one line per pair (1 train, 2 validation), FlyingChairs' own
  convention, and `pairs.txt` says which sequence and frame each pair is.
- `kitti`: KITTI 2015's layout (Menze & Geiger 2015): `image_2/NNNNNN_10.png`, `_11.png`, `flow_occ/NNNNNN_10.png`
  (every pixel), `flow_noc/NNNNNN_10.png` (non-occluded pixels valid), 16-bit RGB PNG with R = u·64 + 2¹⁵,
  G = v·64 + 2¹⁵, B = 1 where valid (KITTI's devkit; flows beyond ±511.98 px are marked invalid).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from .reader import Dataset

FLO_TAG = 202021.25  # "PIEH" read as a little-endian float32 (Middlebury's sanity check)
FLOW_FORMATS = ("flo", "kitti")
KITTI_SCALE, KITTI_OFFSET = 64.0, 2 ** 15


def write_flo(path: Path, flow: np.ndarray) -> None:
    """Middlebury .flo from a (2, H, W) flow (u, v) in pixels."""
    _, h, w = flow.shape
    with open(path, "wb") as fh:
        fh.write(np.array([FLO_TAG], "<f4").tobytes())
        fh.write(np.array([w, h], "<i4").tobytes())
        fh.write(np.ascontiguousarray(np.moveaxis(flow, 0, -1), "<f4").tobytes())


def kitti_png(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """KITTI's 16-bit encoding as an (H, W, 3) uint16 array in OpenCV's BGR order: (valid, v, u) channels."""
    enc = np.round(np.asarray(flow, np.float64) * KITTI_SCALE + KITTI_OFFSET)  # float64: float32 would round twice
    ok = valid.astype(bool) & (enc >= 0).all(axis=0) & (enc <= 65535).all(axis=0)
    enc = np.clip(enc, 0, 65535).astype(np.uint16)
    return np.stack([ok.astype(np.uint16), enc[1], enc[0]], axis=-1)


def _rgb(frame: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W, 3): flow code reads 3-channel images."""
    v = np.moveaxis(frame, 0, -1)
    return np.ascontiguousarray(np.repeat(v, 3, axis=-1) if v.shape[-1] == 1 else v)


def export_flow(ds: Dataset, idx: list[int], out: Path, fmt: str, val_fraction: float = 0.0) -> list[Path]:
    """Write every frame pair (t, t+1) of sequences `idx` in layout `fmt`; returns the folders written.
    With `val_fraction` > 0 the last ceil(fraction · len(idx)) sequences form the validation split (whole sequences,
    so no clip contributes pairs to both)."""
    from PIL import Image

    if "flow_forward" not in ds.datasets:
        raise ConfigError(f"{ds.path} stores no flow; regenerate it with --flow (physvid generate --flow ...)")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if fmt == "kitti":
        try:
            import cv2
        except ImportError:
            raise DatasetError("kitti export needs OpenCV (16-bit PNG): pip install opencv-python-headless "
                               "(or physvid[train])") from None
    n_val = math.ceil(val_fraction * len(idx))
    fields = ["video", "flow_forward", "flow_backward", "occlusion_forward", "occlusion_backward",
              "motion_boundary_forward", "motion_boundary_backward"]
    folders = ([out / "train", out / "val"] if fmt == "flo" else
               [out / "image_2", out / "flow_occ", out / "flow_noc"])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    split, pairs = [], ["# pair split sequence frame (the pair is frame -> frame + 1)"]
    pair = 0
    for row, i in enumerate(idx):
        seq = ds.get(i, fields)
        val = row >= len(idx) - n_val
        for t in range(seq["flow_forward"].shape[0]):
            img0, img1 = _rgb(seq["video"][t]), _rgb(seq["video"][t + 1])
            if fmt == "flo":
                base = folders[1 if val else 0] / f"{pair:07d}"
                Image.fromarray(img0).save(f"{base}-img_0.png")
                Image.fromarray(img1).save(f"{base}-img_1.png")
                write_flo(Path(f"{base}-flow_01.flo"), seq["flow_forward"][t])
                write_flo(Path(f"{base}-flow_10.flo"), seq["flow_backward"][t])
                for name, key in (("occ_01", "occlusion_forward"), ("occ_10", "occlusion_backward"),
                                  ("mb_01", "motion_boundary_forward"), ("mb_10", "motion_boundary_backward")):
                    Image.fromarray((seq[key][t] > 0).astype(np.uint8) * 255).save(f"{base}-{name}.png")
            else:
                name = f"{pair:06d}"
                Image.fromarray(img0).save(folders[0] / f"{name}_10.png")
                Image.fromarray(img1).save(folders[0] / f"{name}_11.png")
                f = seq["flow_forward"][t]
                everywhere = np.ones(f.shape[1:], bool)
                for folder, valid in ((folders[1], everywhere), (folders[2], seq["occlusion_forward"][t] == 0)):
                    if not cv2.imwrite(str(folder / f"{name}_10.png"), kitti_png(f, valid)):
                        raise DatasetError(f"cannot write {folder / f'{name}_10.png'}")
            split.append("2" if val else "1")
            pairs.append(f"{pair} {'val' if val else 'train'} {ds.first_index + i} {t}")
            pair += 1
    if fmt == "flo":
        (out / "FlyingChairs_train_val.txt").write_text("\n".join(split) + "\n")
    (out / "pairs.txt").write_text("\n".join(pairs) + "\n")
    return folders
