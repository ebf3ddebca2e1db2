"""Index build throughput vs the bare encoder: how much of the encoder's speed the pipeline keeps.

Builds an index of real JPEGs (sketchy-mini photos, copied repeatedly under distinct names to reach
``--photos``) with the real builder (scan, DataLoader workers reading/hashing/decoding, encoder,
staging, FAISS, SQLite, manifest), then times the bare encoder on ready tensors at the same batch
size. efficiency = build photos/s (embedding phase) / encoder images/s.

    python bench/index_build.py                     # tiny random architecture (default)
    python bench/index_build.py --vit --photos 512  # ViT-B-32 with random weights
    python bench/index_build.py --distributor ray   # also the Ray build of the same gallery: Ray ÷ local

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
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder import load_encoder  # noqa: E402
from index_builder.builder import BuildOptions, build_index  # noqa: E402
from index_builder.ray_distributor import ENV_ADDRESS, RayDistributor, connect  # noqa: E402

# ../shared/data/... beside the repository (found from any worktree depth).
DEFAULT_PHOTOS = next(
    (p / "shared" / "data" / "sketchy-mini" / "photo" for p in Path(__file__).resolve().parents
     if (p / "shared" / "data" / "sketchy-mini" / "photo").is_dir()),
    Path("../shared/data/sketchy-mini/photo"),
)


def make_gallery(source: Path, count: int, folder: Path) -> None:
    """``count`` copies of the source JPEGs (repeated), one category folder per source class.

    Copies, not links: the builder skips links that point outside the gallery."""
    files = sorted(source.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"No JPEGs under {source}")
    for i in range(count):
        src = files[i % len(files)]
        target = folder / src.parent.name / f"{i:06d}_{src.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def encoder_images_per_s(encoder, batch_size: int, batches: int) -> float:
    images = torch.randn(batch_size, 3, encoder.image_size, encoder.image_size)
    encoder.encode_photo(images)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_photo(images)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * batches / (time.perf_counter() - started)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--source", type=Path, default=Path(os.environ.get("SBIR_BENCH_PHOTOS", DEFAULT_PHOTOS)))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--vit", action="store_true", help="ViT-B-32 with random weights instead of sbir-tiny")
    parser.add_argument("--backbone", default=None, help="any architecture (random weights); overrides --vit")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--distributor", choices=["local", "ray"], default="local",
                        help="ray: also build with the Ray distributor and print Ray ÷ local")
    parser.add_argument("--ray-address", default=os.environ.get(ENV_ADDRESS), help="default: a local cluster")
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument("--ray-decoders", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    backbone = args.backbone or ("ViT-B-32" if args.vit else "sbir-tiny")
    encoder = load_encoder(backbone=backbone, pretrained="none", device=args.device)
    batches = max(3, min(50, args.photos // args.batch_size))
    before = encoder_images_per_s(encoder, args.batch_size, batches)  # measured before and after the build:
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery"
        make_gallery(args.source, args.photos, gallery)
        report = build_index(encoder, BuildOptions(index_dir=Path(tmp) / "index", gallery=gallery,
                                                   batch_size=args.batch_size, workers=args.workers,
                                                   faiss_device=args.device, progress=False))
        bare = (before + encoder_images_per_s(encoder, args.batch_size, batches)) / 2  # this box's load varies
        print(f"{backbone} on {encoder.device}, {torch.get_num_threads()} torch threads, batch {args.batch_size}, "
              f"{args.workers} workers, {args.photos} photos")
        print(f"build: embedded {report.embedded} photos at {report.photos_per_s:.1f} photos/s "
              f"(whole build {report.size / report.elapsed_s:.1f} photos/s, {report.elapsed_s:.1f} s)")
        print(f"bare encoder: {bare:.1f} images/s")
        print(f"efficiency: {report.photos_per_s / bare:.2f}")
        if args.json:
            args.json.write_text(json.dumps({
                "backbone": backbone, "device": str(encoder.device), "photos": args.photos,
                "batch_size": args.batch_size, "workers": args.workers, "embedded": report.embedded,
                "build_photos_per_s": round(report.photos_per_s, 1),
                "whole_build_photos_per_s": round(report.size / report.elapsed_s, 1),
                "build_s": round(report.elapsed_s, 2), "bare_encoder_per_s": round(bare, 1),
                "efficiency": round(report.photos_per_s / bare, 3), "factory": report.factory,
            }, indent=2) + "\n")
        if args.distributor == "ray":
            ray_versus_local(encoder, args, gallery, Path(tmp), report)


if __name__ == "__main__":
    main()
