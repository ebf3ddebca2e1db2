"""``tune`` on a segmented index: each approximate segment's search parameter (IVF ``nprobe``, HNSW ``efSearch``)
recalibrated on real query vectors, recorded in a new version; the segments themselves are never rewritten.

The query sample is kept with the version (``calibration_queries``), so segments written by later builds and
merges are calibrated on it too (:func:`tune_version` with ``only``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import numpy as np

from ....arrays import load_array
from ....format import VECTORS, new_version_name, utc_now
from ..faiss_index import EXACT_FACTORIES, FaissEngine
from .store import QUERY_SAMPLE, SegmentStore
from .version import Version


def tune_version(store: SegmentStore, version: Version, queries: np.ndarray, *, recall_target: float = 0.95,
                 only: Collection[str] | None = None) -> tuple[Version, list[dict]]:
    """``version`` with its approximate segments (those in ``only``, when given) calibrated on ``queries`` to
    ``recall_target`` recall@10, and one row per tuned segment (before, after, calibration). The returned version
    is ``version`` itself when no segment has a search parameter (all exact)."""
    engine, refs, rows = FaissEngine(), [], []
    for ref in version.segments:
        info = store.segment_info(ref.name)
        if (only is not None and ref.name not in only) or info.index.get("factory") in EXACT_FACTORIES:
            refs.append(ref)
            continue
        folder = store.segment_dir(ref.name)
        section = {**info.index, "search_params": {**info.search_params, **ref.search_params}}
        vectors = load_array(folder / VECTORS, mmap=True)
        tuned = engine.tune(folder, section, vectors, store.segment_ids(ref.name), queries,
                            recall_target=recall_target)
        del vectors
        if "calibration" in tuned:
            rows.append({"segment": ref.name, "size": ref.size, "factory": info.index.get("factory"),
                         "before": section["search_params"], "after": tuned["search_params"],
                         "calibration": tuned["calibration"]})
        refs.append(replace(ref, search_params=dict(tuned.get("search_params", {}))))
    if not rows:
        return version, rows
    fields = {**version.fields, QUERY_SAMPLE: store.save_queries(queries),
              "tuned": {"at": utc_now(), "queries": len(queries), "recall_target": recall_target,
                        "segments": len(rows)}}
    return replace(version, name=new_version_name(), created_at=utc_now(), previous=version.name,
                   segments=tuple(refs), fields=fields), rows
