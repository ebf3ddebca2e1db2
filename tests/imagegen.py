"""Synthetic images for tests (no dataset is ever committed)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def draw_sketch(size: tuple[int, int] = (200, 160), seed: int = 0, line: int = 3) -> Image.Image:
    """A black-on-white 'L' sketch with a few random strokes."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(4):
        points = [(float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h)) for _ in range(4)]
        draw.line(points, fill=0, width=line)
    return image


def random_photo(size: tuple[int, int] = (120, 90), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares width×height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")
