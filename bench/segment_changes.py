"""Small changes to a segmented folder index vs a full build, on precomputed vectors (no images, no encoder).

N clustered unit vectors (bench/search.py's mixture: real embeddings are clustered) → a full build (one
segment: IVF by size, trained and calibrated) → ``--changes`` changes, alternately adding ``--change`` new photos
(a new segment) and removing as many (tombstones), each ending like a build does: the tiered merge policy,
publish, garbage collection with ``--keep``. Then ``compact``. Printed as a table, and JSON with ``--json``:

- bytes written (new files under the index folder) and wall time of each change, ÷ the full build's;
- recall@10 against exact search over the live photos, and the median single-query latency ÷ that of a
  freshly built single-segment index of the same live photos (after the changes and after ``compact``);
- disk used with ``--keep`` versions ÷ one full version.

    python bench/segment_changes.py --size 200000 --change 1000 --changes 20
    (also: python bench/index_build.py --vectors 200000)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.search import median_latency_ms, mixture, recall_at_10  # noqa: E402
from photo_index.api import PhotoRecord  # noqa: E402
from photo_index.backends.folder.segments import (  # noqa: E402
    SegmentedView,
    SegmentStore,
    TieredMergePolicy,
    apply_policy,
    compact,
    write_segment,
)

ENCODER = {"fingerprint": "bench"}


def records(ids: np.ndarray) -> list[PhotoRecord]:
    return [PhotoRecord(id=int(i), path=f"/gallery/c{int(i) % 100}/{int(i)}.jpg", category=f"c{int(i) % 100}",
                        sha256=f"{int(i):064x}", size=100_000, added_at="2026-01-01T00:00:00+00:00") for i in ids]


def files(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (inode, bytes) of every file under ``root``."""
    return {str(p): (p.stat().st_ino, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def written(before: dict[str, tuple[int, int]], root: Path) -> int:
    """Bytes of the files under ``root`` that are new or replaced since ``before`` (what a change wrote)."""
    return sum(size for path, (inode, size) in files(root).items() if before.get(path, (None,))[0] != inode)


def full_build(store: SegmentStore, vectors: np.ndarray, ids: np.ndarray) -> None:
    info = write_segment(store.segments_dir, vectors, ids, records(ids))
    store.publish(store.commit(None, added=[info], encoder=ENCODER, dim=vectors.shape[1]))


def change(store: SegmentStore, policy: TieredMergePolicy, keep: int, *, add: tuple[np.ndarray, np.ndarray] | None,
           remove: np.ndarray | None) -> dict:
    """One build's worth of writing: a new segment and/or tombstones, the merge policy, publish, GC."""
    before, started = files(store.root), time.perf_counter()
    version = store.current()
    added = [write_segment(store.segments_dir, add[0], add[1], records(add[1]))] if add is not None else []
    version = store.commit(version, added=added, removed=remove)
    version, merges = apply_policy(store, version, policy)
    store.publish(version)
    store.collect_garbage(keep)
    return {"s": time.perf_counter() - started, "bytes": written(before, store.root), "merges": len(merges),
            "segments": len(version.segments)}


def exact_truth(live: dict[int, int], pool: np.ndarray, queries: np.ndarray) -> np.ndarray:
    ids = np.array(sorted(live), dtype=np.int64)
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(pool.shape[1]))
    flat.add_with_ids(np.ascontiguousarray(pool[[live[i] for i in ids.tolist()]]), ids)
    return flat.search(queries, 10)[1]


def largest(view: SegmentedView) -> str:
    """The largest segment's factory and search parameters, e.g. ``IVF512,Flat nprobe=2``."""
    segment = max(view.segments, key=lambda s: s.live).segment
    params = " ".join(f"{k}={v}" for k, v in segment.search_params.items())
    return f"{segment.info.index.get('factory')} {params}".strip()


def interleaved_p50(views: dict[str, SegmentedView], queries: np.ndarray, rounds: int = 6, per_round: int = 50
                    ) -> dict[str, float]:
    """Median single-query latency of each view, measured in alternating rounds (this box's load varies)."""
    times: dict[str, list[float]] = {name: [] for name in views}
    for number in range(rounds):
        part = queries[(number * per_round) % len(queries):][:per_round]
        for name, view in views.items():
            times[name].append(median_latency_ms(lambda q, v=view: v.search(q, 10), part, len(part)))
    return {name: float(np.median(values)) for name, values in times.items()}


def run(size: int, dim: int, step: int, changes: int, keep: int, folder: Path, clusters: int = 1000,
        noise: float = 1.0, n_queries: int = 300) -> dict:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    extra = step * ((changes + 1) // 2)
    pool = mixture(size + extra, dim, centers, noise, seed=1)  # rows: the base, then the photos changes add
    queries = mixture(n_queries, dim, centers, noise, seed=2)
    live = {i: i for i in range(size)}  # id -> pool row
    store = SegmentStore(folder / "index")
    policy = TieredMergePolicy()

    started = time.perf_counter()
    full_build(store, pool[:size], np.arange(size, dtype=np.int64))
    full = {"s": time.perf_counter() - started, "bytes": written({}, store.root)}
    rows, next_row = [], size
    for number in range(changes):
        if number % 2 == 0:
            ids = np.arange(next_row, next_row + step, dtype=np.int64)
            live.update((int(i), int(i)) for i in ids)
            row = change(store, policy, keep, add=(pool[next_row : next_row + step], ids), remove=None)
            next_row += step
        else:
            gone = np.sort(rng.choice(np.array(sorted(live)), step, replace=False))
            for i in gone.tolist():
                del live[i]
            row = change(store, policy, keep, add=None, remove=gone)
        rows.append({"change": "add" if number % 2 == 0 else "remove", **row})

    truth = exact_truth(live, pool, queries)
    disk = store.disk_bytes()
    fresh_store = SegmentStore(folder / "fresh")
    ids = np.array(sorted(live), dtype=np.int64)
    started = time.perf_counter()
    full_build(fresh_store, pool[[live[i] for i in ids.tolist()]], ids)
    fresh_s = time.perf_counter() - started
    changed = store.current()
    before, started = files(store.root), time.perf_counter()
    store.publish(compact(store, changed))
    store.collect_garbage(keep)
    compacted = {"s": time.perf_counter() - started, "bytes": written(before, store.root)}
    views = {"segmented": SegmentedView(store, changed), "compacted": SegmentedView(store, store.current()),
             "fresh": SegmentedView(fresh_store, fresh_store.current())}
    try:
        p50 = interleaved_p50(views, queries)
        quality = {name: {"recall": recall_at_10(view.search(queries, 10)[1], truth), "p50_ms": p50[name],
                          "segments": len(view.segments), "size": view.size,
                          "largest": largest(view)} for name, view in views.items()}
    finally:
        for view in views.values():
            view.close()
    segmented, fresh = quality["segmented"], quality["fresh"]
    compacted.update(quality["compacted"])
    adds = [r for r in rows if r["change"] == "add"]
    removes = [r for r in rows if r["change"] == "remove"]
    return {
        "size": size, "dim": dim, "change": step, "changes": changes, "keep": keep, "full": full,
        "fresh_build_s": fresh_s, "rows": rows,
        "add": {"bytes_ratio": max(r["bytes"] for r in adds) / full["bytes"],
                "time_ratio": float(np.median([r["s"] for r in adds])) / full["s"]},
        "remove": {"bytes_ratio": max(r["bytes"] for r in removes) / full["bytes"],
                   "time_ratio": float(np.median([r["s"] for r in removes])) / full["s"]},
        "segmented": segmented, "fresh": fresh, "compacted": compacted,
        "latency_ratio": segmented["p50_ms"] / fresh["p50_ms"],
        "latency_ratio_compacted": compacted["p50_ms"] / fresh["p50_ms"],
        "disk_ratio": disk / full["bytes"],
    }


def print_result(r: dict) -> None:
    mb = 1 / 1e6
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; N {r['size']:,} x {r['dim']}, "
          f"changes of {r['change']:,} photos, {r['changes']} changes, --keep {r['keep']}")
    print(f"full build: {r['full']['bytes'] * mb:.1f} MB, {r['full']['s']:.1f} s")
    print("| change | MB written | ÷ full | s | ÷ full | merges | segments |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in r["rows"]:
        print(f"| {row['change']} | {row['bytes'] * mb:.2f} | {row['bytes'] / r['full']['bytes']:.4f} | "
              f"{row['s']:.2f} | {row['s'] / r['full']['s']:.3f} | {row['merges']} | {row['segments']} |")
    print(f"add: bytes ÷ full {r['add']['bytes_ratio']:.4f} (largest), time ÷ full {r['add']['time_ratio']:.3f} "
          f"(median); remove: bytes {r['remove']['bytes_ratio']:.4f}, time {r['remove']['time_ratio']:.3f}")
    for name in ("segmented", "compacted", "fresh"):
        q = r[name]
        print(f"{name}: {q['segments']} segments (largest {q['largest']}), recall@10 {q['recall']:.3f}, "
              f"p50 {q['p50_ms']:.3f} ms")
    print(f"latency ÷ fresh single segment: {r['latency_ratio']:.2f} "
          f"(after compact {r['latency_ratio_compacted']:.2f}); disk with --keep {r['keep']} ÷ one full version: "
          f"{r['disk_ratio']:.2f}; compact {r['compacted']['s']:.1f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--change", type=int, default=1000, help="photos added or removed per change")
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--noise", type=float, default=1.0, help="cluster spread, as in bench/search.py")
    parser.add_argument("--threads", type=int, default=None,
                        help="FAISS (OpenMP) threads; on a loaded box one thread per query gives steadier latencies")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.size, args.dim, args.change, args.changes, args.keep, Path(tmp), noise=args.noise)
    print_result(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
