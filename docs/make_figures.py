"""Regenerate physvid's pictures under docs/images/ (deterministic: same code, same bytes).

    python docs/make_figures.py [OUT_DIR]

tests/test_docs_examples.py runs it into a temporary folder and compares every file with docs/images/, so a picture
that no longer matches the code fails the suite. (The stmoe-tiny-*.png pictures come from scripts/tiny_end_to_end.sh.)
"""
from __future__ import annotations

import sys
from pathlib import Path

import physvid as pv
from physvid.config import merge_dicts, unflatten
from physvid.preview import save_preview

OUT = Path(__file__).resolve().parent / "images"
DIGITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"

PRESETS = {
    "translation": {},
    "rotation": {},
    "intensity": {},
    "all": {},
    "mixed": {"shape.num_objects": (2, 3)},
    "dynamic-mnist": {"shape.digits": str(DIGITS), "shape.size": (22.0, 28.0)},
}


def strip(name: str, overrides: dict) -> pv.RenderConfig:
    base = {"property": name, "texture": {"object_probability": 0.5}, "property_maps": True}
    return pv.RenderConfig.from_dict(merge_dicts(base, unflatten(overrides)))


def main(out: Path = OUT) -> None:
    OUT = Path(out)  # noqa: N806 - the folder every figure below is written to
    OUT.mkdir(parents=True, exist_ok=True)
    for name, overrides in PRESETS.items():
        if name == "dynamic-mnist" and not DIGITS.exists():
            print(f"skip {name}: {DIGITS} is absent")
            continue
        cfg = strip(name, overrides)
        video, params = pv.render(cfg, range(3))
        save_preview(OUT / f"{name}.png", video, scale=2)
        save_preview(OUT / f"{name}-map.png", video, params["property_map"], scale=2)
        print("wrote", OUT / f"{name}.png")
    # the README's picture: one sequence per property (the mixed one with its property map)
    import numpy as np

    from physvid.preview import grid, to_rgb
    from PIL import Image

    rows = []
    for name in ("translation", "rotation", "intensity", "mixed", "dynamic-mnist"):
        if name == "dynamic-mnist" and not DIGITS.exists():
            continue
        video, params = pv.render(strip(name, PRESETS[name]), [4])
        rows.append(to_rgb(video, params["property_map"] if name == "mixed" else None))
    rgb = np.concatenate(rows)  # (rows, T, H, W, 3)
    gap = 2
    n, t, h, w, _ = rgb.shape
    canvas = np.full((n * (h + gap) - gap, t * (w + gap) - gap, 3), 128, np.uint8)
    for i in range(n):
        for j in range(t):
            canvas[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rgb[i, j]
    Image.fromarray(canvas.repeat(2, 0).repeat(2, 1)).save(OUT / "readme-strips.png")
    # noise ratios of the paper's ablation (§4.5) on one sequence
    base = strip("mixed", {"shape.num_objects": (3, 3), "texture.background_probability": 1.0})

    rows = [pv.render(base.replace(**{"noise.ratio": r}), [1])[0] for r in (0.0, 0.26, 0.70)]
    save_preview(OUT / "noise-ratios.png", np.concatenate(rows), scale=2)
    for kind in ("gaussian", "white", "perlin"):
        weights = {f"noise.{k}": float(k == kind) for k in ("gaussian", "white", "perlin")}
        video = pv.render(base.replace(**{"noise.ratio": 0.7}, **weights), [1])[0]
        save_preview(OUT / f"noise-{kind}.png", video, scale=2)
    print("wrote noise figures")
    # the README's preview: what `physvid generate --property mixed --n 2000 --noise-ratio 0.26 --property-maps`
    # then `physvid preview data/mixed --out preview.png -i 0 -i 1 -i 2 --property-map` draw
    mixed = pv.RenderConfig.from_dict({"property": "mixed", "noise": {"ratio": 0.26}, "property_maps": True})
    video, params = pv.render(mixed, [0, 1, 2])
    save_preview(OUT / "readme-preview.png", video, params["property_map"], scale=2)
    print("wrote", OUT / "readme-preview.png")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_flow_figures  # docs/flow.md's pictures

    make_flow_figures.main(OUT)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
