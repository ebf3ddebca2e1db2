"""Interleaved A/B of the c=16 path (not a test): the service's encoder lanes or HTTP parser (and code) × the load
generator.

Starts one `python -m app` per variant on the same index: this checkout with its encoder as one team of threads and
in ``--encoder-lanes`` lanes (``--compare parser``: with h11 and with httptools), and with ``--before DIR`` the code
of another checkout too (e.g. ``git archive main | tar -x -C DIR``; its defaults).
bench/serve.py's c=16 round then runs against each in turn with each load generator (raw asyncio streams, httpx
threads), --rounds times, so the shared box's noise hits every combination alike. Per combination: c=16 req/s ÷
the bare encoder at the batch the service formed (in lanes, and as one team), and the CPU ms per request of the
client, of the service, and of the service's event loop.

    SBIR_PRETRAINED=none python bench/serve_compare.py --precision bf16 --rounds 3 --c16-requests 160 [--before DIR]
                                                       [--compare lanes|parser] [--clients raw]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve import (  # noqa: E402
    CLIENTS,
    REPO,
    measure_c16,
    parse_args,
    publish_synthetic_version,
    start_service,
    wait_ready,
)
from encoder import load_encoder  # noqa: E402
from encoder.precision import cpu_description  # noqa: E402

CPU_KEYS = ("c16_client_cpu_ms_per_request", "c16_service_cpu_ms_per_request", "c16_service_loop_cpu_ms_per_request")


def variants(args: argparse.Namespace) -> dict[str, tuple[Path, str, str]]:
    """name → (checkout, parser, encoder lanes) of each service to compare."""
    if args.compare == "parser":
        named = {parser: (REPO, parser, args.encoder_lanes) for parser in ("h11", "httptools")}
    else:
        named = {"one team": (REPO, "auto", "1"), f"lanes {args.encoder_lanes}": (REPO, "auto", args.encoder_lanes)}
    return {"before": (args.before, "auto", "auto"), **named} if args.before else named


def summary(runs: list[dict]) -> str:
    """One table row's figures: totals over the rounds (time-weighted rates, request-weighted CPU)."""
    n = sum(r["c16_requests"] for r in runs)
    served = sum(r["c16_requests"] / r["c16_per_s"] for r in runs)
    bare = sum(r["c16_requests"] / r["bare_encoder_per_s"] for r in runs)
    cpu = [sum(r[key] * r["c16_requests"] for r in runs) / n for key in CPU_KEYS]
    batch = sum(r["c16_mean_batch"] for r in runs) / len(runs)
    bare_cpu = sum(r["bare_encoder_cpu_ms_per_image"] * r["c16_requests"] for r in runs) / n
    team = sum(r["c16_requests"] / r["bare_team_per_s"] for r in runs)
    return (f"{n / served:.1f} | {batch:.1f} | {n / bare:.1f} | {bare / served:.2f} | {n / team:.1f} | "
            f"{team / served:.2f} | {cpu[0]:.2f} | {cpu[1]:.1f} "
            f"| {cpu[2]:.2f} | {bare_cpu:.1f} | {bare_cpu / (cpu[0] + cpu[1]):.2f}")


def main(argv: list[str] | None = None) -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--before", type=Path, default=None, help="a checkout whose service is compared too")
    extra.add_argument("--clients", default=",".join(CLIENTS), help="load generators to run, comma-separated")
    extra.add_argument("--compare", choices=("lanes", "parser"), default="lanes",
                       help="lanes: one team vs --encoder-lanes; parser: h11 vs httptools")
    known, rest = extra.parse_known_args(argv)
    args = parse_args(rest)
    args.before, args.compare, clients = known.before, known.compare, known.clients.split(",")
    encoder = load_encoder(backbone=args.backbone, pretrained=args.pretrained, device=args.device,
                           precision=args.precision, lanes=args.encoder_lanes)
    photos = sorted(args.photos.rglob("*.jpg"))[:2000]
    sketch = args.sketch.read_bytes()
    rows: dict[tuple[str, str], list[dict]] = {pair: [] for pair in itertools.product(variants(args), clients)}
    with tempfile.TemporaryDirectory(prefix="bench-serve-ab-") as tmp:
        index_dir = Path(tmp) / "index"
        publish_synthetic_version(index_dir, encoder, args.vectors, seed=0, photos=photos,
                                  clusters=args.clusters or None)
        services = {}
        try:
            for name, (repo, parser, lanes) in variants(args).items():
                variant = copy.copy(args)
                variant.http_parser, variant.encoder_lanes = parser, lanes
                services[name] = start_service(variant, index_dir, repo)
            for server, base in services.values():
                wait_ready(server, base)
            for (server, base), client in itertools.product(services.values(), clients):  # warm every pair once
                measure_c16(base, encoder, sketch, 32, 1, client=client, service_pid=server.pid)
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}", flush=True)
                for name, client in rows:
                    server, base = services[name]
                    print(f"  {name} service, {client} client: ", end="", flush=True)
                    rows[name, client].append(measure_c16(base, encoder, sketch, args.c16_requests, 1,
                                                          args.client_nice, client, server.pid))
        finally:
            for server, _ in services.values():
                server.terminate()
                server.wait(timeout=60)
    cpu = cpu_description()
    print(f"\ncpu: {cpu['model']}, {cpu['cores']} cores, bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}; "
          f"precision {encoder.precision}; {args.rounds} interleaved rounds of {args.c16_requests} requests")
    print(f"| service | client | c=16 req/s | mean batch | bare img/s ({encoder.lanes} lanes) | c=16 ÷ bare "
          "| bare img/s, one team | c=16 ÷ one team | CPU ms/request: client | service "
          "| service event loop | bare encoder CPU ms/image | bare ÷ (service + client) CPU |")
    for (name, client), runs in rows.items():
        print(f"| {name} | {client} | {summary(runs)} |")


if __name__ == "__main__":
    main()
