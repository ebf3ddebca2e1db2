"""Search benchmark: recall@10 and median single-query latency of the auto-chosen index vs flat.

Synthetic data: N unit vectors of dimension 512 drawn from a mixture of ``--clusters`` Gaussian
clusters (real CLIP embeddings are clustered, not uniform on the sphere), and held-out queries from
the same mixture. Ground truth is the exact (flat) top 10. The auto index is built by the very
code the builder runs (``FaissEngine.build``: factory by size, training on a sample, nprobe
calibration) and searched through ``FaissIndex.search``, as the reader does, on each of ``--devices``
(``cuda``: the index cloned to the GPUs, as the reader does with ``device="auto"``).

    python bench/search.py --sizes 100000 1000000 [--devices cpu,cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
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

from index_builder.faiss_engine import FaissEngine  # noqa: E402

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


def run(size: int, dim: int, clusters: int, noise: float, n_queries: int, folder: Path,
        devices: tuple[str, ...] = ("cpu",)) -> dict:
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
    os.remove(folder / "vectors.npy")
    return result


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
    args = parser.parse_args()
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    rows = []
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, "
          f"{args.clusters} clusters, noise {args.noise}")
    print("| N | auto index | nprobe | recall@10 auto | latency auto (ms) | latency flat (ms) | speed-up | build s |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(size, args.dim, args.clusters, args.noise, args.queries, Path(tmp), devices)
        rows.append(r)
        print(f"| {r['size']:,} | {r['factory']} | {r['nprobe'] or '-'} | {r['recall_auto']:.3f} | "
              f"{r['latency_auto_ms']:.2f} | {r['latency_flat_ms']:.2f} | {r['speedup']:.1f}× | {r['build_s']:.1f} |",
              flush=True)
        print(f"  timings {r['timings']}", flush=True)
        for device, row in r["devices"].items():
            print(f"  {device}: gpu={row['gpu']} recall {row['recall']:.3f}, one query {row['latency_ms']:.3f} ms, "
                  f"batch of {args.queries}: {row['batch_queries_per_s']:.0f} queries/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"faiss": faiss.__version__, "gpus": faiss.get_num_gpus()
                                         if hasattr(faiss, "get_num_gpus") else 0, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
