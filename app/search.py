"""The batch step of a search, run in the encoder's worker thread: encode sketches, search, fetch metadata.

It is the `process` function of the micro-batcher: one encoder call for the whole batch, then one
index search per distinct category filter, all on one leased index version.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from encoder import PromptedCLIP
from index_builder import PhotoRecord

from .index_holder import IndexHolder
from .query_sample import QuerySample


@dataclass
class Query:
    tensor: torch.Tensor  # [3, S, S], already normalised
    k: int
    category: str | None


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


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class SearchEngine:
    """Encoder + served index; `run_batch` is called from one worker thread at a time."""

    def __init__(self, encoder: PromptedCLIP, index: IndexHolder, sample: QuerySample | None = None) -> None:
        self.encoder = encoder
        self.index = index
        self.sample = sample  # opt-in (SBIR_QUERY_SAMPLE): query vectors kept for `index_builder tune`

    def embed(self, tensors: list[torch.Tensor]) -> np.ndarray:
        batch = torch.stack(tensors).to(self.encoder.device)
        return self.encoder.encode_sketch(batch).float().cpu().numpy()

    def run_batch(self, queries: list[Query]) -> list[QueryResult]:
        started = time.perf_counter()
        vectors = self.embed([q.tensor for q in queries])
        encode_ms = _ms(started)
        if self.sample is not None:
            self.sample.add(vectors)
        with self.index.lease() as reader:
            started = time.perf_counter()
            groups: dict[str | None, list[int]] = defaultdict(list)
            for position, query in enumerate(queries):
                groups[query.category].append(position)
            hits: list[list[tuple[int, float]]] = [[] for _ in queries]
            for category, positions in groups.items():
                k = max(queries[p].k for p in positions)
                scores, ids = reader.search(np.ascontiguousarray(vectors[positions]), k, category=category)
                for row, position in enumerate(positions):
                    hits[position] = [
                        (int(i), float(s)) for s, i in zip(scores[row], ids[row], strict=True) if i >= 0
                    ][: queries[position].k]
            search_ms = _ms(started) / len(queries)  # one call served them all: share the cost
            results = []
            for query_hits in hits:
                started = time.perf_counter()
                records = reader.records([i for i, _ in query_hits])
                matches = [Match(i, s, r) for (i, s), r in zip(query_hits, records, strict=True) if r is not None]
                results.append(QueryResult(matches, reader.version, {
                    "encode": encode_ms, "search": search_ms, "metadata": _ms(started)}))
        return results
