"""Fine-grained retrieval metrics: acc@k — is the sketch's own photo within the top k?

Two galleries (method.md, "Evaluation protocols"): the photos of the sketch's own category
(``within_category``), and every test photo (``all_photos``). Ranks are computed in chunks of
queries, so large query × gallery products never sit in memory at once. Ties never depend on gallery order: the
target's place in its run of equal scores is taken as random (:class:`TargetRanks`), so a collapsed encoder scores
chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .metrics import DEFAULT_MEMORY_BYTES, chunk_rows

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
GALLERIES: tuple[str, ...] = ("within_category", "all_photos")


@dataclass(frozen=True)
class TargetRanks:
    """Where each query's target photo stands: ``ahead`` [Q] photos score strictly higher, ``tied`` [Q] score equal,
    the target itself included (>= 1). A run of equal scores has no order of its own, so the target's place in it is
    taken as random (as :func:`training.metrics.tie_aware` takes category ties), never the gallery's order."""

    ahead: torch.Tensor
    tied: torch.Tensor

    @property
    def expected(self) -> torch.Tensor:
        """1-based rank expected under a random order of each tied run: ahead + (tied - 1) / 2 + 1."""
        return self.ahead + (self.tied - 1) / 2 + 1

    def hit_at(self, k: int) -> torch.Tensor:
        """[Q] chance that the target is within the top k: the share of its tied run's places that fall inside."""
        return (k - self.ahead).clamp(min=0).minimum(self.tied) / self.tied


def target_ranks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    targets: torch.Tensor,
    *,
    query_groups: torch.Tensor | None = None,
    gallery_groups: torch.Tensor | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> TargetRanks:
    """Where each query's target photo ranks when the gallery is sorted by descending score (:class:`TargetRanks`).

    ``queries`` ``[Q, D]`` and ``gallery`` ``[G, D]`` are normalised features (score = dot product);
    ``targets`` ``[Q]`` the gallery index of each query's true photo. With ``query_groups`` /
    ``gallery_groups`` (category ids), only gallery items of the query's own group compete.
    Photos scoring equal to the target are counted apart, so the result does not depend on gallery order. Queries
    are scored in chunks sized to ``memory_bytes`` (:func:`training.metrics.chunk_rows`).
    """
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("give both query_groups and gallery_groups, or neither")
    n_queries = queries.shape[0]
    if targets.shape != (n_queries,):
        raise ValueError(f"expected {n_queries} targets, got shape {tuple(targets.shape)}")
    ahead = torch.empty(n_queries, dtype=torch.long)
    tied = torch.empty(n_queries, dtype=torch.long)
    chunk_size = chunk_rows(gallery.shape[0], memory_bytes)
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        scores = queries[start:stop].float() @ gallery.float().T  # [q, G]
        target = targets[start:stop].to(gallery.device).long()
        target_score = scores.gather(1, target[:, None])
        higher, equal = scores > target_score, scores == target_score  # equal holds the target itself
        if query_groups is not None:
            same_group = query_groups[start:stop].to(gallery.device)[:, None] == gallery_groups.to(gallery.device)[None]
            higher &= same_group
            equal &= same_group
        ahead[start:stop] = higher.sum(dim=1).cpu()
        tied[start:stop] = equal.sum(dim=1).cpu()
    return TargetRanks(ahead, tied)


def accuracy_at_k(ranks: TargetRanks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"acc_1": ..., "acc_5": ...}``: expected share of queries whose target ranks within the top k (a target
    tied with others across the k-th place counts the share of its run inside the top k)."""
    if ranks.ahead.numel() == 0:
        raise ValueError("acc@k needs at least one query")
    return {f"acc_{k}": float(ranks.hit_at(k).double().mean()) for k in ks}


def fine_grained_accuracy(
    sketch_features: torch.Tensor,
    photo_features: torch.Tensor,
    targets: torch.Tensor,
    sketch_groups: torch.Tensor,
    photo_groups: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> dict[str, dict[str, float]]:
    """acc@k for both galleries: ``{"within_category": {...}, "all_photos": {...}}``."""
    within = target_ranks(
        sketch_features,
        photo_features,
        targets,
        query_groups=sketch_groups,
        gallery_groups=photo_groups,
        memory_bytes=memory_bytes,
    )
    everything = target_ranks(sketch_features, photo_features, targets, memory_bytes=memory_bytes)
    return {"within_category": accuracy_at_k(within, ks), "all_photos": accuracy_at_k(everything, ks)}
