"""Which test photos form the category-level gallery: every file found, or with duplicate images dropped.

The literature mixes two Sketchy-21 galleries: 12,553 photos as the ZSE-SBIR / SAKE test lists enumerate the
Sketchy-Extended photo folders (duplicates included), and 10,453 after de-duplication (our default; the figure
``protocols.CATEGORY`` records). ``--gallery list`` scores every photo found, ``--gallery dedup`` keeps the first of
each group of identical images within a category. mAP moves with the gallery, so every report names it.

Two files are "the same image" when their difference hashes are equal: the image reduced to 9x8 grey pixels, one bit
per pair of horizontal neighbours (brighter or not). A re-encoded or resized copy keeps its hash; a crop or an edit
does not, so only true copies are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from encoder import decode_image

from .data import READ_ERRORS, Sample

HASH_SIZE = 8


def difference_hash(path: str) -> int | None:
    """64-bit difference hash of an image file; None when it cannot be read (evaluation reports it later)."""
    try:
        image = decode_image(path, reduce_to=4 * HASH_SIZE)
    except READ_ERRORS:
        return None
    grey = np.asarray(image.convert("L").resize((HASH_SIZE + 1, HASH_SIZE), Image.Resampling.BOX), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


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


def deduplicate(photos: Sequence[Sample], fingerprint: Callable[[str], int | None] = difference_hash) -> Gallery:
    """Keep the first photo of every (category, image hash); unreadable files stay (they are reported later)."""
    first: dict[tuple[str, int], Sample] = {}
    kept, duplicates = [], []
    for photo in photos:
        digest = fingerprint(photo.path) if photo.line is None else None
        if digest is None:
            kept.append(photo)
            continue
        original = first.setdefault((photo.category, digest), photo)
        if original is photo:
            kept.append(photo)
        else:
            duplicates.append((photo, original))
    return Gallery("dedup", kept, duplicates)


def choose_gallery(photos: Sequence[Sample], name: str) -> Gallery:
    """``GALLERIES[name]`` applied to the photos of the scored classes."""
    if name not in GALLERIES:
        raise ValueError(f"gallery must be one of {', '.join(GALLERIES)}, got {name!r}")
    return GALLERIES[name](photos)


GALLERIES: dict[str, Callable[[Sequence[Sample]], Gallery]] = {
    "dedup": deduplicate,
    "list": lambda photos: Gallery("list", list(photos)),
}
