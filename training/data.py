"""Datasets on disk: category folders, class splits, class names as text, and unreadable-file accounting.

Layout (Sketchy-, TU-Berlin- and QuickDraw-Extended as distributed)::

    ROOT/sketch/<category>/*   images (.png .jpg ...), stroke files (.json: one drawing,
                               .ndjson: one drawing per line, QuickDraw style; .svg: a vector sketch)
    ROOT/photo/<category>/*    images

The raw Sketchy download nests one more level, an augmentation folder per modality
(``ROOT/sketch/tx_000000000000/<category>/*``, ``ROOT/photo/tx_000000000000/<category>/*``, ...); such
a layout is recognised and one augmentation is read (``tx_000000000000`` by default, as the papers and the
benchmarks use), instead of taking the ``tx_*`` folders for categories.

Nothing here decodes a file while scanning (scans stay fast on 100k-file datasets); files are read
in DataLoader workers, and one that cannot be read is skipped there, counted and reported by the
caller through :class:`BadFiles` -- never a crash.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from encoder import Preprocessor, SBIRError, parse_strokes, rasterize_strokes
from encoder.model import class_text  # noqa: F401 - one spelling of class names as text, shared with the app

log = logging.getLogger(__name__)

Modality = Literal["sketch", "photo"]
SPLITS_DIR = Path(__file__).with_name("splits")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif", ".heic",
                            ".heif", ".hif"})
# .svg: the vector sketches TU-Berlin, Sketchy and QMUL ship, read as their lines (encoder.svg_strokes)
STROKE_SUFFIXES = frozenset({".json", ".ndjson", ".svg"})
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_AUGMENTATION = "tx_000000000000"  # raw Sketchy: non-uniformly scaled to the bounding box, no augmentation
AUGMENTATION_DIR = re.compile(r"^tx_\d{12}$")


class DataError(SBIRError, ValueError):
    """The dataset or the split cannot be used as given (wrong root, unknown classes, ...)."""


# ------------------------------------------------------------------------------------------ samples
@dataclass(frozen=True)
class Sample:
    """One image on disk. ``line`` is the byte offset of one drawing inside an ``.ndjson`` file."""

    path: str
    category: str
    line: int | None = None

    @property
    def key(self) -> str:
        return self.path if self.line is None else f"{self.path}@{self.line}"


def class_key(category: str) -> str:
    """Spelling-insensitive class identity, so ``frying-pan``, ``frying_pan`` and ``Frying Pan`` match, and so do
    ``café`` as macOS stores a folder name (NFD) and as a split file spells it (NFC)."""
    return re.sub(r"[\s_\-]+", " ", unicodedata.normalize("NFC", category)).strip().lower()


def _ndjson_offsets(path: Path) -> list[int]:
    offsets, position = [], 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                offsets.append(position)
            position += len(line)
    return offsets


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def category_root(root: str | Path, modality: Modality, augmentation: str = DEFAULT_AUGMENTATION) -> Path:
    """The folder holding ``<category>/`` folders of ``modality``: ``ROOT/<modality>``, or in the raw Sketchy
    layout (only ``tx_<12 digits>`` folders in it) ``ROOT/<modality>/<augmentation>``."""
    folder = Path(root) / modality
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: expected ROOT/sketch/<category>/* and ROOT/photo/<category>/*.")
    children = _visible_dirs(folder)
    if not children or not all(AUGMENTATION_DIR.match(child.name) for child in children):
        return folder
    chosen = folder / augmentation
    if not chosen.is_dir():
        raise DataError(f"{folder} is in the raw Sketchy layout (augmentation folders "
                        f"{', '.join(child.name for child in children)}) but has no {augmentation!r}; "
                        "choose one with --augmentation.")
    log.info("%s: raw Sketchy layout, reading augmentation %s", folder, augmentation)
    return chosen


def _is_hidden(path: Path, class_dir: Path) -> bool:
    """A file that is, or sits below, a dot-named entry of its class folder (``.thumbnails/``, ``._x.jpg``): never
    a sample, or a thumbnail cache would join training and the gallery (and, fine-grained, pair with the sketches)."""
    return any(part.startswith(".") for part in path.relative_to(class_dir).parts)


def _require_utf8_name(folder: Path) -> None:
    """Refuse a folder name that is not UTF-8 (Latin-1 ``caf\\xe9`` from an old archive): the class name reaches
    run.json, the CSVs and the class text, and would fail there after the work, so it fails here, before it."""
    try:
        folder.name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(folder).decode("utf-8", "backslashreplace")
        raise DataError(f"{shown}: the folder name is not UTF-8; rename it "
                        "(e.g. convmv -f latin1 -t utf8) so class names can be written to reports.") from None


def _files_under(folder: Path) -> list[Path]:
    """Every entry under ``folder``, following linked subfolders as linked files and class folders are followed
    (Path.rglob skips them); a link back up the tree is walked once."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        try:
            info = os.stat(top)
        except OSError:  # gone or unreadable since it was listed: its files are not found, as os.walk's own errors
            continue
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        found += [Path(top, name) for name in files]
    return found


