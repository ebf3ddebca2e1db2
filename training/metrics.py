"""Retrieval metrics (definitions in docs/training.md, exactly as method.md):

* AP@k = (1 / min(k, R)) · Σ_{i ≤ k} P(i) · rel(i), non-interpolated; R = relevant items in the
  whole gallery, P(i) = precision of the top i. With k = all this is sklearn's
  ``average_precision_score`` of the query's scores. (method.md's definition; ``map_200``.)
* AP@k ÷ k = (1 / k) · Σ_{i ≤ k} P(i) · rel(i): the same sum over k whatever R (``map_200_div_k``). Equal to the
  above only when R ≥ k; a class with R < k caps it at R / k (Sketchy-21's ``skyscraper``: 161 / 200).
* VOC-interpolated AP@k = (1 / min(k, R)) · Σ_{i ≤ k} rel(i) · max_{i ≤ j ≤ k} P(j): the area under
  the precision envelope (SAKE's ``VOCap``, ZSE-SBIR's ``voc_eval``; ``map_200_voc``, ``map_all_voc``).
* in-top-k AP@k = Σ_{i ≤ k} P(i) · rel(i) / (relevant among the top k), 0 when none is
  (SEM-PCYC's ``apsak``, torchmetrics ``RetrievalMAP(top_k=k)``; ``map_200_in_topk``). With k = all it
  is AP@all, so there is no ``map_all_in_topk``.
* P@k = (relevant among the top k) / k.
* mAP = mean over queries that have at least one relevant gallery item.

The gallery is ranked by cosine similarity in query chunks sized to a memory budget, so 12k
sketches × 60k photos never needs the full similarity matrix at once.

Tied scores (:func:`tie_aware`) never depend on gallery order: as sklearn does, a run of equal scores is one
threshold, every item of it taking the precision at its end, and each place in the run holds the run's share of hits
(the expected relevance under a random order of the run). Without ties this is the plain ranking; AP@all is sklearn's
``average_precision_score`` either way, P@k the expected value over tie orders, and a run cut by k counts the share of
its hits that falls inside the top k, at the run's precision. A collapsed model (every score equal) scores chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_MEMORY_BYTES = 512 * 2**20
# peak per similarity cell: scores, order, gathered labels, float64 hits/precision sums, and with tied scores
# tie_aware's run-end and run-start hits and ranks
_BYTES_PER_CELL = 80


@dataclass
class RetrievalResult:
    """Per-query scores of one ranking run; ``top`` holds the best gallery indices per query."""

    n_relevant: np.ndarray  # [Q] relevant items in the gallery
    ap_all: np.ndarray  # [Q] (nan where n_relevant == 0)
    ap_at: dict[int, np.ndarray] = field(default_factory=dict)  # k -> [Q], ÷ min(k, R)
    ap_all_voc: np.ndarray | None = None  # [Q] VOC-interpolated AP over the whole ranking
    ap_at_voc: dict[int, np.ndarray] = field(default_factory=dict)  # k -> [Q], VOC-interpolated
    ap_at_in_topk: dict[int, np.ndarray] = field(default_factory=dict)  # k -> [Q], / relevant in the top k
    precision_at: dict[int, np.ndarray] = field(default_factory=dict)  # k -> [Q]
    ap_at_div_k: dict[int, np.ndarray] = field(default_factory=dict)  # k -> [Q], ÷ k
    top: np.ndarray | None = None  # [Q, keep_top] gallery indices, best first
    top_scores: np.ndarray | None = None  # [Q, keep_top]
    n_gallery: int = 0

    @property
    def valid(self) -> np.ndarray:
        return self.n_relevant > 0

    def summary(self) -> dict[str, float | int]:
        """``map_all``, ``map_<k>``, ``p_<k>``, ``n_queries``, ``n_gallery`` (+ queries without any match)."""
        valid = self.valid
        out: dict[str, float | int] = {"map_all": _mean(self.ap_all[valid])}
        if self.ap_all_voc is not None:
            out["map_all_voc"] = _mean(self.ap_all_voc[valid])
        out |= {f"map_{k}": _mean(v[valid]) for k, v in sorted(self.ap_at.items())}
        out |= {f"map_{k}_div_k": _mean(v[valid]) for k, v in sorted(self.ap_at_div_k.items())}
        out |= {f"map_{k}_voc": _mean(v[valid]) for k, v in sorted(self.ap_at_voc.items())}
        out |= {f"map_{k}_in_topk": _mean(v[valid]) for k, v in sorted(self.ap_at_in_topk.items())}
        out |= {f"p_{k}": _mean(v[valid]) for k, v in sorted(self.precision_at.items())}
        out |= {"n_queries": int(valid.sum()), "n_gallery": int(self.n_gallery),
                "n_queries_without_relevant": int((~valid).sum())}
        return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def interpolated_precision_sum(precision: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """Σ_i rel(i) · max_{j >= i} P(j) per row: the VOC-interpolated precision summed over the hits."""
    if precision.device.type == "cpu":  # numpy's running max needs no index tensor and no flipped copies: 3x faster
        envelope = np.maximum.accumulate(precision.numpy()[:, ::-1], axis=1)  # reversed order
        return torch.from_numpy(np.einsum("ij,ij->i", envelope, rel.numpy()[:, ::-1]))
    return _interpolated_precision_sum_torch(precision, rel)


def _interpolated_precision_sum_torch(precision: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """The same on any device (CUDA)."""
    envelope = torch.flip(torch.cummax(torch.flip(precision, dims=[1]), dim=1).values, dims=[1])
    return (envelope * rel).sum(dim=1)


def _reverse_cummin(values: torch.Tensor) -> torch.Tensor:
    """min over j >= i per row."""
    if values.device.type == "cpu":  # numpy's running min over a reversed view: no flipped copies, no indices (3x)
        return torch.from_numpy(np.ascontiguousarray(np.minimum.accumulate(values.numpy()[:, ::-1], axis=1)[:, ::-1]))
    return torch.flip(torch.cummin(torch.flip(values, dims=[1]), dim=1).values, dims=[1])


def tie_aware(rel: torch.Tensor, run_ends: torch.Tensor, ranks: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(relevance, hits, precision) per ranked place, each run of tied scores taken as one threshold.

    ``rel`` [Q, G]: 1 for a relevant item in ranked order; ``run_ends`` [Q, G] (bool): the place is the last of its
    run of equal scores; ``ranks``: 1..G. Inside a run the relevance is the run's share of hits, hits their running
    sum, and the precision that of the run's end (sklearn's precision at each distinct threshold). Without ties it
    is (rel, cumulative hits, hits / rank): the ranking as sorted."""
    hits = rel.cumsum(dim=1)
    if bool(run_ends.all()):  # real-valued features practically never tie: no extra work
        return rel, hits, hits / ranks
    inf = torch.tensor(float("inf"), dtype=rel.dtype, device=rel.device)
    run_starts = torch.ones_like(run_ends)
    run_starts[:, 1:] = run_ends[:, :-1]
    # hits are non-decreasing, so the nearest run end after a place is the smallest end value after it (and the
    # nearest start before it the largest start value before it)
    end_hits = _reverse_cummin(torch.where(run_ends, hits, inf))
    end_rank = _reverse_cummin(torch.where(run_ends, ranks.expand_as(hits), inf))
    hits_before = torch.where(run_starts, hits - rel, -inf).cummax(dim=1).values
    rank_before = torch.where(run_starts, ranks - 1, -inf).cummax(dim=1).values
    share = (end_hits - hits_before) / (end_rank - rank_before)
    return share, share.cumsum(dim=1), end_hits / end_rank


