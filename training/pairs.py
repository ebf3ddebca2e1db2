"""Sketch–photo instance pairs for fine-grained ZS-SBIR.

Two sources:

- Sketchy's layout: ``ROOT/sketch/<category>/<photo_id>-<n>.<ext>`` was drawn from
  ``ROOT/photo/<category>/<photo_id>.<ext>`` (any common image extension; QMUL ShoeV2 / ChairV2's
  ``<photo_id>_<n>`` too: the last ``-<digits>`` or ``_<digits>`` is dropped, so a photo id holding ``-`` or
  ``_`` pairs right; scanning is :func:`training.data.scan_both`, shared with the category-level task, which
  pairs the category folders spelling-insensitively);
- a CSV of ``sketch,photo[,category]`` paths (relative paths resolve against the CSV's folder;
  without a category column the photo's parent folder names it; a header row is optional: a first
  row naming no existing file is taken for one, whatever its column names).

Every photo found, paired or not, joins its category's pool of hard negatives; the evaluation
gallery is by default only the photos that sketches were drawn from (``gallery="paired"``, the
protocol's Sketchy basic photos even when the folder holds Sketchy-Extended's), or every photo
(``gallery="all"``). Sketches whose photo is missing, names that do not follow the layout and
malformed CSV rows are skipped and counted; photo ids found twice in a category are warned about.
Like :mod:`training.data`, nothing is decoded here: unreadable files are skipped (and counted)
where they are read.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .data import DEFAULT_AUGMENTATION, DataError, Sample, scan_both

log = logging.getLogger(__name__)
GALLERY_CHOICES = ("paired", "all")
# Sketchy: <photo_id>-<n>; QMUL ShoeV2 / ChairV2: <photo_id>_<n>. Only the last separator counts (a stem ends in
# one of them), so a photo id with its own "-" or "_" ("n02691156_10151") still pairs, and no name reads two ways.
SKETCH_NAME = re.compile(r"^(?P<photo_id>.+)[-_](?P<n>\d+)$")
NOT_A_SKETCH_NAME = "not named <photo_id>-<n> or <photo_id>_<n>"
CSV_HEADER = ("sketch", "photo")


@dataclass
class PairSet:
    """A flat, index-based view of some categories' pairs, as the task and the evaluation use it."""

    classes: list[str]
    sketches: list[Sample]
    sketch_labels: list[int]  # index into classes
    partners: list[int]  # index into photos: the photo each sketch was drawn from
    photos: list[Sample]
    photo_labels: list[int]

    def __len__(self) -> int:
        return len(self.sketches)


@dataclass
class PairedData:
    """Every category's pairs (sketch, photo) and every category's photos."""

    pairs: dict[str, list[tuple[Sample, Sample]]]
    photos: dict[str, list[Sample]]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason → files (or csv rows)

    @property
    def classes(self) -> list[str]:
        """Categories that have at least one pair."""
        return sorted(c for c, pairs in self.pairs.items() if pairs)

    def subset(self, classes: Iterable[str], gallery: str = "all") -> PairSet:
        """Pairs and photos of ``classes``, flattened in class order. ``gallery``: ``all`` photos (training:
        the hard-negative pool) or only the ``paired`` ones, which sketches of these classes were drawn from."""
        if gallery not in GALLERY_CHOICES:
            raise ValueError(f"gallery must be one of {', '.join(GALLERY_CHOICES)}, got {gallery!r}")
        classes = sorted(classes)
        missing = [c for c in classes if c not in self.photos]
        if missing:
            raise DataError(f"no photos for categories: {', '.join(missing[:10])}")
        paired = {photo.key for name in classes for _, photo in self.pairs.get(name, [])}
        photos, photo_labels, position = [], [], {}
        for label, name in enumerate(classes):
            for photo in self.photos[name]:
                if gallery == "paired" and photo.key not in paired:
                    continue
                position[photo.key] = len(photos)
                photos.append(photo)
                photo_labels.append(label)
        sketches, sketch_labels, partners = [], [], []
        for label, name in enumerate(classes):
            for sketch, photo in self.pairs.get(name, []):
                sketches.append(sketch)
                sketch_labels.append(label)
                partners.append(position[photo.key])
        return PairSet(classes, sketches, sketch_labels, partners, photos, photo_labels)

    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(files) for reason, files in sorted(self.skipped.items())}

    def summary(self) -> str:
        n_pairs = sum(len(p) for p in self.pairs.values())
        n_photos = sum(len(p) for p in self.photos.values())
        n_paired = len({photo.key for pairs in self.pairs.values() for _, photo in pairs})
        text = f"{n_pairs} pairs, {n_photos} photos ({n_paired} paired), {len(self.classes)} categories"
        if self.skipped:
            text += "; skipped: " + ", ".join(f"{n} {reason}" for reason, n in self.skipped_counts().items())
        return text


