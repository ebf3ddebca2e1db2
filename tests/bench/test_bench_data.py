"""The sketchy-mini benchmarks take their data from --data / SBIR_BENCH_DATA; a missing folder is a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import index_build, precision, serve
from bench.sketchy_data import ENV_DATA

PARSERS = {"index_build": index_build.parse_args, "precision": precision.parse_args, "serve": serve.parse_args}


def sketchy(root: Path) -> Path:
    for part, name in (("photo", "cat/a.jpg"), ("sketch", "cat/a-1.png")):
        (root / part / name).parent.mkdir(parents=True, exist_ok=True)
        (root / part / name).write_bytes(b"")
    return root


@pytest.mark.parametrize("bench", sorted(PARSERS))
def test_a_missing_data_folder_is_a_usage_error_that_says_what_to_pass(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SBIR_BENCH_PHOTOS", raising=False)
    for argv in (["--data", str(tmp_path / "nowhere")], []):
        monkeypatch.setenv(ENV_DATA, str(tmp_path / "gone"))
        with pytest.raises(SystemExit) as stopped:
            PARSERS[bench](argv)
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert "--data DIR" in error and ENV_DATA in error and str(tmp_path) in error


@pytest.mark.parametrize("bench", sorted(PARSERS))
def test_the_data_folder_comes_from_the_flag_or_the_environment(bench, tmp_path, monkeypatch):
    monkeypatch.delenv("SBIR_BENCH_PHOTOS", raising=False)
    flag, env = sketchy(tmp_path / "flag"), sketchy(tmp_path / "env")
    monkeypatch.setenv(ENV_DATA, str(env))
    for argv, expected in ((["--data", str(flag)], flag), ([], env)):
        args = PARSERS[bench](argv)
        photos = getattr(args, "source", None) or getattr(args, "photos", None)
        assert args.data == expected
        if bench != "precision":
            assert photos == expected / "photo"
