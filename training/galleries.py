"""Which test photos form the category-level gallery: every file found, or with duplicate images dropped.

The literature mixes two Sketchy-21 galleries: 12,553 photos as the ZSE-SBIR / SAKE test lists enumerate the
Sketchy-Extended photo folders (duplicates included), and 10,453 after de-duplication (our default; the figure
``protocols.CATEGORY`` records). ``--gallery list`` scores every photo found, ``--gallery dedup`` keeps the first of
each group of identical images within a category. mAP moves with the gallery, so every report names it.

Two files of one category are "the same image" when their 16x16 colour thumbnails (box-averaged) differ nowhere by
more than 8 of 255 levels. A re-encoded or resized copy stays within that (JPEG noise averages out in a cell of
the thumbnail); a crop, an edit or another photo with any visible difference in one cell does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from encoder import decode_image
from encoder.imaging import to_rgb

from .data import READ_ERRORS, Sample

THUMBNAIL = 16  # pixels per side of the thumbnail compared
SAME_IMAGE_LEVELS = 8.0  # largest difference (of 255) between two copies' thumbnails, in any cell and channel


def thumbnail(path: str) -> np.ndarray | None:
    """A 16x16 RGB box-averaged thumbnail (float32); None when the file cannot be read (reported later)."""
    try:
        # JPEGs decode at a reduced DCT scale, but not below 8 pixels per thumbnail cell: at 2 per cell the scaled
        # decode differs from a full one by up to ~18 levels (a PNG copy of a JPEG would not be found); at 8, by 1.
        image = decode_image(path, reduce_to=8 * THUMBNAIL)
        return np.asarray(to_rgb(image).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), dtype=np.float32)
    except READ_ERRORS:
        return None


@dataclass
class Gallery:
    """The photos to rank and what was left out (duplicates: (dropped, the photo kept in its place))."""

    name: str
    photos: list[Sample]
    duplicates: list[tuple[Sample, Sample]] = field(default_factory=list)

    def describe(self) -> str:
        if self.name == "list":
            return f"gallery: {len(self.photos):,} photos (list: every photo found, duplicates included)"
        return (f"gallery: {len(self.photos):,} photos (dedup: {len(self.duplicates):,} duplicate images dropped, "
                "first of each kept)")


def deduplicate(photos: Sequence[Sample]) -> Gallery:
    """Keep the first photo of every group of copies within a category (order kept); unreadable files stay."""
    copy_of: dict[int, int] = {}  # index of a dropped photo -> index of the photo kept in its place
    for indices in _by_category(photos).values():
        kept = np.empty((len(indices), THUMBNAIL, THUMBNAIL, 3), dtype=np.float32)
        kept_index: list[int] = []
        for index in indices:
            small = thumbnail(photos[index].path) if photos[index].line is None else None
            if small is None:
                continue
            if kept_index:
                difference = np.abs(kept[:len(kept_index)] - small).max(axis=(1, 2, 3))
                closest = int(difference.argmin())
                if difference[closest] <= SAME_IMAGE_LEVELS:
                    copy_of[index] = kept_index[closest]
                    continue
            kept[len(kept_index)] = small
            kept_index.append(index)
    return Gallery("dedup", [p for i, p in enumerate(photos) if i not in copy_of],
                   [(photos[i], photos[j]) for i, j in sorted(copy_of.items())])


def _by_category(photos: Sequence[Sample]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, photo in enumerate(photos):
        groups.setdefault(photo.category, []).append(index)
    return groups


def choose_gallery(photos: Sequence[Sample], name: str) -> Gallery:
    """``GALLERIES[name]`` applied to the photos of the scored classes."""
    if name not in GALLERIES:
        raise ValueError(f"gallery must be one of {', '.join(GALLERIES)}, got {name!r}")
    return GALLERIES[name](photos)


GALLERIES: dict[str, Callable[[Sequence[Sample]], Gallery]] = {
    "dedup": deduplicate,
    "list": lambda photos: Gallery("list", list(photos)),
}
