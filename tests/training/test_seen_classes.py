"""Checkpoints record the class split they were trained on, and `evaluate` refuses to score their training classes
as if unseen (unless --allow-seen), recording the overlap (docs/training.md, "Evaluation")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from encoder import SBIRError, load_checkpoint, load_encoder, save_checkpoint
from encoder.checkpoint import read_checkpoint
from tests.training.synthetic_categories import make_dataset
from training import cli

CLASSES = ["h1", "h2", "h3", "v1", "v2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(dataset, unseen list, checkpoint) of a one-step category run holding out v2."""
    root = tmp_path_factory.mktemp("seen")
    data = make_dataset(root / "d", classes=CLASSES, per_class=2)
    (root / "unseen.txt").write_text("v2\n")
    assert cli.main(["category", "--data", str(data), "--unseen-classes", str(root / "unseen.txt"), "--workers", "0",
                     "--batch_size", "2", "--max-steps", "1", "--val-fraction", "0", "--no-progress",
                     "--out", str(root / "run")]) == 0
    return data, root / "unseen.txt", root / "run" / "last.safetensors"


def _evaluate(data: Path, checkpoint: Path | None, json_path: Path, *flags: str) -> int:
    return cli.main(["evaluate", "--data", str(data), "--workers", "0", "--no-progress", "--json", str(json_path),
                     "--checkpoint", str(checkpoint or ""), *flags])


def test_a_checkpoint_records_the_split_it_was_trained_on_and_still_loads(trained):
    data, unseen, checkpoint = trained
    split = read_checkpoint(checkpoint)[2]["extra"]["split"]
    assert split == {"source": str(unseen), "train": ["h1", "h2", "h3", "v1"], "val": [], "test": ["v2"]}
    load_checkpoint(checkpoint)  # what the index builder and the app read: the new key changes nothing there
    load_encoder(str(checkpoint), device="cpu")


def test_evaluate_refuses_to_score_the_checkpoints_training_classes(trained, tmp_path, capsys):
    # was: --split none on the training folder scored the training classes as "unseen", without a word
    data, unseen, checkpoint = trained
    capsys.readouterr()
    assert _evaluate(data, checkpoint, tmp_path / "m.json", "--split", "none") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4 of the 5 scored classes were training classes" in err, err
    assert "h1, h2, h3, v1" in err and "--allow-seen" in err and not (tmp_path / "m.json").exists()

    assert _evaluate(data, checkpoint, tmp_path / "m.json", "--split", "none", "--allow-seen") == 0
    overlap = json.loads((tmp_path / "m.json").read_text())["trained_class_overlap"]
    assert overlap == {"checked": True, "training_split": str(unseen), "classes": ["h1", "h2", "h3", "v1"]}

    assert _evaluate(data, checkpoint, tmp_path / "u.json", "--unseen-classes", str(unseen)) == 0  # the unseen: fine
    overlap = json.loads((tmp_path / "u.json").read_text())["trained_class_overlap"]
    assert overlap == {"checked": True, "training_split": str(unseen), "classes": []}


def test_class_names_are_matched_as_splits_match_them(monkeypatch):
    monkeypatch.setattr(cli, "checkpoint_extra", lambda checkpoint: {"split": {"source": "s", "train": ["Frying-Pan"]}})
    args = argparse.Namespace(checkpoint="c.safetensors", allow_seen=False)
    with pytest.raises(SBIRError, match="1 of the 2 scored classes.*frying_pan"):
        cli.trained_class_overlap(args, ["cat", "frying_pan"])


def test_a_checkpoint_without_a_recorded_split_and_the_baseline_evaluate_as_before(trained, tmp_path, capsys):
    data, unseen, checkpoint = trained
    older = tmp_path / "older.safetensors"  # as checkpoints were written before the split was recorded
    save_checkpoint(load_encoder(str(checkpoint), device="cpu"), older, extra={"task": "category", "epoch": 1})
    for name, path in (("older", older), ("baseline", None)):
        capsys.readouterr()
        assert _evaluate(data, path, tmp_path / f"{name}.json", "--split", "none") == 0
        out = capsys.readouterr().out
        assert out.count("whether the scored classes are unseen cannot be checked") == 1, out
        overlap = json.loads((tmp_path / f"{name}.json").read_text())["trained_class_overlap"]
        assert overlap == {"checked": False, "training_split": None, "classes": []}


def test_a_continued_run_still_counts_the_classes_its_start_was_trained_on(trained, tmp_path, capsys):
    """Training on split A, then continuing it on split B recorded only B's: A's classes scored as "zero-shot"."""
    data, _unseen, checkpoint = trained  # trained on h1 h2 h3 v1
    (tmp_path / "unseen.txt").write_text("h1\n")
    assert cli.main(["category", "--data", str(data), "--unseen-classes", str(tmp_path / "unseen.txt"), "--workers",
                     "0", "--batch_size", "2", "--max-steps", "1", "--val-fraction", "0", "--no-progress",
                     "--checkpoint", str(checkpoint), "--out", str(tmp_path / "run")]) == 0
    continued = tmp_path / "run" / "last.safetensors"
    assert read_checkpoint(continued)[2]["extra"]["trained_classes"] == ["h1", "h2", "h3", "v1", "v2"]
    capsys.readouterr()
    assert _evaluate(data, continued, tmp_path / "m.json", "--unseen-classes", str(tmp_path / "unseen.txt")) == 2
    assert "h1" in capsys.readouterr().err
