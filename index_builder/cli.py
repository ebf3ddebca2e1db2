"""``python -m index_builder build | tune | compact | info | verify`` (exit 0 ok, 1 verify found problems, 2 error).

The composition root: flags and environment variables become a :class:`photo_index.Location`, a distributor and
:class:`BuildOptions` here, and nowhere else."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from encoder import SBIRError, add_encoder_args, add_lanes_arg, add_precision_arg, load_encoder
from encoder.config import env_number
from photo_index import Location, Source, locate, open_source
from photo_index.backends.folder.faiss_index import flat_max, new_index
from photo_index.errors import BuildError, IndexCorruptError
from photo_index.location import DEFAULT_MILVUS_TIMEOUT_S
from photo_index.registry import ENGINES

from .builder import BuildOptions, build_index
from .compaction import compact_index
from .distributors import DISTRIBUTORS, build_encoder_placement, get_distributor
from .embedding import Distributor
from .tuning import tune

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
DEVICES = ("auto", "cpu", "cuda")
MAX_BATCH_SIZE = 65_536  # photos per encoder call: far beyond any accelerator's memory, well inside islice's range
# decoding processes: past a few per core they only take memory (each holds torch; 100,000 of them OOM-killed a host)
MAX_WORKERS = max(32, 4 * (os.cpu_count() or 1))


def choice_of(values, env: str):
    """An argparse ``type`` that checks a value against ``values``: unlike ``choices`` it also checks a default
    taken from environment variable ``env`` (argparse converts a string default, but never checks its choice)."""
    def check(text: str) -> str:
        if text not in values:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not one of {', '.join(values)} (the flag, or {env})")
        return text
    return check


def _path_problem(text: str) -> str | None:
    if not text:
        return "an empty path (it would mean the current folder); give a folder or file"
    if not text.strip():  # a variable set to blanks, not a folder named with spaces anyone meant
        return "a path of only spaces; give a folder or file"
    try:  # the index records paths as text, and FAISS and SQLite open files by UTF-8 names
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"not valid UTF-8 ({text.encode('utf-8', 'backslashreplace').decode()[:120]}); rename it"
    return None


def path_arg(text: str) -> Path:
    """A path flag's value: not empty (``Path("")`` is the current folder, never what was meant), valid UTF-8."""
    problem = _path_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def env_path(name: str, default: str) -> Path:
    """A path from environment variable ``name`` (unset: ``default``), checked as :func:`path_arg` checks a flag's
    (a :class:`BuildError` naming the variable)."""
    text = os.environ.get(name, default)
    problem = _path_problem(text)
    if problem:
        raise BuildError(f"{name} is {problem}.")
    return Path(text)


def env_timeout_s() -> float:
    """SBIR_MILVUS_TIMEOUT_S (unset or empty: the default): a :class:`BuildError` naming it when bad."""
    return env_number("SBIR_MILVUS_TIMEOUT_S", DEFAULT_MILVUS_TIMEOUT_S, minimum=0.0, above=True,
                      what="a number of seconds", error=BuildError)


def add_engine_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Which vector engine holds the index: FAISS in an index folder (default) or a Milvus server; returns the
    group, so a command adds its own engine flags beside these."""
    group = parser.add_argument_group("vector engine")
    group.add_argument("--engine", choices=ENGINES, type=choice_of(ENGINES, "SBIR_ENGINE"),
                       default=os.environ.get("SBIR_ENGINE", "faiss"),
                       help="faiss: versions in an index folder; milvus: a Milvus alias (env SBIR_ENGINE)")
    group.add_argument("--milvus-uri", default=os.environ.get("SBIR_MILVUS_URI") or None,
                       help="Milvus server, e.g. http://127.0.0.1:19530 (env SBIR_MILVUS_URI)")
    group.add_argument("--collection", default=os.environ.get("SBIR_COLLECTION") or None,
                       help="Milvus alias the index is served under (env SBIR_COLLECTION)")
    group.add_argument("--milvus-token", default=os.environ.get("SBIR_MILVUS_TOKEN") or "",
                       help="Milvus token, user:password or an API key (env SBIR_MILVUS_TOKEN, safer: argv is public)")
    # The environment's value is read when used (_location), so a bad one is an error naming it, not a traceback.
    group.add_argument("--milvus-timeout-s", type=float, default=None,
                       help=f"longest wait for one Milvus call (env SBIR_MILVUS_TIMEOUT_S, default "
                       f"{DEFAULT_MILVUS_TIMEOUT_S:g} s)")
    return group


def parse_params(text: str | None, flag: str) -> dict | None:
    """``--milvus-index-params '{"M": 16}'`` → dict (a CLI error when it is not a JSON object)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise BuildError(f"{flag} must be a JSON object, e.g. '{{\"M\": 16}}': {error}") from None
    if not isinstance(value, dict):
        raise BuildError(f"{flag} must be a JSON object, e.g. '{{\"M\": 16}}'.")
    return value