def _class_samples(class_dir: Path, suffixes: frozenset[str]) -> list[Sample]:
    """The samples of one class folder, its subfolders included, in path order."""
    samples: list[Sample] = []
    for path in sorted(_files_under(class_dir)):
        suffix = path.suffix.lower()
        if _is_hidden(path, class_dir) or suffix not in suffixes or not path.is_file():
            continue
        if suffix == ".ndjson":
            try:
                samples.extend(Sample(str(path), class_dir.name, offset) for offset in _ndjson_offsets(path))
            except OSError as error:
                log.warning("skipping unreadable stroke file %s: %s", path, error)
        else:
            samples.append(Sample(str(path), class_dir.name))
    return samples


def scan_modality(root: str | Path, modality: Modality, augmentation: str = DEFAULT_AUGMENTATION
                  ) -> dict[str, list[Sample]]:
    """``ROOT/<modality>/<category>/*`` → {category: samples}, sorted; hidden files and folders and other suffixes
    ignored; a category folder whose name is not UTF-8 is a :class:`DataError`.

    In the raw Sketchy layout the categories are read from the ``augmentation`` folder (:func:`category_root`)."""
    folder = category_root(root, modality, augmentation)
    suffixes = IMAGE_SUFFIXES | (STROKE_SUFFIXES if modality == "sketch" else frozenset())
    found: dict[str, list[Sample]] = {}
    for class_dir in _visible_dirs(folder):
        _require_utf8_name(class_dir)
        samples = _class_samples(class_dir, suffixes)
        if samples:
            found[class_dir.name] = samples
    if not found:
        raise DataError(f"{folder} has no category folders with files in them.")
    return found


def _folders_by_key(scanned: dict[str, list[Sample]], modality: Modality) -> dict[str, str]:
    """{class_key: folder name} of one modality; two folders of one key (``frying-pan``, ``frying_pan``) are an
    error: which of them pairs with the other modality's folder would be a guess."""
    by_key: dict[str, list[str]] = {}
    for name in scanned:
        by_key.setdefault(class_key(name), []).append(name)
    twins = sorted(" = ".join(names) for names in by_key.values() if len(names) > 1)
    if twins:
        raise DataError(f"{modality}/ spells some categories in several folders: {'; '.join(twins)}. "
                        "Merge each into one folder.")
    return {key: names[0] for key, names in by_key.items()}


def _renamed(samples: list[Sample], category: str) -> list[Sample]:
    return [replace(sample, category=category) for sample in samples]


def scan_both(root: str | Path, augmentation: str = DEFAULT_AUGMENTATION
              ) -> tuple[dict[str, list[Sample]], dict[str, list[Sample]]]:
    """(sketches, photos) of :func:`scan_modality`, the two sides paired by :func:`class_key`: ``sketch/teddy bear``
    and ``photo/teddy-bear``, or ``café`` in NFD (macOS) and NFC, are one category, named as its photo folder."""
    sketches, photos = scan_modality(root, "sketch", augmentation), scan_modality(root, "photo", augmentation)
    sketch_names, photo_names = _folders_by_key(sketches, "sketch"), _folders_by_key(photos, "photo")
    renamed = {}
    for key, sketch_name in sketch_names.items():
        name = photo_names.get(key, sketch_name)
        renamed[name] = sketches[sketch_name] if name == sketch_name else _renamed(sketches[sketch_name], name)
    return dict(sorted(renamed.items())), photos


