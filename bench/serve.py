"""Benchmark of the service on loopback (not a test): latency, throughput and an index swap under load.

A real `python -m app` (uvicorn) serves a 100k-vector index (synthetic normalised vectors written
in index_builder's version format, records pointing at real photos) with the ViT-B-32 architecture
(random weights are fine for speed). Printed, and written as JSON with --json:

* p50/p99 of one search at concurrency 1 ÷ the same sketch decoded + encoded + searched in-process;
* p50 of a text-only and of a sketch + text search at concurrency 1 ÷ the sketch-only search's (interleaved);
* throughput at concurrency 16 ÷ the bare encoder's images/s at the batch size the service formed, and the CPU per
  request of the load generator, of the service and of its event loop (the same ratio in CPU: bare encoder per
  image ÷ service + client per request); the c=16 clients are asyncio streams sending a pre-built request
  (``--client httpx``: one httpx.Client per thread, as before, ~15× the client CPU);
* the same load while a new index version is published: failed requests (target 0).

``--precision`` (auto | fp32 | bf16; default SBIR_PRECISION, else auto) is the service's, the in-process path's and
the bare encoder's, so every ratio compares one precision; the JSON records it and the CPU's bf16 flags. So is
``--encoder-lanes`` (encoder/lanes.py: each batch split over replicas): the bare encoder runs at the service's lanes,
and, with lanes, also as one team of all threads (``bare_team_per_s``, what the service ran before lanes).

    SBIR_PRETRAINED=none python bench/serve.py [--vectors 100000] [--c1-requests 20] [--c16-requests 64]
                                               [--precision bf16] [--no-swap]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
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

from bench.sketchy_data import add_data_arg, checked_data  # noqa: E402
from encoder import PromptedCLIP, add_lanes_arg, add_precision_arg, decode_image, load_encoder  # noqa: E402
from encoder.precision import cpu_description  # noqa: E402
from photo_index import PhotoRecord  # noqa: E402
from photo_index.atomic import write_json  # noqa: E402
from photo_index.backends.folder import IndexReader  # noqa: E402
from photo_index.backends.folder.faiss_index import FaissEngine  # noqa: E402
from photo_index.backends.folder.records import write_metadata  # noqa: E402
from photo_index.compatibility import encoder_section  # noqa: E402
from photo_index.format import FORMAT, IDS, METADATA, VECTORS, IndexLayout, utc_now  # noqa: E402


def synthetic_vectors(n: int, dim: int, seed: int, clusters: int | None = 1000, spread: float = 1.3) -> np.ndarray:
    """`n` unit vectors: around `clusters` random centres (noise of norm ~`spread`), or uniform when None.

    Embeddings of real photos cluster, which is what lets an IVF index search a few lists. Uniform vectors leave
    it nothing to prune: the build's calibration then picks nprobe = nlist, a scan of the whole index (IVF256 on
    100k: ~0.5 s per batch of 9 queries on the 2-core box, more than ViT-B-32 bf16 takes to encode them). At
    spread 1.3 the calibration picks nprobe 16 of 256 for recall@10 0.95 (1.0: nprobe 1; 1.5: 128)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    if clusters:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vectors = centres[rng.integers(0, clusters, n)] + vectors * np.float32(spread / dim**0.5)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def publish_synthetic_version(index_dir: Path, encoder: PromptedCLIP, n: int, seed: int, photos: list[Path],
                              clusters: int | None = 1000) -> str:
    """Write and publish an index version of `n` synthetic unit vectors with photo records.

    index_builder has no public writer for synthetic vectors, so this uses its layout, metadata and
    engine pieces in the order `build_index` does: version dir, vectors, ids, metadata, FAISS, manifest.
    """
    vectors = synthetic_vectors(n, encoder.embed_dim, seed, clusters)
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


CLIENTS = ("raw", "httpx")  # the load generator: asyncio streams, or httpx in one thread per client


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