def _location(args: argparse.Namespace, index_dir: Path | None) -> Location:
    if index_dir is None and args.engine == "faiss":  # as `build --out` defaults (docker-compose sets it)
        index_dir = env_path("SBIR_INDEX_DIR", "index")
    timeout_s = env_timeout_s() if args.milvus_timeout_s is None else args.milvus_timeout_s
    return locate(args.engine, index_dir=index_dir, milvus_uri=args.milvus_uri, collection=args.collection,
                  token=args.milvus_token, timeout_s=timeout_s)


def _source(args: argparse.Namespace) -> Source:
    return open_source(_location(args, args.index_dir))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m index_builder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build or incrementally update an index of a photo gallery")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--gallery", type=path_arg, help="folder of photos (recursive; category = first sub-folder)")
    source.add_argument("--manifest", type=path_arg,
                        help="CSV/JSONL with path and optional id, category, other fields")
    build.add_argument("--out", type=path_arg, default=None,  # None: env SBIR_INDEX_DIR, read in _build
                       help="index folder (env SBIR_INDEX_DIR, default ./index); with --engine milvus it keeps only "
                       "the build lock and the staging a killed build resumes from")
    build.add_argument("--index-factory", default=None,
                       help="FAISS index_factory string, kept for later runs until another is given "
                       "('auto', the default: chosen by gallery size)")
    build.add_argument("--recall-target", type=float, default=0.95,
                       help="approximate indexes: tune nprobe to this recall@10 on stored vectors (0-1]")
    build.add_argument("--rebuild", action="store_true", help="re-embed everything (needed after a model change)")
    build.add_argument("--batch-size", type=int, default=256,
                       help=f"photos per encoder call (default 256, at most {MAX_BATCH_SIZE})")
    build.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                       help=f"DataLoader decoding workers (local; at most {MAX_WORKERS})")
    build.add_argument("--distributor", choices=DISTRIBUTORS, type=choice_of(DISTRIBUTORS, "SBIR_DISTRIBUTOR"),
                       default=os.environ.get("SBIR_DISTRIBUTOR", "local"),
                       help="where photos are decoded and embedded: this machine (local, the default) or a Ray "
                       "cluster (ray; needs the `distributed` extra) (env SBIR_DISTRIBUTOR)")
    build.add_argument("--ray-address", default=None,
                       help="ray: the cluster to join, e.g. HOST:6379 or auto (env SBIR_RAY_ADDRESS; default: start "
                       "a local cluster for this run)")
    build.add_argument("--ray-actors", type=int, default=None,
                       help="ray: encoder actors (default one per GPU of the cluster, 1 without GPUs)")
    build.add_argument("--ray-decoders", type=int, default=None,
                       help="ray: most decoding tasks at once (default: as many as the cluster's CPUs allow)")
    build.add_argument("--device", default=os.environ.get("SBIR_DEVICE") or "auto", choices=DEVICES,
                       type=choice_of(DEVICES, "SBIR_DEVICE"),
                       help="where photos are embedded (here, or on the Ray actors) and the FAISS index is built "
                       "(auto: a GPU if there is one; env SBIR_DEVICE)")
    build.add_argument("--keep", type=int, default=3, help="versions to keep (older ones are deleted)")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    engine = add_engine_args(build)
    engine.add_argument("--milvus-index", default=None,
                        help="Milvus index type: AUTOINDEX (default), FLAT, IVF_FLAT, IVF_PQ, HNSW, or the server's "
                        "GPU types (GPU_CAGRA, GPU_IVF_PQ); kept for later runs until another is given")
    engine.add_argument("--milvus-index-params", default=None, help='Milvus index params as JSON, e.g. \'{"M": 16}\'')
    engine.add_argument("--milvus-search-params", default=None,
                        help='Milvus search params as JSON, e.g. \'{"ef": 64}\' or \'{"nprobe": 16}\'')
    add_encoder_args(build)
    add_precision_arg(build)
    add_lanes_arg(build)

    tuning = commands.add_parser("tune", help="recalibrate the live version's search parameters (IVF nprobe, HNSW "
                                 "efSearch; Milvus nprobe / ef) on real query vectors; FAISS: published as a new "
                                 "version, Milvus: written into the collection's manifest")
    tuning.add_argument("index_dir", type=path_arg, nargs="?", default=None,
                        help="index folder (FAISS) whose live version is tuned (default $SBIR_INDEX_DIR, else ./index)")
    tuning.add_argument("--queries", type=path_arg, required=True,
                        help=".npy of query vectors [Q, dim] of the index's encoder (e.g. saved by the service with "
                        "SBIR_QUERY_SAMPLE)")
    tuning.add_argument("--recall-target", type=float, default=0.95, help="recall@10 to reach against exact search")
    tuning.add_argument("--keep", type=int, default=3, help="versions to keep (older ones are deleted; FAISS)")
    tuning.add_argument("--json", action="store_true", help="print the result as JSON")
    add_engine_args(tuning)

    compact = commands.add_parser("compact", help="merge every segment of the live version into one (IVF trained "
                                  "and nprobe calibrated there; deleted photos dropped); published as a new version")
    compact.add_argument("index_dir", type=path_arg)
    compact.add_argument("--index-factory", default=None,
                         help="FAISS factory string of the merged segment (default: the index's, else by size)")
    compact.add_argument("--recall-target", type=float, default=0.95, help="recall@10 the nprobe calibration aims at")
    compact.add_argument("--keep", type=int, default=3, help="versions to keep (older ones are deleted)")
    compact.add_argument("--device", default="auto", choices=DEVICES, help="where FAISS trains and fills the index")
    compact.add_argument("--json", action="store_true", help="print the result as JSON")

    for name, text in (("info", "describe the current version"), ("verify", "check that a version is consistent")):
        command = commands.add_parser(name, help=text)
        command.add_argument("index_dir", type=path_arg, nargs="?", default=None,
                             help="index folder (FAISS; default $SBIR_INDEX_DIR, else ./index)")
        command.add_argument("--version", default=None, help="a version name (default: current)")
        add_engine_args(command)
        if name == "info":
            command.add_argument("--json", action="store_true", help="print the description as JSON")
    return parser


