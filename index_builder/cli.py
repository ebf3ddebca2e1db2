"""``python -m index_builder build | info | verify`` (exit 0 ok, 1 verify found problems, 2 error)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from encoder import SBIRError, add_encoder_args, load_encoder

from .builder import BuildOptions, build_index
from .checks import info, verify
from .embedding import DISTRIBUTORS, Distributor, get_distributor
from .errors import IndexCorruptError

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m index_builder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build or incrementally update an index of a photo gallery")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--gallery", type=Path, help="folder of photos (recursive; category = first sub-folder)")
    source.add_argument("--manifest", type=Path, help="CSV/JSONL with path and optional id, category, other fields")
    build.add_argument("--out", type=Path, default=Path(os.environ.get("SBIR_INDEX_DIR", "index")),
                       help="index folder (env SBIR_INDEX_DIR, default ./index)")
    build.add_argument("--index-factory", default=None,
                       help="FAISS index_factory string, kept for later runs until another is given "
                       "('auto', the default: chosen by gallery size)")
    build.add_argument("--recall-target", type=float, default=0.95,
                       help="approximate indexes: tune nprobe to this recall@10 on stored vectors (0-1]")
    build.add_argument("--rebuild", action="store_true", help="re-embed everything (needed after a model change)")
    build.add_argument("--batch-size", type=int, default=256)
    build.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="DataLoader decoding workers (local)")
    build.add_argument("--distributor", choices=DISTRIBUTORS, default=os.environ.get("SBIR_DISTRIBUTOR", "local"),
                       help="where photos are decoded and embedded: this machine (local, the default) or a Ray "
                       "cluster (ray; needs the `distributed` extra) (env SBIR_DISTRIBUTOR)")
    build.add_argument("--ray-address", default=os.environ.get("SBIR_RAY_ADDRESS"),
                       help="ray: the cluster to join, e.g. HOST:6379 or auto (env SBIR_RAY_ADDRESS; default: start "
                       "a local cluster for this run)")
    build.add_argument("--ray-actors", type=int, default=None,
                       help="ray: encoder actors (default one per GPU of the cluster, 1 without GPUs)")
    build.add_argument("--ray-decoders", type=int, default=None,
                       help="ray: most decoding tasks at once (default: as many as the cluster's CPUs allow)")
    build.add_argument("--device", default=os.environ.get("SBIR_DEVICE", "auto"), choices=["auto", "cpu", "cuda"])
    build.add_argument("--keep", type=int, default=3, help="versions to keep (older ones are deleted)")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    add_encoder_args(build)

    for name, text in (("info", "describe the current version"), ("verify", "check that a version is consistent")):
        command = commands.add_parser(name, help=text)
        command.add_argument("index_dir", type=Path)
        command.add_argument("--version", default=None, help="a version name (default: current)")
        if name == "info":
            command.add_argument("--json", action="store_true")
    return parser


def _build(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.workers < 0 or args.keep < 1 or not 0 < args.recall_target <= 1:
        raise SBIRError("--batch-size and --keep must be >= 1, --workers >= 0, --recall-target in (0, 1].")
    distributor = _distributor(args)
    # With Ray the actors embed on the cluster's devices; the driver's copy only describes the encoder.
    encoder = load_encoder(args.checkpoint, backbone=args.backbone, pretrained=args.pretrained,
                           device="cpu" if args.distributor != "local" else args.device)
    options = BuildOptions(
        index_dir=args.out, gallery=args.gallery, manifest=args.manifest, index_factory=args.index_factory,
        recall_target=args.recall_target,
        rebuild=args.rebuild, batch_size=args.batch_size, workers=args.workers, device=args.device, keep=args.keep,
        progress=not args.no_progress, checkpoint=args.checkpoint, distributor=distributor,
    )
    report = build_index(encoder, options)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


def _distributor(args: argparse.Namespace) -> Distributor:
    if args.distributor == "ray":
        return get_distributor("ray", address=args.ray_address, actors=args.ray_actors, decoders=args.ray_decoders,
                               device=args.device)
    return get_distributor(args.distributor)


def _info(args: argparse.Namespace) -> int:
    data = info(args.index_dir, args.version)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    index = data["index"]
    print(f"index {data['index_dir']}: version {data['version']} (current {data['current']}), "
          f"created {data['created_at']}")
    print(f"  {data['size']} photos × {data['dim']} dims, {data['categories']} categories, "
          f"{data['disk_bytes'] / 2**20:.1f} MiB")
    print(f"  encoder {data['encoder']['fingerprint']} {json.dumps(data['encoder']['config'])}"
          f" checkpoint {data['encoder']['checkpoint']}")
    print(f"  index {index['engine']} {index['factory']} search {index['search_params']}")
    print(f"  gallery {data['gallery']['source']}")
    print(f"  versions: {', '.join(data['versions'])}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        problems = verify(args.index_dir, args.version)
    except IndexCorruptError as error:  # a version that cannot even be opened fails verification
        problems = [str(error)]
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    print(f"verify {args.index_dir}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'OK'}")
    return 1 if problems else 0


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwind (closing files, releasing the build lock), then exit 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, _interrupt)
    except ValueError:  # not the main thread: keep the default handlers
        pass
    try:
        return {"build": _build, "info": _info, "verify": _verify}[args.command](args)
    except (SBIRError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"error: interrupted ({signal.Signals(signum).name}); the live version is untouched"
              + ("; a new build resumes from the photos embedded so far." if args.command == "build" else "."),
              file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
