"""A tiny synthetic category dataset where learning is possible, even to unseen classes.

A class is a pattern of parallel lines: its count (1-6) and orientation (h/v), e.g. ``h3``.
Sketches: black lines on white. Photos: the same pattern in a random dark colour on a random light
background. The colours are class-independent nuisance, so what training learns (match the pattern,
ignore the colour) carries over to held-out classes, which the frozen random tiny encoder alone
does poorly. ``names`` gives the class folders other names than the pattern's (``{"h3": "camel"}``), for
tests whose text tower has to tell the classes apart by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = [f"{o}{n}" for o in ("h", "v") for n in range(1, 7)]


def draw_pattern(name: str, rng: np.random.Generator, *, sketch: bool, size: int = 96) -> Image.Image:
    orientation, count = name[0], int(name[1:])
    background = (255, 255, 255) if sketch else tuple(int(v) for v in rng.integers(150, 256, 3))
    ink = (0, 0, 0) if sketch else tuple(int(v) for v in rng.integers(0, 120, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    lo, hi = size * rng.uniform(0.05, 0.15), size * rng.uniform(0.85, 0.95)
    for k in range(count):
        t = lo + (hi - lo) * (k + 0.5) / count + rng.uniform(-2, 2)
        points = [(lo, t), (hi, t)] if orientation == "h" else [(t, lo), (t, hi)]
        draw.line(points, fill=ink, width=4)
    return image


def make_dataset(root: Path, classes: list[str] | None = None, per_class: int = 12, seed: int = 0,
                 names: Mapping[str, str] | None = None) -> Path:
    """Write ``root/sketch/<class>/*.png`` and ``root/photo/<class>/*.jpg``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for name in classes or CLASSES:
        for modality in ("sketch", "photo"):
            folder = root / modality / (names or {}).get(name, name)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = draw_pattern(name, rng, sketch=modality == "sketch")
                image.save(folder / (f"{i}.png" if modality == "sketch" else f"{i}.jpg"), quality=92)
    return root
