"""What people look at: the metrics table, per-class CSV, training curves and a grid of sample queries."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from encoder import decode_image, parse_strokes, rasterize_strokes

from .data import READ_ERRORS, STROKE_SUFFIXES, Sample


def format_table(rows: dict[str, dict[str, float | int]], keys: Sequence[str]) -> str:
    """A plain-text table: one row per named result (e.g. "baseline", "trained"), one column per key."""
    width = max([len(name) for name in rows] + [8])
    columns = [max(10, len(k)) for k in keys]
    lines = [" ".join([f"{'':<{width}}"] + [f"{k:>{c}}" for k, c in zip(keys, columns, strict=True)])]
    for name, values in rows.items():
        cells = []
        for key, c in zip(keys, columns, strict=True):
            value = values.get(key, float("nan"))
            cells.append(f"{value:>{c}d}" if isinstance(value, int) else f"{value:>{c}.4f}")
        lines.append(" ".join([f"{name:<{width}}", *cells]))
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str | Path) -> None:
    if not rows:
        Path(path).write_text("")
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(log_csv: str | Path, png: str | Path) -> None:
    """Training losses against steps (left) and validation metrics against epochs (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, list[tuple[float, float]]]] = {"train": defaultdict(list), "val": defaultdict(list)}
    with open(log_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["phase"] in series and not row["metric"].startswith("n_"):
                x = float(row["step"] if row["phase"] == "train" else row["epoch"])
                series[row["phase"]][row["metric"]].append((x, float(row["value"])))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, phase, xlabel in ((left, "train", "step"), (right, "val", "epoch")):
        for name, points in sorted(series[phase].items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if phase == "val" else None, markersize=3, label=name)
        ax.set_xlabel(xlabel)
        ax.set_title("training loss" if phase == "train" else "validation (held-out slice of the seen classes)")
        ax.grid(alpha=0.3)
        if series[phase]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def preview(sample: Sample, size: int = 96) -> Image.Image:
    """A small RGB thumbnail of a sample for figures (grey square if the file cannot be read)."""
    try:
        if Path(sample.path).suffix.lower() in STROKE_SUFFIXES:
            with open(sample.path, "rb") as handle:
                if sample.line is not None:
                    handle.seek(sample.line)
                data = handle.readline() if sample.line is not None else handle.read()
            image = rasterize_strokes(parse_strokes(data), size=size)
        else:
            image = decode_image(sample.path)
        return ImageOps.pad(image.convert("RGB"), (size, size), color=(255, 255, 255))
    except READ_ERRORS:
        return Image.new("RGB", (size, size), (128, 128, 128))


def query_grid(queries: Sequence[Sample], top: np.ndarray, gallery: Sequence[Sample], correct: np.ndarray,
               png: str | Path, size: int = 96, frame: int = 5) -> None:
    """One row per query: the sketch, then its top-k photos framed green (same class) or red."""
    n, k = top.shape
    pad = 6
    grid = Image.new("RGB", ((k + 1) * (size + pad) + pad * 2, n * (size + pad) + pad), (255, 255, 255))
    for row, query in enumerate(queries):
        y = pad + row * (size + pad)
        grid.paste(ImageOps.expand(preview(query, size - 2 * frame), frame, (0, 0, 0)), (pad, y))
        for col in range(k):
            colour = (0, 170, 0) if correct[row, col] else (210, 0, 0)
            tile = ImageOps.expand(preview(gallery[int(top[row, col])], size - 2 * frame), frame, colour)
            grid.paste(tile, (pad * 3 + (col + 1) * (size + pad) - pad, y))
    grid.save(png)
