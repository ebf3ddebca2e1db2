"""Benchmark of the service on loopback (not a test): latency, throughput and an index swap under load.

A real `python -m app` (uvicorn) serves a 100k-vector index (synthetic normalised vectors written
in index_builder's version format, records pointing at real photos) with the ViT-B-32 architecture
(random weights are fine for speed). Printed, and written as JSON with --json:

* p50/p99 of one search at concurrency 1 ÷ the same sketch decoded + encoded + searched in-process;
* p50 of a text-only and of a sketch + text search at concurrency 1 ÷ the sketch-only search's (interleaved);
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

# Both sides (this process and the service) let idle OpenMP threads sleep instead of spin: on a shared,
# oversubscribed CPU, spinning makes single-team processes many times slower and the ratios meaningless.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from encoder import PromptedCLIP, decode_image, load_encoder  # noqa: E402
from photo_index import PhotoRecord  # noqa: E402
from photo_index.atomic import write_json  # noqa: E402
from photo_index.backends.folder import IndexReader  # noqa: E402
from photo_index.backends.folder.faiss_index import FaissEngine  # noqa: E402
from photo_index.backends.folder.records import write_metadata  # noqa: E402
from photo_index.compatibility import encoder_section  # noqa: E402
from photo_index.format import FORMAT, IDS, METADATA, VECTORS, IndexLayout, utc_now  # noqa: E402

DATA = REPO.parent.parent / "shared" / "data" / "sketchy-mini"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/sketchy-mini")


def publish_synthetic_version(index_dir: Path, encoder: PromptedCLIP, n: int, seed: int, photos: list[Path]) -> str:
    """Write and publish an index version of `n` random unit vectors with photo records.

    index_builder has no public writer for synthetic vectors, so this uses its layout, metadata and
    engine pieces in the order `build_index` does: version dir, vectors, ids, metadata, FAISS, manifest.
    """
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, encoder.embed_dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64)
    now = utc_now()
    root = photos[0].parent.parent  # the gallery: <root>/<category>/<photo>
    records = [  # the first ones are real photos; paths must be unique, so the rest name files that do not exist
        PhotoRecord(id=i, path=str(photos[i] if i < len(photos) else root / "synthetic" / f"{i}.jpg"),
                    category=photos[i % len(photos)].parent.name, sha256=hashlib.sha256(str(i).encode()).hexdigest(),
                    size=1, added_at=now, metadata={})
        for i in range(n)
    ]
    layout = IndexLayout(index_dir)
    name, partial = layout.start_version()
    np.save(partial / VECTORS, vectors)
    np.save(partial / IDS, ids)
    write_metadata(partial / METADATA, records)
    section = FaissEngine().build(np.load(partial / VECTORS, mmap_mode="r"), ids, partial, device="cpu",
                                        progress=False)
    write_json(partial / "manifest.json", {
        "format": FORMAT, "version": name, "created_at": now, "previous": layout.current(), "size": n,
        "dim": encoder.embed_dim, "next_id": n,
        "encoder": encoder_section(encoder),
        "gallery": {"root": str(root), "source": "synthetic"},
        "files": {"vectors": VECTORS, "ids": IDS, "metadata": METADATA}, "index": section, "build": {},
    })
    layout.publish(name, partial)
    layout.prune(3)
    return name


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class InProcess:
    """The same search with no service: decode + normalise + encode + FAISS search + metadata."""

    def __init__(self, encoder: PromptedCLIP, index_dir: Path, device: str = "cpu") -> None:
        self.encoder = encoder
        self.reader = IndexReader.open(index_dir, device=device)

    def once(self, sketch: bytes) -> float:
        started = time.perf_counter()
        tensor = self.encoder.preprocess.sketch(decode_image(sketch))
        vector = self.encoder.encode_sketch(tensor[None]).float().cpu().numpy()
        _, ids = self.reader.search(vector, 10)
        self.reader.records(ids[0])
        return time.perf_counter() - started


def bare_encoder(encoder: PromptedCLIP, batch: int, images: int) -> tuple[int, float]:
    """(images, seconds) of encode_sketch alone on ready tensors at `batch`, about `images` in all."""
    x = torch.randn(batch, 3, encoder.image_size, encoder.image_size, device=encoder.device)
    repeats = max(1, round(images / batch))
    started = time.perf_counter()
    for _ in range(repeats):
        encoder.encode_sketch(x)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats, time.perf_counter() - started


def search_once(http: httpx.Client, sketch: bytes | None, fields: dict | None = None
                ) -> tuple[int, float, int, str | None]:
    """(status, seconds, batch size, index version) of one form search: a sketch file and/or `fields` (text)."""
    started = time.perf_counter()
    files = {"sketch": ("s.png", sketch, "image/png")} if sketch is not None else None
    try:
        response = http.post("/search", files=files, data={"k": "10", **(fields or {})})
    except httpx.HTTPError as error:  # a dropped connection is a failure too
        return -1, time.perf_counter() - started, 0, repr(error)
    body = response.json() if response.status_code == 200 else {}
    return response.status_code, time.perf_counter() - started, body.get("batch_size", 0), body.get("index_version")


def load(base: str, sketch: bytes, concurrency: int, per_client: int | None = None,
         stop: threading.Event | None = None) -> dict:
    """`concurrency` clients sending searches back to back: `per_client` each, or until `stop` is set."""
    results: list[tuple[int, float, int, str | None]] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            sent = 0
            while (per_client is None or sent < per_client) and not (stop is not None and stop.is_set()):
                row = search_once(http, sketch)
                sent += 1
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
        "requests": len(results), "ok": len(ok), "failed": len(results) - len(ok), "seconds": elapsed,
        "mean_batch": statistics.fmean([r[2] for r in ok]) if ok else 0.0,
        "versions": sorted({r[3] for r in ok}), "results": results,
    }


def wait_ready(server: subprocess.Popen, base: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise SystemExit("the service exited during start-up")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service did not become ready")
        time.sleep(0.5)


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
    parser.add_argument("--rounds", type=int, default=2, help="alternating service / bare-encoder rounds")
    parser.add_argument("--device", default="cpu", help="the service's and the in-process path's device (cpu, cuda)")
    parser.add_argument("--photos", type=Path, default=DATA / "photo", help="folder of JPEGs the records point at")
    parser.add_argument("--sketch", type=Path, default=None, help="query sketch PNG (default: sketchy-mini's first)")
    parser.add_argument("--swap-settle-s", type=float, default=5.0,
                        help="load kept up after the new version is served (and before publishing, up to 2 s)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = {**os.environ, "SBIR_BACKBONE": args.backbone, "SBIR_PRETRAINED": args.pretrained, "HF_HUB_OFFLINE": "1"}
    env.pop("SBIR_CHECKPOINT", None)

    encoder = load_encoder(backbone=args.backbone, pretrained=args.pretrained, device=args.device)
    photos = sorted(args.photos.rglob("*.jpg"))[:2000]
    sketch = (args.sketch or sorted((DATA / "sketch").rglob("*.png"))[0]).read_bytes()
    if not photos:
        raise SystemExit(f"No JPEGs under {args.photos} (give --photos DIR)")

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index_dir = Path(tmp) / "index"
        started = time.perf_counter()
        publish_synthetic_version(index_dir, encoder, args.vectors, seed=0, photos=photos)
        print(f"index of {args.vectors:,} vectors written in {time.perf_counter() - started:.1f} s", flush=True)

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "--index-dir", str(index_dir), "--port", str(port), "--device", args.device,
             "--reload-interval-s", "0.5", "--log-level", "warning"],
            cwd=REPO, env=env,
        )
        base = f"http://127.0.0.1:{port}"
        direct = InProcess(encoder, index_dir, args.device)
        try:
            wait_ready(server, base)
            # Concurrency 1, interleaved with the in-process path (and the text queries) so that machine noise hits
            # all alike.
            in_process, single, text_only, with_text = [], [], [], []
            words = {"text": "a dog on a sofa"}
            with httpx.Client(base_url=base, timeout=600) as http:
                for i in range(args.c1_requests + 2):
                    took = direct.once(sketch)
                    timed = [search_once(http, sketch, None), search_once(http, None, words),
                             search_once(http, sketch, words)]
                    if any(status != 200 for status, *_ in timed):
                        raise SystemExit(f"search failed with HTTP {[status for status, *_ in timed]}")
                    if i >= 2:  # two warm-up rounds
                        in_process.append(took)
                        for kind, (_, served, _, _) in zip((single, text_only, with_text), timed, strict=True):
                            kind.append(served)
            print(f"c=1: service p50 {np.median(single) * 1000:.0f} ms, "
                  f"in-process {np.median(in_process) * 1000:.0f} ms, text-only {np.median(text_only) * 1000:.0f} ms, "
                  f"sketch + text {np.median(with_text) * 1000:.0f} ms", flush=True)

            # Concurrency 16 against the bare encoder at the batch size the service formed, in alternating rounds.
            per_client = max(1, args.c16_requests // 16)
            served_n = served_s = bare_n = bare_s = 0.0
            batches, c16_failed = [], 0
            for _ in range(args.rounds):
                busy = load(base, sketch, 16, per_client)
                served_n, served_s = served_n + busy["ok"], served_s + busy["seconds"]
                c16_failed += busy["failed"]
                batches.append(busy["mean_batch"])
                batch = max(1, round(busy["mean_batch"]))
                n, took = bare_encoder(encoder, batch, busy["ok"])
                bare_n, bare_s = bare_n + n, bare_s + took
                print(f"c=16: {busy['ok'] / busy['seconds']:.2f} req/s at mean batch {busy['mean_batch']:.1f}; "
                      f"bare encoder at batch {batch}: {n / took:.2f} img/s", flush=True)

            # The same load while a new version is published: keep going until it is served.
            stop = threading.Event()
            swap_result: dict = {}
            loader = threading.Thread(target=lambda: swap_result.update(load(base, sketch, 16, stop=stop)))
            loader.start()
            time.sleep(min(2.0, args.swap_settle_s))
            started = time.perf_counter()
            new_version = publish_synthetic_version(index_dir, encoder, args.vectors, seed=1, photos=photos)
            publish_s = time.perf_counter() - started
            deadline = time.monotonic() + 120
            while httpx.get(f"{base}/readyz", timeout=30).json()["index_version"] != new_version:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            time.sleep(max(args.swap_settle_s, 2 * float(np.median(single))))  # searches on the new version too
            stop.set()
            loader.join()
            final_version = httpx.get(f"{base}/readyz", timeout=30).json()["index_version"]
        finally:
            server.terminate()
            server.wait(timeout=60)
            direct.reader.close()
    swap = swap_result

    figures = {
        "machine": f"{os.cpu_count()} CPUs"
        + (f", {torch.cuda.get_device_name()}" if encoder.device.type == "cuda" else ", no GPU"),
        "device": str(encoder.device),
        "backbone": args.backbone, "pretrained": args.pretrained, "vectors": args.vectors,
        "c1_requests": len(single),
        "in_process_p50_ms": np.median(in_process) * 1000, "in_process_p99_ms": percentile(in_process, 99) * 1000,
        "c1_p50_ms": np.median(single) * 1000, "c1_p99_ms": percentile(single, 99) * 1000,
        "c1_text_p50_ms": np.median(text_only) * 1000, "c1_sketch_text_p50_ms": np.median(with_text) * 1000,
        "c16_requests": served_n, "c16_per_s": served_n / served_s, "c16_mean_batch": statistics.fmean(batches),
        "c16_failed": c16_failed, "bare_encoder_per_s": bare_n / bare_s,
        "swap_requests": swap["requests"], "swap_failed": swap["failed"], "swap_per_s": swap["ok"] / swap["seconds"],
        "swap_versions_seen": len(swap["versions"]), "swap_new_version_served": final_version == new_version,
        "swap_publish_s": publish_s,
    }
    figures["p50_ratio"] = figures["c1_p50_ms"] / figures["in_process_p50_ms"]
    figures["p99_ratio"] = figures["c1_p99_ms"] / figures["in_process_p99_ms"]
    figures["text_p50_ratio"] = figures["c1_text_p50_ms"] / figures["c1_p50_ms"]
    figures["sketch_text_p50_ratio"] = figures["c1_sketch_text_p50_ms"] / figures["c1_p50_ms"]
    figures["throughput_ratio"] = figures["c16_per_s"] / figures["bare_encoder_per_s"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=2))
    print(f"\nlatency c=1 ÷ in-process: p50 {figures['p50_ratio']:.2f}, p99 {figures['p99_ratio']:.2f} (target ≤ 1.15)")
    print(f"c=1 p50 ÷ sketch-only: text-only {figures['text_p50_ratio']:.2f}, "
          f"sketch + text {figures['sketch_text_p50_ratio']:.2f}")
    print(f"throughput c=16 ÷ bare encoder at the same batch: {figures['throughput_ratio']:.2f} (target ≥ 0.85)")
    print(f"index swap under load: {swap['failed']} failed of {swap['requests']} (target 0), "
          f"new version served: {figures['swap_new_version_served']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