@dataclass
class CategoryDataset:
    """Sketches and photos per category of one dataset root (only classes having both)."""

    root: Path
    sketches: dict[str, list[Sample]]
    photos: dict[str, list[Sample]]

    @classmethod
    def scan(cls, root: str | Path, augmentation: str = DEFAULT_AUGMENTATION) -> CategoryDataset:
        """Categories with both sketches and photos (raw Sketchy layout: of one ``augmentation``)."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"Dataset root {root} does not exist or is not a folder.")
        sketches, photos = scan_both(root, augmentation)
        only_one = sorted(set(sketches) ^ set(photos))
        if only_one:
            log.warning("%d categories have only sketches or only photos and are ignored: %s",
                        len(only_one), ", ".join(only_one[:10]))
        common = sorted(set(sketches) & set(photos))
        if not common:
            raise DataError(f"{root}: no category has both sketches and photos.")
        return cls(root, {c: sketches[c] for c in common}, {c: photos[c] for c in common})

    @property
    def classes(self) -> list[str]:
        return sorted(self.sketches)

    def subset(self, classes: Iterable[str]) -> tuple[list[Sample], list[Sample]]:
        """(sketches, photos) of ``classes``, in class order."""
        classes = sorted(classes)
        return ([s for c in classes for s in self.sketches[c]], [p for c in classes for p in self.photos[c]])


# ------------------------------------------------------------------------------------------ splits
def known_splits() -> list[str]:
    return sorted(p.stem for p in SPLITS_DIR.glob("*.txt"))


def read_class_list(path: str | Path) -> list[str]:
    """One class name per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read class list {path}: {error}") from error
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"Class list {path} names no classes.")
    return names


def split_classes_file(name: str) -> Path:
    """Path of a shipped split (``sketchy21``, ``sketchy25``, ``tuberlin30``, ``quickdraw30``)."""
    path = SPLITS_DIR / f"{name}.txt"
    if not path.is_file():
        raise DataError(f"Unknown split {name!r}; shipped splits: {', '.join(known_splits())}, or 'random'.")
    return path


@dataclass(frozen=True)
class ClassSplit:
    """Disjoint class sets: ``train`` (learned on), ``val`` (checkpoint selection, drawn from the seen
    classes) and ``test`` (the unseen classes, never looked at in training)."""

    train: list[str]
    val: list[str]
    test: list[str]
    source: str = ""

    def to_dict(self) -> dict:
        return {"source": self.source, "train": self.train, "val": self.val, "test": self.test}

    def without_validation(self) -> ClassSplit:
        """Every seen class a training class (``--refit``'s second run): the validation slice rejoins training."""
        return ClassSplit(train=sorted(self.train + self.val), val=[], test=self.test, source=self.source)


def resolve_unseen(classes: Sequence[str], names: Sequence[str], source: str) -> list[str]:
    """Map split-file names onto the dataset's folder names (spelling-insensitive); any miss is an error."""
    by_key: dict[str, list[str]] = {}
    for c in classes:
        by_key.setdefault(class_key(c), []).append(c)
    twins = sorted({" = ".join(by_key[class_key(n)]) for n in names if len(by_key.get(class_key(n), ())) > 1})
    if twins:  # one spelling would be held out while its twin trains: the "unseen" class would be seen
        raise DataError(f"The dataset spells some unseen classes of {source} in several folders: {'; '.join(twins)}. "
                        "Merge each into one folder.")
    missing = [n for n in names if class_key(n) not in by_key]
    if missing:
        raise DataError(
            f"{len(missing)} unseen classes of {source} are not in the dataset: {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}. Is this the right dataset for the split?"
        )
    return sorted({by_key[class_key(n)][0] for n in names})


def make_split(
    classes: Sequence[str],
    *,
    split: str | None = "random",
    unseen_file: str | Path | None = None,
    n_unseen: int | float = 0.2,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    for_training: bool = True,
) -> ClassSplit:
    """Unseen classes from a shipped split, a file, a seeded random draw, or none; then a seeded
    validation slice (``val_fraction`` of the seen classes, at least one; none for 0) held out of training.

    ``n_unseen`` (random split only): a count (int >= 1) or a fraction of all classes (float < 1).
    ``for_training=False`` (scoring the unseen classes): a dataset holding only them is fine.
    ``split="none"``: the dataset is already split: in training every class is a training class,
    in evaluation (``for_training=False``) every class is an unseen one.
    """
    classes = sorted(classes)
    rng = random.Random(seed)
    if unseen_file is None and split == "none":
        unseen, source = ([] if for_training else list(classes)), "none"
        if for_training:
            warn_if_holding_a_benchmark(classes)
    elif unseen_file is not None:
        unseen, source = resolve_unseen(classes, read_class_list(unseen_file), str(unseen_file)), str(unseen_file)
    elif split and split != "random":
        unseen, source = resolve_unseen(classes, read_class_list(split_classes_file(split)), split), split
    else:
        count = int(n_unseen) if n_unseen >= 1 else round(n_unseen * len(classes))
        if not 1 <= count < len(classes) - 1:
            raise DataError(f"A random split of {len(classes)} classes cannot hold out {count} of them.")
        unseen, source = sorted(rng.sample(classes, count)), f"random(seed={seed}, n_unseen={count})"
    seen = [c for c in classes if c not in set(unseen)]
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = max(1, round(val_fraction * len(seen))) if val_fraction > 0 and seen else 0
    if for_training and len(seen) - n_val < 2:
        raise DataError(f"Only {len(seen)} seen classes: too few to train on after the validation slice.")
    val = sorted(random.Random(seed + 1).sample(seen, n_val))
    train = [c for c in seen if c not in set(val)]
    return ClassSplit(train=train, val=val, test=unseen, source=source)


