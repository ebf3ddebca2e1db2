"""The figures people look at: curves.png keeps its legends off the lines and ticks whole epochs; queries.png
names its columns (which is the sketch, which photos are right) and each tile's category."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from tests.imagegen import draw_sketch, random_photo
from training.data import Sample
from training.report import curves_figure, plot_curves, query_grid


def write_log(path, epochs: int = 3) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phase", "epoch", "step", "metric", "value"])
        for step in range(1, 31):
            writer.writerow(["train", 1 + (step - 1) // 10, step, "loss", 2.0 / step])
            writer.writerow(["train", 1 + (step - 1) // 10, step, "triplet", 1.0 / step])
        for epoch in range(1, epochs + 1):
            for metric, value in (("map_all", 0.2 * epoch), ("p_100", 0.25 * epoch), ("n_queries", 40)):
                writer.writerow(["val", epoch, epoch * 10, metric, value])


def test_curves_legends_sit_off_the_plots_and_epochs_tick_whole(tmp_path):
    write_log(tmp_path / "log.csv")
    fig = curves_figure(tmp_path / "log.csv")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)), ax.get_title()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_xlabel(), ticks)
    plot_curves(tmp_path / "log.csv", tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size[0] > 0


def test_the_query_grid_names_its_columns_frames_and_categories(tmp_path):
    sketches, photos = [], []
    for i, category in enumerate(("apple", "boat")):
        draw_sketch(seed=i).save(tmp_path / f"s{i}.png")
        sketches.append(Sample(str(tmp_path / f"s{i}.png"), category))
        random_photo(seed=i).save(tmp_path / f"p{i}.jpg")
        photos.append(Sample(str(tmp_path / f"p{i}.jpg"), category))
    top = np.array([[0, 1], [1, 0]])
    correct = np.array([[True, False], [True, False]])
    query_grid(sketches, top, photos, correct, tmp_path / "queries.png", size=64, frame=4)
    grid = np.asarray(Image.open(tmp_path / "queries.png").convert("L"))

    first_tile = next(y for y in range(grid.shape[0]) if grid[y, 6] < 50)  # the first sketch's black frame
    assert first_tile >= 40  # a header band above the tiles ...
    assert (grid[:first_tile - 2] < 128).sum() > 200  # ... with words in it (column names, frame legend, ranks)
    below_tile = grid[first_tile + 64 + 1:first_tile + 64 + 13, 6:6 + 64]  # each tile's category caption
    assert (below_tile < 128).sum() > 20