def bare_encoder(encoder: PromptedCLIP, batch: int, images: int, *, one_team: bool = False) -> tuple[int, float]:
    """(images, seconds) of encode_sketch alone on ready tensors at `batch`, about `images` in all (`one_team`: not
    split over the encoder's lanes)."""
    x = torch.randn(batch, 3, encoder.image_size, encoder.image_size, device=encoder.device)
    repeats = max(1, round(images / batch))
    encode = (lambda images: encoder.encode_here(images, "sketch")) if one_team else encoder.encode_sketch
    started = time.perf_counter()
    for _ in range(repeats):
        encode(x)
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


MULTIPART_BOUNDARY = "sbir-bench-boundary-7d1f"


def multipart_search(host: str, sketch: bytes, fields: dict[str, str]) -> bytes:
    """The bytes of one keep-alive `POST /search` with a multipart `sketch` file and form `fields`, built once."""
    parts = [f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="sketch"; filename="s.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + sketch + b"\r\n")
    body = b"".join(parts) + f"--{MULTIPART_BOUNDARY}--\r\n".encode()
    head = (f"POST /search HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={MULTIPART_BOUNDARY}"
            f"\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, the server keeps the connection) of one response whose length its Content-Length gives."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    return status, body, headers.get("connection", "").lower() != "close"


async def _raw_clients(base: str, sketch: bytes, concurrency: int, per_client: int | None,
                       stop: threading.Event | None) -> list[tuple[int, float, int, str | None]]:
    """`concurrency` keep-alive connections, each sending the same pre-built request back to back."""
    url = httpx.URL(base)
    request = multipart_search(f"{url.host}:{url.port}", sketch, {"k": "10"})
    results: list[tuple[int, float, int, str | None]] = []

    async def client() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        sent = 0
        while (per_client is None or sent < per_client) and not (stop is not None and stop.is_set()):
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(url.host, url.port)
                reader, writer = connection
                writer.write(request)
                status, body, keep = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as error:  # a failure too
                row = (-1, time.perf_counter() - started, 0, repr(error))
                keep = False
            else:
                fields = json.loads(body) if status == 200 else {}
                row = (status, time.perf_counter() - started, fields.get("batch_size", 0), fields.get("index_version"))
            if not keep and connection is not None:
                connection[1].close()
                connection = None
            sent += 1
            results.append(row)
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _thread_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def load(base: str, sketch: bytes, concurrency: int, per_client: int | None = None,
         stop: threading.Event | None = None, nice: int = 0, client: str = "raw") -> dict:
    """`concurrency` clients sending searches back to back: `per_client` each, or until `stop` is set.

    ``client`` "raw" (default) runs them as asyncio streams in one thread, each on a keep-alive connection sending
    one pre-built multipart request and reading the response by its Content-Length: they stand for remote users,
    and on a small box the client's own CPU competes with the service's encoder. "httpx" runs one httpx.Client per
    thread (the first version; ~3.8 ms of CPU per request here). ``client_cpu_s`` is the CPU time of the client's
    threads (getrusage). ``nice`` > 0 lowers the client threads' priority."""
    results: list[tuple[int, float, int, str | None]] = []
    cpu: list[float] = []
    lock = threading.Lock()

    def httpx_client() -> None:
        if nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        before = _thread_cpu_s()
        with httpx.Client(base_url=base, timeout=600) as http:
            sent = 0
            while (per_client is None or sent < per_client) and not (stop is not None and stop.is_set()):
                row = search_once(http, sketch)
                sent += 1
                with lock:
                    results.append(row)
        with lock:
            cpu.append(_thread_cpu_s() - before)

    def raw_clients() -> None:
        if nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        before = _thread_cpu_s()
        results.extend(asyncio.run(_raw_clients(base, sketch, concurrency, per_client, stop)))
        cpu.append(_thread_cpu_s() - before)

    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; one of {CLIENTS}")
    threads = ([threading.Thread(target=httpx_client) for _ in range(concurrency)] if client == "httpx"
               else [threading.Thread(target=raw_clients)])
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
        "versions": sorted({r[3] for r in ok}), "results": results, "client_cpu_s": sum(cpu),
    }


def process_cpu_s(pid: int) -> tuple[float, float]:
    """(whole process, its main thread) CPU seconds of `pid` from /proc; the service's main thread runs the event
    loop (HTTP parsing, routing, multipart, JSON), the others the encoder, its OpenMP team and decoding. (nan, nan)
    where /proc is missing."""
    def read(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    try:
        return read(f"/proc/{pid}/stat"), read(f"/proc/{pid}/task/{pid}/stat")
    except OSError:
        return float("nan"), float("nan")


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=os.environ.get("SBIR_BACKBONE", "ViT-B-32"))
    parser.add_argument("--pretrained", default=os.environ.get("SBIR_PRETRAINED", "none"))
    add_precision_arg(parser)  # the service's, the in-process path's and the bare encoder's
    add_lanes_arg(parser)  # the same
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--clusters", type=int, default=1000,
                        help="the synthetic vectors lie around this many centres, as real embeddings cluster "
                        "(0: uniform on the sphere, which makes the IVF index scan everything)")
    parser.add_argument("--c1-requests", type=int, default=20)
    parser.add_argument("--c16-requests", type=int, default=64, help="total requests of each concurrency-16 run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating service / bare-encoder rounds")
    parser.add_argument("--device", default="cpu", help="the service's and the in-process path's device (cpu, cuda)")
    add_data_arg(parser, "the photos the records point at and the query sketch, unless --photos and --sketch say")
    parser.add_argument("--photos", type=Path, default=None, help="folder of JPEGs the records point at "
                        "(default: --data's photo/)")
    parser.add_argument("--sketch", type=Path, default=None, help="query sketch PNG (default: --data's first)")
    parser.add_argument("--swap-settle-s", type=float, default=5.0,
                        help="load kept up after the new version is served (and before publishing, up to 2 s)")
    parser.add_argument("--no-swap", action="store_true", help="skip the index swap under load")
    parser.add_argument("--client-nice", type=int, default=0,
                        help="nice of the c=16 client threads (0: as the service; 10: they yield the cores to it, as "
                        "remote clients would)")
    parser.add_argument("--http-parser", choices=["auto", "h11", "httptools"], default="auto",
                        help="the service's HTTP parser (SBIR_HTTP_PARSER; auto: httptools where installed)")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="the c=16 load generator: raw (asyncio streams in one thread, a pre-built request on "
                        "keep-alive connections; cheap, as remote users cost the box nothing) or httpx (one "
                        "httpx.Client per thread, the first version: for comparison)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.photos is None or args.sketch is None:  # only then is the data set needed
        needed = [part for part, given in (("photo", args.photos), ("sketch", args.sketch)) if given is None]
        data = checked_data(parser, args.data, needed)
        args.photos = args.photos or data / "photo"
        args.sketch = args.sketch or sorted((data / "sketch").rglob("*.png"))[0]
    return args


