"""What an operator reads: every build flag explained (Milvus's inside the vector engine group), no faiss loader
chatter at INFO, a scan progress bar that counts photos, and verify naming gallery files gone since the build."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from index_builder.cli import _parser, main
from index_builder.sources import scan_folder
from tests.app.support import app_client

REPO = Path(__file__).resolve().parents[2]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["build", "tune", "info", "verify"])
def test_every_flag_says_what_it_does(command):
    parser = subcommands()[command]
    silent = [action.option_strings or action.dest for action in parser._actions if not action.help]
    assert not silent, silent


def test_the_milvus_build_flags_sit_in_the_vector_engine_group():
    parser = subcommands()["build"]
    engine = next(group for group in parser._action_groups if group.title == "vector engine")
    flags = {flag for action in engine._group_actions for flag in action.option_strings}
    milvus = {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--milvus")}
    assert milvus and milvus <= flags, milvus - flags
    help_text = parser.format_help()
    before, after = help_text.split("\nvector engine:")
    assert "--milvus-index-params" in after and "--milvus-index-params" not in before.split("\noptions:")[1]


def test_loading_faiss_says_nothing_at_info():
    code = ("import logging; logging.basicConfig(level=logging.INFO); "
            "import photo_index.backends.folder.faiss_index")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "faiss" not in result.stderr, result.stderr


def test_the_scan_progress_bar_counts_photos_not_folder_entries(make_gallery, capsys):
    gallery = make_gallery({"cat": 3, "dog": 2})
    (gallery / "dog" / "notes.txt").write_text("not a photo")
    scan_folder(gallery, progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("scanning: 5 photos") and "3 folders" in bar and "file" not in bar, bar


def test_verify_reports_gallery_photos_deleted_since_the_build(make_gallery, tmp_path, capsys):
    gallery = make_gallery({"cat": 3, "dog": 2})
    index_dir = tmp_path / "index"
    assert main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress"]) == 0
    assert main(["verify", str(index_dir)]) == 0
    capsys.readouterr()
    (gallery / "dog" / "dog_1.png").unlink()
    assert main(["verify", str(index_dir)]) == 1
    captured = capsys.readouterr()
    assert "FAILED, 1 problem(s)" in captured.out
    assert "1 indexed photo file(s) are gone from the gallery" in captured.err and "dog_1.png" in captured.err
    assert f"python -m index_builder build --gallery {gallery}" in captured.err  # how to bring it back in line
    # run as printed, also where SBIR_CHECKPOINT is set (a serving host): the baseline's command says --checkpoint ''
    printed = captured.err.split("re-index with `", 1)[1].split("`", 1)[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SBIR_CHECKPOINT", str(tmp_path / "someone-elses.safetensors"))
        assert main([*shlex.split(printed)[3:], "--out", str(index_dir), "--workers", "0", "--no-progress"]) == 0
    assert main(["verify", str(index_dir)]) == 0


def test_the_reindex_command_verify_prints_runs_with_the_indexs_encoder(make_gallery, tmp_path, capsys,
                                                                         tiny_encoder):
    """It named the gallery only: run as printed, a build of a checkpoint's index was refused (another encoder)."""
    from encoder import save_checkpoint

    checkpoint = save_checkpoint(tiny_encoder, tmp_path / "prompts.safetensors")
    gallery = make_gallery({"cat": 3, "dog": 2})
    index_dir = tmp_path / "index"
    quiet = ["--out", str(index_dir), "--workers", "0", "--no-progress"]
    assert main(["build", "--gallery", str(gallery), "--checkpoint", str(checkpoint), *quiet]) == 0
    (gallery / "dog" / "dog_1.png").unlink()
    capsys.readouterr()
    assert main(["verify", str(index_dir)]) == 1
    printed = capsys.readouterr().err.split("re-index with `", 1)[1].split("`", 1)[0]
    words = shlex.split(printed)
    assert words[:4] == ["python", "-m", "index_builder", "build"] and str(checkpoint) in words
    assert main([*words[3:], *quiet]) == 0
    assert main(["verify", str(index_dir)]) == 0


def _segment_json(index_dir: Path) -> Path:
    return next((index_dir / "segments").glob("*/segment.json"))


