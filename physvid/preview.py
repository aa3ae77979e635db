"""Pictures of sequences: a PNG grid (rows = sequences, columns = frames) or an animated GIF, optionally with the
per-pixel property map overlaid (red = translation, green = rotation, blue = intensity)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PROPERTY_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 80], [70, 120, 255]], np.float32)


def to_rgb(video: np.ndarray, property_map: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """uint8 (n, T, C, H, W) -> uint8 (n, T, H, W, 3); tint pixels by their property when a map (n, T, H, W) is given."""
    v = np.asarray(video)
    rgb = np.repeat(v, 3, axis=2) if v.shape[2] == 1 else v[:, :, :3]
    rgb = np.moveaxis(rgb, 2, -1).astype(np.float32)
    if property_map is not None:
        tint = PROPERTY_COLOURS[np.asarray(property_map)]
        mask = (np.asarray(property_map) > 0)[..., None]
        rgb = np.where(mask, (1 - alpha) * np.maximum(rgb, 40) + alpha * tint, rgb)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def grid(video: np.ndarray, property_map: np.ndarray | None = None, gap: int = 2, scale: int = 1) -> np.ndarray:
    """One image (rows = sequences, columns = frames) as uint8 (H', W', 3), separated by `gap` grey pixels."""
    rgb = to_rgb(video, property_map)
    if scale > 1:
        rgb = rgb.repeat(scale, axis=2).repeat(scale, axis=3)
    n, t, h, w, _ = rgb.shape
    out = np.full((n * h + (n - 1) * gap, t * w + (t - 1) * gap, 3), 128, np.uint8)
    for i in range(n):
        for j in range(t):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rgb[i, j]
    return out


def save_preview(path: str | Path, video: np.ndarray, property_map: np.ndarray | None = None, scale: int = 2,
                 fps: int = 5) -> Path:
    """Write a PNG grid (.png) or an animated GIF (.gif) whose frames show all sequences side by side."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        Image.fromarray(grid(video, property_map, scale=scale)).save(path)
    elif suffix == ".gif":
        rgb = to_rgb(video, property_map).repeat(scale, axis=2).repeat(scale, axis=3)
        n, t, h, w, _ = rgb.shape
        frames = []
        for j in range(t):
            row = np.full((h, n * w + (n - 1) * 2, 3), 128, np.uint8)
            for i in range(n):
                row[:, i * (w + 2):i * (w + 2) + w] = rgb[i, j]
            frames.append(Image.fromarray(row))
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    else:
        from .errors import ConfigError

        raise ConfigError(f"preview output must end in .png or .gif, got {path.name!r}")
    return path