def chunk_rows(n_gallery: int, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> int:
    """How many queries to rank at once so one chunk's working set stays under ``memory_bytes``."""
    return max(1, int(memory_bytes // max(1, n_gallery * _BYTES_PER_CELL)))


def rank_gallery(
    queries: torch.Tensor,
    query_labels: Sequence[int] | torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: Sequence[int] | torch.Tensor,
    *,
    ap_ks: Sequence[int] = (200,),
    precision_ks: Sequence[int] = (100, 200),
    keep_top: int = 0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    device: str | torch.device | None = None,
) -> RetrievalResult:
    """Rank ``gallery`` [G, D] for every query [Q, D] by dot product (cosine for normalised features)
    and score it: relevant = same label. Runs on ``device`` (default: the queries' device)."""
    device = torch.device(device) if device is not None else queries.device
    gallery = gallery.to(device, torch.float32)
    g_labels = torch.as_tensor(gallery_labels, device=device)
    q_labels_all = torch.as_tensor(query_labels)
    n_q, n_g = queries.shape[0], gallery.shape[0]
    if n_g == 0:
        raise ValueError("The gallery is empty.")
    keep_top = min(keep_top, n_g)
    ranks = torch.arange(1, n_g + 1, device=device, dtype=torch.float64)
    n_relevant = np.zeros(n_q, dtype=np.int64)
    ap_all = np.zeros(n_q)
    ap_at = {k: np.zeros(n_q) for k in ap_ks}
    ap_all_voc = np.zeros(n_q)
    ap_at_voc = {k: np.zeros(n_q) for k in ap_ks}
    ap_at_in_topk = {k: np.zeros(n_q) for k in ap_ks}
    ap_at_div_k = {k: np.zeros(n_q) for k in ap_ks}
    precision_at = {k: np.zeros(n_q) for k in precision_ks}
    top = np.zeros((n_q, keep_top), dtype=np.int64)
    top_scores = np.zeros((n_q, keep_top), dtype=np.float32)
    step = chunk_rows(n_g, memory_bytes)
    for start in range(0, n_q, step):
        stop = min(start + step, n_q)
        sims = queries[start:stop].to(device, torch.float32) @ gallery.t()
        scores, order = torch.sort(sims, dim=1, descending=True, stable=True)
        del sims
        if keep_top:
            top[start:stop] = order[:, :keep_top].cpu().numpy()
            top_scores[start:stop] = scores[:, :keep_top].float().cpu().numpy()
        run_ends = torch.ones_like(scores, dtype=torch.bool)
        run_ends[:, :-1] = scores[:, :-1] != scores[:, 1:]
        del scores
        labels = q_labels_all[start:stop].to(device)
        rel = (g_labels[order] == labels[:, None]).to(torch.float64)
        del order
        total = rel.sum(dim=1)  # exact: the tie-aware running hits are fractions
        rel, hits, precision = tie_aware(rel, run_ends, ranks)
        del run_ends
        weighted = (precision * rel).cumsum(dim=1)
        safe_total = total.clamp(min=1)
        n_relevant[start:stop] = total.long().cpu().numpy()
        ap_all[start:stop] = (weighted[:, -1] / safe_total).cpu().numpy()
        for k in ap_ks:
            kk = min(k, n_g)
            ap_at[k][start:stop] = (weighted[:, kk - 1] / total.clamp(max=k).clamp(min=1)).cpu().numpy()
            ap_at_div_k[k][start:stop] = (weighted[:, kk - 1] / k).cpu().numpy()
            # no hit in the top k scores 0, as apsak and torchmetrics do (hits may be a fraction under ties)
            in_top = hits[:, kk - 1]
            ap_at_in_topk[k][start:stop] = torch.where(in_top > 0, weighted[:, kk - 1] / in_top.clamp(min=1e-300),
                                                       0.0).cpu().numpy()
            # the list is cut at k before interpolating
            voc = interpolated_precision_sum(precision[:, :kk], rel[:, :kk]) / total.clamp(max=k).clamp(min=1)
            ap_at_voc[k][start:stop] = voc.cpu().numpy()
        for k in precision_ks:
            precision_at[k][start:stop] = (hits[:, min(k, n_g) - 1] / k).cpu().numpy()
        del weighted, hits  # free before the full-length envelope: the peak stays within _BYTES_PER_CELL
        ap_all_voc[start:stop] = (interpolated_precision_sum(precision, rel) / safe_total).cpu().numpy()
        del rel, precision
    no_match = n_relevant == 0
    for values in (ap_all, ap_all_voc, *ap_at.values(), *ap_at_voc.values(), *ap_at_in_topk.values(),
                   *ap_at_div_k.values()):
        values[no_match] = np.nan
    return RetrievalResult(n_relevant, ap_all, ap_at, ap_all_voc, ap_at_voc, ap_at_in_topk, precision_at,
                           ap_at_div_k, top if keep_top else None, top_scores if keep_top else None, n_g)


def per_class_ap(result: RetrievalResult, query_labels: Sequence[int], class_names: Sequence[str]) -> list[dict]:
    """Mean AP@all (and AP@k, P@k) per query class, for the per-class CSV."""
    labels = np.asarray(query_labels)
    rows = []
    for label, name in enumerate(class_names):
        mask = (labels == label) & result.valid
        if not mask.any():
            continue
        row = {"class": name, "n_queries": int(mask.sum()), "n_relevant": int(result.n_relevant[mask][0]),
               "ap_all": float(result.ap_all[mask].mean())}
        if result.ap_all_voc is not None:
            row["ap_all_voc"] = float(result.ap_all_voc[mask].mean())
        row |= {f"ap_{k}": float(v[mask].mean()) for k, v in sorted(result.ap_at.items())}
        row |= {f"ap_{k}_div_k": float(v[mask].mean()) for k, v in sorted(result.ap_at_div_k.items())}
        row |= {f"ap_{k}_voc": float(v[mask].mean()) for k, v in sorted(result.ap_at_voc.items())}
        row |= {f"ap_{k}_in_topk": float(v[mask].mean()) for k, v in sorted(result.ap_at_in_topk.items())}
        row |= {f"p_{k}": float(v[mask].mean()) for k, v in sorted(result.precision_at.items())}
        rows.append(row)
    return rows
