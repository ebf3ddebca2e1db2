"""Search benchmark: recall@10 and median single-query latency of the auto-chosen index vs flat.

Synthetic data: N unit vectors of dimension 512 drawn from a mixture of ``--clusters`` Gaussian
clusters (real CLIP embeddings are clustered, not uniform on the sphere), and held-out queries from
the same mixture. Ground truth is the exact (flat) top 10. The auto index is built by the very
code the builder runs (``FaissEngine.build``: factory by size, training on a sample, nprobe
calibration) and searched through ``FaissIndex.search``, as the reader does, on each of ``--devices``
(``cuda``: the index cloned to the GPUs, as the reader does with ``device="auto"``).

    python bench/search.py --sizes 100000 1000000 [--devices cpu,cuda] [--json out.json]
    python bench/search.py --engine milvus --sizes 100000   # FAISS and Milvus side by side, same vectors
    python bench/search.py --engine milvus --milvus-upsert 1000 --sizes 50000   # Milvus: build, upsert, tune

With ``--engine milvus`` the same vectors also go into a Milvus collection through the engine's own code
(``MilvusConnection``: create, load, insert, flush, wait for the index) and are searched through ``MilvusReader``
as the app does (gRPC; consistency Strong and Bounded). The server is ``--milvus-uri``, or else a Milvus standalone
started from the PyPI ``milvus`` package in a temp folder (the tests' server). Searches are timed once the query
node serves the index (``wait_served_indexed``; before that it scans unindexed copies: exact, slower).

With ``--milvus-upsert M`` the Milvus part is instead the incremental path, through the engine's writer
(``MilvusWriter``, AUTOINDEX): publish N vectors, upsert M new ones in place, then recall@10 against exact search
over all N + M and the median latency, with the default search parameters and after ``tune`` (calibrated on
another query sample from the same mixture).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from photo_index.backends.folder.faiss_index import FaissEngine  # noqa: E402
from photo_index.format import FORMAT  # noqa: E402

CHUNK = 100_000


def mixture(n: int, dim: int, centers: np.ndarray, noise: float, seed: int, out: np.ndarray | None = None):
    """``n`` normalised points around random ``centers`` (cosine to their centre ≈ 1/√(1+noise²))."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32) if out is None else out
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        block = centers[rng.integers(0, len(centers), m)] + rng.normal(0, noise / np.sqrt(dim), (m, dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block.astype(np.float32)
    return out


def median_latency_ms(search, queries: np.ndarray, repeats: int) -> float:
    times = []
    for i in range(repeats):
        query = queries[i % len(queries) : i % len(queries) + 1]
        started = time.perf_counter()
        search(query)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def top10(index):
    return lambda query: index.search(query, 10)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth, strict=True)]))


def run_milvus(connection, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, index_type: str,
               index_params: dict, searches: list[tuple[dict, str]]) -> list[dict]:
    """Build a photo collection of ``vectors`` with the engine's own calls, search it with ``MilvusReader``."""
    from photo_index.backends.milvus.client import new_version_name
    from photo_index.backends.milvus.reader import MilvusReader

    size, dim = vectors.shape
    name = new_version_name("bench")
    started = time.perf_counter()
    connection.create_photos(name, dim, index_type, index_params)
    connection.load(name, timeout=3600)
    empty = {"path": "", "category": "", "sha256": "", "size": 0, "mtime_ns": 0, "added_at": "", "updated_at": "",
             "metadata": "{}"}
    for start in range(0, size, 2000):
        block = np.asarray(vectors[start : start + 2000])
        rows = [{"id": start + i, "vector": row, **empty} for i, row in enumerate(block.tolist())]
        connection.call(lambda rows=rows: connection.client.insert(name, rows, timeout=600), what="insert")
    insert_s = time.perf_counter() - started
    connection.call(lambda: connection.client.flush(name, timeout=3600), what="flush")
    connection.wait_indexed(name, size, timeout=7200)
    connection.wait_served_indexed(name, timeout=600)
    build_s = time.perf_counter() - started
    connection.write_manifest(name, {
        "format": FORMAT, "version": name, "created_at": "", "size": size, "dim": dim, "build": {},
        "encoder": {"fingerprint": "bench", "config": {}}, "gallery": {"source": "bench"},
        "index": {"engine": "milvus", "factory": index_type, "search_params": {}}})
    results = []
    for search_params, consistency in searches:
        reader = MilvusReader(connection, name, consistency)
        reader.search_params = search_params
        found = np.concatenate([reader.search(queries[i : i + 100], 10)[1] for i in range(0, len(queries), 100)])
        results.append({"index": index_type, "params": search_params, "consistency": consistency,
                        "recall": recall_at_10(found, truth), "insert_s": insert_s, "build_s": build_s,
                        "latency_ms": median_latency_ms(lambda q, reader=reader: reader.search(q, 10), queries, 100)})
    connection.drop(name)
    return results


