"""A tiny synthetic fine-grained dataset in Sketchy's layout where instance matching can be learned.

Every photo is a random 4-point polyline spanning the frame (as a cropped sketch does), drawn thick
in a random dark colour on a light noisy background; its sketches are the same polyline in thin
black ink, slightly jittered. Photos of one category share a base shape, so telling them apart
takes the instance's exact geometry — the fine-grained problem in miniature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def polyline(base: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    points = base + rng.normal(0, 0.25, base.shape)
    points = (points - points.min(0)) / np.maximum(np.ptp(points, 0), 1e-6)
    return (0.1 + 0.8 * points) * size


def make_pairs(root: Path, n_classes: int = 4, photos: int = 8, sketches: int = 2, seed: int = 0,
               size: int = 64) -> Path:
    """Write ``root/photo/class<c>/p<c>_<i>.png`` and ``root/sketch/class<c>/p<c>_<i>-<n>.png``."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        name = f"class{c:02d}"
        (root / "photo" / name).mkdir(parents=True, exist_ok=True)
        (root / "sketch" / name).mkdir(parents=True, exist_ok=True)
        base = rng.uniform(0, 1, (4, 2))
        for i in range(photos):
            points = polyline(base, rng, size)
            photo = Image.fromarray(rng.integers(170, 240, (size, size, 3), dtype=np.uint8), "RGB")
            ink = tuple(int(v) for v in rng.integers(0, 90, 3))
            ImageDraw.Draw(photo).line([tuple(p) for p in points], fill=ink, width=5)
            photo.save(root / "photo" / name / f"p{c}_{i}.png")
            for n in range(sketches):
                sketch = Image.new("L", (size, size), 255)
                jittered = points + rng.normal(0, 0.8, points.shape)
                ImageDraw.Draw(sketch).line([tuple(p) for p in jittered], fill=0, width=3)
                sketch.save(root / "sketch" / name / f"p{c}_{i}-{n + 1}.png")
    return root
