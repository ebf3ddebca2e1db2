"""Encoder throughput: prompted sketch/photo branches vs the bare open_clip ``encode_image``.

Prints images/s per batch size and the ratio prompted ÷ bare (target ≥ 0.95). Random weights are
fine for speed. Measurements are interleaved (bare, sketch, photo, bare, ...) so machine noise hits
all three alike. Shallow prompts add ``n_prompts`` tokens to the sequence (ViT-B-32: 50 → 53), so a
part of the gap is the method's own extra compute; the token ratio is printed beside it.

    python bench/encoder.py --backbone ViT-B-32 --batch-sizes 1,8,32,128 [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder import EncoderConfig, PromptConfig, build_encoder, resolve_device  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=os.environ.get("SBIR_BACKBONE", "ViT-B-32"))
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per batch size and variant")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    prompted = build_encoder(EncoderConfig(args.backbone, "none", PromptConfig()), device)
    bare_model = prompted.clip  # the same weights; the bare path bypasses prompts and LN copies
    size = prompted.image_size
    tokens = (size // prompted.clip.visual.patch_size[0]) ** 2 + 1
    token_ratio = tokens / (tokens + prompted.config.prompts.n_prompts)

    def bare(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), prompted._autocast(device):
            return F.normalize(bare_model.encode_image(x.to(device)).float(), dim=-1)

    variants = {"bare": bare, "sketch": prompted.encode_sketch, "photo": prompted.encode_photo}
    print(f"device={device} backbone={args.backbone} input={size}px threads={torch.get_num_threads()}")
    print(f"{'batch':>5} {'bare img/s':>11} {'sketch img/s':>13} {'photo img/s':>12} "
          f"{'sketch/bare':>12} {'photo/bare':>11} {'token ratio':>12}")
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        x = torch.randn(batch, 3, size, size, device=device)
        for fn in variants.values():  # warm-up
            fn(x)
        _sync(device)
        times: dict[str, list[float]] = {name: [] for name in variants}
        started = time.perf_counter()
        while time.perf_counter() - started < args.min_seconds * len(variants) or min(
            len(t) for t in times.values()
        ) < args.min_reps:
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn(x)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
        rate = {name: batch / statistics.median(t) for name, t in times.items()}
        row = {
            "batch": batch,
            **{f"{name}_img_s": round(r, 1) for name, r in rate.items()},
            "sketch_ratio": round(rate["sketch"] / rate["bare"], 3),
            "photo_ratio": round(rate["photo"] / rate["bare"], 3),
            "token_ratio": round(token_ratio, 3),
        }
        results.append(row)
        print(f"{batch:>5} {rate['bare']:>11.1f} {rate['sketch']:>13.1f} {rate['photo']:>12.1f} "
              f"{row['sketch_ratio']:>12.3f} {row['photo_ratio']:>11.3f} {token_ratio:>12.3f}")
    if args.json:
        autocast = None
        if device.type == "cuda":
            autocast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # what PromptedCLIP._autocast picks
        host = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "cpus": os.cpu_count(),
                "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({"device": str(device), "backbone": args.backbone, "autocast": autocast,
                                         "host": host, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
