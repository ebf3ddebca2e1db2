"""Search one version of a segmented index: every approximate (IVF) segment searched with its tombstones
excluded inside FAISS (an ``IDSelectorNot`` over the deleted ids, so it still returns its k best live photos),
the live rows of all exact segments added to the largest IVF segment's in-memory index, or searched as one flat
index when there is none (:class:`SmallRows`), the results merged by score. Ids are the photos' stable ids,
whichever segment holds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from ....api import MAX_PHOTO_ID, PhotoRecord
from ....errors import CountsMismatchError
from ..faiss_index import exact_subset, misses_as_minus_one
from .segment import Segment
from .store import SegmentStore
from .version import Version


def _no_hits(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def merge_top_k(parts: Sequence[tuple[np.ndarray, np.ndarray]], n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, id) pairs per query over the per-segment results (-inf / -1 pad)."""
    if not parts:
        return _no_hits(n, k)
    if len(parts) == 1 and parts[0][0].shape[1] == k:
        return parts[0]
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    if scores.shape[1] < k:
        pad_scores, pad_ids = _no_hits(n, k - scores.shape[1])
        scores, ids = np.hstack([scores, pad_scores]), np.hstack([ids, pad_ids])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    return scores[rows, order], ids[rows, order]


class LiveSegment:
    """A segment and the ids a version deleted from it."""

    def __init__(self, segment: Segment, tombstones: np.ndarray) -> None:
        self.segment = segment
        self.tombstones = tombstones
        self.live = segment.info.size - len(tombstones)
        self._exclusion: faiss.IDSelector | None = None

    def _exclusion_selector(self) -> faiss.IDSelector:
        """A selector of every id but the tombstones (made once; FAISS only reads it, so threads share it; the
        search parameters around it are made per call: see ``FaissIndex._params_with``)."""
        if self._exclusion is None:
            deleted = faiss.IDSelectorBatch(np.ascontiguousarray(self.tombstones, dtype=np.int64))
            selector = faiss.IDSelectorNot(deleted)
            selector.keep_alive = deleted  # selectors hold raw pointers to what they wrap
            self._exclusion = selector
        return self._exclusion

    def live_rows(self) -> np.ndarray:
        ids = self.segment.ids
        return np.flatnonzero(~np.isin(ids, self.tombstones, assume_unique=True)) if len(self.tombstones) else \
            np.arange(len(ids))

    def live_ids(self) -> np.ndarray:
        return self.segment.ids[self.live_rows()] if len(self.tombstones) else self.segment.ids

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Row of each of ``ids`` where this segment holds it live, else -1."""
        rows = self.segment.rows_of(ids)
        if len(self.tombstones):
            rows[np.isin(ids, self.tombstones)] = -1
        return rows

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        index = self.segment.index
        if allowed is not None:
            allowed = allowed[self.segment.rows_of(allowed) >= 0]
            if len(self.tombstones):
                allowed = np.setdiff1d(allowed, self.tombstones, assume_unique=True)
            return index.search(queries, k, allowed) if len(allowed) else _no_hits(len(queries), k)
        if not len(self.tombstones):
            return index.search(queries, k)
        if not index.takes_selectors:  # e.g. PQ: FAISS cannot skip them, so more are asked for and dropped after
            fetch = min(2 * k, index.size)
            while True:
                scores, found = without_ids(*index.search(queries, fetch), self.tombstones, k)
                if fetch >= min(k + len(self.tombstones), index.size) or (found >= 0).all():
                    return scores, found
                fetch = min(4 * fetch, k + len(self.tombstones), index.size)  # deleted ones crowded the top
        return index.search_selected(queries, k, self._exclusion_selector())


def without_ids(scores: np.ndarray, found: np.ndarray, dropped: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` results per row that are not in ``dropped`` (order kept; -inf / -1 pad)."""
    keep = (found >= 0) & ~np.isin(found, dropped)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, order, axis=1)
    scores = np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf).astype(np.float32)
    found = np.where(kept, np.take_along_axis(found, order, axis=1), -1)
    if scores.shape[1] < k:
        pad_scores, pad_ids = _no_hits(len(scores), k - scores.shape[1])
        scores, found = np.hstack([scores, pad_scores]), np.hstack([found, pad_ids])
    return scores, found


ANNEX_ID_BASE = MAX_PHOTO_ID + 1  # small rows' ids inside a host index: above any photo id, so that neither a
#                                   tombstone nor a category filter of the host ever names one