def scan_sketchy_pairs(root: str | Path, augmentation: str = DEFAULT_AUGMENTATION) -> PairedData:
    """Pairs from Sketchy's layout under ``root``: a sketch ``<photo_id>-<n>`` (or QMUL's ``<photo_id>_<n>``) pairs
    with photo ``<photo_id>`` (the raw download's layout: of one ``augmentation`` folder)."""
    sketches, photos = scan_both(root, augmentation)
    skipped: dict[str, list[str]] = defaultdict(list)
    pairs: dict[str, list[tuple[Sample, Sample]]] = {}
    for category in sorted(sketches):
        by_id = {Path(photo.path).stem: photo for photo in reversed(photos.get(category, []))}
        _warn_duplicate_ids(category, photos.get(category, []))
        found = []
        for sketch in sketches[category]:
            match = SKETCH_NAME.match(Path(sketch.path).stem)
            if match is None or sketch.line is not None:
                skipped[NOT_A_SKETCH_NAME].append(sketch.key)
            elif match["photo_id"] not in by_id:
                skipped["without their photo"].append(sketch.key)
            else:
                found.append((sketch, by_id[match["photo_id"]]))
        if found:
            pairs[category] = found
    return PairedData(pairs, photos, dict(skipped))


def _warn_duplicate_ids(category: str, photos: list[Sample]) -> None:
    """Two photos of one category with one id (``a.jpg`` and ``a.png``, or in two subfolders): a sketch
    named ``a-1`` pairs with the first only, and the other sits in the gallery as an unpaired near-twin."""
    stems: dict[str, list[str]] = defaultdict(list)
    for photo in photos:
        stems[Path(photo.path).stem].append(photo.path)
    twins = {stem: paths for stem, paths in stems.items() if len(paths) > 1}
    if twins:
        stem, paths = next(iter(sorted(twins.items())))
        log.warning("photo/%s: %d photo ids appear more than once (e.g. %s: %s); sketches pair with the first",
                    category, len(twins), stem, ", ".join(paths))


def read_pair_csv(path: str | Path) -> PairedData:
    """Pairs from a CSV of ``sketch,photo[,category]``; the photos it names are the gallery."""
    path = Path(path)
    skipped: dict[str, list[str]] = defaultdict(list)
    photos: dict[str, dict[str, Sample]] = defaultdict(dict)  # insertion-ordered, unique
    pairs: dict[str, list[tuple[Sample, Sample]]] = defaultdict(list)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"Cannot read the pairs CSV {path}: {error}") from error
    for line_no, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if line_no == 1 and tuple(c.lower() for c in cells[:2]) == CSV_HEADER:
            continue
        if len(cells) not in (2, 3) or not all(cells[:2]):
            skipped["malformed csv rows"].append(f"{path}:{line_no}")
            continue
        sketch_path, photo_path = (path.parent / cells[0]).resolve(), (path.parent / cells[1]).resolve()
        if line_no == 1 and not sketch_path.exists() and not photo_path.exists():
            continue  # a header with other column names ("sketch_path,photo_path,label"), not a pair
        category = cells[2] if len(cells) == 3 and cells[2] else photo_path.parent.name
        photo = photos[category].setdefault(str(photo_path), Sample(str(photo_path), category))
        pairs[category].append((Sample(str(sketch_path), category), photo))
    return PairedData(dict(pairs), {c: list(v.values()) for c, v in photos.items()}, dict(skipped))


def load_pairs(source: str | Path, augmentation: str = DEFAULT_AUGMENTATION) -> PairedData:
    """A Sketchy-layout folder or a ``.csv`` file of pairs; :class:`DataError` when nothing is usable."""
    source = Path(source)
    if source.is_dir():
        data = scan_sketchy_pairs(source, augmentation)
    elif source.is_file() and source.suffix.lower() == ".csv":
        data = read_pair_csv(source)
    else:
        raise DataError(f"{source} is neither a folder in Sketchy's layout nor a .csv file of pairs.")
    if not data.classes:
        raise DataError(f"No usable sketch–photo pairs in {source} ({data.summary()}).")
    return data
