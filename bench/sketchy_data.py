"""Where the benchmarks find sketchy-mini: ``--data DIR``, else ``SBIR_BENCH_DATA``, else ``shared/data/sketchy-mini``
beside the repository (the dev box's layout, found from any worktree depth), so a plain clone runs them with a flag.

A missing or incomplete folder is a usage error (exit 2) that says what to pass, not a traceback mid-run."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

ENV_DATA = "SBIR_BENCH_DATA"
DATASET = "sketchy-mini"
LAYOUT = "a Sketchy-layout folder: photo/<class>/*.jpg and sketch/<class>/*.png"
_BESIDE = Path("shared") / "data" / DATASET


def find_beside_repository() -> Path | None:
    """``shared/data/sketchy-mini`` in a folder above this file (the old default), or None."""
    return next((parent / _BESIDE for parent in Path(__file__).resolve().parents if (parent / _BESIDE).is_dir()), None)


def add_data_arg(parser: argparse.ArgumentParser, purpose: str) -> None:
    """``--data DIR`` (default ``SBIR_BENCH_DATA``, else the folder beside the repository when it exists)."""
    env = os.environ.get(ENV_DATA)
    parser.add_argument("--data", type=Path, default=Path(env) if env else find_beside_repository(),
                        help=f"{DATASET} or any {LAYOUT}, for {purpose} (env {ENV_DATA}; default "
                        f"{_BESIDE} in a folder above the repository, when there)")


def checked_data(parser: argparse.ArgumentParser, data: Path | None, parts: Sequence[str]) -> Path:
    """``data`` when it holds every folder of ``parts`` (``photo``, ``sketch``); else the parser's error (exit 2)."""
    if data is None:
        parser.error(f"no {DATASET} found ({_BESIDE} above the repository): pass --data DIR or set {ENV_DATA} "
                     f"({LAYOUT})")
    missing = [part for part in parts if not (data / part).is_dir()]
    if missing:
        parser.error(f"--data {data} has no {' or '.join(f'{part}/' for part in missing)} folder: pass --data DIR "
                     f"or set {ENV_DATA} to {LAYOUT}")
    return data