def warn_if_holding_a_benchmark(classes: Sequence[str]) -> None:
    """``--split none`` on a folder holding every unseen class of a shipped split: they would be trained on."""
    keys = {class_key(c) for c in classes}
    for name in known_splits():
        unseen = read_class_list(split_classes_file(name))
        if all(class_key(c) in keys for c in unseen):
            log.warning("--split none trains on every class of the dataset, including all %d unseen classes of "
                        "%s: scores on that benchmark would not be zero-shot", len(unseen), name)


# ------------------------------------------------------------------------------------------ reading
def load_sample(sample: Sample, preprocess: Preprocessor, modality: Modality, *, train: bool = False) -> torch.Tensor:
    """Decode one sample into a model input ``[3, S, S]``; raises on an unreadable file."""
    suffix = Path(sample.path).suffix.lower()
    if modality == "sketch" and suffix in STROKE_SUFFIXES:
        if sample.line is not None:
            with open(sample.path, "rb") as handle:
                handle.seek(sample.line)
                data = handle.readline()
        else:
            data = Path(sample.path).read_bytes()
        # The limit read once with the encoder: per file, a bad setting would skip every drawing as unreadable
        raster = rasterize_strokes(parse_strokes(data, max_points=preprocess.max_stroke_points), size=256)
        return preprocess.dataset_sketch(raster, train=train)
    if modality == "sketch":
        return preprocess.sketch_file(sample.path, train=train)
    return preprocess.photo_file(sample.path, train=train)


READ_ERRORS = (SBIRError, OSError, ValueError, json.JSONDecodeError, SyntaxError)


@dataclass
class BadFiles:
    """Unreadable files met while reading: skipped, counted, and reported at the end.

    A training epoch's batches are drawn without the files known unreadable when it starts
    (:meth:`left_out`); that set is part of the run's state, so a run resumed mid-epoch draws the
    very batches it was interrupted in."""

    errors: dict[str, str] = field(default_factory=dict)
    drawn: tuple[int, frozenset[str]] | None = None  # (epoch, the files its batches left out), the latest drawn

    def add(self, key: str, error: str) -> None:
        if key not in self.errors:
            log.warning("skipping unreadable file %s: %s", key, error)
        self.errors[key] = error

    def update(self, items: Iterable[tuple[str, str]]) -> None:
        for key, error in items:
            self.add(key, error)

    def merge(self, errors: dict[str, str]) -> None:
        """Another process's findings (a DDP rank's, already warned about there)."""
        for key, error in errors.items():
            self.errors.setdefault(key, error)

    def left_out(self, epoch: int, *groups: Sequence[Sample]) -> list[set[int]]:
        """The positions in each of ``groups`` (sketches, photos) that epoch ``epoch``'s batches leave out: the
        files known unreadable when the epoch was first drawn."""
        if self.drawn is None or self.drawn[0] != epoch:
            self.drawn = (epoch, frozenset(self.errors))
        skipped = self.drawn[1]
        return [{i for i, sample in enumerate(group) if sample.key in skipped} for group in groups]

    def state_dict(self) -> dict:
        drawn = None if self.drawn is None else [self.drawn[0], sorted(self.drawn[1])]
        return {"errors": dict(self.errors), "drawn": drawn}

    def load_state_dict(self, state: dict) -> None:
        self.errors = dict(state["errors"])
        self.drawn = None if state["drawn"] is None else (int(state["drawn"][0]), frozenset(state["drawn"][1]))

    def __len__(self) -> int:
        return len(self.errors)

    def __contains__(self, key: str) -> bool:
        return key in self.errors

    def summary(self) -> str:
        if not self.errors:
            return "no unreadable files"
        kinds = Counter(e.split(":", 1)[0] for e in self.errors.values())
        return f"{len(self.errors)} unreadable files skipped ({', '.join(f'{k}: {n}' for k, n in kinds.items())})"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.errors, indent=2, sort_keys=True) + "\n")


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


