"""Acceptance findings on hostile input: BOM-prefixed lists and CSVs, bad numeric flags, checkpoints of the other task."""

from __future__ import annotations

import pytest

from encoder import save_checkpoint
from training.cli import build_parser, checkpoint_task
from training.data import make_split, read_class_list
from training.pairs import read_pair_csv

BOM = "\ufeff"


def test_unseen_class_list_with_bom_comments_and_blank_lines(tmp_path):
    # Notepad writes a BOM; it used to become a class name of its own ("\ufeff") and fail the split.
    path = tmp_path / "unseen.txt"
    path.write_text(f"{BOM}# unseen classes\n\nbottle opener\n  Flying Saucer  # comment\n\n", encoding="utf-8")
    assert read_class_list(path) == ["bottle opener", "Flying Saucer"]
    split = make_split(["ant", "bottle opener", "cat", "dog", "flying saucer", "hen"], unseen_file=path)
    assert split.test == ["bottle opener", "flying saucer"]


def test_pairs_csv_with_bom_header_is_a_header_not_a_pair(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(f"{BOM}sketch,photo,category\ns/a-1.png,p/a.jpg,cat\ns/b-1.png,p/b.jpg,cat\n", encoding="utf-8")
    data = read_pair_csv(path)
    assert data.skipped == {}
    assert data.classes == ["cat"] and len(data.pairs["cat"]) == 2
    assert all("sketch" not in s.path for s, _ in data.pairs["cat"])


@pytest.mark.parametrize("argv", [
    ["fine-grained", "--pairs-per-category", "0"],  # was a ZeroDivisionError traceback
    ["category", "--log-every", "0"],  # was a ZeroDivisionError traceback after the first batch
    ["category", "--batch_size", "0"],  # was a DataLoader error after a whole validation pass
    ["category", "--workers", "-1"],
    ["category", "--epochs", "two"],
    ["evaluate", "--grid-queries", "-3"],
])
def test_bad_counts_are_usage_errors(argv, capsys):
    required = ["--data", "d", "--out", "o"] if argv[0] != "evaluate" else ["--data", "d"]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, *required])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_checkpoint_of_the_other_task_is_named_and_warned_about(tmp_path, tiny_encoder, capsys):
    path = save_checkpoint(tiny_encoder, tmp_path / "fg.safetensors", extra={"task": "fine-grained"})
    assert checkpoint_task(str(path), "fine-grained") == "fine-grained"
    assert capsys.readouterr().err == ""
    assert checkpoint_task(str(path), "category") == "fine-grained"
    assert "trained for the fine-grained task" in capsys.readouterr().err
    assert checkpoint_task(None, "category") is None
