"""What an operator reads: every build flag explained (Milvus's inside the vector engine group), no faiss loader
chatter at INFO, a scan progress bar that counts photos, and verify naming gallery files gone since the build."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from index_builder.cli import _parser, main
from index_builder.sources import scan_folder

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
    assert main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress"]) == 0
    assert main(["verify", str(index_dir)]) == 0
