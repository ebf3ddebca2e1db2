"""P×K batches: every batch holds P categories with exactly K items each.

The fine-grained relative-separation regulariser (L_δ) compares per-category softmax
distributions, which needs the same number of triplets for every category in a batch.
Batches are drawn afresh each epoch from (seed, epoch); under DDP every rank draws the same
global list and keeps its own share, so ranks never see the same batch and run equal step counts.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence


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
    rng = random.Random(seed * 1_000_003 + epoch)
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
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]
