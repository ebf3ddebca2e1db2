"""Training step throughput: the real ``python -m training category`` loop on generated data, timed from its log.

Writes a generated category dataset (bench/synthetic.py: distinct images per class, hard links for the rest, so an
epoch is longer than the steps asked for and no end-of-epoch validation falls inside the timing), runs the
training CLI for ``--steps`` steps (AMP on CUDA: bf16 autocast, or fp16 with a grad scaler), and reads the
step times of its ``log.csv``: steps/s between the first and the last logged step (start-up and the epoch-0
validation excluded). Random weights (``--pretrained none``) are fine for speed.

    python bench/training_steps.py --backbone ViT-B-32 --steps 200 --batch-size 64 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import write_categories  # noqa: E402
from training.cli import main as training_main  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=os.environ.get("SBIR_BACKBONE", "ViT-B-32"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    if args.classes < 5:
        raise SystemExit("--classes must be >= 5 (1 unseen, 2 validation, 2 or more trained on)")
    # The training classes' sketches set the epoch length: enough for every step (1 unseen, 2 validation classes).
    per_class = -(-(args.steps + 2) * args.batch_size // (args.classes - 3))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "run"
        started = time.perf_counter()
        write_categories(data, args.classes, sketches=per_class, photos=max(8, per_class // 8), size=224)
        data_s = time.perf_counter() - started
        (Path(tmp) / "unseen.txt").write_text(f"class{args.classes - 1:02d}\n")
        started = time.perf_counter()
        code = training_main([
            "category", "--data", str(data), "--unseen-classes", str(Path(tmp) / "unseen.txt"),
            "--val-fraction", f"{2.5 / (args.classes - 1):.4f}", "--backbone", args.backbone, "--pretrained", "none",
            "--batch_size", str(args.batch_size), "--workers", str(args.workers), "--max-steps", str(args.steps),
            "--epochs", "1", "--log-every", str(args.log_every), "--device", args.device, "--no-progress",
            "--out", str(out)])
        wall_s = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"training exited with {code}")
        with open(out / "log.csv", newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["phase"] == "train"]
    times = sorted({(int(row["step"]), float(row["time"])) for row in rows})
    (first_step, first_t), (last_step, last_t) = times[0], times[-1]
    steps_per_s = (last_step - first_step) / (last_t - first_t) if last_t > first_t else float("nan")
    cuda = torch.cuda.is_available() and args.device != "cpu"
    figures = {
        "backbone": args.backbone, "device": "cuda" if cuda else "cpu", "steps": last_step,
        "batch_size": args.batch_size, "amp": ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else None,
        "steps_per_s": round(steps_per_s, 3),
        "images_per_s": round(steps_per_s * args.batch_size * 3, 1),  # a sketch, a positive and a negative photo
        "timed_steps": last_step - first_step, "wall_s": round(wall_s, 1), "data_s": round(data_s, 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
