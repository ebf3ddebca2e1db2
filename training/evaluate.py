"""Category-level ZS-SBIR evaluation: every test sketch queries every test photo.

Each image is embedded once, in batches (DataLoader workers decode); ranking runs in chunks
(:func:`training.metrics.rank_gallery`). Unreadable files are left out of queries or gallery and
reported. With no checkpoint the same code scores the frozen-CLIP baseline.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from encoder import CheckpointError, PromptedCLIP
from encoder.workers import WorkerInit

from .data import BadFiles, Modality, Sample, SampleDataset, collate_samples
from .metrics import RetrievalResult, per_class_ap, rank_gallery
from .report import query_grid, write_csv

AP_KS = (200,)
PRECISION_KS = (100, 200)
# map_200 is convention (a) (÷ min(k, R)), _div_k the same sum ÷ k, _voc and _in_topk are (b) and (c)
# (docs/training.md, "Metric definitions")
TABLE_KEYS = ("map_all", "map_all_voc", "map_200", "map_200_div_k", "map_200_voc", "map_200_in_topk", "p_100",
              "p_200", "n_queries", "n_gallery")
# What each printed number is and where its convention comes from, printed beside it (the literature mixes them).
METRIC_SOURCES = {
    "map_all": "AP over the whole ranking, non-interpolated; = sklearn average_precision_score",
    "map_all_voc": "AP over the whole ranking, VOC-interpolated; SAKE VOCap",
    "map_200": "(a) AP@200 ÷ min(200, R), non-interpolated; method.md's definition, compare Sain et al.'s .723 here",
    "map_200_div_k": "(a') AP@200 ÷ 200; the reading of (a) method.md gives Yelamarthi et al.'s code (not re-read); "
                     "below (a) for every class with R < 200",
    "map_200_voc": "(b) AP@200 ÷ min(200, R), VOC-interpolated; SAKE VOCap, ZSE-SBIR voc_eval",
    "map_200_in_topk": "(c) AP@200 ÷ relevant in the top 200; SEM-PCYC apsak, torchmetrics RetrievalMAP(top_k=200)",
    "p_100": "P@100 = relevant in the top 100 / 100",
    "p_200": "P@200 = relevant in the top 200 / 200",
    "n_queries": "sketches scored",
    "n_gallery": "photos ranked",
}


@contextlib.contextmanager
def precision(encoder: PromptedCLIP, amp: bool) -> Iterator[None]:
    """Run ``encoder`` with (``amp``) or without CUDA autocast for a while, then restore its setting."""
    before = encoder.amp
    encoder.amp = amp
    try:
        yield
    finally:
        encoder.amp = before


def scored_precision(encoder: PromptedCLIP, amp: bool) -> str:
    """What the scores were computed in: bf16 weights (``--precision``), CUDA autocast (``--amp``), or fp32."""
    return "bf16" if encoder.precision == "bf16" else "amp" if amp else "fp32"


def embed_samples(
    encoder: PromptedCLIP,
    samples: Sequence[Sample],
    labels: Sequence[int],
    modality: Modality,
    *,
    batch_size: int = 128,
    workers: int = 0,
    bad: BadFiles | None = None,
    progress: bool = True,
    amp: bool = False,
) -> tuple[torch.Tensor, np.ndarray]:
    """Embed ``samples`` once each → (features ``[N, D]`` on CPU, indices of the samples kept).

    Full precision unless ``amp``: scores are measured in fp32 (indexing and serving keep bf16)."""
    dataset = SampleDataset(samples, labels, encoder.preprocess, modality)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_samples,
                        pin_memory=encoder.device.type == "cuda", worker_init_fn=WorkerInit())
    features, kept = [], []
    what = "sketches" if modality == "sketch" else f"{modality}s"
    for batch in tqdm(loader, desc=f"embedding {what}", disable=not progress, leave=False):
        if bad is not None:
            bad.update(batch.bad)
        if len(batch.indices):
            with precision(encoder, amp):
                features.append(encoder.encode(batch.images, modality).cpu())
            kept.append(batch.indices.numpy())
    if not features:
        return torch.empty(0, encoder.embed_dim), np.empty(0, dtype=np.int64)
    embedded = torch.cat(features)
    if not bool(torch.isfinite(embedded).all()):  # NaN scores tie, and ties rank as hits: refuse, never a metric
        raise CheckpointError("The encoder gives NaN or infinite embeddings (a checkpoint from a run that diverged?); "
                              "its metrics would be meaningless.")
    return embedded, np.concatenate(kept)


@dataclass
class CategoryEvaluation:
    summary: dict[str, float | int]
    result: RetrievalResult
    queries: list[Sample]  # the sketches actually scored, aligned with result rows
    gallery: list[Sample]  # the photos actually ranked
    query_labels: np.ndarray
    gallery_labels: np.ndarray
    classes: list[str]
    bad: BadFiles


def evaluate_category(
    encoder: PromptedCLIP,
    sketches: Sequence[Sample],
    photos: Sequence[Sample],
    *,
    batch_size: int = 128,
    workers: int = 0,
    keep_top: int = 0,
    progress: bool = True,
    bad: BadFiles | None = None,
    amp: bool = False,
) -> CategoryEvaluation:
    """mAP@all, mAP@200, P@100, P@200 of ``sketches`` against ``photos`` (relevant = same category).

    ``bad``: where unreadable files are recorded (a training task passes its own, so each file is
    warned about once per run, not once per validation). ``amp``: embed under CUDA autocast (default fp32)."""
    classes = sorted({s.category for s in sketches} | {p.category for p in photos})
    index = {c: i for i, c in enumerate(classes)}
    s_labels = [index[s.category] for s in sketches]
    p_labels = [index[p.category] for p in photos]
    bad = BadFiles() if bad is None else bad
    was_training = encoder.training
    encoder.eval()
    try:
        gallery, g_kept = embed_samples(encoder, photos, p_labels, "photo", batch_size=batch_size, workers=workers,
                                        bad=bad, progress=progress, amp=amp)
        queries, q_kept = embed_samples(encoder, sketches, s_labels, "sketch", batch_size=batch_size,
                                        workers=workers, bad=bad, progress=progress, amp=amp)
    finally:
        encoder.train(was_training)
    if not len(g_kept) or not len(q_kept):
        raise ValueError(f"Nothing to evaluate: {len(q_kept)} readable sketches, {len(g_kept)} readable photos.")
    q_labels, g_labels = np.asarray(s_labels)[q_kept], np.asarray(p_labels)[g_kept]
    result = rank_gallery(queries, q_labels, gallery, g_labels, ap_ks=AP_KS, precision_ks=PRECISION_KS,
                          keep_top=keep_top, device=encoder.device)
    if not result.valid.any():  # every mean would be NaN (and the JSON invalid)
        raise ValueError(f"Nothing to evaluate: none of the {len(q_kept)} readable sketches has a readable photo "
                         "of its class in the gallery.")
    summary = result.summary()
    summary["n_unreadable"] = len(bad)
    return CategoryEvaluation(summary, result, [sketches[i] for i in q_kept], [photos[i] for i in g_kept],
                              q_labels, g_labels, classes, bad)


def write_category_report(
    evaluation: CategoryEvaluation,
    *,
    json_path: str | Path | None,
    per_class_csv: str | Path | None,
    grid_png: str | Path | None,
    n_grid: int = 8,
    tile: int = 96,
    seed: int = 0,
    extra: dict | None = None,
) -> None:
    """JSON (metrics + ``extra``), per-class AP CSV and a PNG grid of ``n_grid`` random queries' top-k."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        payload = {**evaluation.summary, **(extra or {}), "unreadable_files": evaluation.bad.errors}
        Path(json_path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    if per_class_csv:
        Path(per_class_csv).parent.mkdir(parents=True, exist_ok=True)
        write_csv(per_class_ap(evaluation.result, evaluation.query_labels, evaluation.classes), per_class_csv)
    if grid_png and evaluation.result.top is not None:
        Path(grid_png).parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(evaluation.queries), min(n_grid, len(evaluation.queries)), replace=False))
        top = evaluation.result.top[rows]
        correct = evaluation.gallery_labels[top] == evaluation.query_labels[rows][:, None]
        query_grid([evaluation.queries[i] for i in rows], top, evaluation.gallery, correct, grid_png, size=tile)


def format_summary(name: str, summary: dict) -> str:
    """One line per metric: its value, then what it is and whose convention it follows."""
    lines = [name]
    for key in TABLE_KEYS:
        value = summary.get(key, float("nan"))
        shown = f"{value:>10,d}" if isinstance(value, int) else f"{value:>10.4f}"
        lines.append(f"  {key:<16}{shown}  {METRIC_SOURCES[key]}")
    return "\n".join(lines)


def print_summary(name: str, summary: dict) -> None:
    print(format_summary(name, summary))