def synthetic_records(ids) -> list:
    """Photo records for vector-only benches and tests (the same ids give equal records: an in-place update
    counts them unchanged)."""
    from photo_index.api import PhotoRecord

    return [PhotoRecord(id=int(i), path=f"/synthetic/{int(i)}.jpg", category=f"c{int(i) % 10}", sha256=f"{int(i):064x}",
                        size=1, added_at="2026-01-01T00:00:00+00:00", updated_at="2026-01-01T00:00:00+00:00")
            for i in ids]


def publish_vectors(writer, vectors: np.ndarray, *, factory: str) -> str:
    """Publish ``vectors`` (new ids after the live version's, whose rows are kept) through ``writer``, as a build
    of precomputed vectors would: a new collection when there is none, else an in-place update."""
    from photo_index.api import FROM_PREVIOUS, FROM_STAGING, VersionContent

    previous = writer.previous(rebuild=False)
    old = sorted(previous.by_path.values(), key=lambda record: record.id) if previous else []
    first = int(previous.manifest["next_id"]) if previous else 0
    new_ids = range(first, first + len(vectors))
    sources = np.array([(FROM_PREVIOUS, r.id) for r in old] + [(FROM_STAGING, i) for i in range(len(vectors))],
                       dtype=np.int64).reshape(-1, 2)
    records = old + synthetic_records(new_ids)
    now = "2026-01-01T00:00:00+00:00"
    content = VersionContent(records=records, sources=sources, staged=vectors, next_id=first + len(vectors), now=now)
    manifest = {"format": FORMAT, "created_at": now, "size": len(records), "dim": int(vectors.shape[1]),
                "next_id": first + len(vectors), "encoder": {"fingerprint": "synthetic", "config": {}},
                "gallery": {"root": None, "source": "synthetic vectors"}}
    report = {"factory": factory, "added": len(vectors), "updated": 0, "removed": 0, "unchanged": len(old)}
    return writer.write(content, previous, manifest, report)


def run_milvus_upsert(connection, vectors: np.ndarray, extra: np.ndarray, queries: np.ndarray,
                      tune_queries: np.ndarray, folder: Path) -> dict:
    """Publish ``vectors``, upsert ``extra`` in place, measure recall@10 / p50 before and after ``tune``."""
    from photo_index import MilvusLocation, PublishOptions, open_source, open_writer
    from photo_index.backends.milvus.reader import MilvusReader

    location = MilvusLocation(connection.uri, "bench_upsert", timeout_s=3600)
    writer = open_writer(location, PublishOptions())
    started = time.perf_counter()
    version = publish_vectors(writer, np.asarray(vectors), factory="AUTOINDEX")
    insert_s = time.perf_counter() - started
    connection.wait_served_indexed(version, timeout=7200)
    served_s = time.perf_counter() - started
    started = time.perf_counter()
    publish_vectors(writer, extra, factory="AUTOINDEX")
    upsert_s = time.perf_counter() - started
    flat = faiss.IndexFlatIP(vectors.shape[1])
    for start in range(0, len(vectors), CHUNK):
        flat.add(np.asarray(vectors[start : start + CHUNK]))
    flat.add(extra)
    _, truth = flat.search(queries, 10)  # ids are rows: the collection was filled 0..N+M-1
    del flat
    source = open_source(location)
    result = {"size": len(vectors), "upserted": len(extra), "insert_s": insert_s, "served_s": served_s,
              "upsert_s": upsert_s, "rows": {}}
    np.save(folder / "tune_queries.npy", tune_queries)
    for label in ("default", "tuned"):
        if label == "tuned":
            result["tune"] = writer.tune(folder / "tune_queries.npy", keep=1)["calibration"]
        reader = source.open()  # consistency Strong, as the service by default
        bounded = MilvusReader(connection, version, "Bounded")  # the same manifest, so the same params
        found = np.concatenate([reader.search(queries[i : i + 100], 10)[1] for i in range(0, len(queries), 100)])
        result["rows"][label] = {
            "params": dict(reader.search_params), "recall": recall_at_10(found, truth),
            "latency_ms": median_latency_ms(lambda q, r=reader: r.search(q, 10), queries, 200),
            "latency_bounded_ms": median_latency_ms(lambda q, r=bounded: r.search(q, 10), queries, 200)}
    connection.call(lambda: connection.client.drop_alias("bench_upsert", timeout=60), what="drop alias")
    connection.drop(version)
    return result