class SampleDataset(Dataset):
    """Samples of one modality → ``(tensor | None, label, index, error)``; pair with :func:`collate_samples`."""

    def __init__(self, samples: Sequence[Sample], labels: Sequence[int], preprocess: Preprocessor,
                 modality: Modality, *, train: bool = False) -> None:
        self.samples, self.labels, self.preprocess = samples, labels, preprocess
        self.modality, self.train = modality, train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            tensor = load_sample(sample, self.preprocess, self.modality, train=self.train)
        except READ_ERRORS as error:
            return None, self.labels[index], index, (sample.key, _describe(error))
        return tensor, self.labels[index], index, None


@dataclass
class SampleBatch:
    images: torch.Tensor  # [B, 3, S, S]
    labels: torch.Tensor  # [B]
    indices: torch.Tensor  # [B] positions in the dataset's sample list
    bad: list[tuple[str, str]]  # (file, error) skipped in this batch


def collate_samples(items) -> SampleBatch:
    good = [it for it in items if it[0] is not None]
    bad = [it[3] for it in items if it[0] is None]
    if not good:
        return SampleBatch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), bad)
    return SampleBatch(
        torch.stack([it[0] for it in good]),
        torch.tensor([it[1] for it in good], dtype=torch.long),
        torch.tensor([it[2] for it in good], dtype=torch.long),
        bad,
    )


class TripletDataset(Dataset):
    """(sketch, positive photo, negative photo) index triples → tensors; which photos they are is
    the sampler's business (category-level: same class / other class; fine-grained: paired / same class)."""

    def __init__(self, sketches: Sequence[Sample], photos: Sequence[Sample], sketch_labels: Sequence[int],
                 photo_labels: Sequence[int], triples: Sequence[tuple[int, int, int]], preprocess: Preprocessor,
                 *, train: bool = True, draws: tuple[int, ...] | None = None) -> None:
        self.sketches, self.photos = sketches, photos
        self.sketch_labels, self.photo_labels = sketch_labels, photo_labels
        self.triples, self.preprocess, self.train = triples, preprocess, train
        self.draws = draws  # (seed, epoch, DDP rank) of the augmentations; None: torch's running random state

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, index: int):
        if not (self.train and self.draws is not None):
            return self._triplet(index)
        # Each triplet's augmentations are drawn from (seed, epoch, rank, its place in the rank's share): the same
        # whatever the number of workers, and after a --resume that skipped the epoch's first batches.
        with torch.random.fork_rng(devices=()):
            torch.manual_seed(int(np.random.SeedSequence([*self.draws, index]).generate_state(1)[0]))
            return self._triplet(index)

    def _triplet(self, index: int):
        s, p, n = self.triples[index]
        labels = (self.sketch_labels[s], self.photo_labels[p], self.photo_labels[n])
        tensors = []
        for sample, modality in ((self.sketches[s], "sketch"), (self.photos[p], "photo"), (self.photos[n], "photo")):
            try:
                tensors.append(load_sample(sample, self.preprocess, modality, train=self.train))
            except READ_ERRORS as error:
                return None, labels, (s, p, n), (sample.key, _describe(error))
        return tuple(tensors), labels, (s, p, n), None


@dataclass
class TripletBatch:
    sketch: torch.Tensor  # [B, 3, S, S]
    positive: torch.Tensor
    negative: torch.Tensor
    labels: torch.Tensor  # [B] class of sketch and positive
    negative_labels: torch.Tensor  # [B]
    triples: torch.Tensor  # [B, 3] indices into the sketch / photo lists
    bad: list[tuple[str, str]]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def collate_triplets(items) -> TripletBatch:
    """Stack the readable triplets; unreadable ones are dropped and listed in ``bad``."""
    good = [it for it in items if it[0] is not None]
    bad = [it[3] for it in items if it[0] is None]

    def stack(i: int) -> torch.Tensor:
        return torch.stack([it[0][i] for it in good]) if good else torch.empty(0)

    labels = torch.tensor([it[1] for it in good], dtype=torch.long).reshape(-1, 3)
    return TripletBatch(
        sketch=stack(0), positive=stack(1), negative=stack(2),
        labels=labels[:, 0], negative_labels=labels[:, 2],
        triples=torch.tensor([it[2] for it in good], dtype=torch.long).reshape(-1, 3), bad=bad,
    )