def start_service(args: argparse.Namespace, index_dir: Path, repo: Path = REPO) -> tuple[subprocess.Popen, str]:
    """A real `python -m app` on a free loopback port, serving `index_dir` at the benchmark's precision, run from
    `repo`'s code (another checkout: a before/after comparison; `python -m` imports from its working directory)."""
    env = {**os.environ, "SBIR_BACKBONE": args.backbone, "SBIR_PRETRAINED": args.pretrained, "HF_HUB_OFFLINE": "1",
           "SBIR_ENCODER_LANES": getattr(args, "encoder_lanes", "auto")}  # env: a checkout before lanes ignores it
    env.pop("SBIR_CHECKPOINT", None)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--index-dir", str(index_dir), "--port", str(port), "--device", args.device,
         "--precision", args.precision, "--reload-interval-s", "0.5", "--log-level", "warning",
         *(["--http-parser", args.http_parser] if args.http_parser != "auto" else [])],
        cwd=repo, env=env,
    )
    return server, f"http://127.0.0.1:{port}"


def measure_c1(base: str, direct: InProcess, sketch: bytes, requests: int) -> dict[str, list[float]]:
    """Concurrency 1, interleaved with the in-process path (and the text queries) so machine noise hits all alike."""
    timings: dict[str, list[float]] = {"in_process": [], "single": [], "text_only": [], "with_text": []}
    words = {"text": "a dog on a sofa"}
    with httpx.Client(base_url=base, timeout=600) as http:
        for i in range(requests + 2):
            took = direct.once(sketch)
            timed = [search_once(http, sketch, None), search_once(http, None, words), search_once(http, sketch, words)]
            if any(status != 200 for status, *_ in timed):
                raise SystemExit(f"search failed with HTTP {[status for status, *_ in timed]}")
            if i >= 2:  # two warm-up rounds
                timings["in_process"].append(took)
                for kind, (_, served, _, _) in zip(("single", "text_only", "with_text"), timed, strict=True):
                    timings[kind].append(served)
    print(f"c=1: service p50 {np.median(timings['single']) * 1000:.0f} ms, "
          f"in-process {np.median(timings['in_process']) * 1000:.0f} ms, "
          f"text-only {np.median(timings['text_only']) * 1000:.0f} ms, "
          f"sketch + text {np.median(timings['with_text']) * 1000:.0f} ms", flush=True)
    return timings


