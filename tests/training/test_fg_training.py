"""The fine-grained task in the one training loop: it learns, and its CLI trains and evaluates."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from encoder import EncoderConfig, PromptConfig, build_encoder
from tests.training.synthetic_pairs import make_pairs
from training.cli import main
from training.data import ClassSplit
from training.fine_grained import (
    FineGrainedLossConfig,
    FineGrainedOptions,
    FineGrainedTask,
    evaluate_fine_grained,
    fine_grained_loss,
)
from training.loop import TrainOptions, train
from training.pairs import load_pairs


@pytest.fixture(scope="module")
def pairs_root(tmp_path_factory):
    return make_pairs(tmp_path_factory.mktemp("fg") / "data", n_classes=4, photos=8, sketches=2, seed=2)


def test_every_loss_term_has_a_gradient_and_can_be_switched_off(pairs_root, one_thread):
    data = load_pairs(pairs_root)
    encoder = build_encoder(EncoderConfig("sbir-tiny", "none", PromptConfig(shared=True)), "cpu")
    split = ClassSplit(train=data.classes[:3], val=data.classes[3:], test=[])
    task = FineGrainedTask(data, split, encoder, FineGrainedOptions(categories_per_batch=3, pairs_per_category=2,
                                                                    workers=0))
    batch = next(iter(task.train_loader(0)))
    assert len(batch) == 6
    encoder.train()
    total, parts = fine_grained_loss(encoder, batch, task.text_features, FineGrainedLossConfig())
    assert {"loss_tri", "loss_cls_sketch", "loss_cls_photo", "loss_delta", "loss_ps", "loss"} <= set(parts)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.trainable_parameters().values())
    for name, off in [("loss_cls_sketch", {"cls_weight": 0}), ("loss_delta", {"delta_weight": 0}),
                      ("loss_ps", {"ps_weight": 0})]:
        _, without = fine_grained_loss(encoder, batch, task.text_features, FineGrainedLossConfig(**off))
        assert name not in without and "loss_tri" in without


def test_short_training_raises_acc_at_1_above_the_untrained_encoder(pairs_root, tmp_path, one_thread):
    data = load_pairs(pairs_root)
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig("sbir-tiny", "none", PromptConfig(shared=True)), "cpu")
    split = ClassSplit(train=data.classes, val=data.classes, test=[])  # memorise the training pairs
    # λ2 is small: the random tiny text tower's class features pull a class's instances together.
    options = FineGrainedOptions(categories_per_batch=4, pairs_per_category=4, workers=0, seed=0,
                                 losses=FineGrainedLossConfig(cls_weight=0.05))
    task = FineGrainedTask(data, split, encoder, options)
    before = evaluate_fine_grained(encoder, task.pairs, progress=False).summary
    result = train(task, encoder, TrainOptions(epochs=10, prompt_lr=2e-2, ln_lr=2e-2, progress=False), tmp_path)
    after = evaluate_fine_grained(encoder, task.pairs, progress=False).summary
    assert result.steps == 40
    assert after["within_category"]["acc_1"] > before["within_category"]["acc_1"] + 0.05
    assert result.history[0]["val_acc_1"] == pytest.approx(before["within_category"]["acc_1"])


def test_cli_trains_then_evaluates_both_galleries(pairs_root, tmp_path, one_thread, capsys):
    run = tmp_path / "run"
    common = ["--data", str(pairs_root), "--split", "random", "--n-unseen", "1", "--val-fraction", "0.34",
              "--workers", "0", "--no-progress"]
    assert main(["fine-grained", *common, "--batch_size", "4", "--pairs-per-category", "2", "--epochs", "1",
                 "--max-steps", "2", "--delta_weight", "0", "--out", str(run)]) == 0
    assert (run / "last.safetensors").is_file() and (run / "log.csv").is_file()
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--fine-grained", "--checkpoint", str(run / "last.safetensors"), *common,
                 "--json", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    for gallery in ("within_category", "all_photos"):
        assert set(result[gallery]) == {"acc_1", "acc_5", "acc_10"}
        assert all(0.0 <= v <= 1.0 for v in result[gallery].values())
    assert result["n_queries"] == 16 and result["n_gallery"] == 8  # one unseen class: 8 photos, 16 sketches
    assert result["encoder"]["config"]["prompts"]["shared"] is True
    printed = capsys.readouterr().out
    assert "within_category" in printed and "gallery: 8 photos (paired" in printed
    assert result["gallery"] == "paired" and result["standard_test_set"] == {}
    assert main(["fine-grained", *common, "--batch_size", "4", "--out", str(run)]) == 2  # run exists, no --resume
    capsys.readouterr()
    assert main(["fine-grained", *common, "--batch_size", "40", "--out", str(tmp_path / "big")]) == 2
    assert "10 categories x 4 pairs" in capsys.readouterr().err  # only 2 training classes
    assert not (tmp_path / "big").exists()  # refused before anything was written


def test_evaluate_scores_the_paired_gallery_by_default_and_every_photo_on_request(tmp_path, one_thread, capsys):
    root = make_pairs(tmp_path / "data", n_classes=2, photos=4, sketches=1, seed=3)
    for c in range(2):  # unsketched photos, as Sketchy-Extended's folders add them
        folder = root / "photo" / f"class{c:02d}"
        for i in range(3):
            shutil.copy(folder / f"p{c}_0.png", folder / f"x{i}.png")
    common = ["evaluate", "--fine-grained", "--data", str(root), "--split", "none", "--workers", "0", "--no-progress"]
    results = {}
    for gallery in ("paired", "all"):
        path = tmp_path / f"{gallery}.json"
        extra = [] if gallery == "paired" else ["--fg-gallery", "all"]
        assert main([*common, *extra, "--json", str(path)]) == 0
        results[gallery] = json.loads(path.read_text())
    assert results["paired"]["n_gallery"] == 8 and results["all"]["n_gallery"] == 14
    assert results["paired"]["gallery"] == "paired" and results["paired"]["photos_found"] == 14
    assert results["paired"]["n_queries"] == results["all"]["n_queries"] == 8
    captured = capsys.readouterr()
    assert "gallery: 8 photos (paired" in captured.out and "Sketchy basic's 100 photos per category" in captured.out
    # 4 paired photos per category: acc@5 and acc@10 within the category are 1 whatever the model
    assert results["paired"]["gallery_per_category"] == {"class00": 4, "class01": 4}
    assert results["paired"]["not_meaningful"]["within_category"] == ["acc_5", "acc_10"]
    assert results["paired"]["chance"]["within_category"]["acc_1"] == 0.25
    assert "acc_5 [within_category] is not meaningful: a category holds only 4 photos" in captured.err
    assert results["paired"]["sketch_framing"] == "canvas"  # the frozen-CLIP baseline: the benchmark framing


def test_fine_grained_trains_on_every_seen_class_with_val_fraction_0(pairs_root, tmp_path, one_thread):
    run = tmp_path / "run"
    assert main(["fine-grained", "--data", str(pairs_root), "--split", "none", "--val-fraction", "0", "--workers", "0",
                 "--no-progress", "--batch_size", "4", "--pairs-per-category", "2", "--epochs", "1",
                 "--max-steps", "2", "--out", str(run)]) == 0
    assert json.loads((run / "run.json").read_text())["split"]["train"] == load_pairs(pairs_root).classes
    assert (run / "last.safetensors").is_file() and not (run / "best.safetensors").exists()


def test_a_grid_larger_than_the_model_input_is_refused_before_anything_runs(pairs_root, tmp_path, one_thread,
                                                                            capsys):
    # was: the whole epoch-0 validation ran, run.json and log.csv were written, then the first step failed
    run = tmp_path / "run"
    assert main(["fine-grained", "--data", str(pairs_root), "--split", "random", "--n-unseen", "1", "--workers", "0",
                 "--no-progress", "--batch_size", "4", "--pairs-per-category", "2", "--grid", "65",
                 "--out", str(run)]) == 2
    assert "does not fit the model's 64×64 input" in capsys.readouterr().err
    assert not (run / "run.json").exists() and not (run / "log.csv").exists()


def test_batches_of_one_category_or_one_pair_warn_that_l_delta_does_nothing(pairs_root, tmp_path, one_thread, caplog):
    # L_δ compares the softmaxes of K deltas between P categories: P = 1 or K = 1 made it 0 without a word
    for size, pairs in (("4", "4"), ("4", "1")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="training"):
            main(["fine-grained", "--data", str(pairs_root), "--split", "random", "--n-unseen", "1", "--workers", "0",
                  "--no-progress", "--batch_size", size, "--pairs-per-category", pairs, "--grid", "65",
                  "--out", str(tmp_path / f"run{pairs}")])  # --grid 65 ends it before any step
        assert any("L_δ (--delta-weight 0.1) is 0" in record.getMessage() for record in caplog.records), pairs
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training"):
        main(["fine-grained", "--data", str(pairs_root), "--split", "random", "--n-unseen", "1", "--workers", "0",
              "--no-progress", "--batch_size", "4", "--pairs-per-category", "2", "--grid", "65",
              "--out", str(tmp_path / "run")])
    assert not any("L_δ" in record.getMessage() for record in caplog.records)
