"""Retrieval quality at bf16 against fp32: the same encoder (same weights, same prompts) in both precisions.

Embeds sketchy-mini's sketches (queries) and photos (gallery) once per precision and prints, per query, how many of
the fp32 top-10 photos the bf16 ranking also returns (top-10 overlap: mean and worst), the smallest cosine between
the two precisions' vectors of one image, and category-level mAP@all / mAP@200 in each precision (relevant = same
category, as ``training evaluate`` scores). Random weights (``--pretrained none``) are fine for agreement; a
checkpoint (``--checkpoint``) scores a trained encoder.

    python bench/precision.py --backbone ViT-B-32 --photos-per-class 6 --sketches-per-class 3 [--json out.json]
    python bench/precision.py --backbone sbir-tiny            # every image of sketchy-mini
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sketchy_data import add_data_arg, checked_data  # noqa: E402
from encoder import PromptedCLIP, apply_precision, load_encoder, resolve_precision  # noqa: E402
from encoder.precision import cpu_description  # noqa: E402
from training.metrics import rank_gallery  # noqa: E402

TOP = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=os.environ.get("SBIR_BACKBONE", "ViT-B-32"))
    parser.add_argument("--pretrained", default=os.environ.get("SBIR_PRETRAINED", "none"))
    parser.add_argument("--checkpoint", default=None, help="trained prompts (default: the frozen baseline)")
    add_data_arg(parser, "the queries (sketch/) and the gallery (photo/)")
    parser.add_argument("--photos-per-class", type=int, default=0, help="0: every photo")
    parser.add_argument("--sketches-per-class", type=int, default=0, help="0: every sketch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.data = checked_data(parser, args.data, ["photo", "sketch"])
    return args


def files(folder: Path, pattern: str, per_class: int) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, class index of each, class names): the first ``per_class`` of each class folder (0: all)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    chosen, labels = [], []
    for label, name in enumerate(classes):
        found = sorted((folder / name).glob(pattern))
        found = found[:per_class] if per_class else found
        chosen += found
        labels += [label] * len(found)
    return chosen, np.asarray(labels), classes


def embed(encoder: PromptedCLIP, paths: list[Path], modality: str, batch_size: int) -> torch.Tensor:
    read = encoder.preprocess.photo_file if modality == "photo" else encoder.preprocess.sketch_file
    parts = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([read(path.read_bytes()) for path in paths[start:start + batch_size]])
        parts.append(encoder.encode(images, modality))
    return torch.cat(parts)


def twins(args: argparse.Namespace) -> dict[str, PromptedCLIP]:
    """fp32 and bf16 encoders with identical weights and learned tensors."""
    fp32 = load_encoder(args.checkpoint, backbone=args.backbone, pretrained=args.pretrained, device="cpu",
                        precision="fp32")
    bf16 = load_encoder(args.checkpoint, backbone=args.backbone, pretrained=args.pretrained, device="cpu",
                        precision="fp32")
    bf16.load_state_dict(fp32.state_dict())  # the same tensors whatever the weights source does
    apply_precision(bf16, resolve_precision("bf16", "cpu"))
    return {"fp32": fp32, "bf16": bf16}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    photos, photo_labels, classes = files(args.data / "photo", "*.jpg", args.photos_per_class)
    sketches, sketch_labels, _ = files(args.data / "sketch", "*.png", args.sketches_per_class)
    cpu = cpu_description()
    print(f"{args.backbone} ({args.pretrained}{', ' + args.checkpoint if args.checkpoint else ''}): "
          f"{len(sketches)} sketches x {len(photos)} photos, {len(classes)} classes; cpu {cpu['model']}, "
          f"{cpu['cores']} cores, native bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}", flush=True)
    vectors, seconds, scores = {}, {}, {}
    for precision, encoder in twins(args).items():
        started = time.perf_counter()
        vectors[precision] = (embed(encoder, sketches, "sketch", args.batch_size),
                              embed(encoder, photos, "photo", args.batch_size))
        seconds[precision] = time.perf_counter() - started
        queries, gallery = vectors[precision]
        result = rank_gallery(queries, sketch_labels, gallery, photo_labels, keep_top=TOP)
        scores[precision] = result
        print(f"{precision}: embedded in {seconds[precision]:.1f} s; mAP@all {result.summary()['map_all']:.4f}, "
              f"mAP@200 {result.summary()['map_200']:.4f}", flush=True)
    top32, top16 = scores["fp32"].top, scores["bf16"].top
    overlap = np.array([len(set(a) & set(b)) / TOP for a, b in zip(top32, top16, strict=True)])
    cosine = min(float((vectors["fp32"][i] * vectors["bf16"][i]).sum(-1).min()) for i in range(2))
    # Why a ranking moves: how far apart the 10th and 11th photos are (fp32), against how much bf16 moves a score.
    scores32 = vectors["fp32"][0] @ vectors["fp32"][1].T
    scores16 = vectors["bf16"][0] @ vectors["bf16"][1].T
    top11 = scores32.topk(TOP + 1, dim=1)
    gap = float((top11.values[:, TOP - 1] - top11.values[:, TOP]).median())
    shift = float((scores16 - scores32).gather(1, top11.indices[:, :TOP]).abs().median())
    figures = {
        "backbone": args.backbone, "pretrained": args.pretrained, "checkpoint": args.checkpoint, "cpu": cpu,
        "sketches": len(sketches), "photos": len(photos), "classes": len(classes),
        "score_gap_10th_11th_median": gap, "score_shift_bf16_median": shift,
        "top10_overlap_mean": float(overlap.mean()), "top10_overlap_min": float(overlap.min()),
        "queries_with_identical_top10": float((overlap == 1).mean()), "min_cosine": cosine,
        **{f"map_all_{p}": r.summary()["map_all"] for p, r in scores.items()},
        **{f"map_200_{p}": r.summary()["map_200"] for p, r in scores.items()},
        "embed_s_fp32": seconds["fp32"], "embed_s_bf16": seconds["bf16"],
    }
    figures["map_all_delta"] = figures["map_all_bf16"] - figures["map_all_fp32"]
    print(f"top-10 overlap bf16 vs fp32: mean {overlap.mean():.4f}, worst query {overlap.min():.1f} "
          f"(identical top-10 for {figures['queries_with_identical_top10']:.1%} of queries; target mean >= 0.95)")
    print(f"median score gap between the 10th and 11th photo (fp32) {gap:.2e}; median |score change| of a top-10 "
          f"photo under bf16 {shift:.2e}")
    print(f"min cosine bf16 vs fp32: {cosine:.5f}; mAP@all delta {figures['map_all_delta']:+.4f} (target |.| <= 0.005)"
          f"; embedding time bf16 / fp32 {seconds['bf16'] / seconds['fp32']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
