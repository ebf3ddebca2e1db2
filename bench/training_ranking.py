"""Chunked ranking at benchmark scale: Q queries x G gallery, mAP@all / mAP@200 (three conventions) / P@100 / P@200.

    PYTHONPATH=. python bench/training_ranking.py --queries 12000 --gallery 60000 --dim 512

Prints the wall time, peak resident memory of the process and the full-matrix size it avoided.
Features are random (the metric values are meaningless; the point is time and memory).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from training.metrics import DEFAULT_MEMORY_BYTES, chunk_rows, rank_gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--gallery", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--memory-mib", type=int, default=DEFAULT_MEMORY_BYTES // 2**20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=gen), dim=1)
    gallery = torch.nn.functional.normalize(torch.randn(args.gallery, args.dim, generator=gen), dim=1)
    q_labels = torch.randint(0, args.classes, (args.queries,), generator=gen)
    g_labels = torch.randint(0, args.classes, (args.gallery,), generator=gen)
    budget = args.memory_mib * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = rank_gallery(queries, q_labels, gallery, g_labels, memory_bytes=budget, device=args.device)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    full = args.queries * args.gallery * 4 / 2**20
    print(f"{args.queries} x {args.gallery} (dim {args.dim}) on {args.device}: {elapsed:.1f} s, "
          f"{args.queries / elapsed:.0f} queries/s, chunk {chunk_rows(args.gallery, budget)} queries, "
          f"peak RSS {peak:.0f} MiB (before ranking {before:.0f} MiB); a full float32 similarity matrix "
          f"alone would be {full:.0f} MiB; map_all={result.summary()['map_all']:.4f}")


if __name__ == "__main__":
    main()
