"""Generated benchmark data, for hosts without the shared datasets (e.g. a GPU machine): real files on disk.

* ``photos DIR --count N --size WxH``: N distinct JPEGs (smooth colour fields with shapes, so they compress
  and decode like photos, not like noise) in ``--classes`` category folders;
* ``categories DIR --classes C --sketches S --photos P``: a training dataset in the usual layout
  (``sketch/<c>/*.png``, ``photo/<c>/*.jpg``); ``--unique`` distinct images per class and modality, the rest
  hard links to them (file count, not content, sets a training epoch's length);
* ``sketch FILE``: one sketch PNG (a query for bench/serve.py).

    python bench/synthetic.py photos /tmp/gallery --count 4096 --size 640x480
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like image: a smooth colour field with a few filled shapes and grain (decodes like a photo)."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
        box = [x0, y0, x0 + rng.uniform(w * 0.1, w * 0.5), y0 + rng.uniform(h * 0.1, h * 0.5)]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    grain = rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + grain, 0, 255).astype(np.uint8), "RGB")


def sketch(size: int, seed: int) -> Image.Image:
    """Black strokes on white."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        draw.line([tuple(float(v) for v in rng.uniform(0.1, 0.9, 2) * size) for _ in range(4)], fill=0,
                  width=max(1, size // 80))
    return image


def _write_photo(job: tuple[Path, tuple[int, int], int]) -> None:
    path, size, seed = job
    photo(size, seed).save(path, quality=90)


def write_photos(folder: Path, count: int, size: tuple[int, int] = (640, 480), classes: int = 8) -> list[Path]:
    """``count`` distinct JPEGs in ``classes`` category folders under ``folder`` (written by all CPUs)."""
    jobs = [(folder / f"class{i % classes:02d}" / f"{i:06d}.jpg", size, i) for i in range(count)]
    for c in range(min(classes, count)):
        (folder / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    if count < 64:
        for job in jobs:
            _write_photo(job)
    else:
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(_write_photo, jobs, chunksize=32))
    return [path for path, _, _ in jobs]


def write_categories(root: Path, classes: int, sketches: int, photos: int, unique: int = 8, size: int = 224) -> Path:
    """A category dataset under ``root``: ``sketches`` and ``photos`` files per class, ``unique`` distinct."""
    for c in range(classes):
        for modality, count, suffix in (("sketch", sketches, "png"), ("photo", photos, "jpg")):
            folder = root / modality / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                path = folder / f"{modality}{i:06d}.{suffix}"
                if i < unique:
                    seed = 1000 * c + i
                    (sketch(size, seed) if modality == "sketch" else photo((size, size), seed)).save(path)
                else:
                    os.link(folder / f"{modality}{i % unique:06d}.{suffix}", path)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    photos = commands.add_parser("photos")
    photos.add_argument("folder", type=Path)
    photos.add_argument("--count", type=int, default=1024)
    photos.add_argument("--size", default="640x480", help="WxH")
    photos.add_argument("--classes", type=int, default=8)
    categories = commands.add_parser("categories")
    categories.add_argument("folder", type=Path)
    categories.add_argument("--classes", type=int, default=10)
    categories.add_argument("--sketches", type=int, default=100, help="per class")
    categories.add_argument("--photos", type=int, default=20, help="per class")
    categories.add_argument("--unique", type=int, default=8, help="distinct images per class and modality")
    categories.add_argument("--size", type=int, default=224)
    one = commands.add_parser("sketch")
    one.add_argument("file", type=Path)
    one.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    if args.command == "photos":
        width, height = (int(v) for v in args.size.lower().split("x"))
        write_photos(args.folder, args.count, (width, height), args.classes)
    elif args.command == "categories":
        write_categories(args.folder, args.classes, args.sketches, args.photos, args.unique, args.size)
    else:
        args.file.parent.mkdir(parents=True, exist_ok=True)
        sketch(args.size, seed=0).save(args.file)


if __name__ == "__main__":
    main()
