"""Index build throughput vs the bare encoder: how much of the encoder's speed the pipeline keeps.

Builds an index of real JPEGs (sketchy-mini photos, copied repeatedly under distinct names to reach
``--photos``) with the real builder (scan, DataLoader workers reading/hashing/decoding, encoder,
staging, FAISS, SQLite, manifest), then times the bare encoder on ready tensors at the same batch
size, precision and encoder lanes (``--encoder-lanes``, encoder/lanes.py).
efficiency = build photos/s (embedding phase) / encoder images/s.

On a shared box the wall-clock ratio moves with the load (an OpenMP team whose threads are preempted waits at every
barrier), so CPU time is reported too: the build's CPU seconds per photo (this process + its DataLoader workers,
whole build) against the bare encoder's per image. With ``--threads 1`` no OpenMP thread spins and the CPU ratio is
the share of the work that is the encoder's: what an idle box reaches when decoding overlaps the encoder fully.

    python bench/index_build.py                     # tiny random architecture (default)
    python bench/index_build.py --vit --photos 512  # ViT-B-32 with random weights
    python bench/index_build.py --distributor ray   # also the Ray build of the same gallery: Ray ÷ local
    python bench/index_build.py --photos 20000 --changes 10   # then add 10 / remove 10: bytes, time ÷ full
    python bench/index_build.py --vectors 200000    # precomputed vectors: changes of 1,000 (segment_changes.py)

With ``--distributor ray`` the gallery is also built with the Ray distributor (a local cluster started
here, or ``--ray-address``): ratio = Ray photos/s ÷ local photos/s (embedding phases). A Ray build of a
quarter of the gallery first (after a warm-up build that starts the read workers) gives the steady rate
by difference, (N - N/4) / (t_N - t_N/4), which leaves out the fixed cost of a Ray build (actor start,
encoder rebuild, Dataset planning).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import segment_changes  # noqa: E402
from bench.segment_changes import files, written  # noqa: E402
from bench.sketchy_data import add_data_arg, checked_data  # noqa: E402
from encoder import add_lanes_arg, add_precision_arg, load_encoder  # noqa: E402
from encoder.precision import cpu_description  # noqa: E402
from index_builder.builder import BuildOptions, build_index  # noqa: E402
from index_builder.distributors import build_encoder_placement  # noqa: E402
from index_builder.ray_distributor import ENV_ADDRESS, RayDistributor, connect  # noqa: E402
from photo_index.backends.folder import IndexReader  # noqa: E402

ENV_PHOTOS = "SBIR_BENCH_PHOTOS"  # a folder of <class>/*.jpg, instead of --data's photo/

def make_gallery(source: Path, count: int, folder: Path, sizes: list[int] | None = None, start: int = 0
                 ) -> list[Path]:
    """``count`` copies of the source JPEGs (repeated; numbered from ``start``), one category folder per source
    class; returns them.

    Copies, not links: the builder skips links that point outside the gallery. With ``sizes`` the copies are
    re-encoded (JPEG quality 88, as sketchy-mini's) with their long side scaled to each size in turn: camera-sized
    files exercise the decoder as a real gallery does (a 4000-px JPEG costs ~40x a 256-px one to decode in full)."""
    files = sorted(source.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"No JPEGs under {source}")
    written = []
    for i in range(start, start + count):
        src = files[i % len(files)]
        target = folder / src.parent.name / f"{i:06d}_{src.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(target)
        if not sizes:
            shutil.copyfile(src, target)
            continue
        with Image.open(src) as image:
            side = sizes[i % len(sizes)]
            scale = side / max(image.size)
            image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                        Image.Resampling.BILINEAR).save(target, quality=88)
    return written


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers of a build)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def encoder_images_per_s(encoder, batch_size: int, batches: int) -> tuple[float, float]:
    """Images/s of the bare photo branch on ready tensors, and its CPU seconds per image."""
    images = torch.randn(batch_size, 3, encoder.image_size, encoder.image_size)
    encoder.encode_photo(images)  # warm-up
    started, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        encoder.encode_photo(images)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * batches / (time.perf_counter() - started), (cpu_seconds() - cpu) / (batch_size * batches)


def ray_versus_local(encoder, args, gallery: Path, tmp: Path, local) -> None:
    """Build the same gallery with the Ray distributor and print Ray ÷ local."""
    connect(args.ray_address)  # before the clock runs, as a real cluster is up before a build
    import ray

    try:
        distributor = RayDistributor(actors=args.ray_actors, decoders=args.ray_decoders, actor_device=args.device)
        quarter = tmp / "quarter"
        make_gallery(args.source, max(1, args.photos // 4), quarter)
        options = {"batch_size": args.batch_size, "device": args.device, "distributor": distributor, "progress": False}
        # Warm-up: the job's first build also starts its read-task worker processes; later builds reuse them.
        build_index(encoder, BuildOptions(index_dir=tmp / "warm-index", gallery=quarter, **options))
        small = build_index(encoder, BuildOptions(index_dir=tmp / "quarter-index", gallery=quarter, **options))
        report = build_index(encoder, BuildOptions(index_dir=tmp / "ray-index", gallery=gallery, **options))
        resources = ray.cluster_resources()
    finally:
        ray.shutdown()
    ratio = report.photos_per_s / local.photos_per_s
    print(f"ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs, "
          f"actors {args.ray_actors or 'auto'}, decoders {args.ray_decoders or 'auto'}")
    print(f"ray build: embedded {report.embedded} photos at {report.photos_per_s:.1f} photos/s "
          f"({report.embed_s:.1f} s; a quarter of them {small.embed_s:.1f} s)")
    if report.embed_s <= small.embed_s:  # the fixed cost varied more than the work: use more photos
        print(f"ray ÷ local: {ratio:.2f} (steady: not measurable with {report.embedded} photos)")
        return
    steady = (report.embedded - small.embedded) / (report.embed_s - small.embed_s)
    print(f"steady {steady:.1f} photos/s, fixed cost of a build ≈ {report.embed_s - report.embedded / steady:.1f} s")
    print(f"ray ÷ local: {ratio:.2f} (steady {steady / local.photos_per_s:.2f})")


def small_changes(encoder, args, gallery: Path, tmp: Path, full) -> dict:
    """A build with nothing to do, then adding ``--changes`` photos, then removing as many: bytes written and time
    of each ÷ the full build's; then the top 10 against a fresh full build of the same photos (exact indexes)."""
    index_dir = tmp / "index"
    options = {"batch_size": args.batch_size, "workers": args.workers, "faiss_device": args.device,
               "progress": False}
    full_bytes = written({}, index_dir)
    rows = {}

    def timed(name: str) -> None:
        before = files(index_dir)
        report = build_index(encoder, BuildOptions(index_dir=index_dir, gallery=gallery, **options))
        rows[name] = {"s": report.elapsed_s, "bytes": written(before, index_dir), "notes": report.notes}

    timed("nothing to do")
    make_gallery(args.source, args.changes, gallery, start=args.photos)
    timed(f"add {args.changes}")
    removed = sorted(p for p in gallery.rglob("*.jpg"))[: args.changes]
    for path in removed:
        path.unlink()
    timed(f"remove {args.changes}")
    fresh = build_index(encoder, BuildOptions(index_dir=tmp / "fresh", gallery=gallery, **options))
    with IndexReader.open(index_dir) as changed, IndexReader.open(tmp / "fresh") as other:
        queries = other.vectors()[1][:: max(1, other.size // 200)]
        paths = [[[r.path if r else None for r in reader.records(row)] for row in reader.search(queries, 10)[1]]
                 for reader in (changed, other)]
    overlap = sum(len(set(a) & set(b)) for a, b in zip(*paths, strict=True)) / (10 * len(queries))
    gone = {str(p) for p in removed}
    returned_removed = sum(path in gone for row in paths[0] for path in row)
    noop = rows["nothing to do"]["s"]
    print("| build | MB written | ÷ full | s | (s − nothing to do) ÷ full |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| full ({full.size} photos) | {full_bytes / 1e6:.2f} | 1 | {full.elapsed_s:.2f} | 1 |")
    for name, row in rows.items():
        print(f"| {name} | {row['bytes'] / 1e6:.3f} | {row['bytes'] / full_bytes:.4f} | {row['s']:.2f} | "
              f"{max(row['s'] - noop, 0) / full.elapsed_s:.3f} |  {'; '.join(row['notes'])}")
    print(f"top-10 overlap with a fresh full build of the same {fresh.size} photos: {overlap:.3f} "
          f"({len(queries)} queries); removed photos returned: {returned_removed}")
    return {"full": {"bytes": full_bytes, "s": full.elapsed_s}, "changes": rows, "overlap": overlap,
            "removed_returned": returned_removed}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=3000)
    add_data_arg(parser, "the gallery's source JPEGs (its photo/ folder)")
    parser.add_argument("--source", type=Path, default=os.environ.get(ENV_PHOTOS) or None,
                        help=f"a folder of <class>/*.jpg instead of --data's photo/ (env {ENV_PHOTOS})")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--vit", action="store_true", help="ViT-B-32 with random weights instead of sbir-tiny")
    parser.add_argument("--backbone", default=None, help="any architecture (random weights); overrides --vit")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process (default torch's)")
    add_precision_arg(parser)  # the build's and the bare encoder's
    add_lanes_arg(parser)  # likewise (the local distributor's; Ray actors run one team, as `index_builder build`)
    parser.add_argument("--sizes", default="", help="long sides (px) the gallery's JPEGs are scaled to in turn, "
                        "e.g. 256,1024,2048,4000 (default: the source files as they are)")
    parser.add_argument("--distributor", choices=["local", "ray"], default="local",
                        help="ray: also build with the Ray distributor and print Ray ÷ local")
    parser.add_argument("--ray-address", default=os.environ.get(ENV_ADDRESS), help="default: a local cluster")
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument("--ray-decoders", type=int, default=None)
    parser.add_argument("--changes", type=int, default=0,
                        help="then add this many photos and remove as many, one build each: bytes and time ÷ full")
    parser.add_argument("--vectors", type=int, default=0,
                        help="instead: precomputed vectors of this many photos (no images), see segment_changes.py")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.source is None:
        args.source = checked_data(parser, args.data, ["photo"]) / "photo"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.vectors:
        segment_changes.main(["--size", str(args.vectors), "--threads", "1"]
                             + (["--json", str(args.json)] if args.json else []))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = args.backbone or ("ViT-B-32" if args.vit else "sbir-tiny")
    # The build's lanes; its device stays --device either way: the bare encoder is timed where the photos embed.
    _, lanes, _ = build_encoder_placement(args.distributor, args.device, args.encoder_lanes, args.precision)
    encoder = load_encoder(backbone=backbone, pretrained="none", device=args.device, precision=args.precision,
                           lanes=lanes)
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    batches = max(3, min(50, args.photos // args.batch_size))
    before, before_cpu = encoder_images_per_s(encoder, args.batch_size, batches)  # before and after the build:
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery"
        started = time.perf_counter()
        make_gallery(args.source, args.photos, gallery, sizes)
        print(f"gallery of {args.photos} JPEGs ({args.sizes or 'as they are'}) "
              f"in {time.perf_counter() - started:.0f} s",
              flush=True)
        cpu_started = cpu_seconds()
        report = build_index(encoder, BuildOptions(index_dir=Path(tmp) / "index", gallery=gallery,
                                                   batch_size=args.batch_size, workers=args.workers,
                                                   faiss_device=args.device, progress=False))
        build_cpu = (cpu_seconds() - cpu_started) / max(report.embedded, 1)
        after, after_cpu = encoder_images_per_s(encoder, args.batch_size, batches)
        bare, bare_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2  # this box's load varies
        cpu = cpu_description()
        print(f"{backbone} on {encoder.device} ({cpu['model']}, {cpu['cores']} cores, native bf16 flags: "
              f"{', '.join(cpu['bf16_flags']) or 'none'}), precision {encoder.precision}, "
              f"{torch.get_num_threads()} torch threads in {encoder.lanes} encoder lane(s), batch {args.batch_size}, "
              f"{args.workers} workers, "
              f"{args.photos} photos")
        print(f"build: embedded {report.embedded} photos at {report.photos_per_s:.1f} photos/s "
              f"(whole build {report.size / report.elapsed_s:.1f} photos/s, {report.elapsed_s:.1f} s)")
        print(f"bare encoder: {bare:.1f} images/s")
        print(f"efficiency: {report.photos_per_s / bare:.2f}")
        print(f"cpu: build {build_cpu * 1e3:.1f} ms/photo (all processes, whole build), bare encoder "
              f"{bare_cpu * 1e3:.1f} ms/image: cpu efficiency {bare_cpu / build_cpu:.2f} (load average "
              f"{os.getloadavg()[0]:.1f})")
        if args.json:
            args.json.write_text(json.dumps({
                "backbone": backbone, "device": str(encoder.device), "precision": encoder.precision,
                "cpu": cpu, "sizes": sizes, "photos": args.photos,
                "batch_size": args.batch_size, "workers": args.workers, "embedded": report.embedded,
                "build_photos_per_s": round(report.photos_per_s, 1),
                "whole_build_photos_per_s": round(report.size / report.elapsed_s, 1),
                "build_s": round(report.elapsed_s, 2), "bare_encoder_per_s": round(bare, 1),
                "efficiency": round(report.photos_per_s / bare, 3), "factory": report.factory,
                "threads": torch.get_num_threads(), "lanes": encoder.lanes,
                "build_cpu_ms_per_photo": round(build_cpu * 1e3, 2),
                "bare_cpu_ms_per_image": round(bare_cpu * 1e3, 2), "cpu_efficiency": round(bare_cpu / build_cpu, 3),
            }, indent=2) + "\n")
        if args.changes:
            changes = small_changes(encoder, args, gallery, Path(tmp), report)
            if args.json:
                args.json.write_text(json.dumps({**json.loads(args.json.read_text()), "small_changes": changes},
                                                indent=2) + "\n")
        if args.distributor == "ray":
            ray_versus_local(encoder, args, gallery, Path(tmp), report)


if __name__ == "__main__":
    main()
