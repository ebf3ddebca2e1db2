"""The generic loop with the category task: learning on synthetic data, checkpoints, --resume, CLIs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from encoder import EncoderConfig, PromptConfig, build_encoder, load_checkpoint
from tests.training.synthetic_categories import make_dataset
from training.category import CategoryOptions, CategoryTask
from training.cli import main
from training.data import CategoryDataset, ClassSplit
from training.loop import TrainOptions, read_log, train

VAL = ["h3", "v5", "v2", "h4"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("shapes"), per_class=12)


@pytest.mark.slow
def test_short_tiny_run_raises_validation_map_above_the_untrained_encoder(shapes_root, tmp_path):
    data = CategoryDataset.scan(shapes_root)
    split = ClassSplit(train=[c for c in data.classes if c not in VAL], val=VAL, test=[])
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig()), "cpu")
    task = CategoryTask(data, split, encoder, CategoryOptions(batch_size=24, workers=0, augment=False))
    # Random weights need far larger steps than CLIP's 1e-4 / 1e-6 to move in a few steps.
    options = TrainOptions(epochs=4, prompt_lr=1e-2, ln_lr=1e-1, progress=False, log_every=2)
    result = train(task, encoder, options, tmp_path / "run")

    untrained = result.history[0]["val_map_all"]
    assert result.history[0]["epoch"] == 0 and len(result.history) == 5 and result.steps == 16
    assert result.best_metric > untrained + 0.03, result.history
    # best.safetensors holds the best epoch's encoder; last.safetensors + state are there for --resume.
    best = load_checkpoint(result.best_checkpoint)
    assert best.fingerprint() != build_encoder(encoder.config, "cpu").fingerprint()
    assert (tmp_path / "run" / "last_state.pt").is_file() and (tmp_path / "run" / "curves.png").stat().st_size > 0
    phases = {(row["phase"], row["metric"]) for row in read_log(tmp_path / "run" / "log.csv")}
    assert {("train", "loss_tri"), ("train", "loss_cls_photo"), ("val", "val_map_200")} <= phases


def _category_args(root, unseen, out, *extra):
    return ["category", "--data", str(root), "--unseen-classes", str(unseen), "--val-fraction", "0.2",
            "--batch_size", "24", "--workers", "0", "--epochs", "1", "--log-every", "1", "--no-progress",
            "--prompt_lr", "1e-2", "--clip_LN_lr", "1e-1", "--out", str(out), *extra]


def test_resume_continues_from_the_saved_step(shapes_root, tmp_path, capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "run"
    assert main(_category_args(shapes_root, unseen, out, "--max-steps", "2")) == 0
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batches_done"]) == (2, 0, 2)
    stopped_at = load_checkpoint(out / "last.safetensors").fingerprint()

    assert main(_category_args(shapes_root, unseen, out)) == 2  # never overwrites a run without --resume
    assert "--resume" in capsys.readouterr().err

    assert main(_category_args(shapes_root, unseen, out, "--resume")) == 0
    assert "resuming category from epoch 0, step 2" in capsys.readouterr().out
    steps = [int(r["step"]) for r in read_log(out / "log.csv") if r["phase"] == "train" and r["metric"] == "loss"]
    assert steps == [1, 2, 3, 4]  # 8 train classes x 12 sketches / 24 = 4 steps in the epoch
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batches_done"]) == (4, 1, 0)
    assert load_checkpoint(out / "last.safetensors").fingerprint() != stopped_at
    run = json.loads((out / "run.json").read_text())
    assert run["split"]["test"] == ["h6", "v6"] and len(run["split"]["val"]) == 2

    # Evaluate the trained checkpoint and the frozen baseline through the same code.
    for checkpoint in (str(out / "best.safetensors"), None):
        report = tmp_path / ("trained" if checkpoint else "baseline")
        args = ["evaluate", "--data", str(shapes_root), "--unseen-classes", str(unseen), "--workers", "0",
                "--no-progress", "--out", str(report), "--top-k", "4", "--grid-queries", "3"]
        assert main(args + (["--checkpoint", checkpoint] if checkpoint else [])) == 0
        metrics = json.loads((report / "metrics.json").read_text())
        assert {"map_all", "map_200", "p_100", "p_200", "n_queries", "n_gallery"} <= set(metrics)
        assert metrics["n_queries"] == 24 and metrics["n_gallery"] == 24
        assert metrics["encoder"]["baseline"] is (checkpoint is None)
        # trained with the default canvas framing, recorded in the checkpoint; evaluation follows it
        assert metrics["sketch_framing"] == "canvas"
        assert metrics["encoder"]["config"].get("sketch_framing") == ("canvas" if checkpoint else None)
        assert (report / "per_class_ap.csv").read_text().count("\n") == 3
        assert (report / "queries.png").stat().st_size > 0
    assert "map_all" in capsys.readouterr().out


def test_val_fraction_0_trains_on_every_seen_class_and_keeps_last(shapes_root, tmp_path, capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "all-seen"
    args = _category_args(shapes_root, unseen, out)
    args[args.index("--val-fraction") + 1] = "0"
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["split"]["val"] == [] and len(run["split"]["train"]) == 10
    assert (out / "last.safetensors").is_file() and not (out / "best.safetensors").exists()
    assert not [r for r in read_log(out / "log.csv") if r["phase"] == "val"]
    steps = [int(r["step"]) for r in read_log(out / "log.csv") if r["phase"] == "train" and r["metric"] == "loss"]
    assert steps[-1] == 5  # 10 classes x 12 sketches / 24
    printed = capsys.readouterr().out
    assert "no validation slice" in printed and f"--checkpoint {out / 'last.safetensors'}" in printed


@pytest.mark.slow
def test_refit_selects_the_epoch_count_then_retrains_on_every_seen_class(shapes_root, tmp_path, capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "refit"
    args = _category_args(shapes_root, unseen, out, "--refit")
    args[args.index("--epochs") + 1] = "3"
    assert main(args) == 0
    selection = torch.load(out / "select" / "last_state.pt", weights_only=True)
    chosen = selection["best_epoch"]
    assert selection["epoch"] == 3 and 1 <= chosen <= 3
    select_run = json.loads((out / "select" / "run.json").read_text())
    assert len(select_run["split"]["val"]) == 2 and len(select_run["split"]["train"]) == 8
    run = json.loads((out / "run.json").read_text())
    assert run["split"]["val"] == [] and len(run["split"]["train"]) == 10 and run["refit"]["epochs"] == chosen
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (chosen, 5 * chosen)  # 10 classes: 5 steps per epoch
    assert load_checkpoint(out / "last.safetensors") is not None and not (out / "best.safetensors").exists()
    assert f"refit: {chosen} epoch(s) selected" in capsys.readouterr().out
    assert main(args) == 2  # never overwritten without --resume
    assert main([*args, "--resume"]) == 0  # both runs are complete: resuming changes nothing
    assert torch.load(out / "last_state.pt", weights_only=True)["step"] == 5 * chosen


def test_refit_needs_a_validation_slice(shapes_root, tmp_path, capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    args = _category_args(shapes_root, unseen, tmp_path / "r", "--refit")
    args[args.index("--val-fraction") + 1] = "0"
    assert main(args) == 2 and "--val-fraction > 0" in capsys.readouterr().err


def test_split_none_trains_on_a_folder_of_seen_classes_and_evaluates_a_folder_of_unseen(tmp_path, capsys):
    seen = make_dataset(tmp_path / "seen", classes=["h1", "h2", "v1", "v2"], per_class=6)
    unseen = make_dataset(tmp_path / "unseen", classes=["h3", "v3"], per_class=6, seed=1)
    out = tmp_path / "run"
    assert main(["category", "--data", str(seen), "--split", "none", "--val-fraction", "0", "--batch_size", "12",
                 "--workers", "0", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["split"]["train"] == ["h1", "h2", "v1", "v2"]
    assert "--data UNSEEN_CLASSES_ROOT --split none" in capsys.readouterr().out
    metrics = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(out / "last.safetensors"), "--data", str(unseen), "--split", "none",
                 "--workers", "0", "--no-progress", "--json", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert result["classes"] == ["h3", "v3"] and result["n_queries"] == 12 and result["n_gallery"] == 12
    assert main(["evaluate", "--data", str(unseen), "--split", "none", "--classes", "val", "--workers", "0"]) == 2
    assert "has no val classes to score" in capsys.readouterr().err


def test_cli_reports_bad_input_as_a_message(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "nowhere"), "--split", "random"]) == 2
    assert "does not exist" in capsys.readouterr().err
    make_dataset(tmp_path / "d", classes=["h1", "h2"], per_class=2)
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--split", "sketchy21"]) == 2
    assert "not in the dataset" in capsys.readouterr().err


def _torchrun_category(root, tmp_path, out, *extra) -> subprocess.CompletedProcess:
    """``torchrun`` with two CPU processes (gloo) on the category task, batches of 12, unseen h6 and v6."""
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    args = _category_args(root, unseen, out, *extra)
    args[args.index("--batch_size") + 1] = "12"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "training", *args], cwd=Path(__file__).parents[2], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_two_process_ddp_run_under_torchrun_on_cpu(shapes_root, tmp_path):
    """The DDP path for real: torchrun, two CPU processes, gloo; ranks share the epoch, rank 0 writes."""
    out = tmp_path / "ddp"
    done = _torchrun_category(shapes_root, tmp_path, out, "--max-steps", "3")
    assert "2 process(es)" in done.stdout
    steps = [int(r["step"]) for r in read_log(out / "log.csv") if r["phase"] == "train" and r["metric"] == "loss"]
    assert steps == [1, 2, 3]  # 96 triplets / 2 ranks / 12 per batch = 4 steps per epoch; stopped at 3
    assert torch.load(out / "last_state.pt", weights_only=True)["batches_done"] == 3


def test_trainable_official_trains_saves_and_evaluates_the_official_tensors(shapes_root, tmp_path):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "official"
    assert main(_category_args(shapes_root, unseen, out, "--trainable", "official", "--max-steps", "1")) == 0
    assert json.loads((out / "run.json").read_text())["encoder"]["prompts"]["trainable"] == "official"
    trained = load_checkpoint(out / "last.safetensors")
    untrained = build_encoder(trained.config, "cpu")
    moved = [n for n, p in trained.backbone_tensors.items() if not torch.equal(p, untrained.backbone_tensors[n])]
    assert "positional_embedding" in moved and any("in_proj_weight" in n for n in moved)
    report = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(out / "last.safetensors"), "--data", str(shapes_root),
                 "--unseen-classes", str(unseen), "--workers", "0", "--no-progress", "--out", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["encoder"]["fingerprint"] == trained.fingerprint()
    assert main(_category_args(shapes_root, unseen, tmp_path / "x", "--trainable", "official", "--no-ln-tuning")) == 2


def test_evaluation_embeds_in_full_precision_unless_amp_is_asked_for(shapes_root, tiny_encoder):
    from training.cli import build_parser
    from training.evaluate import evaluate_category

    data = CategoryDataset.scan(shapes_root)
    sketches, photos = data.subset(["h1", "v1"])
    seen = []
    encode = tiny_encoder.encode
    tiny_encoder.encode = lambda images, modality: seen.append(tiny_encoder.amp) or encode(images, modality)
    evaluate_category(tiny_encoder, sketches[:4], photos[:4], progress=False)
    assert seen and not any(seen) and tiny_encoder.amp is True  # fp32 while scoring, bf16 setting restored
    seen.clear()
    evaluate_category(tiny_encoder, sketches[:4], photos[:4], progress=False, amp=True)
    assert seen and all(seen)
    parse = build_parser().parse_args
    assert parse(["evaluate", "--data", "d"]).amp is False and parse(["evaluate", "--data", "d", "--amp"]).amp


def test_evaluate_prints_and_records_the_standard_test_set_sizes(tmp_path, capsys):
    from tests.imagegen import draw_sketch, random_photo
    from training.data import read_class_list, split_classes_file

    for i, name in enumerate(read_class_list(split_classes_file("sketchy21"))):
        for modality, image, suffix in (("sketch", draw_sketch(seed=i), "png"), ("photo", random_photo(seed=i), "jpg")):
            (tmp_path / "d" / modality / name).mkdir(parents=True)
            image.save(tmp_path / "d" / modality / name / f"0.{suffix}")
    path = tmp_path / "m.json"
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--split", "sketchy21", "--workers", "0", "--no-progress",
                 "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "21 sketches x 21 photos here; standard sketchy21 protocol: 12,694 sketches x 10,453 photos" in printed
    assert "gallery: 21 photos (dedup: 0 duplicate images dropped" in printed
    assert "sketch framing: canvas (the benchmark framing" in printed  # the frozen-CLIP baseline
    assert "[gallery dedup: 21 photos]" in printed
    result = json.loads(path.read_text())
    assert result["standard_test_set"]["photos"] == 10_453 and result["precision"] == "fp32"
    assert (result["gallery"], result["n_gallery"], result["sketch_framing"]) == ("dedup", 21, "canvas")
    assert result["map_200_div_k"] <= result["map_200"]

    # A copy of one photo: dropped by default, counted with --gallery list (as the ZSE-SBIR / SAKE lists count)
    first = sorted((tmp_path / "d" / "photo").iterdir())[0]
    (first / "1.png").write_bytes((first / "0.jpg").read_bytes())
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--split", "sketchy21", "--workers", "0", "--no-progress",
                 "--json", str(path), "--gallery", "list", "--sketch-framing", "ink"]) == 0
    printed = capsys.readouterr().out
    assert "gallery: 22 photos (list" in printed and "standard sketchy21 protocol: 12,694 sketches x 12,553" in printed
    assert "sketch framing: ink (--sketch-framing)" in printed
    result = json.loads(path.read_text())
    assert (result["gallery"], result["n_gallery"], result["photos_found"]) == ("list", 22, 22)
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--split", "sketchy21", "--workers", "0", "--no-progress",
                 "--json", str(path)]) == 0
    assert "gallery: 21 photos (dedup: 1 duplicate images dropped" in capsys.readouterr().out
    assert json.loads(path.read_text())["n_duplicates_dropped"] == 1


@pytest.mark.slow
def test_refit_under_torchrun_agrees_on_the_epoch_count_across_ranks(shapes_root, tmp_path):
    """Only rank 0 validates; the other rank must retrain for the same epoch count, or DDP would hang."""
    out = tmp_path / "ddp-refit"
    _torchrun_category(shapes_root, tmp_path, out, "--refit")
    assert json.loads((out / "run.json").read_text())["refit"]["epochs"] == 1
    # 10 classes x 12 sketches / 2 ranks / 12 per batch = 5 steps (the selection run had 4)
    assert torch.load(out / "last_state.pt", weights_only=True)["step"] == 5


def test_the_category_task_orders_its_batches_by_the_chosen_sampler(shapes_root, tiny_encoder):
    data = CategoryDataset.scan(shapes_root)
    split = ClassSplit(train=[c for c in data.classes if c not in VAL], val=[], test=[])
    runs = {}
    for sampler in ("shuffled", "official"):
        task = CategoryTask(data, split, tiny_encoder, CategoryOptions(batch_size=12, workers=0, sampler=sampler))
        dataset = task.train_loader(0).dataset
        runs[sampler] = [task.sketch_labels[s] for s, _, _ in dataset.triples]
    assert runs["official"] == sorted(runs["official"])  # class after class: every batch of 12 is one class
    assert runs["shuffled"] != sorted(runs["shuffled"]) and sorted(runs["shuffled"]) == runs["official"]


@pytest.mark.parametrize("flags", [["--prompt_lr", "nan"], ["--prompt_lr", "inf"], ["--clip_LN_lr", "1e3"],
                                   ["--prompt_lr", "0"], ["--margin", "nan"], ["--weight_decay", "-1"],
                                   ["--epochs", "0"]])
def test_absurd_learning_rates_margins_and_epochs_are_usage_errors(shapes_root, tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exited:
        main(_category_args(shapes_root, tmp_path / "unseen.txt", tmp_path / "run", *flags))
    assert exited.value.code == 2 and "must be" in capsys.readouterr().err


def test_a_run_that_diverges_stops_unsaved_and_a_nan_checkpoint_gets_no_metrics(shapes_root, tmp_path, monkeypatch,
                                                                                 capsys):
    from encoder import save_checkpoint

    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "run"
    real_loss = CategoryTask.loss

    def nan_loss(self, encoder, batch):  # what a learning rate far too high does within a few steps
        loss, parts = real_loss(self, encoder, batch)
        return loss * float("nan"), parts

    monkeypatch.setattr(CategoryTask, "loss", nan_loss)
    assert main(_category_args(shapes_root, unseen, out, "--val-fraction", "0")) == 2
    assert "Training diverged at step 1" in capsys.readouterr().err
    assert not (out / "last.safetensors").exists() and not (out / "best.safetensors").exists()

    encoder = build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig()), "cpu")
    with torch.no_grad():
        next(iter(encoder.prompts.values())).fill_(float("nan"))
    save_checkpoint(encoder, tmp_path / "nan.safetensors")
    assert main(["evaluate", "--data", str(shapes_root), "--unseen-classes", str(unseen), "--workers", "0",
                 "--no-progress", "--checkpoint", str(tmp_path / "nan.safetensors")]) == 2
    assert "not finite floating-point numbers" in capsys.readouterr().err  # refused at load, before any metric


def test_max_steps_is_a_limit_a_resume_does_not_pass(shapes_root, tmp_path):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "run"
    assert main(_category_args(shapes_root, unseen, out, "--max-steps", "2")) == 0
    assert main(_category_args(shapes_root, unseen, out, "--max-steps", "2", "--resume")) == 0
    assert torch.load(out / "last_state.pt", weights_only=True)["step"] == 2  # was 3: one step past the limit


def test_sigterm_saves_the_run_where_it_stands_like_ctrl_c(shapes_root, tmp_path):
    import signal
    import time

    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "run"
    args = _category_args(shapes_root, unseen, out, "--epochs", "10000", "--val-fraction", "0")
    process = subprocess.Popen([sys.executable, "-m", "training", *args], cwd=Path(__file__).resolve().parents[2],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last_state.pt").exists() and time.monotonic() < deadline:  # an epoch or more is done
            time.sleep(0.2)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)  # docker stop, a scheduler's kill
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM and "terminated" in err, err
    assert torch.load(out / "last_state.pt", weights_only=True)["step"] > 0


def test_resume_takes_the_weights_of_its_state_and_an_unreadable_state_is_one_error_line(shapes_root, tmp_path,
                                                                                          capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "run"
    assert main(_category_args(shapes_root, unseen, out, "--max-steps", "2")) == 0
    state = torch.load(out / "last_state.pt", weights_only=True)
    saved = load_checkpoint(out / "last.safetensors")
    assert all(torch.equal(state["learned"][name], p.detach()) for name, p in saved.trainable_parameters().items())

    data = (out / "last_state.pt").read_bytes()
    (out / "last_state.pt").write_bytes(data[:1000])  # a torn file (a disk that filled, a copy cut short)
    capsys.readouterr()
    assert main(_category_args(shapes_root, unseen, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "last_state.pt is unreadable" in err and err.count("\n") == 1, err

    # A folder whose checkpoints lost their state: --resume would have started afresh over them
    (out / "last_state.pt").unlink()
    last = (out / "last.safetensors").read_bytes()
    assert main(_category_args(shapes_root, unseen, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "no last_state.pt to resume from" in err and "--checkpoint" in err and err.count("\n") == 1, err
    assert main(_category_args(shapes_root, unseen, out)) == 2  # nor a fresh run without --resume
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "last.safetensors").read_bytes() == last

    # States of another shape (edited, or not this program's): refused whole, with the same one line
    # (fields of the wrong type passed, printed "resuming" and died later with a traceback)
    odd_fields = [{"epoch": "1"}, {"step": "x"}, {"batches_done": -5}, {"best": "x"}, {"best": float("nan")},
                  {"best_epoch": 1.5},
                  {"history": '{"a": 1}'}, {"history": "[1]"}]
    for other in ([1, 2, 3], {k: v for k, v in state.items() if k != "optimizer"}, {**state, "history": "[1,"},
                  *({**state, **change} for change in odd_fields)):
        torch.save(other, out / "last_state.pt")
        assert main(_category_args(shapes_root, unseen, out, "--resume")) == 2
        err = capsys.readouterr().err
        assert "last_state.pt is unreadable" in err and err.count("\n") == 1 and "resuming" not in err, err

    # A run record that is not one: one line naming it, not a traceback
    torch.save(state, out / "last_state.pt")
    for record in ("[]", "{not json"):
        (out / "run.json").write_text(record)
        assert main(_category_args(shapes_root, unseen, out, "--resume")) == 2
        err = capsys.readouterr().err
        assert "run.json" in err and "Traceback" not in err and err.count("\n") == 1, err


def test_ctrl_c_while_validating_keeps_the_epochs_training_and_resume_validates_it(shapes_root, tmp_path,
                                                                                    monkeypatch, capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    out = tmp_path / "run"
    real_validate, calls = CategoryTask.validate, []

    def interrupted_validate(self, encoder):
        calls.append(1)
        if len(calls) == 2:  # epoch 0 (the untrained reference) passes; epoch 1's validation is cut short
            raise KeyboardInterrupt
        return real_validate(self, encoder)

    monkeypatch.setattr(CategoryTask, "validate", interrupted_validate)
    assert main(_category_args(shapes_root, unseen, out)) == 130
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["batches_done"]) == (0, 4, 4)
    monkeypatch.setattr(CategoryTask, "validate", real_validate)
    assert main(_category_args(shapes_root, unseen, out, "--resume")) == 0
    assert "epoch 0, step 4 (4 batches into the epoch)" in capsys.readouterr().out
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["batches_done"]) == (1, 4, 0)
    assert [row["epoch"] for row in json.loads(state["history"])] == [0, 1]


def test_training_continues_a_checkpoint_only_when_the_command_line_names_it(shapes_root, tmp_path, monkeypatch,
                                                                             capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    assert main(_category_args(shapes_root, unseen, tmp_path / "first", "--max-steps", "1")) == 0
    served = str(tmp_path / "first" / "last.safetensors")
    monkeypatch.setenv("SBIR_CHECKPOINT", served)  # what a service host sets for serving (docker-compose passes it)
    capsys.readouterr()
    assert main(_category_args(shapes_root, unseen, tmp_path / "fresh", "--max-steps", "1")) == 0
    assert "starting from" not in capsys.readouterr().out
    assert main(_category_args(shapes_root, unseen, tmp_path / "more", "--max-steps", "1", "--checkpoint", served)) == 0
    assert f"starting from {served}" in capsys.readouterr().out


def test_evaluate_refuses_a_report_path_it_cannot_write_before_embedding_anything(shapes_root, tmp_path, capsys):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("h6\nv6\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["evaluate", "--data", str(shapes_root), "--unseen-classes", str(unseen), "--workers", "0", "--no-progress"]
    assert main([*args, "--json", str(blocker / "metrics.json")]) == 2
    out = capsys.readouterr()
    assert "cannot be made" in out.err and "evaluating" not in out.out  # refused before the encoder ran


def test_class_names_match_whatever_their_unicode_normal_form():
    from training.data import class_key

    assert class_key("cafe\u0301 table") == class_key("Café_Table")  # NFD (macOS folders) vs NFC (a split file)
