"""P×K batches for the fine-grained task."""

from __future__ import annotations

from collections import Counter

import pytest

from training.pk_sampler import pk_batches

LABELS = ["a"] * 13 + ["b"] * 8 + ["c"] * 9 + ["d"] * 4 + ["e"] * 2


def test_every_category_in_a_batch_has_the_same_count():
    batches = pk_batches(LABELS, 3, 4, seed=0, epoch=0)
    assert batches
    for batch in batches:
        counts = Counter(LABELS[i] for i in batch)
        assert len(counts) == 3 and set(counts.values()) == {4}
        # category-major: each category's K items are contiguous
        assert [LABELS[i] for i in batch] == sorted((LABELS[i] for i in batch), key=[LABELS[i] for i in batch].index)


def test_no_item_repeats_and_small_categories_sit_out():
    batches = pk_batches(LABELS, 2, 4, seed=1, epoch=0)
    used = [i for batch in batches for i in batch]
    assert len(used) == len(set(used))
    assert all(LABELS[i] != "e" for i in used)  # 2 items < K
    assert len(used) == 4 * (3 + 2 + 2 + 1)  # every full chunk is used


def test_batches_are_seeded_by_epoch():
    assert pk_batches(LABELS, 2, 2, seed=3, epoch=5) == pk_batches(LABELS, 2, 2, seed=3, epoch=5)
    assert pk_batches(LABELS, 2, 2, seed=3, epoch=5) != pk_batches(LABELS, 2, 2, seed=3, epoch=6)


def test_ranks_get_disjoint_equal_shares():
    everything = pk_batches(LABELS, 2, 2, seed=0, epoch=0)
    shares = [pk_batches(LABELS, 2, 2, seed=0, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    flat = [tuple(b) for s in shares for b in s]
    assert len(flat) == len(set(flat)) and set(flat) <= {tuple(b) for b in everything}


def test_too_few_categories_is_a_clear_error():
    with pytest.raises(ValueError, match="categories"):
        pk_batches(LABELS, 5, 4, seed=0, epoch=0)


def test_categories_that_never_fill_a_batch_are_named_with_the_reason():
    from training.pk_sampler import unusable_categories

    sketch_labels = [0] * 4 + [1] * 2 + [2] * 5
    photo_labels = [0, 0, 1, 1, 1, 2]  # category 2 has one photo: no hard negative
    assert unusable_categories(sketch_labels, photo_labels, 3) == {
        1: "only 2 of K = 3 pairs", 2: "1 photo, a hard negative needs another"}
