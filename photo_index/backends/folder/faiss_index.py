"""The folder backend's vector index, FAISS: index choice by size, training on a sample, nprobe calibration,
GPU when present, exact category filters.

Auto choice (``--index-factory`` overrides): up to ``FLAT_MAX`` vectors an exact ``Flat`` index;
beyond, ``IVF{nlist},Flat`` (nlist ≈ √N, a power of two) trained on a sample of ``TRAIN_PER_LIST``
vectors per list; beyond ``SQ8_MIN``, ``IVF{nlist},SQ8`` (4× smaller codes). IVF's ``nprobe`` (HNSW's
``efSearch``) is calibrated at build time: the smallest power of two reaching ``RECALL_TARGET`` recall@10
against exact search for a sample of stored vectors used as queries (each one's own id left out), and
again by ``tune`` on real query vectors (sketches sit farther from photos than photos from each other).
"""

from __future__ import annotations

import errno
import functools
import math
import os
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from encoder.config import env_number

from ...api import StoredRows
from ...checks import self_recall
from ...errors import BuildError, IndexCorruptError, TrainingError
from ...space import no_space
from .faiss_lib import faiss

INDEX_FILE = "index.faiss"
FLAT_MAX = 50_000  # the default of env SBIR_INDEX_FLAT_MAX (see flat_max)
FLAT_MAX_ENV = "SBIR_INDEX_FLAT_MAX"
SQ8_MIN = 4_000_000
TRAIN_PER_LIST = 50
RECALL_TARGET = 0.95
CALIBRATION_QUERIES = 256
GPU_MAX_K = 2048  # GPU FAISS's largest k (GPU_MAX_SELECTION_K): a deep page or an over-fetch can ask for more
TUNE_QUERIES_MAX = 2048  # real query vectors used by `tune` (a sample when more are given)
EXACT_FILTER_MAX = 50_000  # category filters on approximate indexes this small are searched exactly
ADD_CHUNK = 65_536
EXACT_FACTORIES = ("Flat", "IDMap,Flat", "IDMap2,Flat")


def flat_max() -> int:
    """The largest gallery that gets an exact index: env SBIR_INDEX_FLAT_MAX (empty or unset: ``FLAT_MAX``); a bad
    value is a :class:`BuildError` naming it."""
    return env_number(FLAT_MAX_ENV, FLAT_MAX, minimum=0, what="a whole number of vectors", error=BuildError)


def choose_factory(size: int, dim: int) -> str:
    """The auto-chosen FAISS factory string for ``size`` vectors of dimension ``dim``."""
    if size <= flat_max():
        return "Flat"
    nlist = 2 ** round(math.log2(math.sqrt(size)))
    nlist = min(max(nlist, 64), 65_536)
    return f"IVF{nlist},SQ8" if size >= SQ8_MIN else f"IVF{nlist},Flat"


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty inner-product index of ``factory``; a string FAISS cannot read is a :class:`BuildError` (the build
    asks before any photo is embedded)."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise BuildError(f"--index-factory {factory!r} is not a valid FAISS factory string: {error}") from error