def run(size: int, dim: int, clusters: int, noise: float, n_queries: int, folder: Path,
        devices: tuple[str, ...] = ("cpu",), milvus=None, milvus_upsert: int = 0) -> dict:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(size, dim))
    mixture(size, dim, centers, noise, seed=1, out=vectors)
    vectors.flush()
    ids = np.arange(size, dtype=np.int64)
    queries = mixture(n_queries, dim, centers, noise, seed=2)

    flat = faiss.IndexFlatIP(dim)
    for start in range(0, size, CHUNK):
        flat.add(np.asarray(vectors[start : start + CHUNK]))
    _, truth = flat.search(queries, 10)
    flat_ms = median_latency_ms(top10(flat), queries, 15 if size >= 500_000 else 50)
    del flat  # free its memory before the auto index is built

    engine = FaissEngine()
    started = time.perf_counter()
    section = engine.build(vectors, ids, folder, progress=False, device=devices[-1])
    build_s = time.perf_counter() - started
    result = {"size": size, "factory": section["factory"], "nprobe": section["search_params"].get("nprobe"),
              "latency_flat_ms": flat_ms, "build_s": build_s, "build_gpu": section["gpu_used"],
              "timings": section.get("timings"), "devices": {}}
    for device in devices:  # the same index searched on each device, as the reader opens it
        index = engine.open(folder, section, vectors, ids, device=device)
        _, found = index.search(queries, 10)
        started = time.perf_counter()
        index.search(queries, 10)  # one batch of all queries: throughput
        batch_s = time.perf_counter() - started
        latency = median_latency_ms(top10(index), queries, 200)
        result["devices"][device] = {
            "gpu": index.search_index is not index.cpu_index, "recall": recall_at_10(found, truth),
            "latency_ms": latency, "speedup_vs_flat_cpu": flat_ms / latency,
            "batch_queries_per_s": len(queries) / batch_s}
        index.close()
    first = result["devices"][devices[0]]
    result.update(recall_auto=first["recall"], latency_auto_ms=first["latency_ms"],
                  speedup=first["speedup_vs_flat_cpu"])
    if milvus is not None and milvus_upsert:
        extra = mixture(milvus_upsert, dim, centers, noise, seed=3)
        result["milvus_upsert"] = run_milvus_upsert(milvus, vectors, extra, queries,
                                                    mixture(n_queries, dim, centers, noise, seed=4), folder)
    elif milvus is not None:
        result["milvus"] = [row for config in MILVUS_CONFIGS
                            for row in run_milvus(milvus, vectors, queries, truth, *config)]
    os.remove(folder / "vectors.npy")
    return result


# (index type, index params, [(search params, consistency), ...]): the engine's default, and HNSW with explicit
# search breadths; each searched with Strong consistency (the default: waits for the server's time tick) and Bounded
MILVUS_CONFIGS = [
    ("AUTOINDEX", {}, [({}, "Strong"), ({}, "Bounded")]),
    ("HNSW", {"M": 16, "efConstruction": 200},
     [({"ef": 32}, "Bounded"), ({"ef": 64}, "Strong"), ({"ef": 64}, "Bounded")]),
]