def _build(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.workers < 0 or args.keep < 1 or not 0 < args.recall_target <= 1:
        raise SBIRError("--batch-size and --keep must be >= 1, --workers >= 0, --recall-target in (0, 1].")
    if args.batch_size > MAX_BATCH_SIZE:
        raise SBIRError(f"--batch-size must be at most {MAX_BATCH_SIZE} photos per encoder call.")
    if args.workers > MAX_WORKERS:
        raise SBIRError(f"--workers must be at most {MAX_WORKERS} (4 decoding processes per CPU core, at least 32).")
    out = env_path("SBIR_INDEX_DIR", "index") if args.out is None else args.out
    distributor = _distributor(args)
    milvus = args.engine == "milvus"
    if milvus and args.index_factory:
        raise BuildError("--index-factory is FAISS's; with --engine milvus use --milvus-index.")
    if not milvus:
        flat_max()  # a bad SBIR_INDEX_FLAT_MAX is refused now, not after the photos are embedded
    location = _location(args, out)
    index_params = parse_params(args.milvus_index_params, "--milvus-index-params")
    search_params = parse_params(args.milvus_search_params, "--milvus-search-params")
    # --device means three things, one per step: where this process's encoder embeds (local), where Ray actors
    # embed (ray; the driver's copy then only describes the encoder), and where FAISS builds its index.
    encoder_device, lanes, precision = build_encoder_placement(args.distributor, args.device, args.encoder_lanes,
                                                               args.precision)
    encoder = load_encoder(args.checkpoint, backbone=args.backbone, pretrained=args.pretrained,
                           activation=args.activation, device=encoder_device, precision=precision, lanes=lanes)
    if not milvus and args.index_factory not in (None, "auto"):
        new_index(args.index_factory, encoder.embed_dim)  # a typo is refused now, not after every photo is embedded
    options = BuildOptions(
        index_dir=out, gallery=args.gallery, manifest=args.manifest,
        index_factory=args.milvus_index if milvus else args.index_factory, recall_target=args.recall_target,
        rebuild=args.rebuild, batch_size=args.batch_size, workers=args.workers, faiss_device=args.device,
        keep=args.keep, progress=not args.no_progress, checkpoint=args.checkpoint, location=location,
        index_params=index_params, search_params=search_params, distributor=distributor,
    )
    report = build_index(encoder, options)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


def _distributor(args: argparse.Namespace) -> Distributor:
    if args.distributor == "ray":
        return get_distributor("ray", address=args.ray_address, actors=args.ray_actors, decoders=args.ray_decoders,
                               actor_device=args.device, precision=args.precision)
    # Given to another distributor, Ray's flags were ignored: a build meant for a cluster ran here, in silence.
    # (SBIR_RAY_ADDRESS in the environment is a deployment's setting, read by the Ray distributor: not refused.)
    given = [flag for flag, value in (("--ray-actors", args.ray_actors), ("--ray-decoders", args.ray_decoders),
                                      ("--ray-address", args.ray_address)) if value is not None]
    if given:
        raise SBIRError(f"{', '.join(given)} only apply with --distributor ray (this build's is {args.distributor}).")
    return get_distributor(args.distributor)


def _tune(args: argparse.Namespace) -> int:
    if args.keep < 1 or not 0 < args.recall_target <= 1:
        raise SBIRError("--keep must be >= 1 and --recall-target in (0, 1].")
    location = _location(args, args.index_dir)
    result = tune(location, args.queries, recall_target=args.recall_target, keep=args.keep)
    where = result["index_dir"]
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["status"] == "unchanged":
        print(f"tune {where}: nothing to tune ({result['reason']}); version {result['version']} unchanged")
    else:
        calibration = result["calibration"]
        print(f"tune {where}: {result['before']} -> {result['after']} on {calibration['queries']} query "
              f"vectors (recall@10 {calibration['recall_at_10']}, target {calibration['target']}"
              f"{'' if calibration['reached'] else ', NOT reached at the largest setting'}); "
              f"{'published version' if result['version'] != result['previous'] else 'recorded in'} "
              f"{result['version']}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    if args.keep < 1 or not 0 < args.recall_target <= 1:
        raise SBIRError("--keep must be >= 1 and --recall-target in (0, 1].")
    result = compact_index(args.index_dir, factory=args.index_factory, recall_target=args.recall_target,
                           keep=args.keep, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["status"] == "unchanged":
        print(f"compact {args.index_dir}: nothing to do ({result['reason']}); version {result['version']} unchanged")
    else:
        print(f"compact {args.index_dir}: {result['segments_before']} segments ({result['deleted_before']} deleted "
              f"photos) -> 1 segment of {result['size']} photos, {result['factory']} {result['search_params']}; "
              f"published version {result['version']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    source = _source(args)
    try:
        data = source.info(args.version)
    finally:
        source.close()
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
    if index.get("layout") == "segments":
        print(f"  {len(index['segments'])} segment(s), {index['deleted']} tombstone(s) (rows of deleted or replaced "
              "photos): "
              + ", ".join(f"{s['size'] - s['deleted']} live/{s['size']} {s['factory']}" for s in index["segments"]))
    print(f"  gallery {data['gallery']['source']}")
    print(f"  versions: {', '.join(data['versions'])}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    source = _source(args)
    try:
        problems = source.verify(args.version)
    except IndexCorruptError as error:  # a version that cannot even be opened fails verification
        problems = [str(error)]
    finally:
        source.close()
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    print(f"verify {source.describe()}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'OK'}")
    return 1 if problems else 0


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwind (closing files, releasing the build lock), then exit 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_GRACE_S = 5.0  # after a first Ctrl+C, how long a repeat is taken for impatience, not for "stop now"
_stopping_since: list[float] = []  # when the first signal arrived (empty: none yet)


def _interrupt(signum: int, _frame: object) -> None:
    """The first signal unwinds (closing workers, releasing the lock); a repeat within STOP_GRACE_S is ignored, as it
    would land inside that cleanup as a traceback; a later one, if cleanup hangs, exits at once."""
    if not _stopping_since:
        _stopping_since.append(time.monotonic())
        raise Interrupted(signum)
    if time.monotonic() - _stopping_since[0] < STOP_GRACE_S:
        return
    print(f"error: interrupted again ({signal.Signals(signum).name}) while stopping; exiting now. The live version "
          "is untouched.", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stopping_since.clear()  # a new run (tests call main again in one process)
    handlers = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, _interrupt)
    except ValueError:  # not the main thread: keep the default handlers
        pass
    try:
        return {"build": _build, "tune": _tune, "compact": _compact, "info": _info,
                "verify": _verify}[args.command](args)
    except (SBIRError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError as error:  # the encoder's GPU memory: the settings', not a bug
        print(f"error: out of GPU memory ({str(error).splitlines()[0]}); try a smaller --batch-size; the photos "
              "embedded so far are staged and the next run resumes from them", file=sys.stderr)
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
