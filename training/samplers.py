"""Which items go together into a batch: seeded by (seed, epoch) so every process and every resumed
run draws the same order, and sharded across DDP ranks so each rank gets an equal share."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

T = TypeVar("T")


def epoch_rng(seed: int, epoch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + epoch)


def shard(items: Sequence[T], rank: int = 0, world_size: int = 1) -> list[T]:
    """This rank's share; truncated to a multiple of ``world_size`` so all ranks run the same number of steps."""
    usable = len(items) - len(items) % world_size
    return list(items[rank:usable:world_size])


def by_label(labels: Sequence[int], exclude: Collection[int] = ()) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        if index not in exclude:
            groups[label].append(index)
    return dict(groups)


def category_triplets(
    sketch_labels: Sequence[int],
    photo_labels: Sequence[int],
    *,
    seed: int,
    epoch: int,
    skip_sketches: Collection[int] = (),
    skip_photos: Collection[int] = (),
    order: str = "shuffled",
) -> list[tuple[int, int, int]]:
    """One (sketch, positive, negative) index triple per sketch, in the ``order`` of :data:`CATEGORY_SAMPLERS`.

    Positive: a random photo of the sketch's class. Negative: a random photo of a uniformly drawn
    *different* class (never the anchor's own; the stored official code draws the negative's class from all
    training classes, the anchor's included, 1 time in 104: docs/training.md). Sketches whose class has
    no photo, and the ``skip_*`` indices (files known to be unreadable), are left out.
    """
    rng = epoch_rng(seed, epoch)
    photos = by_label(photo_labels, set(skip_photos))
    classes = sorted(photos)
    if len(classes) < 2:
        raise ValueError("Category triplets need photos of at least two classes.")
    skip = set(skip_sketches)
    anchors = [i for i, label in enumerate(sketch_labels) if i not in skip and label in photos]
    CATEGORY_SAMPLERS[order](anchors, sketch_labels, rng)
    triples = []
    for anchor in anchors:
        label = sketch_labels[anchor]
        positive = rng.choice(photos[label])
        other = rng.randrange(len(classes) - 1)
        other_class = classes[other if classes[other] != label else len(classes) - 1]
        triples.append((anchor, positive, rng.choice(photos[other_class])))
    return triples


def _shuffled(anchors: list[int], _labels: Sequence[int], rng: random.Random) -> None:
    """Ours: a new order every epoch, so every batch mixes classes."""
    rng.shuffle(anchors)


def _class_runs(anchors: list[int], labels: Sequence[int], _rng: random.Random) -> None:
    """The official code's: class after class (label order), each class's sketches in scan order, the same every
    epoch (its DataLoader does not shuffle), so a batch is a run of one or two classes."""
    anchors.sort(key=lambda i: labels[i])  # stable: keeps each class's scan order


# --sampler: how the anchors of an epoch are ordered ("shuffled", ours and the default; "official")
CATEGORY_SAMPLERS: dict[str, Callable[[list[int], Sequence[int], random.Random], None]] = {
    "shuffled": _shuffled,
    "official": _class_runs,
}
