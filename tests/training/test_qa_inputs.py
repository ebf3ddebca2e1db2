"""Acceptance findings: BOM-prefixed lists and CSVs, bad numeric flags, other-task checkpoints, Ctrl-C mid-epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoder import EncoderConfig, PromptConfig, build_encoder, save_checkpoint
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
    ["evaluate", "--top-k", "0"],  # wrote no grid, silently
    ["evaluate", "--split", "random", "--n-unseen", "nan"],  # was "cannot convert float NaN to integer"
    ["category", "--split", "random", "--n-unseen", "0"],
    ["category", "--seed", "99999999999999999999999"],  # was "Overflow when unpacking long long" mid-start
    ["evaluate", "--seed", "-1"],
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
    odd = save_checkpoint(tiny_encoder, tmp_path / "odd.safetensors", extra=["not", "an", "object"])
    assert checkpoint_task(str(odd), "category") is None  # was AttributeError: the task is unknown, not a crash


def test_ctrl_c_mid_epoch_saves_the_position_and_resume_finishes_the_epoch(tmp_path, monkeypatch):
    from tests.training.synthetic_categories import make_dataset
    from training.category import CategoryOptions, CategoryTask
    from training.data import CategoryDataset, ClassSplit
    from training.loop import TrainOptions, read_log, train

    data = CategoryDataset.scan(make_dataset(tmp_path / "d", classes=["h1", "h2", "v1", "v2"], per_class=4))
    split = ClassSplit(train=["h1", "h2", "v1"], val=["v2"], test=[])
    encoder = build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig()), "cpu")
    task = CategoryTask(data, split, encoder, CategoryOptions(batch_size=3, workers=0, augment=False))
    options = TrainOptions(epochs=1, progress=False, log_every=1, validate_first=False)
    real_loss, calls = CategoryTask.loss, []

    def interrupted_loss(self, encoder_, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_loss(self, encoder_, batch)

    monkeypatch.setattr(CategoryTask, "loss", interrupted_loss)
    with pytest.raises(KeyboardInterrupt):
        train(task, encoder, options, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last_state.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["batches_done"]) == (0, 2, 2)  # was: nothing saved

    monkeypatch.setattr(CategoryTask, "loss", real_loss)
    result = train(task, encoder, TrainOptions(**{**options.__dict__, "resume": True}), tmp_path / "run")
    assert (result.steps, result.epochs_done) == (4, 1)  # 12 training sketches / 3 = 4 steps, none repeated
    steps = [int(r["step"]) for r in read_log(tmp_path / "run" / "log.csv") if r["metric"] == "loss"]
    assert steps == [1, 2, 3, 4]


def test_a_single_validation_class_is_warned_about(tmp_path, tiny_encoder, caplog):
    from tests.training.synthetic_categories import make_dataset
    from training.category import CategoryOptions, CategoryTask
    from training.data import CategoryDataset, ClassSplit

    data = CategoryDataset.scan(make_dataset(tmp_path, classes=["h1", "h2", "v1"], per_class=1))
    CategoryTask(data, ClassSplit(train=["h1", "h2"], val=["v1"], test=[]), tiny_encoder, CategoryOptions(workers=0))
    assert "mAP is 1.0 for any model" in caplog.text


def test_16_bit_and_transparent_photos_keep_their_content(tiny_encoder):
    import io

    import numpy as np
    from PIL import Image

    from tests.imagegen import random_photo

    def encoded(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    grey = random_photo(seed=3).convert("L")
    reference = tiny_encoder.preprocess.photo_file(encoded(grey))
    wide = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).convert("I;16")  # 16-bit PNG
    assert np.asarray(Image.open(io.BytesIO(encoded(wide)))).max() > 255
    # was: convert("RGB") clipped every value above 255 to white, wiping the photo out
    assert torch.allclose(tiny_encoder.preprocess.photo_file(encoded(wide)), reference, atol=0.05)

    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent: shows as white, not black
    white = tiny_encoder.preprocess.photo_file(encoded(Image.new("RGB", (32, 32), "white")))
    assert torch.allclose(tiny_encoder.preprocess.photo_file(encoded(clear)), white)


def test_an_unseen_class_spelled_in_two_folders_is_refused(tmp_path):
    # was: one folder silently held out, its twin ("frying_pan") trained on -- a leak into the "unseen" classes
    from training.data import DataError

    path = tmp_path / "unseen.txt"
    path.write_text("frying pan\n")
    with pytest.raises(DataError, match="frying-pan = frying_pan"):
        make_split(["ant", "bee", "cat", "frying-pan", "frying_pan"], unseen_file=path)


def test_pairs_csv_header_with_other_column_names_is_not_a_pair(tmp_path):
    # was: "sketch_path,photo_path,label" became a pair of missing files in a category called "label"
    from tests.imagegen import draw_sketch, random_photo

    draw_sketch().save(tmp_path / "a-1.png")
    random_photo().save(tmp_path / "a.jpg")
    path = tmp_path / "pairs.csv"
    path.write_text("sketch_path,photo_path,label\na-1.png,a.jpg,cat\nmissing-1.png,missing.jpg,cat\n")
    data = read_pair_csv(path)
    assert data.classes == ["cat"] and len(data.pairs["cat"]) == 2  # a later row with missing files stays a pair


def test_evaluate_runs_on_a_dataset_holding_only_the_unseen_classes(tmp_path):
    # was: "Only 0 seen classes: too few to train on" -- evaluation needs no training classes
    import json

    from tests.training.synthetic_categories import make_dataset
    from training.cli import main
    from training.data import DataError

    make_dataset(tmp_path / "d", classes=["h1", "v1"], per_class=2)
    (tmp_path / "unseen.txt").write_text("h1\nv1\n")
    with pytest.raises(DataError):
        make_split(["h1", "v1"], unseen_file=tmp_path / "unseen.txt")  # training still needs seen classes
    assert make_split(["h1", "v1"], unseen_file=tmp_path / "unseen.txt", for_training=False).test == ["h1", "v1"]
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--unseen-classes", str(tmp_path / "unseen.txt"),
                 "--workers", "0", "--no-progress", "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"map_all", "map_200", "p_100", "p_200", "n_queries", "n_gallery"} <= set(metrics)
    assert (metrics["n_queries"], metrics["n_gallery"]) == (4, 4)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_unknown_device_is_a_message_not_a_traceback(device):
    # was: torch's RuntimeError escaped `python -m training ... --device tpu` as a traceback;
    # a ValueError is what every CLI prints as "error: ..." with exit status 2
    from encoder import resolve_device

    with pytest.raises(ValueError, match="is not a device"):
        resolve_device(device)


def test_evaluation_without_any_matching_photo_is_an_error_not_nan(tmp_path, tiny_encoder):
    # was: map_all = NaN written into the metrics JSON (not valid JSON) with exit status 0
    from tests.imagegen import draw_sketch, random_photo
    from training.data import Sample
    from training.evaluate import evaluate_category

    draw_sketch().save(tmp_path / "s.png")
    random_photo().save(tmp_path / "p.jpg")
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        evaluate_category(tiny_encoder, [Sample(str(tmp_path / "s.png"), "cat")],
                          [Sample(str(tmp_path / "p.jpg"), "dog")], progress=False)


def test_fine_grained_validation_reports_its_unreadable_files_once(tmp_path, tiny_config, caplog):
    # was: unreadable validation files were skipped but missing from the end-of-run report (category had them);
    # and validation warned about the same file again at every epoch (category: twice at the first)
    from tests.training.test_fg_pairs import sketchy_tree
    from training.data import ClassSplit
    from training.fine_grained import FineGrainedOptions, FineGrainedTask
    from training.pairs import scan_sketchy_pairs

    sketchy_tree(tmp_path, {"cat": {"c1": 1, "c2": 1}, "dog": {"d1": 1, "d2": 1}, "eel": {"e1": 1, "e2": 1, "e3": 1}})
    (tmp_path / "photo" / "eel" / "e3.jpg").write_bytes(b"")  # sketched: validation's (paired) gallery holds it
    config = EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig(shared=True))
    encoder = build_encoder(config, "cpu")
    split = ClassSplit(train=["cat", "dog"], val=["eel"], test=[])
    options = FineGrainedOptions(categories_per_batch=2, pairs_per_category=1, workers=0)
    task = FineGrainedTask(scan_sketchy_pairs(tmp_path), split, encoder, options)
    task.validate(encoder)
    task.validate(encoder)
    bad_photo = str(tmp_path / "photo" / "eel" / "e3.jpg")
    assert bad_photo in task.bad
    assert sum(bad_photo in record.getMessage() for record in caplog.records) == 1


def _tiny_category_run(tmp_path) -> tuple[list[str], Path]:
    """A finished one-step category run in tmp_path/run; returns (its flags, the run folder)."""
    from tests.training.synthetic_categories import make_dataset
    from training.cli import main

    make_dataset(tmp_path / "d", classes=["h1", "h2", "h3", "v1", "v2"], per_class=2)
    (tmp_path / "unseen.txt").write_text("v2\n")
    out = tmp_path / "run"
    common = ["--data", str(tmp_path / "d"), "--unseen-classes", str(tmp_path / "unseen.txt"), "--workers", "0",
              "--batch_size", "2", "--max-steps", "1", "--no-progress", "--out", str(out)]
    assert main(["category", *common]) == 0
    return common, out


def test_a_refused_resume_leaves_the_run_record_intact(tmp_path, capsys):
    # was: --resume with other prompt flags (or as the other task) rewrote run.json, then failed on the checkpoint
    from training.cli import main

    common, out = _tiny_category_run(tmp_path)
    record = (out / "run.json").read_text()
    assert main(["category", *common, "--resume", "--n_prompts", "5"]) == 2
    assert main(["fine-grained", *common, "--resume", "--pairs-per-category", "1"]) == 2
    assert "refusing to resume" in capsys.readouterr().err
    assert (out / "run.json").read_text() == record


def test_resume_with_another_batch_size_is_refused_before_touching_the_run(tmp_path, capsys):
    from training.cli import main

    common, out = _tiny_category_run(tmp_path)
    before = {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}
    assert main(["category", *common, "--resume", "--batch_size", "3"]) == 2
    err = capsys.readouterr().err
    assert "--batch_size 2" in err and "--batch_size 3" in err and "refusing to resume" in err
    assert {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()} == before
    assert main(["category", *common, "--resume", "--max-steps", "2"]) == 0  # the same batch size resumes

    # Another batch order: the saved position would skip other sketches than those trained on. (No validation
    # slice, so that the seed draws no other split, which is refused as such.)
    fixed = [*common[: common.index("--out")], "--val-fraction", "0", "--out", str(tmp_path / "fixed")]
    assert main(["category", *fixed]) == 0
    for flag, value in (("--seed", "5"), ("--sampler", "official")):
        assert main(["category", *fixed, "--resume", flag, value]) == 2
        err = capsys.readouterr().err
        assert f"{flag} {value}" in err and "refusing to resume" in err, err


def test_evaluating_one_class_warns_that_its_scores_say_nothing(tmp_path, caplog):
    from tests.training.synthetic_categories import make_dataset
    from training.cli import main

    make_dataset(tmp_path / "d", classes=["h1", "v1"], per_class=2)
    (tmp_path / "unseen.txt").write_text("h1\n")
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--unseen-classes", str(tmp_path / "unseen.txt"),
                 "--workers", "0", "--no-progress"]) == 0
    assert "the gallery is one class (h1)" in caplog.text


def test_a_checkpoint_path_that_is_a_folder_is_named_as_one(tmp_path, capsys):
    from tests.training.synthetic_categories import make_dataset
    from training.cli import main

    make_dataset(tmp_path / "d", classes=["h1", "v1"], per_class=2)
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--split", "none", "--workers", "0", "--no-progress",
                 "--checkpoint", str(tmp_path)]) == 2
    assert "is a folder, not a checkpoint file" in capsys.readouterr().err


def test_the_printed_evaluate_command_is_shell_quoted_and_keeps_a_chosen_augmentation(tmp_path):
    # was: "--data my data" split in two by the shell, and --augmentation left out, so another one was scored
    import shlex

    from training.cli import evaluate_command

    args = build_parser().parse_args(["category", "--data", str(tmp_path / "my data"), "--out", "run 1",
                                      "--split", "random", "--seed", "3", "--augmentation", "tx_000000000010"])
    line = evaluate_command(args, tmp_path / "run 1" / "best.safetensors", tmp_path / "run 1", ["--fine-grained"])
    parsed = build_parser().parse_args(shlex.split(line)[3:])
    assert parsed.fine_grained and parsed.data == str(tmp_path / "my data")
    assert parsed.checkpoint == str(tmp_path / "run 1" / "best.safetensors")
    assert (parsed.split, parsed.seed, parsed.augmentation) == ("random", 3, "tx_000000000010")
    assert parsed.json == str(tmp_path / "run 1" / "test_metrics.json")


@pytest.mark.parametrize(("given", "printed"), [("0.1666666", "0.1666666"), ("3", "3"), ("0.2", "0.2")])
def test_the_printed_evaluate_command_names_the_trained_split_exactly(tmp_path, given, printed):
    # was: --n-unseen 0.166667 (6 digits), which drew one more unseen class than training had on 9 classes
    import shlex

    from training.cli import evaluate_command

    args = build_parser().parse_args(["category", "--data", "d", "--out", "o", "--split", "random", "--n-unseen",
                                      given])
    words = shlex.split(evaluate_command(args, tmp_path / "best.safetensors", tmp_path, []))
    assert words[words.index("--n-unseen") + 1] == printed
    assert build_parser().parse_args(words[3:]).n_unseen == args.n_unseen


def test_a_report_file_named_as_an_existing_folder_is_refused_before_embedding(tmp_path, capsys):
    from tests.training.synthetic_categories import make_dataset
    from training.cli import main

    make_dataset(tmp_path / "d", classes=["h1", "v1"], per_class=2)
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--split", "none", "--workers", "0", "--no-progress",
                 "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"The report file {tmp_path} is a folder" in err and "Errno" not in err