@pytest.mark.parametrize(("key", "value", "named"), [
    ("files", {"vectors.npy": 5}, "files.vectors.npy"),
    ("index", {"search_params": "x"}, "index.search_params"),
    ("size", [6], "size"),
])
def test_a_segment_json_of_wrong_types_is_a_finding_of_verify_and_an_error_of_info(make_gallery, build, tmp_path,
                                                                                  tiny_baseline, capsys, key, value,
                                                                                  named):
    build(gallery=make_gallery({"cat": 2, "dog": 2}))
    index_dir = tmp_path / "index"
    path = _segment_json(index_dir)
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    message = f"{path} is damaged: missing or malformed {named}"
    assert main(["verify", str(index_dir)]) == 1
    out, err = capsys.readouterr()
    assert "FAILED, 1 problem(s)" in out and message in err and "Traceback" not in err
    assert main(["info", str(index_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    with app_client(index_dir, tiny_baseline) as client:  # the service starts and refuses that version
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["index_loaded"]


@pytest.mark.parametrize(("variable", "value", "command"), [
    ("SBIR_MILVUS_TIMEOUT_S", "abc", "info"),
    ("SBIR_MILVUS_TIMEOUT_S", "-1", "verify"),
    ("SBIR_MILVUS_TIMEOUT_S", "nan", "info"),
    ("SBIR_INDEX_FLAT_MAX", "abc", "build"),
    ("SBIR_INDEX_FLAT_MAX", "-5", "build"),
    ("SBIR_INDEX_DIR", "", "build"),
    ("SBIR_INDEX_DIR", os.fsdecode(b"ox\xff"), "build"),
    ("SBIR_MAX_IMAGE_PIXELS", "abc", "build"),
    ("SBIR_MAX_IMAGE_PIXELS", "0", "build"),
])
def test_a_bad_environment_variable_is_one_error_line_naming_it(make_gallery, tmp_path, monkeypatch, capsys, variable,
                                                               value, command):
    gallery = make_gallery({"cat": 2})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    argv = (["build", "--gallery", str(gallery), "--workers", "0", "--no-progress"]
            + ([] if variable == "SBIR_INDEX_DIR" else ["--out", str(tmp_path / "index")])
            if command == "build" else [command, str(tmp_path / "index")])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {variable} ") and err.count("\n") == 1, err
    assert "--index-factory" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]  # nothing written, in the cwd least of all


def test_a_bad_flat_max_does_not_break_the_import_and_a_low_one_is_blamed_not_the_factory_flag(
        make_gallery, tmp_path, monkeypatch, capsys):
    code = "import photo_index.backends.folder.faiss_index"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "SBIR_INDEX_FLAT_MAX": "abc"})
    assert result.returncode == 0, result.stderr
    gallery = make_gallery({"cat": 2, "dog": 2})
    monkeypatch.setenv("SBIR_INDEX_FLAT_MAX", "0")  # the exact limit below the gallery's size: an IVF it can't train
    assert main(["build", "--gallery", str(gallery), "--out", str(tmp_path / "index"), "--workers", "0",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "SBIR_INDEX_FLAT_MAX=0 chose it for 4 vectors" in err and "leave --index-factory out" not in err


@pytest.mark.parametrize("argv", [
    ["build", "--gallery", ""],
    ["build", "--manifest", ""],
    ["build", "--gallery", "G", "--out", ""],
    ["info", ""],
    ["verify", ""],
    ["compact", ""],
    ["tune", "", "--queries", "q.npy"],
    ["tune", "I", "--queries", ""],
    ["compact", "I", "--device", "tpu"],
    ["build", "--gallery", "G", "--out", os.fsdecode(b"ox\xff")],
    ["build", "--gallery", os.fsdecode(b"g\xfe")],
    ["build", "--gallery", "G", "--out", "   "],
])
def test_an_empty_or_non_utf8_path_or_an_unknown_device_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert any(words in err for words in ("an empty path", "invalid choice: 'tpu'", "not valid UTF-8",
                                          "only spaces")), err


@pytest.mark.parametrize("size", ["99999999999999999999", "65537"])
def test_a_huge_batch_size_is_refused_before_any_work(make_gallery, tmp_path, capsys, size):
    gallery = make_gallery({"cat": 2})
    assert main(["build", "--gallery", str(gallery), "--out", str(tmp_path / "index"), "--batch-size", size]) == 2
    err = capsys.readouterr().err
    assert err == "error: --batch-size must be at most 65536 photos per encoder call.\n"
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("command", [["compact"], ["tune", "--queries", "q.npy"]])
def test_commands_on_an_index_that_does_not_exist_create_nothing(tmp_path, capsys, command):
    missing = tmp_path / "nosuch"
    assert main([command[0], str(missing), *command[1:]]) == 2
    assert "No index" in capsys.readouterr().err and not missing.exists()


def test_the_gallery_itself_as_the_index_folder_is_refused_and_left_untouched(make_gallery, capsys):
    gallery = make_gallery({"cat": 2})
    before = sorted(p.name for p in gallery.iterdir())
    assert main(["build", "--gallery", str(gallery), "--out", str(gallery), "--workers", "0", "--no-progress"]) == 2
    assert "is the gallery itself" in capsys.readouterr().err
    assert sorted(p.name for p in gallery.iterdir()) == before


def test_a_current_version_that_is_gone_is_named_as_gone(make_gallery, tmp_path, capsys):
    index_dir = tmp_path / "index"
    assert main(["build", "--gallery", str(make_gallery({"cat": 2})), "--out", str(index_dir), "--workers", "0",
                 "--no-progress"]) == 0
    name = (index_dir / "current").read_text().strip()
    (index_dir / "versions" / f"{name}.json").unlink()
    capsys.readouterr()
    for command in ("verify", "info"):
        assert main([command, str(index_dir)]) == 2
        err = capsys.readouterr().err
        assert f"names version {name!r}, but it is gone" in err and err.count("\n") == 1, err


def test_a_refused_first_build_leaves_no_index_folder_behind(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    index_dir = tmp_path / "index"
    assert main(["build", "--gallery", str(empty), "--out", str(index_dir), "--workers", "0", "--no-progress"]) == 2
    assert "no index was written" in capsys.readouterr().err and not index_dir.exists()
    index_dir.mkdir()  # a folder that was there before is the user's: it stays
    assert main(["build", "--gallery", str(empty), "--out", str(index_dir), "--workers", "0", "--no-progress"]) == 2
    assert index_dir.is_dir()


@pytest.mark.parametrize(("variable", "argv"), [
    ("SBIR_DEVICE", ["build", "--gallery", "G"]),
    ("SBIR_DISTRIBUTOR", ["build", "--gallery", "G"]),
    ("SBIR_ENGINE", ["info", "I"]),
])
def test_a_choice_from_the_environment_is_checked_like_the_flags(monkeypatch, capsys, variable, argv):
    monkeypatch.setenv(variable, "tpu")
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and "'tpu' is not one of" in capsys.readouterr().err


def test_a_skipped_file_named_with_control_characters_prints_on_one_line_as_itself(make_gallery, build):
    gallery = make_gallery({"cat": 2})
    (gallery / "cat" / "evil\n  skipped zero-byte: forged.jpg\x1b[31mred.jpg").write_bytes(b"")
    summary = build(gallery=gallery).summary()
    skipped = [line for line in summary.splitlines() if "skipped zero-byte" in line]
    assert len(skipped) == 1 and "\x1b" not in summary
    assert "evil\\n  skipped zero-byte: forged.jpg\\x1b[31mred.jpg" in skipped[0]


def test_the_summary_points_to_where_its_long_skip_list_really_is(make_gallery, build):
    gallery = make_gallery({"cat": 2})
    for i in range(12):
        (gallery / "cat" / f"empty_{i:02}.jpg").write_bytes(b"")
    assert "(the version's report.json)" in build(gallery=gallery).summary()
    assert "(--json lists them all)" in build(gallery=gallery).summary()  # unchanged: no new version, no report


def _photos(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("inside", ["staging", "segments", "versions/x"])
def test_a_gallery_inside_the_index_folder_is_refused_before_anything_is_deleted(make_gallery, tmp_path, capsys,
                                                                                 inside):
    """Staging is removed and old versions pruned inside the index folder: a gallery there was deleted."""
    index_dir = tmp_path / "index"
    gallery = index_dir / inside
    gallery.parent.mkdir(parents=True, exist_ok=True)
    make_gallery({"cat": 2}).rename(gallery)
    before = _photos(gallery)
    assert main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress"]) == 2
    assert "inside the index folder's" in capsys.readouterr().err
    assert _photos(gallery) == before


def test_a_gallery_in_a_folder_of_its_own_inside_the_index_folder_is_built_and_kept(make_gallery, tmp_path):
    """`--out . --gallery ./photos`: the index writes, replaces and prunes only its own entries (INDEX_ENTRIES)."""
    from index_builder import known_failures
    from index_builder.lock import LOCK_FILE
    from photo_index.backends.folder import INDEX_ENTRIES

    index_dir = tmp_path / "index"
    index_dir.mkdir()
    gallery = index_dir / "photos"
    make_gallery({"cat": 3}).rename(gallery)
    (gallery / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")  # remembered in failed.json
    before = _photos(gallery)
    for _ in range(2):
        assert main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0",
                     "--no-progress", "--keep", "1"]) == 0
        (gallery / "cat" / "cat_0.jpg").unlink(missing_ok=True)  # a deletion: tombstones, a pruned version
    assert _photos(gallery) == [p for p in before if p != "cat/cat_0.jpg"]
    assert {p.name for p in index_dir.iterdir()} <= INDEX_ENTRIES | {LOCK_FILE, known_failures.FAILED_FILE, "photos"}


def test_an_index_folder_inside_the_gallery_that_holds_photos_is_refused(make_gallery, capsys):
    """--out gallery/ant: the scan skips the index folder, so ant's photos would silently never be indexed."""
    gallery = make_gallery({"cat": 2, "ant": 2})
    assert main(["build", "--gallery", str(gallery), "--out", str(gallery / "ant"), "--workers", "0",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds photos" in err and "ant" in err
    assert not (gallery / "ant" / ".lock").exists()
    # an empty (or index) folder inside the gallery stays a valid place for the index
    assert main(["build", "--gallery", str(gallery), "--out", str(gallery / ".index"), "--workers", "0",
                 "--no-progress"]) == 0


def test_workers_beyond_the_cap_are_refused(make_gallery, tmp_path, capsys):
    from index_builder.cli import MAX_WORKERS

    gallery = make_gallery({"cat": 2})
    assert main(["build", "--gallery", str(gallery), "--out", str(tmp_path / "index"),
                 "--workers", str(MAX_WORKERS + 1)]) == 2
    assert f"--workers must be at most {MAX_WORKERS}" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


def test_info_and_verify_read_the_index_folder_from_sbir_index_dir(make_gallery, tmp_path, capsys, monkeypatch):
    index_dir = tmp_path / "index"
    assert main(["build", "--gallery", str(make_gallery({"cat": 2})), "--out", str(index_dir), "--workers", "0",
                 "--no-progress"]) == 0
    monkeypatch.setenv("SBIR_INDEX_DIR", str(index_dir))
    capsys.readouterr()
    assert main(["info", "--json"]) == 0 and json.loads(capsys.readouterr().out)["size"] == 2
    assert main(["verify"]) == 0


def test_a_repeated_signal_while_unwinding_is_ignored_and_a_late_one_exits_at_once(tmp_path):
    """The first Ctrl+C unwinds; a repeat within the grace period must not land in cleanup code as a traceback; one
    after it (cleanup hanging) exits at once with one line."""
    script = tmp_path / "stuck.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "import index_builder.cli as cli\n"
        "cli.STOP_GRACE_S = 1.0\n"
        "signal.signal(signal.SIGINT, cli._interrupt)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except cli.Interrupted:\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # impatient: ignored\n"
        "    print('unwinding', flush=True)\n"
        "    time.sleep(1.5)\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # cleanup hangs: exit now\n"
        "    time.sleep(30)\n"
        "    print('never', flush=True)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 130 and result.stdout == "unwinding\n", (result.stdout, result.stderr)
    assert "interrupted again" in result.stderr and "Traceback" not in result.stderr


def test_running_out_of_gpu_memory_is_a_message_and_exit_2_not_a_traceback(make_gallery, tmp_path, monkeypatch,
                                                                           capsys):
    import torch

    from index_builder import local_distributor

    def out_of_memory(encoder, pixels):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(local_distributor, "embed_pixels", out_of_memory)
    assert main(["build", "--gallery", str(make_gallery({"cat": 2})), "--out", str(tmp_path / "index"),
                 "--workers", "0", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in error and "--batch-size" in error


@pytest.mark.parametrize("flags", [["--ray-actors", "4"], ["--ray-decoders", "2"], ["--ray-address", "10.0.0.5:6379"]])
def test_ray_flags_without_the_ray_distributor_are_refused_not_ignored(tmp_path, capsys, monkeypatch, flags):
    """A build meant for a cluster (``--distributor ray`` forgotten) ran on this machine, its flags unread."""
    monkeypatch.delenv("SBIR_DISTRIBUTOR", raising=False)
    monkeypatch.setenv("SBIR_RAY_ADDRESS", "10.0.0.9:6379")  # a deployment's setting: never refused by itself
    assert main(["build", "--gallery", str(tmp_path), "--out", str(tmp_path / "index"), *flags]) == 2
    assert f"{flags[0]} only apply with --distributor ray" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


def test_a_ray_address_in_the_environment_alone_leaves_a_local_build_alone(monkeypatch, tmp_path):
    from index_builder.cli import _distributor
    from index_builder.local_distributor import LocalDistributor

    monkeypatch.setenv("SBIR_RAY_ADDRESS", "10.0.0.9:6379")
    monkeypatch.delenv("SBIR_DISTRIBUTOR", raising=False)
    args = _parser().parse_args(["build", "--gallery", str(tmp_path)])
    assert isinstance(_distributor(args), LocalDistributor)
