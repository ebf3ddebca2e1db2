"""P×K batches of fine-grained triplets: every batch holds P categories with exactly K pairs each.

The fine-grained relative-separation regulariser (L_δ) compares per-category softmax
distributions, which needs the same number of triplets for every category in a batch.
Batches are drawn afresh each epoch from (seed, epoch) (:func:`training.samplers.epoch_rng`);
under DDP every rank draws the same global list and keeps its own share
(:func:`training.samplers.shard`), so ranks never share a batch and run equal step counts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Sequence

from .samplers import by_label, epoch_rng, shard


def pk_batches(
    labels: Sequence[Hashable],
    categories_per_batch: int,
    items_per_category: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """Index lists of P distinct categories × K items each, category-major, for one epoch.

    Every category's items are shuffled and cut into chunks of K (a remainder smaller than K sits
    out this epoch; categories with fewer than K items never take part). Batches take one chunk
    from each of P different categories, always from the categories with most chunks left, so an
    epoch uses nearly every chunk. Raises ``ValueError`` when fewer than P categories qualify.
    """
    p, k = categories_per_batch, items_per_category
    if p < 1 or k < 1:
        raise ValueError("P (categories per batch) and K (items per category) must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label].append(index)
    rng = epoch_rng(seed, epoch)
    chunks: dict[Hashable, list[list[int]]] = {}
    for label in sorted(groups, key=str):
        items = groups[label]
        if len(items) >= k:
            rng.shuffle(items)
            chunks[label] = [items[i : i + k] for i in range(0, len(items) - k + 1, k)]
    if len(chunks) < p:
        raise ValueError(
            f"a P×K batch needs {p} categories with at least {k} items each; only {len(chunks)} have that many"
        )
    batches = []
    while True:
        available = [label for label, rest in chunks.items() if rest]
        if len(available) < p:
            break
        rng.shuffle(available)  # random tie-break among equally full categories
        available.sort(key=lambda label: len(chunks[label]), reverse=True)
        chosen = available[:p]
        rng.shuffle(chosen)
        batches.append([index for label in chosen for index in chunks[label].pop()])
    rng.shuffle(batches)
    return shard(batches, rank, world_size)


def hard_triplet_batches(
    sketch_labels: Sequence[int],
    partners: Sequence[int],
    photo_labels: Sequence[int],
    categories_per_batch: int,
    pairs_per_category: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    skip_sketches: Collection[int] = (),
    skip_photos: Collection[int] = (),
) -> list[list[tuple[int, int, int]]]:
    """P×K batches of (sketch, its photo, hard negative) index triples.

    The hard negative is another photo of the sketch's own category (method.md, "Hard triplet").
    Sketches in ``skip_sketches``, sketches whose own photo is in ``skip_photos`` (files known to be
    unreadable) and categories with fewer than two usable photos take no part.
    """
    photos = by_label(photo_labels, set(skip_photos))
    skip = set(skip_sketches)
    usable = [
        i
        for i, label in enumerate(sketch_labels)
        if i not in skip and partners[i] not in skip_photos and len(photos.get(label, ())) >= 2
    ]
    labels = [sketch_labels[i] for i in usable]
    batches = pk_batches(
        labels, categories_per_batch, pairs_per_category, seed=seed, epoch=epoch, rank=rank, world_size=world_size
    )
    rng = epoch_rng(seed + 1, epoch)  # negatives: a stream of their own, independent of the grouping
    triplets = []
    for batch in batches:
        triples = []
        for position in batch:
            sketch = usable[position]
            own = partners[sketch]
            others = photos[sketch_labels[sketch]]
            negative = own
            while negative == own:
                negative = rng.choice(others)
            triples.append((sketch, own, negative))
        triplets.append(triples)
    return triplets


def unusable_categories(sketch_labels: Sequence[int], photo_labels: Sequence[int],
                        pairs_per_category: int) -> dict[int, str]:
    """{label: why} of the categories :func:`hard_triplet_batches` never draws, whatever the epoch: fewer than two
    photos (no hard negative) or fewer than K pairs (no chunk of K). Said at the start, so a run that quietly
    trains on fewer classes than it names is not mistaken for one that trains on all of them."""
    n_photos, n_pairs = Counter(photo_labels), Counter(sketch_labels)
    why = {}
    for label in sorted(n_pairs):
        if n_photos[label] < 2:
            why[label] = f"{n_photos[label]} photo, a hard negative needs another"
        elif n_pairs[label] < pairs_per_category:
            why[label] = f"only {n_pairs[label]} of K = {pairs_per_category} pairs"
    return why
