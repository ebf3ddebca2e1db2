"""The batch step of a search, run in the encoder's worker thread: encode the queries, search, fetch metadata.

It is the `process` function of the micro-batcher: one encoder call per modality (sketches, photos)
and one text-tower call for the whole batch, then one index search per distinct category filter, all
on one leased index version. Paging asks the index for ``offset + k + 1`` hits, orders them by score then id
(ties never swap between pages) and keeps ``[offset, offset + k)``; the one extra hit says whether more exist.
A composed query is the normalised weighted sum of its picture (or
stored photo) vector and its text vector.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from encoder import MODALITIES, PromptedCLIP
from encoder.model import Modality
from photo_index import PhotoRecord

from .index_holder import IndexHolder
from .query_fields import DEFAULT_TEXT_WEIGHT
from .query_sample import QuerySample


@dataclass
class Query:
    """One search: a picture tensor (sketch or photo), text, a stored photo vector, or a picture/vector with text."""

    k: int
    category: str | None
    tensor: torch.Tensor | None = None  # [3, S, S], already normalised
    modality: Modality = "sketch"
    text: str | None = None
    vector: np.ndarray | None = None  # a stored photo vector (`like`)
    text_weight: float = DEFAULT_TEXT_WEIGHT
    exclude: int | None = None  # a photo not to return (the liked one itself)
    offset: int = 0  # hits skipped before the first returned (paging)

    @property
    def depth(self) -> int:
        """Hits to ask the index for: the page, the hits before it, one more (is there a next page?) and the
        excluded photo."""
        return self.offset + self.k + 1 + (self.exclude is not None)


@dataclass
class Match:
    id: int
    score: float
    record: PhotoRecord


@dataclass
class QueryResult:
    matches: list[Match]
    index_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    has_more: bool = False  # the index holds more hits after this page
    gallery_root: str | None = None  # the folder the served version was built from


def compose(base: np.ndarray | None, text: np.ndarray | None, text_weight: float) -> np.ndarray:
    """The query vector: the picture's (or stored photo's), the text's, or their normalised weighted sum."""
    if base is None or text is None:
        vector = base if text is None else text
        assert vector is not None, "a query has a picture, a stored vector or text"
        return np.asarray(vector, dtype=np.float32)
    mixed = (1.0 - text_weight) * base + text_weight * text
    norm = float(np.linalg.norm(mixed))
    # Opposite vectors at equal weight cancel out; any direction is then as good as another: keep the picture's.
    return (mixed / norm if norm > 1e-6 else base).astype(np.float32)


def page(query: Query, scores: np.ndarray, ids: np.ndarray) -> tuple[list[tuple[int, float]], bool]:
    """The query's page of one row of index hits, best first (score, then id), and whether hits follow it."""
    hits = sorted(((int(i), float(s)) for s, i in zip(scores, ids, strict=True) if i >= 0 and i != query.exclude),
                  key=lambda hit: (-hit[1], hit[0]))
    end = query.offset + query.k
    return hits[query.offset:end], len(hits) > end


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class SearchEngine:
    """Encoder + served index; `run_batch` is called from one worker thread at a time."""

    def __init__(self, encoder: PromptedCLIP, index: IndexHolder, sample: QuerySample | None = None) -> None:
        self.encoder = encoder
        self.index = index
        self.sample = sample  # opt-in (SBIR_QUERY_SAMPLE): query vectors kept for `index_builder tune`

    def embed(self, tensors: list[torch.Tensor], modality: Modality = "sketch") -> np.ndarray:
        batch = torch.stack(tensors).to(self.encoder.device)
        return self.encoder.encode(batch, modality).float().cpu().numpy()

    def query_vectors(self, queries: list[Query]) -> np.ndarray:
        """One vector per query: at most one encoder call per modality and one text-tower call for the batch."""
        base: list[np.ndarray | None] = [q.vector for q in queries]
        for modality in MODALITIES:
            positions = [p for p, q in enumerate(queries) if q.tensor is not None and q.modality == modality]
            if positions:
                for p, vector in zip(positions, self.embed([queries[p].tensor for p in positions], modality),
                                     strict=True):
                    base[p] = vector
        texts = [p for p, q in enumerate(queries) if q.text is not None]
        text_vectors = dict(zip(texts, self.encoder.encode_text([queries[p].text for p in texts]).cpu().numpy(),
                                strict=True)) if texts else {}
        return np.stack([compose(base[p], text_vectors.get(p), q.text_weight) for p, q in enumerate(queries)])

    def run_batch(self, queries: list[Query]) -> list[QueryResult]:
        started = time.perf_counter()
        vectors = self.query_vectors(queries)
        encode_ms = _ms(started)
        if self.sample is not None:
            self.sample.add(vectors)
        with self.index.lease() as reader:
            started = time.perf_counter()
            # One search per category and depth: HNSW (FAISS or Milvus) searches deeper for a larger k, so a request
            # searched beside a deeper one (a later page) could get other results than alone.
            groups: dict[tuple[str | None, int], list[int]] = defaultdict(list)
            for position, query in enumerate(queries):
                groups[query.category, query.depth].append(position)
            hits: list[list[tuple[int, float]]] = [[] for _ in queries]
            more = [False] * len(queries)
            for (category, k), positions in groups.items():
                scores, ids = reader.search(np.ascontiguousarray(vectors[positions]), k, category=category)
                for row, position in enumerate(positions):
                    hits[position], more[position] = page(queries[position], scores[row], ids[row])
            search_ms = _ms(started) / len(queries)  # one call served them all: share the cost
            results = []
            for query_hits, has_more in zip(hits, more, strict=True):
                started = time.perf_counter()
                records = reader.records([i for i, _ in query_hits])
                matches = [Match(i, s, r) for (i, s), r in zip(query_hits, records, strict=True) if r is not None]
                results.append(QueryResult(matches, reader.version, {
                    "encode": encode_ms, "search": search_ms, "metadata": _ms(started)}, has_more, reader.gallery_root))
        return results
