"""Benchmark of the service on loopback (not a test): latency, throughput and an index swap under load.

A real `python -m app` (uvicorn) serves a 100k-vector index (synthetic normalised vectors written
in index_builder's version format, records pointing at real photos) with the ViT-B-32 architecture
(random weights are fine for speed). Printed, and written as JSON with --json:

* p50/p99 of one search at concurrency 1 ÷ the same sketch decoded + encoded + searched in-process;
* throughput at concurrency 16 ÷ the bare encoder's images/s at the batch size the service formed;
* the same load while a new index version is published: failed requests (target 0).

    SBIR_PRETRAINED=none python bench/serve.py [--vectors 100000] [--c1-requests 20] [--c16-requests 64]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from encoder import PromptedCLIP, decode_image, load_encoder  # noqa: E402
from index_builder import IndexReader  # noqa: E402
from index_builder.engine import get_engine  # noqa: E402
from index_builder.layout import FORMAT, IDS, METADATA, VECTORS, IndexLayout, utc_now, write_json  # noqa: E402
from index_builder.metadata import PhotoRecord, write_metadata  # noqa: E402

DATA = REPO.parent.parent / "shared" / "data" / "sketchy-mini"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/sketchy-mini")


def publish_synthetic_version(index_dir: Path, encoder: PromptedCLIP, n: int, seed: int, photos: list[Path]) -> str:
    """Write and publish an index version of `n` random unit vectors (records cycle over real photos).

    index_builder has no public writer for synthetic vectors, so this uses its layout, metadata and
    engine pieces in the order `build_index` does: version dir, vectors, ids, metadata, FAISS, manifest.
    """
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, encoder.embed_dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64)
    now = utc_now()
    records = [
        PhotoRecord(id=i, path=str(photos[i % len(photos)]), category=photos[i % len(photos)].parent.name,
                    sha256=hashlib.sha256(str(i).encode()).hexdigest(), size=1, added_at=now, metadata={})
        for i in range(n)
    ]
    layout = IndexLayout(index_dir)
    name, partial = layout.start_version()
    np.save(partial / VECTORS, vectors)
    np.save(partial / IDS, ids)
    write_metadata(partial / METADATA, records)
    section = get_engine("faiss").build(np.load(partial / VECTORS, mmap_mode="r"), ids, partial, device="cpu",
                                        progress=False)
    write_json(partial / "manifest.json", {
        "format": FORMAT, "version": name, "created_at": now, "previous": layout.current(), "size": n,
        "dim": encoder.embed_dim, "next_id": n,
        "encoder": {"fingerprint": encoder.fingerprint(), "config": encoder.config.to_dict(), "checkpoint": None,
                    "random_weights": encoder.random_weights, "image_size": encoder.image_size},
        "gallery": {"root": str(DATA / "photo"), "source": "synthetic"},
        "files": {"vectors": VECTORS, "ids": IDS, "metadata": METADATA}, "index": section, "build": {},
    })
    layout.publish(name, partial)
    layout.prune(3)
    return name


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def in_process(encoder: PromptedCLIP, index_dir: Path, sketch: bytes, repeats: int) -> list[float]:
    """Seconds per search with no service: decode + normalise + encode + FAISS search + metadata."""
    reader = IndexReader.open(index_dir)
    timings = []
    try:
        for i in range(repeats + 2):
            started = time.perf_counter()
            tensor = encoder.preprocess.sketch(decode_image(sketch))
            vector = encoder.encode_sketch(tensor[None]).float().numpy()
            _, ids = reader.search(vector, 10)
            reader.records(ids[0])
            if i >= 2:  # two warm-up rounds
                timings.append(time.perf_counter() - started)
    finally:
        reader.close()
    return timings


def bare_encoder(encoder: PromptedCLIP, batch: int, repeats: int) -> float:
    """Images per second of encode_sketch alone on ready tensors, at `batch`."""
    x = torch.randn(batch, 3, encoder.image_size, encoder.image_size)
    encoder.encode_sketch(x)
    started = time.perf_counter()
    for _ in range(repeats):
        encoder.encode_sketch(x)
    return batch * repeats / (time.perf_counter() - started)


def load(base: str, sketch: bytes, concurrency: int, per_client: int) -> dict:
    """`concurrency` clients each sending `per_client` searches back to back."""
    results: list[tuple[int, float, int, str | None]] = []  # status, seconds, batch size, version
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=300) as http:
            for _ in range(per_client):
                started = time.perf_counter()
                try:
                    response = http.post("/search", files={"sketch": ("s.png", sketch, "image/png")},
                                         data={"k": "10"})
                    body = response.json() if response.status_code == 200 else {}
                    row = (response.status_code, time.perf_counter() - started, body.get("batch_size", 0),
                           body.get("index_version"))
                except httpx.HTTPError as error:
                    row = (-1, time.perf_counter() - started, 0, repr(error))
                with lock:
                    results.append(row)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ok = [r for r in results if r[0] == 200]
    return {
        "requests": len(results), "failed": len(results) - len(ok), "seconds": elapsed,
        "per_s": len(ok) / elapsed, "latencies": [r[1] for r in ok],
        "mean_batch": statistics.fmean([r[2] for r in ok]) if ok else 0.0,
        "versions": sorted({r[3] for r in ok}),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=os.environ.get("SBIR_BACKBONE", "ViT-B-32"))
    parser.add_argument("--pretrained", default=os.environ.get("SBIR_PRETRAINED", "none"))
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--c1-requests", type=int, default=20)
    parser.add_argument("--c16-requests", type=int, default=64, help="total requests of each concurrency-16 run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = {**os.environ, "SBIR_BACKBONE": args.backbone, "SBIR_PRETRAINED": args.pretrained, "HF_HUB_OFFLINE": "1"}
    env.pop("SBIR_CHECKPOINT", None)

    encoder = load_encoder(backbone=args.backbone, pretrained=args.pretrained, device="cpu")
    photos = sorted((DATA / "photo").rglob("*.jpg"))[:2000]
    sketch = sorted((DATA / "sketch").rglob("*.png"))[0].read_bytes()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index_dir = Path(tmp) / "index"
        started = time.perf_counter()
        publish_synthetic_version(index_dir, encoder, args.vectors, seed=0, photos=photos)
        print(f"index of {args.vectors:,} vectors written in {time.perf_counter() - started:.1f} s", flush=True)

        direct = in_process(encoder, index_dir, sketch, args.c1_requests)
        print(f"in-process p50 {np.median(direct) * 1000:.0f} ms", flush=True)

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "--index-dir", str(index_dir), "--port", str(port), "--device", "cpu",
             "--reload-interval-s", "0.5", "--log-level", "warning"],
            cwd=REPO, env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None:
                    raise SystemExit("the service exited during start-up")
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the service did not become ready")
                time.sleep(0.5)
            load(base, sketch, 1, 2)  # warm-up
            single = load(base, sketch, 1, args.c1_requests)
            print(f"service c=1 p50 {np.median(single['latencies']) * 1000:.0f} ms", flush=True)
            per_client = max(1, args.c16_requests // 16)
            busy = load(base, sketch, 16, per_client)
            print(f"service c=16 {busy['per_s']:.2f} req/s, mean batch {busy['mean_batch']:.1f}", flush=True)
            batch = max(1, round(busy["mean_batch"]))
            bare = bare_encoder(encoder, batch, repeats=max(2, 32 // batch))
            print(f"bare encoder at batch {batch}: {bare:.2f} img/s", flush=True)

            swap_result: dict = {}

            def publish_during_load() -> None:
                time.sleep(1.0)
                started = time.perf_counter()
                swap_result["version"] = publish_synthetic_version(index_dir, encoder, args.vectors, seed=1,
                                                                   photos=photos)
                swap_result["publish_s"] = time.perf_counter() - started

            publisher = threading.Thread(target=publish_during_load)
            publisher.start()
            swap = load(base, sketch, 16, per_client * 2)
            publisher.join()
            final_version = httpx.get(f"{base}/readyz", timeout=10).json()["index_version"]
        finally:
            server.terminate()
            server.wait(timeout=60)

    figures = {
        "machine": "2-core CPU, no GPU (dev box)",
        "backbone": args.backbone, "pretrained": args.pretrained, "vectors": args.vectors,
        "in_process_p50_ms": np.median(direct) * 1000, "in_process_p99_ms": percentile(direct, 99) * 1000,
        "c1_p50_ms": np.median(single["latencies"]) * 1000, "c1_p99_ms": percentile(single["latencies"], 99) * 1000,
        "c1_failed": single["failed"],
        "c16_per_s": busy["per_s"], "c16_mean_batch": busy["mean_batch"], "c16_failed": busy["failed"],
        "bare_encoder_per_s": bare, "bare_batch": batch,
        "swap_requests": swap["requests"], "swap_failed": swap["failed"], "swap_per_s": swap["per_s"],
        "swap_versions_seen": len(swap["versions"]),
        "swap_new_version_served": final_version == swap_result.get("version"),
        "swap_publish_s": swap_result.get("publish_s"),
    }
    figures["p50_ratio"] = figures["c1_p50_ms"] / figures["in_process_p50_ms"]
    figures["p99_ratio"] = figures["c1_p99_ms"] / figures["in_process_p99_ms"]
    figures["throughput_ratio"] = figures["c16_per_s"] / bare
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=2))
    print(f"\nlatency c=1 ÷ in-process: p50 {figures['p50_ratio']:.2f}, p99 {figures['p99_ratio']:.2f} (target ≤ 1.15)")
    print(f"throughput c=16 ÷ bare encoder at batch {batch}: {figures['throughput_ratio']:.2f} (target ≥ 0.85)")
    print(f"index swap under load: {swap['failed']} failed of {swap['requests']} (target 0), "
          f"new version served: {figures['swap_new_version_served']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
