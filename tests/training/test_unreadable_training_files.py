"""Training with unreadable files: a resume draws the batches it stopped in, DDP ranks share what they found,
a run with nothing readable is an error, and one --out holds one run at a time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from encoder import EncoderConfig, PromptConfig, build_encoder
from encoder.folder_lock import folder_lock
from tests.training.synthetic_categories import make_dataset
from training.category import CategoryOptions, CategoryTask
from training.cli import main
from training.data import CategoryDataset, ClassSplit
from training.loop import TrainOptions, train

TRAIN = ["h1", "h2", "v1", "v2"]  # 4 classes x 12 sketches = 48 triplets: 4 batches of 12 an epoch
DAMAGED = [("h1", 0), ("h2", 5), ("v1", 3), ("v2", 11), ("v2", 7)]


@pytest.fixture(scope="module")
def damaged_root(tmp_path_factory):
    """Synthetic shapes with five sketches of the training classes replaced by bytes that are no image."""
    root = make_dataset(tmp_path_factory.mktemp("damaged"), classes=[*TRAIN, "h3", "v3"], per_class=12)
    for name, i in DAMAGED:
        (root / "sketch" / name / f"{i}.png").write_bytes(b"not a png at all")
    return root


def _task(root):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig()), "cpu")
    task = CategoryTask(CategoryDataset.scan(root), ClassSplit(train=TRAIN, val=[], test=[]), encoder,
                        CategoryOptions(batch_size=12, workers=0, augment=False))
    return task, encoder


def test_a_run_resumed_mid_epoch_draws_the_batches_it_stopped_in(damaged_root, tmp_path):
    options = dict(epochs=2, prompt_lr=1e-2, ln_lr=1e-1, progress=False, validate_first=False)
    first, encoder = _task(damaged_root)
    train(first, encoder, TrainOptions(**options, max_steps=5), tmp_path / "run")  # 1 step into epoch 2
    assert len(first.bad) == len(DAMAGED)  # epoch 1 read every sketch once
    stopped_in = list(first.train_loader(1).dataset.triples)  # epoch 2 as drawn: without the five
    assert len(stopped_in) == 48 - len(DAMAGED)

    resumed, encoder = _task(damaged_root)  # a new process knows no unreadable file until the state says so
    train(resumed, encoder, TrainOptions(**options, resume=True), tmp_path / "run")
    assert resumed.bad.errors.keys() == first.bad.errors.keys()
    assert list(resumed.train_loader(1).dataset.triples) == stopped_in
    state = torch.load(tmp_path / "run" / "last_state.pt", weights_only=True)
    assert (state["step"], state["epoch"]) == (8, 2)
    assert state["unreadable"]["drawn"][0] == 1 and len(state["unreadable"]["errors"]) == len(DAMAGED)


def _args(root, out, *extra):
    return ["category", "--data", str(root), "--split", "none", "--val-fraction", "0", "--batch_size", "12",
            "--workers", "0", "--epochs", "1", "--no-progress", "--out", str(out), *extra]


def test_a_run_where_no_training_file_is_readable_stops_with_an_error_and_saves_nothing(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", classes=["h1", "v1"], per_class=4)
    for sketch in (root / "sketch").rglob("*.png"):
        sketch.write_bytes(b"")
    assert main(_args(root, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "nothing to learn from" in err and "8 unreadable files" in err, err
    assert not (tmp_path / "run" / "last_state.pt").exists() and not (tmp_path / "run" / "last.safetensors").exists()


def test_a_second_run_in_the_same_out_is_refused_while_the_first_holds_it(damaged_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out):  # the first run (here: this process; across processes the kernel's record lock)
        assert main(_args(damaged_root, out, "--max-steps", "1")) == 2
    assert "Another training run is using" in capsys.readouterr().err
    assert not (out / "run.json").exists()
    assert main(_args(damaged_root, out, "--max-steps", "1")) == 0  # free again once the first is done


@pytest.mark.slow
def test_ddp_ranks_share_the_unreadable_files_they_met(damaged_root, tmp_path):
    """torchrun, two CPU processes: each rank reads half of the epoch; rank 0 reports the files both met."""
    out = tmp_path / "ddp"
    args = _args(damaged_root, out, "--batch_size", "6", "--epochs", "2")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "training", *args], cwd=Path(__file__).parents[2],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reported = json.loads((out / "unreadable_files.json").read_text())
    assert sorted(reported) == sorted(str(damaged_root / "sketch" / name / f"{i}.png") for name, i in DAMAGED)
    assert f"{len(DAMAGED)} unreadable files skipped" in done.stdout
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert len(state["unreadable"]["errors"]) == len(DAMAGED)