class SmallRows:
    """The live rows of a version's exact segments (the small ones that changes make), searched together.

    When the version has an IVF segment (the host: the largest), these rows are added to the host's in-memory
    index under ids from ``ANNEX_ID_BASE`` up, so that one FAISS call searches both: a query after many small
    changes costs what a query on one segment does (a second call, even over a few thousand rows, cost as much as
    the host's own search at small ``nprobe``). They are assigned by the host's trained quantizer and probed with
    its ``nprobe``; their own copy here answers category filters exactly. Without a host they are one flat
    (exact) index."""

    def __init__(self, segments: Sequence[LiveSegment], dim: int, host: LiveSegment | None) -> None:
        ids = np.concatenate([s.live_ids() for s in segments])
        vectors = np.concatenate([np.asarray(s.segment.vectors[s.live_rows()], dtype=np.float32) for s in segments])
        order = np.argsort(ids, kind="stable")
        self.ids = np.ascontiguousarray(ids[order])
        vectors = np.ascontiguousarray(vectors[order])
        self.host = host if host is not None and host.segment.index.can_add_foreign else None
        if self.host is not None:
            self.host.segment.index.add_foreign(vectors, ANNEX_ID_BASE + np.arange(len(self.ids), dtype=np.int64))
            self.vectors, self.index = vectors, None
        else:
            self.vectors, self.index = None, faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            self.index.add_with_ids(vectors, self.ids)

    def photo_ids(self, found: np.ndarray) -> np.ndarray:
        """``found`` (a host's results) with the small rows' ids inside the host mapped back to photo ids."""
        annex = found >= ANNEX_ID_BASE
        if annex.any():
            found = found.copy()
            found[annex] = self.ids[found[annex] - ANNEX_ID_BASE]
        return found

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over these rows (restricted to ``allowed`` when given); a hosted set is searched through
        its host, except under a filter."""
        if self.vectors is not None:
            if allowed is None:
                raise RuntimeError("Rows added to a host index are searched through the host.")
            return exact_subset(queries, k, self.ids, self.vectors, allowed)
        params = None
        if allowed is not None:
            rows = np.searchsorted(self.ids, allowed)
            inside = rows < len(self.ids)
            inside[inside] = self.ids[rows[inside]] == allowed[inside]
            if not inside.any():
                return _no_hits(len(queries), k)
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed[inside]))
            params = faiss.SearchParameters(sel=selector)
            params.keep_alive = selector  # the params object only holds a raw pointer
        scores, found = self.index.search(queries, k, params=params)
        return misses_as_minus_one(scores, found)


def open_live_segments(store: SegmentStore, version: Version, device: str = "cpu") -> list[LiveSegment]:
    """``version``'s segments, opened (their FAISS indexes are read on first search) and checked against the
    version's counts; all closed again when one fails."""
    segments: list[LiveSegment] = []
    try:
        for ref in version.segments:
            segments.append(LiveSegment(store.open_segment(ref, device), ref.tombstones))
            info = segments[-1].segment.info
            if (info.size, info.dim) != (ref.size, version.dim):
                raise CountsMismatchError(f"Segment {ref.name} holds {info.size} x {info.dim}; version "
                                          f"{version.name} lists {ref.size} x {version.dim}.")
    except BaseException:
        for segment in segments:
            segment.segment.close()
        raise
    return segments


class SegmentedView:
    """A read-only view of one version: search, records, vectors (thread-safe; bound to the version)."""

    def __init__(self, store: SegmentStore, version: Version, *, device: str = "cpu") -> None:
        self.version = version
        self.dim = version.dim
        self.segments = open_live_segments(store, version, device)
        try:
            self._set_up_search()
        except BaseException:  # an unreadable index file: the open segments' files are not left to the collector
            self.close()
            raise

    def _set_up_search(self) -> None:
        self.size = sum(s.live for s in self.segments)
        exact = [s for s in self.segments if s.segment.exact and s.live]
        self._approximate = [s for s in self.segments if not s.segment.exact and s.live]
        host = max(self._approximate, key=lambda s: s.live, default=None)
        self._small = SmallRows(exact, self.dim, host) if exact else None

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product over the live photos of every segment; ``allowed_ids`` (sorted) restricts
        the results to those ids exactly."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        small = self._small
        hosted = small is not None and small.host is not None and allowed_ids is None
        parts = []
        for segment in self._approximate:
            scores, found = segment.search(queries, k, allowed_ids)
            parts.append((scores, small.photo_ids(found)) if hosted and segment is small.host else (scores, found))
        if small is not None and not hosted:
            parts.append(small.search(queries, k, allowed_ids))
        return merge_top_k(parts, len(queries), k)

    def ids(self) -> np.ndarray:
        """Every live id, sorted (an id live in two segments appears twice: ``verify`` reports it)."""
        parts = [s.live_ids() for s in self.segments]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def _locate(self, ids: np.ndarray) -> list[tuple[LiveSegment, np.ndarray, np.ndarray]]:
        """For each segment holding some of ``ids`` live: (segment, positions in ``ids``, rows in the segment)."""
        found = []
        for segment in self.segments:
            rows = segment.holds(ids)
            where = np.flatnonzero(rows >= 0)
            if len(where):
                found.append((segment, where, rows[where]))
        return found

    def records(self, ids: Sequence[int] | np.ndarray) -> list[PhotoRecord | None]:
        """Metadata for ``ids`` in order (None for -1 and ids no segment holds live)."""
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        result: list[PhotoRecord | None] = [None] * len(wanted)
        for segment, where, _ in self._locate(wanted):
            for position, record in zip(where, segment.segment.metadata.get_many(wanted[where].tolist()),
                                        strict=True):
                result[position] = record
        return result

    def vector(self, photo_id: int) -> np.ndarray | None:
        for segment, _, rows in self._locate(np.array([photo_id], dtype=np.int64)):
            return np.array(segment.segment.vectors[rows[0]], dtype=np.float32)
        return None

    def ids_of_category(self, category: str) -> np.ndarray:
        parts = []
        for segment in self.segments:
            ids = np.array(segment.segment.metadata.ids_of_category(category), dtype=np.int64)
            parts.append(ids[segment.holds(ids) >= 0])
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def categories(self) -> list[str]:
        return sorted({c for s in self.segments for c in s.segment.metadata.categories()})

    def close(self) -> None:
        for segment in self.segments:
            segment.segment.close()
        self.segments, self._approximate, self._small = [], [], None

    def __enter__(self) -> SegmentedView:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
