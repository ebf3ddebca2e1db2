"""What people look at: the metrics table, per-class CSV, training curves and a grid of sample queries."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

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


def curves_figure(log_csv: str | Path):
    """The figure of :func:`plot_curves`: training losses against steps (left), validation metrics against epochs
    (right); each legend sits below its plot, never over the lines, and steps and epochs tick at whole numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series: dict[str, dict[str, list[tuple[float, float]]]] = {"train": defaultdict(list), "val": defaultdict(list)}
    with open(log_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["phase"] in series and not row["metric"].startswith("n_"):
                x = float(row["step"] if row["phase"] == "train" else row["epoch"])
                series[row["phase"]][row["metric"]].append((x, float(row["value"])))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for ax, phase, xlabel in ((left, "train", "step"), (right, "val", "epoch")):
        for name, points in sorted(series[phase].items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if phase == "val" else None, markersize=3, label=name)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_title("training loss" if phase == "train" else "validation (held-out slice of the seen classes)")
        ax.grid(alpha=0.3)
        if series[phase]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=3, frameon=False)
    return fig


def plot_curves(log_csv: str | Path, png: str | Path) -> None:
    """Write :func:`curves_figure` of ``log_csv`` to ``png``."""
    import matplotlib.pyplot as plt

    fig = curves_figure(log_csv)
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


def _fitted(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def query_grid(queries: Sequence[Sample], top: np.ndarray, gallery: Sequence[Sample], correct: np.ndarray,
               png: str | Path, size: int = 96, frame: int = 5) -> None:
    """One row per query: the sketch (black frame), then its top-k photos, best first, framed green (the sketch's
    category) or red (another). A header names the columns and the frames; each tile has its category below."""
    n, k = top.shape
    pad, caption, header = 6, 14, 52
    font = ImageFont.load_default(size=11)
    row_height = size + caption + pad
    grid = Image.new("RGB", ((k + 1) * (size + pad) + pad * 3, header + n * row_height + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    photos_x = pad * 3 + size + pad  # where the photo columns start (a wider gap after the sketch)
    draw.text((pad, 4), "sketch", fill=(0, 0, 0), font=font)
    draw.text((photos_x, 4), _fitted(draw, f"its top {k} photos, best first", k * (size + pad), font),
              fill=(0, 0, 0), font=font)
    legend_x = photos_x
    for colour, words in (((0, 170, 0), "green: same category"), ((210, 0, 0), "red: another category")):
        draw.rectangle((legend_x, 22, legend_x + 10, 32), outline=colour, width=3)
        draw.text((legend_x + 14, 21), words, fill=(0, 0, 0), font=font)
        legend_x += 24 + int(draw.textlength(words, font=font))
    for col in range(k):
        draw.text((photos_x + col * (size + pad) + 1, 37), f"#{col + 1}", fill=(110, 110, 110), font=font)

    def tile(sample: Sample, colour: tuple[int, int, int], x: int, y: int) -> None:
        grid.paste(ImageOps.expand(preview(sample, size - 2 * frame), frame, colour), (x, y))
        draw.text((x + 1, y + size + 1), _fitted(draw, sample.category, size - 2, font), fill=(60, 60, 60), font=font)

    for row, query in enumerate(queries):
        y = header + row * row_height
        tile(query, (0, 0, 0), pad, y)
        for col in range(k):
            colour = (0, 170, 0) if correct[row, col] else (210, 0, 0)
            tile(gallery[int(top[row, col])], colour, photos_x + col * (size + pad), y)
    grid.save(png)
