"""``tune`` for Milvus: recalibrate the live collection's search parameter on real query vectors.

The knob depends on the index type: ``nprobe`` for the IVF types, ``ef`` for HNSW and for AUTOINDEX (on the
Milvus 2.3 standalone of the ``milvus`` extra AUTOINDEX is an HNSW index: ``ef`` changes its recall and ``ef < k``
is refused, while the ``level`` parameter of Milvus 2.4+ is ignored, measured in docs/index_builder.md). Each
tried value is searched through :class:`MilvusReader`, as the service searches, and compared with the exact top-10
computed with numpy over the collection's own vectors. The smallest value reaching the recall target is written
into the version's manifest (``index.search_params``, ``index.calibration``, ``tuned``); the collection itself is
not touched, so there is no new version: a running service picks the parameters up at its next poll of the index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import IndexNotFoundError
from ...format import utc_now
from ..folder.calibration import load_queries
from .client import MilvusConnection
from .reader import MilvusReader

TUNE_QUERIES_MAX = 2048  # as the folder backend: a sample of at most this many query vectors
K = 10
EF_VALUES = [2**i for i in range(4, 13)]  # 16 .. 4096 (Milvus wants k <= ef <= 32768)
DEFAULT_NLIST = 128  # Milvus's nlist when the index params give none
SERVED_WAIT_S = 120.0  # the longest wait for the query node to search a fresh build through its index


def search_knob(factory: str, index_params: dict) -> tuple[str, list[int]] | None:
    """The search parameter that trades recall for speed and the values tried (ascending); None: nothing to tune
    (FLAT is exact; GPU_CAGRA and the binary types are not calibrated here)."""
    kind = factory.upper()
    if kind in ("HNSW", "AUTOINDEX"):
        return "ef", EF_VALUES
    if kind.startswith(("IVF_", "GPU_IVF_")):
        nlist = int(index_params.get("nlist", DEFAULT_NLIST))
        return "nprobe", sorted({*(2**i for i in range(nlist.bit_length()) if 2**i < nlist), nlist})
    return None


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65_536) -> np.ndarray:
    """Row numbers of the exact top-``k`` by inner product (``vectors`` scanned in chunks)."""
    best = np.empty((len(queries), 0), dtype=np.int64)
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = np.concatenate([best_scores, queries @ vectors[start : start + chunk].T], axis=1)
        rows = np.concatenate([best, np.broadcast_to(np.arange(start, start + min(chunk, len(vectors) - start)),
                                                     (len(queries), min(chunk, len(vectors) - start)))], axis=1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best, best_scores = np.take_along_axis(rows, keep, axis=1), np.take_along_axis(scores, keep, axis=1)
    return best


def tune_collection(connection: MilvusConnection, alias: str, queries_path: str | Path, *,
                    recall_target: float) -> dict:
    """Calibrate the live collection behind ``alias`` on the vectors in ``queries_path``; the report of ``tune``."""
    version = connection.alias_target(alias)
    if version is None:
        raise IndexNotFoundError(f"No index in Milvus {connection.shown_uri} collection {alias}: the alias does not "
                                 "exist (run `index_builder build --engine milvus`).")
    reader = MilvusReader(connection, version)
    manifest = reader.manifest
    queries = load_queries(queries_path, reader.dim)
    section = manifest["index"]
    before = dict(section.get("search_params") or {})
    report = {"index_dir": f"Milvus {connection.shown_uri} collection {alias}", "previous": version, "version": version,
              "queries": len(queries), "factory": section["factory"], "before": before}
    knob = search_knob(section["factory"], section.get("index_params") or {})
    if knob is None or reader.size == 0:
        return {**report, "status": "unchanged", "after": before, "calibration": section.get("calibration"),
                "reason": f"{section['factory']} has no search parameter to tune" if knob else "the index is empty"}
    # Calibrating while the query node still scans unindexed copies would find every value exact.
    served = connection.wait_served_indexed(version, timeout=SERVED_WAIT_S)
    calibration = {**_calibrate(reader, knob, queries, recall_target), "index_served": served}
    name = calibration["param"]
    after = {**before, name: calibration[name]}
    connection.write_manifest(version, {
        **manifest, "index": {**section, "search_params": after, "calibration": calibration},
        "tuned": {"at": utc_now(), "queries": len(queries), "from": str(Path(queries_path).absolute()),
                  "recall_target": recall_target}})
    return {**report, "status": "tuned", "after": after, "calibration": calibration}


def _calibrate(reader: MilvusReader, knob: tuple[str, list[int]], queries: np.ndarray, target: float) -> dict:
    """The smallest tried value whose recall@10 against exact search reaches ``target`` (else the largest)."""
    name, values = knob
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(len(queries), size=min(TUNE_QUERIES_MAX, len(queries)), replace=False))
    sample = queries[picked]
    rows = reader.stored()
    truth = rows.ids[exact_top_k(rows.vectors, sample, min(K, len(rows.ids)))]
    del rows
    tried: dict[int, float] = {}
    for value in values:
        reader.search_params = {**reader.search_params, name: int(value)}
        found = np.concatenate([reader.search(sample[i : i + 256], K)[1] for i in range(0, len(sample), 256)])
        tried[value] = round(float(np.mean([len(set(t.tolist()) & set(f.tolist())) / len(t)
                                            for t, f in zip(truth, found, strict=True)])), 4)
        if tried[value] >= target:
            break
    chosen = next((v for v, recall in tried.items() if recall >= target), values[-1])
    return {"param": name, name: int(chosen), "recall_at_10": tried[chosen], "reached": tried[chosen] >= target,
            "tried": tried, "queries": len(sample), "source": "query vectors", "target": target}