@contextlib.contextmanager
def milvus_connection(uri: str | None):
    """A connection to ``uri``, or to a Milvus standalone started in a temp folder for this run."""
    from photo_index.backends.milvus.client import MilvusConnection

    if uri:
        yield MilvusConnection(uri, timeout=600)
        return
    from tests.milvus.server import MilvusProcess

    with tempfile.TemporaryDirectory() as tmp:
        server = MilvusProcess(Path(tmp))
        server.start()
        try:
            yield MilvusConnection(server.uri, timeout=600)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.0, help="cluster spread (noise norm relative to centre)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--devices", default="cpu", help="comma-separated reader devices to compare, e.g. cpu,cuda "
                        "(the last one also builds: IVF training on the GPU)")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    parser.add_argument("--engine", choices=["faiss", "milvus"], default="faiss",
                        help="milvus: also build and search Milvus collections of the same vectors, side by side")
    parser.add_argument("--milvus-uri", default=None, help="a running Milvus (default: start a local standalone)")
    parser.add_argument("--milvus-upsert", type=int, default=0, help="with --engine milvus: the incremental path "
                        "instead (publish N, upsert this many, recall and latency before and after tune)")
    args = parser.parse_args()
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    rows = []
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, "
          f"{args.clusters} clusters, noise {args.noise}")
    print("| N | auto index | nprobe | recall@10 auto | latency auto (ms) | latency flat (ms) | speed-up | build s |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with contextlib.ExitStack() as stack:
        milvus = stack.enter_context(milvus_connection(args.milvus_uri)) if args.engine == "milvus" else None
        for size in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                r = run(size, args.dim, args.clusters, args.noise, args.queries, Path(tmp), devices, milvus,
                        args.milvus_upsert)
            rows.append(r)
            print(f"| {r['size']:,} | {r['factory']} | {r['nprobe'] or '-'} | {r['recall_auto']:.3f} | "
                  f"{r['latency_auto_ms']:.2f} | {r['latency_flat_ms']:.2f} | {r['speedup']:.1f}× | "
                  f"{r['build_s']:.1f} |", flush=True)
            print(f"  timings {r['timings']}", flush=True)
            for device, row in r["devices"].items():
                print(f"  {device}: gpu={row['gpu']} recall {row['recall']:.3f}, one query {row['latency_ms']:.3f} "
                      f"ms, batch of {args.queries}: {row['batch_queries_per_s']:.0f} queries/s", flush=True)
    if args.engine == "milvus" and args.milvus_upsert:
        print_upsert(rows)
    elif args.engine == "milvus":
        print_side_by_side(rows)
    if args.json:
        args.json.write_text(json.dumps({"faiss": faiss.__version__, "gpus": faiss.get_num_gpus()
                                         if hasattr(faiss, "get_num_gpus") else 0, "rows": rows}, indent=2) + "\n")


def print_side_by_side(rows: list[dict]) -> None:
    print("\nFAISS and Milvus on the same vectors (recall@10 vs exact; latency = median single query, k=10;"
          " ratio = latency / FAISS exact flat):")
    print("| N | engine | index | search params | consistency | recall@10 | latency (ms) | ratio vs flat "
          "| build s |")
    print("| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['size']:,} | faiss | Flat (exact) | - | - | 1.000 | {r['latency_flat_ms']:.2f} | 1.00 | - |")
        print(f"| {r['size']:,} | faiss | {r['factory']} | nprobe {r['nprobe'] or '-'} | - | "
              f"{r['recall_auto']:.3f} | {r['latency_auto_ms']:.2f} | "
              f"{r['latency_auto_ms'] / r['latency_flat_ms']:.2f} | {r['build_s']:.1f} |")
        for m in r["milvus"]:
            print(f"| {r['size']:,} | milvus | {m['index']} | {m['params'] or 'default'} | {m['consistency']} | "
                  f"{m['recall']:.3f} | "
                  f"{m['latency_ms']:.2f} | {m['latency_ms'] / r['latency_flat_ms']:.2f} | "
                  f"{m['build_s']:.1f} |", flush=True)


def print_upsert(rows: list[dict]) -> None:
    print("\nMilvus (AUTOINDEX, through MilvusWriter): publish N, upsert M in place; recall@10 vs exact over N + M,"
          " p50 = median single query (k=10; Strong and Bounded consistency); ratio = Bounded p50 / FAISS flat:")
    print("| N | +M | publish s | until served s | upsert s | search params | recall@10 | p50 Strong (ms) "
          "| p50 Bounded (ms) | ratio vs flat |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        m = r["milvus_upsert"]
        for label, row in m["rows"].items():
            print(f"| {r['size']:,} | {m['upserted']:,} | {m['insert_s']:.1f} | {m['served_s']:.1f} | "
                  f"{m['upsert_s']:.1f} | {label} {row['params'] or ''} | {row['recall']:.3f} | "
                  f"{row['latency_ms']:.2f} | {row['latency_bounded_ms']:.2f} | "
                  f"{row['latency_bounded_ms'] / r['latency_flat_ms']:.2f} |")
        print(f"  tune: {m['tune']}", flush=True)


if __name__ == "__main__":
    main()
