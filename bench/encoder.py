"""Encoder throughput: prompted sketch/photo branches vs the bare open_clip ``encode_image``, at a precision.

Prints images/s per batch size and the ratio prompted ÷ bare (target ≥ 0.95). Random weights are
fine for speed. Measurements are interleaved (bare, sketch, photo, bare, ...) so machine noise hits
all three alike. Shallow prompts add ``n_prompts`` tokens to the sequence (ViT-B-32: 50 → 53), so a
part of the gap is the method's own extra compute; the token ratio is printed beside it.

``--precision`` (auto | fp32 | bf16, encoder/precision.py) sets what all three run in. When it is not fp32, an fp32
copy of the same (seeded) weights runs in the same rotation: the table adds sketch img/s ÷ the fp32 sketch branch's
and the smallest cosine between the two precisions' vectors. The CPU's bf16 flags are printed and written.

``--encoder-lanes`` (auto | N, encoder/lanes.py) splits the prompted encoders' batches over N replicas with a share of
the threads each; with N > 1 the table adds the sketch branch in lanes (``lanes img/s``) ÷ the same branch as one team
of all threads, and ``vs fp32`` compares the two precisions at the same lanes (``vs fp32 team``: against fp32 as one
team, what the service ran before lanes).

``--threads N`` sets torch's threads. CPU milliseconds per image (this process's CPU time while each variant ran)
are written beside img/s, and with a comparison printed as ``cpu vs fp32`` (fp32 CPU ÷ bf16 CPU): with
``--threads 1`` no OpenMP thread waits or spins, so that ratio is the work each precision needs per image, which a
busy shared box does not move the way it moves wall-clock rates.

    python bench/encoder.py --backbone ViT-B-32 --batch-sizes 1,8,32,128 [--device cuda] [--precision bf16]
                            [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder import (  # noqa: E402
    EncoderConfig,
    PromptConfig,
    PromptedCLIP,
    add_lanes_arg,
    add_precision_arg,
    apply_precision,
    build_encoder,
    resolve_device,
    resolve_lanes,
    resolve_precision,
)
from encoder.precision import cpu_description  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=os.environ.get("SBIR_BACKBONE", "ViT-B-32"))
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    add_precision_arg(parser)  # default auto, as the service and the indexer
    add_lanes_arg(parser)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per batch size and variant")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def build(backbone: str, device: torch.device, precision: str,
          lanes: str) -> tuple[PromptedCLIP, PromptedCLIP | None]:
    """The encoder at ``precision`` and ``lanes``, and an fp32 twin (the same prompts and lanes) when that is not
    fp32."""
    encoder = build_encoder(EncoderConfig(backbone, "none", PromptConfig()), device)
    twin = build_encoder(encoder.config, device)
    twin.load_state_dict(encoder.state_dict())
    apply_precision(encoder, resolve_precision(precision, device))
    for model in (encoder, twin):
        model.set_lanes(resolve_lanes(lanes, device))
    return encoder, (twin if encoder.precision != "fp32" else None)


def variants(prompted: PromptedCLIP, fp32: PromptedCLIP | None) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The timed functions: bare open_clip and the two prompted branches as one team of threads; the sketch branch in
    lanes when there are lanes; the fp32 sketch branch (in lanes and as one team) when compared."""
    device, dtype = prompted.device, prompted.weights_dtype
    bare_model = prompted.clip  # the same weights; the bare path bypasses prompts and LN copies

    def bare(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), prompted._autocast(device):
            return F.normalize(bare_model.encode_image(x.to(device, dtype)).float(), dim=-1)

    def one_team(model: PromptedCLIP, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: model.encode_here(x, modality)

    timed = {"bare": bare, "sketch": one_team(prompted, "sketch"), "photo": one_team(prompted, "photo")}
    if prompted.lanes > 1:
        timed["lanes"] = prompted.encode_sketch
    if fp32 is not None:
        timed["fp32_sketch"] = fp32.encode_sketch
        if fp32.lanes > 1:
            timed["fp32_team"] = one_team(fp32, "sketch")
    return timed


def time_batch(timed: dict[str, Callable], x: torch.Tensor, device: torch.device, min_seconds: float,
               min_reps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall seconds and median CPU seconds (this process, all its threads) of each function on ``x``, in
    rotation until each has had ``min_seconds`` and ``min_reps``."""
    for fn in timed.values():  # warm-up
        fn(x)
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in timed}
    cpu: dict[str, list[float]] = {name: [] for name in timed}
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds * len(timed) or min(len(t) for t in times.values()) < min_reps:
        for name, fn in timed.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(x)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return ({name: statistics.median(t) for name, t in times.items()},
            {name: statistics.median(t) for name, t in cpu.items()})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    prompted, fp32 = build(args.backbone, device, args.precision, args.encoder_lanes)
    timed = variants(prompted, fp32)
    size = prompted.image_size
    tokens = (size // prompted.clip.visual.patch_size[0]) ** 2 + 1
    token_ratio = tokens / (tokens + prompted.config.prompts.n_prompts)
    cpu = cpu_description()

    print(f"device={device} backbone={args.backbone} input={size}px threads={torch.get_num_threads()} "
          f"precision={prompted.precision} ({prompted.precision_choice.reason}) lanes={prompted.lanes}")
    print(f"cpu: {cpu['model']}, {cpu['cores']} cores, native bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}")
    lanes = prompted.lanes > 1
    sketch = "lanes" if lanes else "sketch"  # what the entry points run
    compare = f" {'lanes img/s':>12} {'lanes/team':>11}" if lanes else ""
    if fp32 is not None:
        compare += f" {'fp32 img/s':>11} {'vs fp32':>8} {'cpu vs fp32':>12} {'min cos':>8}"
        compare += f" {'vs fp32 team':>13}" if lanes else ""
    print(f"{'batch':>5} {'bare img/s':>11} {'sketch img/s':>13} {'photo img/s':>12} "
          f"{'sketch/bare':>12} {'photo/bare':>11} {'token ratio':>12}{compare}")
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        x = torch.randn(batch, 3, size, size, device=device)
        wall, cpu_s = time_batch(timed, x, device, args.min_seconds, args.min_reps)
        rate = {name: batch / seconds for name, seconds in wall.items()}
        row = {
            "batch": batch,
            **{f"{name}_img_s": round(r, 1) for name, r in rate.items()},
            **{f"{name}_cpu_ms_per_img": round(seconds / batch * 1e3, 2) for name, seconds in cpu_s.items()},
            "sketch_ratio": round(rate["sketch"] / rate["bare"], 3),
            "photo_ratio": round(rate["photo"] / rate["bare"], 3),
            "token_ratio": round(token_ratio, 3),
        }
        line = (f"{batch:>5} {rate['bare']:>11.1f} {rate['sketch']:>13.1f} {rate['photo']:>12.1f} "
                f"{row['sketch_ratio']:>12.3f} {row['photo_ratio']:>11.3f} {token_ratio:>12.3f}")
        if lanes:
            row["lanes_vs_team"] = round(rate["lanes"] / rate["sketch"], 3)
            line += f" {rate['lanes']:>12.1f} {row['lanes_vs_team']:>11.2f}"
        if fp32 is not None:
            row["vs_fp32"] = round(rate[sketch] / rate["fp32_sketch"], 3)
            row["cpu_vs_fp32"] = round(cpu_s["fp32_sketch"] / cpu_s[sketch], 3)
            row["min_cosine_vs_fp32"] = round(float((prompted.encode_sketch(x) * fp32.encode_sketch(x)).sum(-1).min()),
                                              6)
            line += (f" {rate['fp32_sketch']:>11.1f} {row['vs_fp32']:>8.2f} {row['cpu_vs_fp32']:>12.2f}"
                     f" {row['min_cosine_vs_fp32']:>8.5f}")
            if lanes:
                row["vs_fp32_team"] = round(rate[sketch] / rate["fp32_team"], 3)
                line += f" {row['vs_fp32_team']:>13.2f}"
        results.append(row)
        print(line, flush=True)
    if args.json:
        autocast = None
        if device.type == "cuda":
            autocast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # what PromptedCLIP._autocast picks
        host = {"load_average": [round(load, 2) for load in os.getloadavg()],
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "cpus": os.cpu_count(),
                "cpu": cpu, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({"device": str(device), "backbone": args.backbone, "autocast": autocast,
                                         "precision": prompted.precision, "lanes": prompted.lanes,
                                         "threads": torch.get_num_threads(), "precision_choice":
                                         prompted.precision_choice.to_dict(), "host": host, "rows": results},
                                        indent=2))


if __name__ == "__main__":
    main()