def measure_c16(base: str, encoder: PromptedCLIP, sketch: bytes, requests: int, rounds: int, nice: int = 0,
                client: str = "raw", service_pid: int | None = None) -> dict:
    """Concurrency 16 against the bare encoder at the batch size the service formed, in alternating rounds.

    Also the CPU per request of the load generator (a measurement artefact on the same box) and of the service
    (`service_pid`): all of it, and its event-loop thread's."""
    per_client = max(1, requests // 16)
    served_n = served_s = bare_n = bare_s = client_cpu_s = client_requests = service_cpu_s = loop_cpu_s = 0.0
    bare_cpu_s = team_n = team_s = 0.0
    batches, failed = [], 0
    for _ in range(rounds):
        service_before = process_cpu_s(service_pid) if service_pid else (float("nan"),) * 2
        busy = load(base, sketch, 16, per_client, nice=nice, client=client)
        service_after = process_cpu_s(service_pid) if service_pid else (float("nan"),) * 2
        service_cpu_s += service_after[0] - service_before[0]
        loop_cpu_s += service_after[1] - service_before[1]
        served_n, served_s = served_n + busy["ok"], served_s + busy["seconds"]
        client_cpu_s, client_requests = client_cpu_s + busy["client_cpu_s"], client_requests + busy["requests"]
        failed += busy["failed"]
        batches.append(busy["mean_batch"])
        batch = max(1, round(busy["mean_batch"]))
        cpu_before = _process_cpu_s()
        n, took = bare_encoder(encoder, batch, busy["ok"])
        bare_cpu_s += _process_cpu_s() - cpu_before
        bare_n, bare_s = bare_n + n, bare_s + took
        team = ""
        if encoder.lanes > 1:
            n_team, took_team = bare_encoder(encoder, batch, busy["ok"], one_team=True)
            team_n, team_s = team_n + n_team, team_s + took_team
            team = f" ({encoder.lanes} lanes; as one team {n_team / took_team:.2f})"
        print(f"c=16: {busy['ok'] / busy['seconds']:.2f} req/s at mean batch {busy['mean_batch']:.1f}; "
              f"bare encoder at batch {batch}: {n / took:.2f} img/s{team}; "
              f"CPU ms/request: {client} client {busy['client_cpu_s'] / max(1, busy['requests']) * 1000:.2f}, "
              f"service {(service_after[0] - service_before[0]) / max(1, busy['requests']) * 1000:.1f} "
              f"(event loop {(service_after[1] - service_before[1]) / max(1, busy['requests']) * 1000:.2f})",
              flush=True)
    return {"c16_client_nice": nice, "c16_client": client,
            "c16_client_cpu_ms_per_request": client_cpu_s / max(1.0, client_requests) * 1000,
            "c16_service_cpu_ms_per_request": service_cpu_s / max(1.0, client_requests) * 1000,
            "c16_service_loop_cpu_ms_per_request": loop_cpu_s / max(1.0, client_requests) * 1000,
            "c16_requests": served_n, "c16_per_s": served_n / served_s, "c16_mean_batch": statistics.fmean(batches),
            "c16_failed": failed, "bare_encoder_per_s": bare_n / bare_s, "lanes": encoder.lanes,
            "bare_team_per_s": team_n / team_s if team_s else bare_n / bare_s,
            "bare_encoder_cpu_ms_per_image": bare_cpu_s / bare_n * 1000}


def measure_swap(base: str, index_dir: Path, encoder: PromptedCLIP, sketch: bytes, photos: list[Path],
                 args: argparse.Namespace, c1_p50_s: float) -> dict:
    """The c=16 load while a new version is published: kept up until the new version is served."""
    stop = threading.Event()
    result: dict = {}
    loader = threading.Thread(target=lambda: result.update(load(base, sketch, 16, stop=stop, client=args.client)))
    loader.start()
    time.sleep(min(2.0, args.swap_settle_s))
    started = time.perf_counter()
    new_version = publish_synthetic_version(index_dir, encoder, args.vectors, seed=1, photos=photos,
                                            clusters=args.clusters or None)
    publish_s = time.perf_counter() - started
    deadline = time.monotonic() + 120
    while httpx.get(f"{base}/readyz", timeout=30).json()["index_version"] != new_version:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(max(args.swap_settle_s, 2 * c1_p50_s))  # searches on the new version too
    stop.set()
    loader.join()
    final_version = httpx.get(f"{base}/readyz", timeout=30).json()["index_version"]
    return {"swap_requests": result["requests"], "swap_failed": result["failed"],
            "swap_per_s": result["ok"] / result["seconds"], "swap_versions_seen": len(result["versions"]),
            "swap_new_version_served": final_version == new_version, "swap_publish_s": publish_s}


def summarise(args: argparse.Namespace, encoder: PromptedCLIP, c1: dict[str, list[float]], c16: dict,
              swap: dict | None) -> dict:
    """Every figure and ratio, as written to --json."""
    in_process, single = c1["in_process"], c1["single"]
    figures = {
        "machine": f"{os.cpu_count()} CPUs"
        + (f", {torch.cuda.get_device_name()}" if encoder.device.type == "cuda" else ", no GPU"),
        "cpu": cpu_description(), "device": str(encoder.device), "precision": encoder.precision,
        "backbone": args.backbone, "pretrained": args.pretrained, "vectors": args.vectors,
        "http_parser": args.http_parser,
        "c1_requests": len(single),
        "in_process_p50_ms": np.median(in_process) * 1000, "in_process_p99_ms": percentile(in_process, 99) * 1000,
        "c1_p50_ms": np.median(single) * 1000, "c1_p99_ms": percentile(single, 99) * 1000,
        "c1_text_p50_ms": np.median(c1["text_only"]) * 1000, "c1_sketch_text_p50_ms": np.median(c1["with_text"]) * 1000,
        **c16, **(swap or {}),
    }
    figures["p50_ratio"] = figures["c1_p50_ms"] / figures["in_process_p50_ms"]
    figures["p99_ratio"] = figures["c1_p99_ms"] / figures["in_process_p99_ms"]
    figures["text_p50_ratio"] = figures["c1_text_p50_ms"] / figures["c1_p50_ms"]
    figures["sketch_text_p50_ratio"] = figures["c1_sketch_text_p50_ms"] / figures["c1_p50_ms"]
    figures["throughput_ratio"] = figures["c16_per_s"] / figures["bare_encoder_per_s"]
    figures["throughput_ratio_vs_team"] = figures["c16_per_s"] / figures["bare_team_per_s"]
    # the same ratio in CPU, which a shared box's other jobs move far less than wall-clock rates: what the throughput
    # ratio would be with the cores to ourselves, the service and its clients using all of them
    figures["cpu_ratio"] = figures["bare_encoder_cpu_ms_per_image"] / (
        figures["c16_service_cpu_ms_per_request"] + figures["c16_client_cpu_ms_per_request"])
    return figures


def report(figures: dict) -> None:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=2))
    cpu = figures["cpu"]
    print(f"\ncpu: {cpu['model']}, {cpu['cores']} cores, native bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}; "
          f"precision {figures['precision']}")
    print(f"latency c=1 ÷ in-process: p50 {figures['p50_ratio']:.2f}, p99 {figures['p99_ratio']:.2f} (target ≤ 1.10)")
    print(f"c=1 p50 ÷ sketch-only: text-only {figures['text_p50_ratio']:.2f}, "
          f"sketch + text {figures['sketch_text_p50_ratio']:.2f}")
    print(f"throughput c=16 ÷ bare encoder at the same batch and lanes ({figures['lanes']}): "
          f"{figures['throughput_ratio']:.2f} (target ≥ 0.85); ÷ one team: {figures['throughput_ratio_vs_team']:.2f}; "
          f"{figures['c16_client']} client CPU {figures['c16_client_cpu_ms_per_request']:.2f} ms per request")
    print(f"service CPU per c=16 request: {figures['c16_service_cpu_ms_per_request']:.1f} ms, of which its event loop "
          f"{figures['c16_service_loop_cpu_ms_per_request']:.2f} ms; bare encoder CPU per image "
          f"{figures['bare_encoder_cpu_ms_per_image']:.1f} ms; bare ÷ (service + client) CPU: "
          f"{figures['cpu_ratio']:.2f}")
    if "swap_requests" in figures:
        print(f"index swap under load: {figures['swap_failed']} failed of {figures['swap_requests']} (target 0), "
              f"new version served: {figures['swap_new_version_served']}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    encoder = load_encoder(backbone=args.backbone, pretrained=args.pretrained, device=args.device,
                           precision=args.precision, lanes=args.encoder_lanes)
    photos = sorted(args.photos.rglob("*.jpg"))[:2000]
    sketch = args.sketch.read_bytes()
    if not photos:
        raise SystemExit(f"No JPEGs under {args.photos} (give --photos DIR)")

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index_dir = Path(tmp) / "index"
        started = time.perf_counter()
        publish_synthetic_version(index_dir, encoder, args.vectors, seed=0, photos=photos,
                                  clusters=args.clusters or None)
        print(f"index of {args.vectors:,} vectors written in {time.perf_counter() - started:.1f} s", flush=True)
        server, base = start_service(args, index_dir)
        direct = InProcess(encoder, index_dir, args.device)
        try:
            wait_ready(server, base)
            c1 = measure_c1(base, direct, sketch, args.c1_requests)
            c16 = measure_c16(base, encoder, sketch, args.c16_requests, args.rounds, args.client_nice,
                              args.client, server.pid)
            swap = None if args.no_swap else measure_swap(base, index_dir, encoder, sketch, photos, args,
                                                          float(np.median(c1["single"])))
        finally:
            server.terminate()
            server.wait(timeout=60)
            direct.reader.close()
    figures = summarise(args, encoder, c1, c16, swap)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
