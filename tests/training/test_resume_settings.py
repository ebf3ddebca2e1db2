"""--resume keeps what defines the run (batches, objective, optimisation, start), refusing a change in one line, and
run.json says truthfully what each resume changed (docs/training.md, "Resuming")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from encoder import CheckpointError, EncoderConfig, PromptConfig, build_encoder
from tests.training.synthetic_categories import make_dataset
from training.category import CategoryOptions, CategoryTask
from training.cli import build_parser, check_resume_flags, main
from training.data import CategoryDataset, ClassSplit
from training.loop import TrainOptions, train


@pytest.fixture()
def category_run(tmp_path) -> tuple[list[str], Path]:
    """A finished one-step category run (tmp_path/run); returns (its flags, the run folder)."""
    make_dataset(tmp_path / "d", classes=["h1", "h2", "h3", "v1", "v2"], per_class=2)
    (tmp_path / "unseen.txt").write_text("v2\n")
    out = tmp_path / "run"
    flags = ["--data", str(tmp_path / "d"), "--unseen-classes", str(tmp_path / "unseen.txt"), "--workers", "0",
             "--batch_size", "2", "--max-steps", "1", "--no-progress", "--out", str(out), "--prompt_lr", "1e-4",
             "--margin", "0.2"]
    assert main(["category", *flags]) == 0
    return flags, out


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_a_resume_with_another_objective_or_learning_rate_is_refused_naming_each_flag(category_run, capsys):
    # was: accepted silently; the optimiser state kept the old learning rate while run.json reported the new one,
    # and the margin and λ1 changed mid-run
    flags, out = category_run
    before = _files(out)
    capsys.readouterr()
    assert main(["category", *flags, "--resume", "--prompt_lr", "0.5", "--margin", "0.9", "--cls_weight", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to resume" in err, err
    for was, now in (("--prompt_lr 0.0001", "--prompt_lr 0.5"), ("--margin 0.2", "--margin 0.9"),
                     ("--cls_weight 0.5", "--cls_weight 0.0")):
        assert was in err and now in err, err
    assert _files(out) == before  # nothing of the run was touched


@pytest.mark.parametrize(("flag", "shown"), [
    (["--clip_LN_lr", "0.5"], "--clip_LN_lr 0.5"), (["--weight_decay", "0.1"], "--weight_decay 0.1"),
    (["--no-amp"], "--no_amp"), (["--no-augment"], "--no_augment"), (["--prompt-init", "scaled"], "scaled"),
    (["--refit"], "--refit"),
])
def test_every_flag_that_defines_the_optimisation_or_the_start_is_kept(category_run, capsys, flag, shown):
    flags, out = category_run
    before = _files(out)
    capsys.readouterr()
    assert main(["category", *flags, "--resume", *flag]) == 2
    err = capsys.readouterr().err
    assert shown in err and "refusing to resume" in err, err
    assert _files(out) == before and not (out / "select").exists()  # --refit: refused before a selection run


@pytest.mark.parametrize("flag", [["--delta_weight", "0.5"], ["--ps_weight", "0"], ["--ps_margin", "0.4"],
                                  ["--grid", "3"], ["--delta-order", "sorted"], ["--augment"], ["--margin", "0.3"],
                                  ["--cls_weight", "1"]])
def test_the_fine_grained_loss_flags_are_kept_too(tmp_path, flag):
    out = tmp_path / "run"
    common = ["fine-grained", "--data", "D", "--out", str(out)]
    first = build_parser().parse_args(common)
    (out / "run.json").parent.mkdir()
    (out / "run.json").write_text(json.dumps({"args": {k: v for k, v in vars(first).items() if k != "func"}}))
    check_resume_flags(out, build_parser().parse_args([*common, "--resume"]))  # the same flags resume
    with pytest.raises(Exception, match="refusing to resume") as refused:
        check_resume_flags(out, build_parser().parse_args([*common, "--resume", *flag]))
    assert "\n" not in str(refused.value)


def test_run_json_records_what_each_resume_changed(category_run):
    # was: rewritten with the new flags, with no trace of what the run had been started with
    flags, out = category_run
    assert main(["category", *flags, "--resume", "--max-steps", "2", "--log-every", "5"]) == 0
    assert main(["category", *flags, "--resume", "--max-steps", "3"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["args"]["max_steps"] == 3 and record["args"]["prompt_lr"] == 1e-4
    assert record["resumes"] == [
        {"changed": {"log_every": {"was": 10, "now": 5}, "max_steps": {"was": 1, "now": 2}}},
        {"changed": {"log_every": {"was": 5, "now": 10}, "max_steps": {"was": 2, "now": 3}}},
    ]


def test_the_loop_refuses_to_resume_under_other_learning_rates(tmp_path):
    # was: the saved optimiser state silently put the old learning rate back
    root = make_dataset(tmp_path / "d", classes=["h1", "h2", "v1"], per_class=2)
    data = CategoryDataset.scan(root)
    split = ClassSplit(train=data.classes, val=[], test=[])
    config = EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig())
    options = {"epochs": 1, "progress": False, "max_steps": 1, "validate_first": False}

    def run(**changed) -> None:
        encoder = build_encoder(config, "cpu")
        task = CategoryTask(data, split, encoder, CategoryOptions(batch_size=2, workers=0, augment=False))
        train(task, encoder, TrainOptions(**{**options, **changed}), tmp_path / "run")

    run(prompt_lr=1e-4)
    with pytest.raises(CheckpointError, match=r"prompt_lr=0.0001.*prompt_lr=0.5"):
        run(prompt_lr=0.5, resume=True, max_steps=2)
    run(prompt_lr=1e-4, resume=True, max_steps=2)
    assert torch.load(tmp_path / "run" / "last_state.pt", weights_only=True)["step"] == 2


def test_a_record_without_a_flag_resumes_unchecked_on_it(tmp_path):
    """A run started before a flag existed has no value to compare: it resumes (and records the flag from now)."""
    args = build_parser().parse_args(["category", "--data", "D", "--out", str(tmp_path), "--resume"])
    old = {k: v for k, v in vars(args).items() if k not in ("func", "weight_decay")}
    (tmp_path / "run.json").write_text(json.dumps({"args": old}))
    check_resume_flags(tmp_path, args)


def test_a_run_started_from_a_checkpoint_resumes_when_the_start_file_is_named_by_another_path(category_run, tmp_path):
    """--checkpoint on resume only names the encoder's config (compared whole): the same file by another spelling
    was refused, and a start file moved since could never resume."""
    flags, out = category_run
    start = tmp_path / "start.safetensors"
    start.write_bytes((out / "last.safetensors").read_bytes())
    base = list(flags)
    base[base.index("--out") + 1] = str(tmp_path / "continued")
    assert main(["category", *base, "--checkpoint", str(start)]) == 0
    moved = tmp_path / "moved" / "start.safetensors"
    moved.parent.mkdir()
    start.rename(moved)
    resumed = [*base, "--checkpoint", str(moved), "--resume", "--max-steps", "2"]
    assert main(["category", *resumed]) == 0
