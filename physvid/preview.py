"""Pictures of sequences: a PNG grid (rows = sequences, columns = frames) or an animated GIF, optionally with the
per-pixel property map overlaid (red = translation, green = rotation, blue = intensity) and the forward flow in the
standard (Middlebury) colour coding."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PROPERTY_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 80], [70, 120, 255]], np.float32)


def colour_wheel() -> np.ndarray:
    """The Middlebury flow colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical Flow", IJCV
    2011; its `colorcode` code): 55 hues, red → yellow → green → cyan → blue → magenta, as (55, 3) float RGB 0-255."""
    segments = ((15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)), (4, (0, 255, 0), (0, 255, 255)),
                (11, (0, 255, 255), (0, 0, 255)), (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0)))
    rows = []
    for n, start, stop in segments:
        f = np.floor(255 * np.arange(n) / n) / 255  # the original's integer steps
        rows.append(np.array(start)[None] + f[:, None] * (np.array(stop) - np.array(start))[None])
    return np.concatenate(rows).astype(np.float64)


def flow_to_rgb(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Flow (2, H, W) (u, v) in pixels -> uint8 (H, W, 3) in the standard colour coding: hue = direction on the
    Middlebury wheel, saturation = magnitude / max_flow (default: the largest magnitude), white = no motion."""
    u, v = np.asarray(flow[0], np.float64), np.asarray(flow[1], np.float64)
    rad = np.hypot(u, v)
    top = rad.max() if max_flow is None else float(max_flow)
    scale = 1.0 / (top + 1e-5)
    u, v, rad = u * scale, v * scale, np.minimum(rad * scale, 1.0)
    wheel = colour_wheel()
    n = wheel.shape[0]
    angle = np.arctan2(-v, -u) / np.pi
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = np.where(k0 + 1 == n, 0, k0 + 1)
    f = (fk - k0)[..., None]
    col = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255.0
    col = 1 - rad[..., None] * (1 - col)
    return np.floor(255 * col).astype(np.uint8)


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


def with_flow_rows(rgb: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Below each sequence's row of frames (n, T, H, W, 3), a row with its forward flow (n, T−1, 2, H, W) in the
    colour coding of `flow_to_rgb`, one scale per sequence; the last column (no next frame) is grey."""
    n, t, h, w, _ = rgb.shape
    rows = np.full((n, t, h, w, 3), 128, np.uint8)
    for i in range(n):
        top = float(np.hypot(flow[i][:, 0], flow[i][:, 1]).max())
        for j in range(t - 1):
            rows[i, j] = flow_to_rgb(flow[i, j], max(top, 1e-3))
    return np.stack([rgb, rows], axis=1).reshape(2 * n, t, h, w, 3)


def grid(video: np.ndarray, property_map: np.ndarray | None = None, gap: int = 2, scale: int = 1,
         flow: np.ndarray | None = None) -> np.ndarray:
    """One image (rows = sequences, columns = frames) as uint8 (H', W', 3), separated by `gap` grey pixels; with
    `flow` (n, T−1, 2, H, W) each sequence's row is followed by its colour-coded forward flow."""
    rgb = to_rgb(video, property_map)
    if flow is not None:
        rgb = with_flow_rows(rgb, flow)
    if scale > 1:
        rgb = rgb.repeat(scale, axis=2).repeat(scale, axis=3)
    n, t, h, w, _ = rgb.shape
    out = np.full((n * h + (n - 1) * gap, t * w + (t - 1) * gap, 3), 128, np.uint8)
    for i in range(n):
        for j in range(t):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rgb[i, j]
    return out


def save_preview(path: str | Path, video: np.ndarray, property_map: np.ndarray | None = None, scale: int = 2,
                 fps: int = 5, flow: np.ndarray | None = None) -> Path:
    """Write a PNG grid (.png) or an animated GIF (.gif) whose frames show all sequences side by side (with `flow`,
    each sequence's colour-coded forward flow beside it)."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        Image.fromarray(grid(video, property_map, scale=scale, flow=flow)).save(path)
    elif suffix == ".gif":
        rgb = to_rgb(video, property_map)
        if flow is not None:
            rgb = with_flow_rows(rgb, flow)
        rgb = rgb.repeat(scale, axis=2).repeat(scale, axis=3)
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
