"""The admin build runner's two readings of the world: whether another process builds, and the child's report."""

from __future__ import annotations

import json

import pytest

from app.builds import LOCK_FILE, lock_held, read_report


def test_a_lock_that_cannot_even_be_opened_is_not_a_crash(tmp_path):
    # A folder named like the lock file (or a read-only volume, an NFS without lockd) was a 500 on POST
    # /admin/builds: the build child is the one to say what is wrong with the index folder.
    assert lock_held(tmp_path) is False  # no build ever ran
    (tmp_path / LOCK_FILE).mkdir()
    assert lock_held(tmp_path) is False


def test_the_report_is_read_after_lines_a_library_printed_before_it():
    report = {"status": "built", "size": 3, "index": {"factory": "Flat"}}
    text = json.dumps(report, indent=2).encode()
    assert read_report(text) == report
    assert read_report(b"some library said hello\n{not json either\n" + text + b"\n") == report
    with pytest.raises(ValueError):
        read_report(b"no report at all\n")


def test_a_service_without_a_checkpoint_builds_the_baseline_whatever_the_environment_says(tmp_path, monkeypatch):
    """A service started with --checkpoint '' over SBIR_CHECKPOINT=x: its admin builds inherit the environment and
    embedded with x, which the service then refused (a different encoder)."""
    from app.builds import build_command
    from app.settings import Settings

    monkeypatch.delenv("SBIR_CHECKPOINT", raising=False)
    command = build_command(Settings(index_dir=tmp_path, checkpoint=None), tmp_path / "gallery")
    assert command[command.index("--checkpoint") + 1] == ""
    trained = build_command(Settings(index_dir=tmp_path, checkpoint=tmp_path / "run.safetensors"), tmp_path)
    assert trained[trained.index("--checkpoint") + 1] == str(tmp_path / "run.safetensors")
    assert trained.count("--checkpoint") == 1
