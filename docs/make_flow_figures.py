"""The pictures of docs/flow.md: a clip and its exact motion ground truth (called by docs/make_figures.py).

    python docs/make_flow_figures.py [OUT_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import physvid as pv
from physvid.kernels.flow import INTENSITY_CHANGE, NOISE, TEXTURE_DRIFT
from physvid.preview import flow_to_rgb, to_rgb

OUT = Path(__file__).resolve().parent / "images"
GAP = 2
# appearance-change bits as colours: intensity change red, texture drift green, noise blue (added up where combined)
BIT_COLOURS = {INTENSITY_CHANGE: (230, 60, 60), TEXTURE_DRIFT: (60, 200, 80), NOISE: (70, 120, 255)}


def clip_config() -> pv.RenderConfig:
    """A mixed clip with a drifting textured background, so that every field has something to show."""
    return pv.RenderConfig.from_dict({
        "property": "mixed", "frames": 7, "flow": True,
        "shape": {"num_objects": [3, 3], "size": [16.0, 26.0]},
        "texture": {"object_probability": 1.0, "background_probability": 1.0, "drift": [0.3, 0.5]},
        "motion": {"speed": [2.0, 3.5]}})


def _canvas(rows: list[np.ndarray], scale: int = 2) -> np.ndarray:
    """rows: (T, H, W, 3) uint8 each -> one grid image, grey gaps, upscaled."""
    t, h, w, _ = rows[0].shape
    out = np.full((len(rows) * (h + GAP) - GAP, t * (w + GAP) - GAP, 3), 128, np.uint8)
    for i, row in enumerate(rows):
        for j in range(row.shape[0]):
            out[i * (h + GAP):i * (h + GAP) + h, j * (w + GAP):j * (w + GAP) + w] = row[j]
    return out.repeat(scale, 0).repeat(scale, 1)


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    return np.repeat((mask > 0).astype(np.uint8)[..., None] * 255, 3, axis=-1)


def _bits_rgb(bits: np.ndarray) -> np.ndarray:
    out = np.zeros(bits.shape + (3,), np.int32)
    for bit, colour in BIT_COLOURS.items():
        out += ((bits & bit) > 0)[..., None] * np.array(colour)
    return np.clip(out, 0, 255).astype(np.uint8)


def _pad(pairs: np.ndarray) -> np.ndarray:
    """(T−1, H, W, 3) pair pictures under frames 0..T−2; the last column (no next frame) grey."""
    return np.concatenate([pairs, np.full((1,) + pairs.shape[1:], 128, np.uint8)])


def main(out: Path = OUT) -> None:
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = clip_config()
    seq = pv.render_sequence(cfg, 2)
    f = seq.flow
    top = float(np.hypot(f["flow_forward"][:, 0], f["flow_forward"][:, 1]).max())  # one scale for the whole clip
    rows = [to_rgb(seq.video[None])[0],
            _pad(np.stack([flow_to_rgb(x, top) for x in f["flow_forward"]])),
            _pad(_mask_rgb(f["occlusion_forward"])),
            _pad(_mask_rgb(f["motion_boundary_forward"])),
            _pad(_bits_rgb(f["appearance_change"]))]
    Image.fromarray(_canvas(rows)).save(out / "flow-clip.png")
    # the colour key: the flow (x, y) - centre at every pixel of a disc, saturated at its rim
    side = 65
    y, x = np.mgrid[:side, :side].astype(np.float32) - (side - 1) / 2
    key = flow_to_rgb(np.stack([x, y]), (side - 1) / 2)
    key[np.hypot(x, y) > (side - 1) / 2] = 255
    Image.fromarray(key.repeat(2, 0).repeat(2, 1)).save(out / "flow-colour-key.png")
    print("wrote", out / "flow-clip.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