def misses_as_minus_one(scores: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's results as searches return them: float32 scores, int64 ids, -inf / -1 where fewer than k were found
    (FAISS pads with -1 and -inf or -3.4e38)."""
    found = found.astype(np.int64, copy=False)
    return np.where(found < 0, -np.inf, scores).astype(np.float32), found


def use_gpu(device: str) -> bool:
    """GPU FAISS when the build has GPUs, the faiss build supports them, and the device allows."""
    return device != "cpu" and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def to_gpu(index: faiss.Index) -> faiss.Index:
    """Clone ``index`` onto all GPUs (sharded when there are several)."""
    options = faiss.GpuMultipleClonerOptions()
    options.shard = faiss.get_num_gpus() > 1
    options.useFloat16 = False  # keep full precision (recall is calibrated on CPU float32)
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _single_gpu_copy(index: faiss.Index) -> faiss.Index:
    """A copy of a trained IVF index on GPU 0 to add vectors on (falls back to the CPU index)."""
    try:
        resources = faiss.StandardGpuResources()
        copy = faiss.index_cpu_to_gpu(resources, 0, index)
    except (RuntimeError, AttributeError):
        return index
    copy.referenced_objects = [resources]  # the GPU index must not outlive its resources
    return copy


def _exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = ADD_CHUNK) -> np.ndarray:
    """Row numbers of the exact top-k by inner product, scanning ``vectors`` in chunks (memmap-friendly)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        block = np.asarray(vectors[start : start + chunk], dtype=np.float32)
        scores = queries @ block.T
        rows = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_rows = np.concatenate([best_rows, rows], axis=1)
        top = np.argpartition(-merged_scores, min(k, merged_scores.shape[1] - 1), axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_rows = np.take_along_axis(merged_rows, top, axis=1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_rows, order, axis=1)


def search_knob(index: faiss.Index) -> tuple[str, list[int]] | None:
    """The search parameter that trades recall for speed, and the values calibration tries (ascending):
    IVF ``nprobe`` (powers of two up to nlist), HNSW ``efSearch``; None for exact indexes."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return "nprobe", sorted({*(2**i for i in range(ivf.nlist.bit_length()) if 2**i < ivf.nlist), ivf.nlist})
    if _hnsw_of(index) is not None:
        return "efSearch", [2**i for i in range(4, 13)]  # 16 .. 4096
    return None


def _hnsw_of(index: faiss.Index) -> faiss.IndexHNSW | None:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def _search_params(knob: str, value: int, selector: faiss.IDSelector | None = None) -> faiss.SearchParameters:
    kind = faiss.SearchParametersIVF if knob == "nprobe" else faiss.SearchParametersHNSW
    params = kind(**{knob: int(value)}) if selector is None else kind(sel=selector, **{knob: int(value)})
    params.keep_alive = selector  # the params object only holds a raw pointer
    return params


def calibrate(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, *, queries: np.ndarray | None = None,
              k: int = 10, target: float = RECALL_TARGET) -> dict | None:
    """The smallest tried value of the index's search knob whose recall@k against exact search reaches ``target``.

    Queries: ``queries`` when given (real query vectors, e.g. sketches the service saw; up to
    ``TUNE_QUERIES_MAX`` of them), else ``CALIBRATION_QUERIES`` stored vectors with their own id left out.
    None for an exact index (nothing to calibrate)."""
    knob = search_knob(index)
    if knob is None or len(vectors) == 0:
        return None
    name, values = knob
    rng = np.random.default_rng(0)
    if queries is None:
        rows = np.sort(rng.choice(len(vectors), size=min(CALIBRATION_QUERIES, len(vectors)), replace=False))
        sample, own = np.asarray(vectors[rows], dtype=np.float32), ids[rows]
    else:
        picked = np.sort(rng.choice(len(queries), size=min(TUNE_QUERIES_MAX, len(queries)), replace=False))
        sample, own = np.ascontiguousarray(queries[picked], dtype=np.float32), np.full(len(picked), -2)
    truth_rows = _exact_top_k(vectors, sample, k + 1)
    truth = [set(t[t != o][:k].tolist()) for t, o in zip(ids[truth_rows], own, strict=True)]
    tried: dict[int, float] = {}
    for value in values:
        _, found = index.search(sample, k + 1, params=_search_params(name, value))
        hits = [len(t & set(f[f != o][:k].tolist())) / max(len(t), 1) for t, f, o in zip(truth, found, own,
                                                                                            strict=True)]
        tried[value] = round(float(np.mean(hits)), 4)
        if tried[value] >= target:
            break
    chosen = next((v for v, recall in tried.items() if recall >= target), values[-1])
    return {"param": name, name: int(chosen), "recall_at_10": tried.get(chosen, tried[max(tried)]),
            "reached": tried.get(chosen, 0.0) >= target, "tried": tried, "queries": len(sample),
            "source": "stored vectors (self excluded)" if queries is None else "query vectors", "target": target}


def _calibrated(section: dict, calibration: dict | None) -> dict:
    """``section`` with ``calibration`` and the search parameter it chose."""
    if calibration is None:
        return section
    name = calibration["param"]
    return {**section, "calibration": calibration, "search_params": {**section.get("search_params", {}),
                                                                      name: calibration[name]}}


class FaissEngine:
    name = "faiss"

    def resolve_factory(self, size: int, dim: int, factory: str | None) -> str:
        return factory or choose_factory(size, dim)

    def build(
        self,
        vectors: np.ndarray,
        ids: np.ndarray,
        folder: Path,
        *,
        factory: str | None = None,
        device: str = "auto",
        progress: bool = True,
        recall_target: float = RECALL_TARGET,
    ) -> dict:
        size, dim = vectors.shape
        factory = self.resolve_factory(size, dim, factory)
        index = new_index(factory, dim)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None and not isinstance(index, faiss.IndexIDMap):
            index = faiss.IndexIDMap2(index)  # Flat/HNSW/PQ need the id map; IVF stores ids itself
        gpu = use_gpu(device)
        timings = {}
        if not index.is_trained:
            started = time.perf_counter()
            self._train(index, ivf, vectors, factory, gpu)
            timings["train_s"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        target = _single_gpu_copy(index) if gpu and ivf is not None else index  # IVF list assignment on GPU
        with tqdm(total=size, desc="indexing", unit="vec", disable=not progress or size == 0) as bar:
            for start in range(0, size, ADD_CHUNK):
                block = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)
                target.add_with_ids(block, np.ascontiguousarray(ids[start : start + ADD_CHUNK], dtype=np.int64))
                bar.update(len(block))
        if target is not index:
            index = faiss.index_gpu_to_cpu(target)
            ivf = faiss.extract_index_ivf(index)
        timings["add_s"] = round(time.perf_counter() - started, 3)
        section = {"engine": self.name, "factory": factory, "file": INDEX_FILE, "metric": "inner_product",
                   "search_params": {}, "gpu_used": gpu, "faiss_version": faiss.__version__}
        if search_knob(index) is not None and size > 0:
            started = time.perf_counter()
            section = _calibrated(section, calibrate(index, vectors, ids, target=recall_target))
            timings["calibrate_s"] = round(time.perf_counter() - started, 3)
        section["timings"] = timings
        path = folder / INDEX_FILE
        try:
            faiss.write_index(index, str(path))
        except RuntimeError as error:  # FAISS reports a full disk as a RuntimeError quoting strerror
            if os.strerror(errno.ENOSPC) in str(error):
                raise no_space(path) from None
            raise
        return section

    def tune(self, folder: Path, section: dict, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, *,
             recall_target: float = RECALL_TARGET) -> dict:
        """``section`` recalibrated on real ``queries`` (the index file is only read); unchanged when exact."""
        index = self._read(folder, section)
        return _calibrated(section, calibrate(index, vectors, ids, queries=queries, target=recall_target))

    def _train(self, index: faiss.Index, ivf: faiss.IndexIVF | None, vectors: np.ndarray, factory: str,
               gpu: bool) -> None:
        size = len(vectors)
        wanted = TRAIN_PER_LIST * (ivf.nlist if ivf is not None else 1000)
        rows = np.sort(np.random.default_rng(0).choice(size, size=min(wanted, size), replace=False))
        sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        if ivf is not None and size < ivf.nlist:
            # The choice by size (the factory comes here resolved, given or not) only errs so when the exact limit
            # was set below the gallery's size: then that setting is to blame, not --index-factory.
            fix = (f"{FLAT_MAX_ENV}={flat_max()} chose it for {size} vectors: raise that (default {FLAT_MAX}), or give "
                   "another --index-factory." if factory == choose_factory(size, ivf.d)
                   else "Use a smaller nlist or leave --index-factory out.")
            raise TrainingError(f"Index {factory!r} needs at least {ivf.nlist} vectors to train its {ivf.nlist} "
                                f"lists; the gallery has {size}. {fix}")
        if gpu and ivf is not None:
            # The documented way to train IVF on GPU: k-means assignment on a GPU flat index.
            ivf.clustering_index = to_gpu(faiss.IndexFlatL2(ivf.d))
        try:
            index.train(sample)
        except RuntimeError as error:
            raise TrainingError(f"Training index {factory!r} on {len(sample)} vectors failed: {error}") from error
        finally:
            if ivf is not None:
                ivf.clustering_index = None

    def open(self, folder: Path, section: dict, vectors: np.ndarray, ids: np.ndarray, *, device: str = "auto",
             source: BinaryIO | None = None) -> FaissIndex:
        """The index of ``folder``; ``source``: its index file opened earlier (read from there, not by name)."""
        params = section.get("search_params", {})
        # A hand-edited or damaged manifest: refused here, not met as a TypeError inside FaissIndex.
        if not isinstance(params, dict) or not all(isinstance(value, int | np.integer) and not isinstance(value, bool)
                                                   for value in params.values()):
            raise IndexCorruptError(f"The search parameters recorded for the index in {folder} are malformed: "
                                    f"{params!r:.80} (expected whole numbers, e.g. {{'nprobe': 16}}).")
        return FaissIndex(self._read(folder, section, source), section, vectors, ids, gpu=use_gpu(device))

    @staticmethod
    def index_path(folder: Path, section: dict) -> Path:
        """The index file a section names (checked: a damaged manifest names no file)."""
        name = section.get("file", INDEX_FILE)
        if not isinstance(name, str):
            raise IndexCorruptError(f"The index file recorded for {folder} is {name!r:.80}, not a file name.")
        return folder / name

    @classmethod
    def _read(cls, folder: Path, section: dict, source: BinaryIO | None = None) -> faiss.Index:
        path = cls.index_path(folder, section)
        try:
            return faiss.read_index(str(path) if source is None else faiss.PyCallbackIOReader(source.read))
        except RuntimeError as error:
            raise IndexCorruptError(f"FAISS index {path} is unreadable: {error}") from error


def exact_subset(queries: np.ndarray, k: int, ids: np.ndarray, vectors: np.ndarray, allowed_ids: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product over the rows of ``vectors`` whose ``ids`` (sorted) are in ``allowed_ids``
    (sorted): what a category filter searches when few photos pass it (-inf / -1 pad)."""
    rows = np.searchsorted(ids, allowed_ids)
    valid = rows < len(ids)
    valid[valid] = ids[rows[valid]] == allowed_ids[valid]
    rows = rows[valid]  # ascending, since allowed_ids is sorted
    dim = queries.shape[1]
    subset = np.asarray(vectors[rows], dtype=np.float32).reshape(len(rows), dim)
    subset_ids = ids[rows]
    scores_all = queries @ subset.T
    take = min(k, len(subset_ids))
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    if take:
        top = np.argsort(-scores_all, axis=1, kind="stable")[:, :take]
        scores[:, :take] = np.take_along_axis(scores_all, top, axis=1)
        found[:, :take] = subset_ids[top]
    return scores, found


class FaissIndex:
    """A loaded FAISS index + the version's stored vectors (for exact filtered search)."""

    def __init__(self, index: faiss.Index, section: dict, vectors: np.ndarray, ids: np.ndarray, gpu: bool = False):
        self.cpu_index = index
        self.size = int(index.ntotal)
        self.dim = int(index.d)
        self.vectors = vectors
        self.stored_ids = ids
        self.ivf = faiss.try_extract_index_ivf(index)
        knob = search_knob(index)
        self.knob = knob[0] if knob else None
        self.knob_value = int(section.get("search_params", {}).get(self.knob, 1 if self.ivf is not None else 16))
        if self.ivf is not None:
            self.ivf.nprobe = self.knob_value
        elif self.knob == "efSearch":
            _hnsw_of(index).hnsw.efSearch = self.knob_value
        self.exact = section.get("factory") in EXACT_FACTORIES
        self.foreign_from: int | None = None  # ids from here up are other segments' rows (``add_foreign``)
        self._gpu = gpu
        self.search_index = self._search_copy()

    def _search_copy(self) -> faiss.Index:
        if self._gpu:
            try:
                return to_gpu(self.cpu_index)
            except RuntimeError:  # not every index type has a GPU version (e.g. HNSW): stay on CPU
                pass
        return self.cpu_index

    @property
    def can_add_foreign(self) -> bool:
        """Whether other rows can join this index in memory: an IVF index (any codec) assigns them to its trained
        lists and encodes them as its own."""
        return isinstance(self.cpu_index, faiss.IndexIVF)

    def add_foreign(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add rows that are not this index's own (another segment's, under ``ids`` above any of its own) to this
        in-memory copy, so that one search covers both. The file, ``size``, ``ids()`` and the checks stay about the
        index's own rows; searches return the foreign ids, for the caller to map back."""
        if not self.can_add_foreign:
            raise TypeError(f"{type(self.cpu_index).__name__} does not take foreign rows")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return
        self.foreign_from = int(ids.min()) if self.foreign_from is None else min(self.foreign_from, int(ids.min()))
        for start in range(0, len(ids), ADD_CHUNK):
            self.cpu_index.add_with_ids(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32),
                                        ids[start : start + ADD_CHUNK])
        if self.search_index is not self.cpu_index:
            self.search_index = self._search_copy()

    def ids(self) -> np.ndarray:
        if self.ivf is not None:
            invlists = self.ivf.invlists
            parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                     for i in range(self.ivf.nlist) if invlists.list_size(i)]
            ids = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
            return ids if self.foreign_from is None else ids[ids < self.foreign_from]
        return np.sort(faiss.vector_to_array(self.cpu_index.id_map))

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed_ids is None:
            # GPU FAISS selects at most GPU_MAX_K per query and fails the whole batch past it: deeper on the CPU copy
            searched = self.search_index if k <= GPU_MAX_K else self.cpu_index
            scores, found = searched.search(queries, k)
        elif not self.exact and len(allowed_ids) <= EXACT_FILTER_MAX or not self.takes_selectors:
            scores, found = exact_subset(queries, k, self.stored_ids, self.vectors, allowed_ids)
        else:
            return self.search_selected(queries, k, faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids,
                                                                                               dtype=np.int64)))
        return misses_as_minus_one(scores, found)

    def search_selected(self, queries: np.ndarray, k: int, selector: faiss.IDSelector
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` among the ids ``selector`` admits, filtered inside FAISS (where ``takes_selectors``)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return misses_as_minus_one(*self.cpu_index.search(queries, k, params=self._params_with(selector)))

    def _params_with(self, selector: faiss.IDSelector) -> faiss.SearchParameters:
        """New search parameters restricted by ``selector``, for one search call: FAISS's IndexIDMap points the
        object's selector at a stack object while it searches, so parameters shared by two threads crash."""
        if self.knob is not None:
            return _search_params(self.knob, self.knob_value, selector)
        params = faiss.SearchParameters(sel=selector)
        params.keep_alive = selector  # the params object only holds a raw pointer
        return params

    @functools.cached_property
    def takes_selectors(self) -> bool:
        """Whether FAISS filters ids inside this index type's search (IVF, HNSW, Flat do; PQ, LSH refuse any
        search parameters): asked once, with one empty query."""
        try:
            self.cpu_index.search(np.zeros((1, self.dim), np.float32), 1,
                                  params=self._params_with(faiss.IDSelectorRange(0, 0)))
        except RuntimeError:
            return False
        return True

    def self_check(self, rows: StoredRows) -> list[str]:
        """An exact index must hold exactly the stored vectors; an approximate one must find most of them."""
        if not self.exact:
            return self_recall(self.search, rows)
        ids, vectors = rows.ids, rows.vectors
        flat = faiss.downcast_index(self.cpu_index.index)
        held = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
        stored_rows = np.searchsorted(ids, faiss.vector_to_array(self.cpu_index.id_map))
        mismatched = 0
        for start in range(0, len(stored_rows), ADD_CHUNK):
            expected = np.asarray(vectors[stored_rows[start : start + ADD_CHUNK]])
            same = np.isclose(held[start : start + ADD_CHUNK], expected, atol=1e-6).all(axis=1)
            mismatched += int((~same).sum())
        return [f"{mismatched} vectors in the FAISS index differ from vectors.npy"] if mismatched else []

    def held_vectors(self, ids: np.ndarray) -> np.ndarray | None:
        """An exact index's own copy of the vectors of ``ids`` (NaN rows for ids it does not hold); None when the
        index is approximate (it keeps no copy)."""
        if not self.exact:
            return None
        flat = faiss.downcast_index(self.cpu_index.index)
        held = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
        id_map = faiss.vector_to_array(self.cpu_index.id_map)
        out = np.full((len(ids), flat.d), np.nan, dtype=np.float32)
        if not len(id_map):
            return out
        order = np.argsort(id_map, kind="stable")
        at = np.searchsorted(id_map, ids, sorter=order).clip(max=len(id_map) - 1)
        found = id_map[order[at]] == ids
        out[found] = held[order[at[found]]]
        return out

    def close(self) -> None:
        self.search_index = None
        self.cpu_index = None
