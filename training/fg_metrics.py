"""Fine-grained retrieval metrics: acc@k — is the sketch's own photo within the top k?

Two galleries (method.md, "Evaluation protocols"): the photos of the sketch's own category
(``within_category``), and every test photo (``all_photos``). Ranks are computed in chunks of
queries, so large query × gallery products never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .metrics import DEFAULT_MEMORY_BYTES, chunk_rows

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
GALLERIES: tuple[str, ...] = ("within_category", "all_photos")


def target_ranks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    targets: torch.Tensor,
    *,
    query_groups: torch.Tensor | None = None,
    gallery_groups: torch.Tensor | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> torch.Tensor:
    """1-based rank of each query's target photo when the gallery is sorted by descending score.

    ``queries`` ``[Q, D]`` and ``gallery`` ``[G, D]`` are normalised features (score = dot product);
    ``targets`` ``[Q]`` the gallery index of each query's true photo. With ``query_groups`` /
    ``gallery_groups`` (category ids), only gallery items of the query's own group compete.
    Ties are broken by gallery order (as a stable sort would), so ranks are deterministic. Queries
    are scored in chunks sized to ``memory_bytes`` (:func:`training.metrics.chunk_rows`).
    """
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("give both query_groups and gallery_groups, or neither")
    n_queries = queries.shape[0]
    if targets.shape != (n_queries,):
        raise ValueError(f"expected {n_queries} targets, got shape {tuple(targets.shape)}")
    gallery_index = torch.arange(gallery.shape[0], device=gallery.device)
    ranks = torch.empty(n_queries, dtype=torch.long)
    chunk_size = chunk_rows(gallery.shape[0], memory_bytes)
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        scores = queries[start:stop].float() @ gallery.float().T  # [q, G]
        target = targets[start:stop].to(gallery.device).long()
        target_score = scores.gather(1, target[:, None])
        ahead = (scores > target_score) | ((scores == target_score) & (gallery_index[None] < target[:, None]))
        if query_groups is not None:
            same_group = query_groups[start:stop].to(gallery.device)[:, None] == gallery_groups.to(gallery.device)[None]
            ahead &= same_group
        ranks[start:stop] = ahead.sum(dim=1).cpu() + 1
    return ranks


def accuracy_at_k(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"acc_1": ..., "acc_5": ...}``: fraction of queries whose target ranks within the top k."""
    if ranks.numel() == 0:
        raise ValueError("acc@k needs at least one query")
    return {f"acc_{k}": float((ranks <= k).float().mean()) for k in ks}


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
