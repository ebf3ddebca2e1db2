"""Every shell command shown in README.md and docs/deploy.md is exercised by a test or a CI step.

REGISTRY maps each shown command to what runs it: `path::test` (a test that must exist) or a CI script (which
must contain the command). A shown command missing from REGISTRY fails, and so does an entry whose command is no
longer shown or whose exerciser does not exist. The tests below also run what can run here: the index and serve
commands and `make serve` literally (tiny random model, tiny gallery); the Compose commands through Compose's own
`config` (no Docker engine here); and every `python -m` command, direct or given to a Compose service, against its
CLI's `--help`, so a renamed flag breaks the build, not the operator.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path

import pytest

from encoder import save_checkpoint
from tests.deploy.deploytools import MILVUS_OVERRIDE, active_services, compose_config
from tests.imagegen import draw_sketch, random_photo

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/deploy.md"]
THIS = "tests/test_readme_commands.py"
DEPLOY = "tests/deploy/test_deploy_files.py"
COMPOSE = [f"{THIS}::test_compose_commands_resolve", f"{DEPLOY}::test_dockerfile_passes_hadolint"]
FLAGS = f"{THIS}::test_python_commands_use_real_flags"
TRAINS = f"{THIS}::test_training_commands_run"
RUNS = f"{THIS}::test_index_and_serve_commands_run"
MAKE_SERVE = f"{THIS}::test_make_serve_commands_run"

REGISTRY: dict[str, list[str]] = {
    # README: quick start
    "make serve": [MAKE_SERVE],
    "make test": [".ci/run"],
    "SBIR_BACKBONE=sbir-tiny SBIR_PRETRAINED=none make serve": [MAKE_SERVE],
    # README and docs/deploy.md: Compose
    "cp .env.example .env": [f"{DEPLOY}::test_every_documented_value_in_env_example_is_accepted"],
    "docker compose up -d": COMPOSE,
    "docker compose run --rm indexer": COMPOSE,
    "docker compose run --rm indexer --rebuild": COMPOSE,
    "docker compose run --rm train category --data /data/datasets/sketchy --split sketchy21 "
    "--out /data/checkpoints/sketchy21": COMPOSE,
    "docker compose -f docker-compose.yml -f docker-compose.cpu.yml up -d": COMPOSE,
    "docker compose -f docker-compose.yml -f docker-compose.milvus.yml up -d": COMPOSE,
    "docker compose -f docker-compose.yml -f docker-compose.milvus.yml run --rm indexer": COMPOSE,
    "docker compose build": COMPOSE,
    "docker compose logs -f api": COMPOSE,
    # README: CLI reference
    "python -m training category --data datasets/sketchy --split sketchy21 --n_prompts 3 --prompt_lr 1e-4 "
    "--clip_LN_lr 1e-6 --batch_size 192 --workers 8 --epochs 60 --out runs/sketchy21": [TRAINS, FLAGS],
    "python -m training fine-grained --data datasets/sketchy --split sketchy21 --out runs/sketchy21-fg":
        [TRAINS, FLAGS],
    "python -m training evaluate --checkpoint runs/sketchy21/best.safetensors --data datasets/sketchy "
    "--split sketchy21 --json eval.json": [TRAINS, FLAGS],
    "python -m training evaluate --checkpoint runs/sketchy21-fg/best.safetensors --data datasets/sketchy "
    "--split sketchy21 --fine-grained --json eval-fg.json": [TRAINS, FLAGS],
    "python -m index_builder build --gallery gallery --checkpoint runs/sketchy21/best.safetensors --out index":
        [RUNS, FLAGS],
    "python -m index_builder info index": [RUNS, FLAGS],
    "python -m index_builder verify index": [RUNS, FLAGS],
    "python -m app --index-dir index --checkpoint runs/sketchy21/best.safetensors --host 0.0.0.0 --port 8000":
        [RUNS, FLAGS],
}

FENCE = re.compile(r"^```(?:bash|sh|shell|console)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SUBCOMMANDS = {"training", "index_builder"}  # CLIs whose first argument is a subcommand


def shell_commands(markdown: str) -> list[str]:
    """Commands of the shell code blocks: `\\` continuations joined, `$ ` prompts and comments dropped."""
    commands, pending = [], ""
    for block in FENCE.findall(markdown):
        for raw in block.splitlines():
            line = raw.strip().removeprefix("$ ")
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            tokens = shlex.split(pending + line, comments=True)
            pending = ""
            if tokens:
                commands.append(shlex.join(tokens))
    return commands


def shown_commands() -> list[str]:
    commands: list[str] = []
    for name in DOCUMENTS:
        path = ROOT / name
        if path.exists():
            commands += [c for c in shell_commands(path.read_text()) if c not in commands]
    return commands


def _argv(command: str) -> list[str]:
    """The command's words without leading VAR=value assignments."""
    words = shlex.split(command)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words


def _exerciser_exists(reference: str, command: str) -> str | None:
    """None when `reference` exists (and a CI script contains `command`), else why not."""
    path, _, name = reference.partition("::")
    file = ROOT / path
    if not file.is_file():
        return f"{path} does not exist"
    text = file.read_text()
    if not name:
        return None if command in text else f"{path} does not run {command!r}"
    defined = {node.name for node in ast.walk(ast.parse(text))
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    missing = [part for part in name.split("::") if part not in defined]
    return f"{path} defines no {'::'.join(missing)}" if missing else None


# --- the registry --------------------------------------------------------------------------------------------------

def test_shell_command_extraction():
    markdown = "text\n```bash\n$ make serve   # comment\nA=1 python -m x \\\n  --flag 2\n\n```\n```python\nno\n```\n"
    assert shell_commands(markdown) == ["make serve", "A=1 python -m x --flag 2"]


def test_every_shown_command_is_registered():
    unregistered = [command for command in shown_commands() if command not in REGISTRY]
    assert not unregistered, (
        "commands shown in the docs that no test or CI step is known to run; add them to REGISTRY in "
        f"{THIS} with the test that runs them: {unregistered}")


def test_registry_names_shown_commands_and_existing_exercisers():
    shown = set(shown_commands())
    stale = [command for command in REGISTRY if command not in shown]
    assert not stale, f"REGISTRY entries no longer shown in {DOCUMENTS}: {stale}"
    problems = [problem for command, references in REGISTRY.items() for reference in references
                if (problem := _exerciser_exists(reference, command))]
    assert not problems, problems


# --- python -m commands: real flags ------------------------------------------------------------------------------

def _has_cli(package: str) -> bool:
    return importlib.util.find_spec(package) is not None and importlib.util.find_spec(f"{package}.__main__") is not None


# Prints the --help of several `python -m` CLIs as JSON, importing torch and friends once for all of them.
HELP_SCRIPT = """
import contextlib, io, json, runpy, sys
texts = {}
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = [argv[0], *argv[1:], "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as done:
        texts[" ".join(argv)] = [done.code or 0, out.getvalue()]
print(json.dumps(texts))
"""


def _cli_key(package: str, subcommand: str | None) -> list[str]:
    return [package, *([subcommand] if subcommand else [])]


@cache
def _all_help() -> dict[str, list]:
    """--help of every `python -m` CLI the docs show (directly or through a Compose service), in one process."""
    keys = {tuple(_cli_key(argv[2], argv[3] if argv[2] in SUBCOMMANDS else None))
            for argv in (_argv(c) for c in shown_commands()) if argv[:2] == ["python", "-m"] and _has_cli(argv[2])}
    keys |= {("index_builder", "build"), ("training", "category")}  # what the indexer and train services run
    keys |= {(package,) for package in SUBCOMMANDS}  # their lists of subcommands
    keys = {key for key in keys if _has_cli(key[0])}
    result = subprocess.run([sys.executable, "-c", HELP_SCRIPT, json.dumps(sorted(keys))], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _help(package: str, subcommand: str | None) -> str:
    key = " ".join(_cli_key(package, subcommand))
    code, text = _all_help().get(key) or _run_help(package, subcommand)
    assert code == 0, f"python -m {key} --help failed:\n{text[-2000:]}"
    return text


def _run_help(package: str, subcommand: str | None) -> list:
    argv = [sys.executable, "-m", *_cli_key(package, subcommand), "--help"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return [result.returncode, result.stdout + result.stderr]


def pending(argv: list[str]) -> str | None:
    """Why `python -m PKG [SUB] ...` cannot be checked in this tree yet (its part is built on a parallel branch):
    the package has no CLI, or the subcommand it names (also as a flag, e.g. evaluate's `--fine-grained`) is not
    one of the CLI's subcommands. None when it can be checked."""
    package = argv[2]
    if not _has_cli(package):
        return f"`python -m {package}` is not in this tree yet"
    if package in SUBCOMMANDS:
        usage = re.search(r"\{([\w,-]+)\}", _help(package, None))
        choices = set(usage.group(1).split(",")) if usage else set()
        for word in argv[3:]:
            name = word.split("=")[0].lstrip("-")
            if name not in choices and (word == argv[3] or name in PARTS):
                return f"`python -m {package}` has no `{name}` in this tree yet"
    return None


PARTS = {"fine-grained"}  # subcommands that a flag of another subcommand may name


def check_flags(argv: list[str]) -> str | None:
    """Fail when `python -m PKG [SUB] ...` uses a flag its --help does not list; the reason when it is pending."""
    assert argv[:2] == ["python", "-m"], argv
    if reason := pending(argv):
        return reason
    package = argv[2]
    subcommand = argv[3] if package in SUBCOMMANDS else None
    text = _help(package, subcommand)
    for flag in (word.split("=")[0] for word in argv[3:] if word.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
            f"{' '.join(argv)}: {flag} is not an option of python -m {package} {subcommand or ''}")
    return None


def test_python_commands_use_real_flags():
    missing = [reason for command in shown_commands() if _argv(command)[:2] == ["python", "-m"]
               if (reason := check_flags(_argv(command)))]
    if missing:
        pytest.skip("; ".join(sorted(set(missing))))


# --- docker compose commands: resolved by Compose itself -------------------------------------------------------

GLOBAL_WITH_VALUE = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory"}
RUN_WITH_VALUE = {"-e", "--env", "-v", "--volume", "-p", "--publish", "-w", "--workdir", "-u", "--user",
                  "--name", "-l", "--label", "--entrypoint"}


def _split_compose(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """`docker compose GLOBALS SUBCOMMAND REST` → (globals, subcommand, rest)."""
    assert argv[:2] == ["docker", "compose"], argv
    words, globals_ = argv[2:], []
    while words and words[0].startswith("-"):
        flag = words.pop(0)
        globals_.append(flag)
        if flag in GLOBAL_WITH_VALUE:
            globals_.append(words.pop(0))
    assert words, f"no subcommand in {argv}"
    return globals_, words[0], words[1:]


def test_compose_commands_resolve():
    commands = [_argv(c) for c in shown_commands() if _argv(c)[:2] == ["docker", "compose"]]
    assert commands, "the README shows no docker compose command"
    skipped = []
    for argv in commands:
        globals_, subcommand, rest = _split_compose(argv)
        services = compose_config(globals_)["services"]  # the files, profiles and variables resolve
        if subcommand == "up":
            named = [word for word in rest if not word.startswith("-")]
            assert set(named) <= set(services)
            # the Milvus override also starts the Milvus server and its etcd and MinIO
            expected = {"api"} | ({"milvus", "milvus-etcd", "milvus-minio"} if MILVUS_OVERRIDE in globals_ else set())
            assert active_services(globals_) == expected, "`up` must start the API alone (and Milvus, if chosen)"
        elif subcommand == "run":
            words = list(rest)
            while words[0].startswith("-"):
                if words.pop(0) in RUN_WITH_VALUE:
                    words.pop(0)
            service, arguments = words[0], words[1:]
            assert service in services, f"{' '.join(argv)}: no service {service}"
            inner = services[service]["entrypoint"] + (arguments or services[service].get("command") or [])
            if reason := check_flags(inner):
                skipped.append(reason)
        elif subcommand in ("logs", "build", "ps", "down", "stop", "restart", "pull"):
            named = [word for word in rest if not word.startswith("-")]
            assert set(named) <= set(services), f"{' '.join(argv)}: unknown service"
        else:
            pytest.fail(f"{' '.join(argv)}: add a check for `docker compose {subcommand}`")
    if skipped:
        pytest.skip("; ".join(sorted(set(skipped))))


# --- commands that run here, literally (tiny random model, tiny gallery) -----------------------------------------

def _run_env() -> dict[str, str]:
    """The environment for commands run outside the repository root: this tree's packages first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(process: subprocess.Popen, port: int, timeout_s: float = 120) -> dict:
    """GET /readyz until it answers 200; fails if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as health:
                        assert health.status == 200
                    return json.loads(response.read())
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail("the server did not become ready")


def _stop(process: subprocess.Popen) -> None:
    """End the process group this test started (make and its python child)."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def _make_gallery(folder: Path, n: int = 6) -> None:
    for i in range(n):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        random_photo(seed=i).save(folder / f"c{i % 2}" / f"{i}.jpg")


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_index_and_serve_commands_run(tmp_path, tiny_encoder):
    shown = [_argv(c) for c in shown_commands()]
    builds = [a for a in shown if a[:4] == ["python", "-m", "index_builder", "build"]]
    checks = [a for a in shown if a[:3] == ["python", "-m", "index_builder"] and a[3] in ("info", "verify")]
    serves = [a for a in shown if a[:3] == ["python", "-m", "app"]]
    assert builds and checks and serves
    if not (_has_cli("index_builder") and _has_cli("app")):
        pytest.skip("`python -m index_builder` / `python -m app` are not in this tree yet")
    for argv in builds:
        _make_gallery(tmp_path / _option(argv, "--gallery"))
        if "--checkpoint" in argv:
            save_checkpoint(tiny_encoder, tmp_path / _option(argv, "--checkpoint"))
    for argv in builds + checks:
        result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=_run_env(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    for argv in serves:  # on loopback and a free port instead of the shown 0.0.0.0:8000
        port = _free_port()
        argv = list(argv)
        argv[argv.index("--host") + 1], argv[argv.index("--port") + 1] = "127.0.0.1", str(port)
        process = subprocess.Popen([sys.executable, *argv[1:]], cwd=tmp_path, env=_run_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            ready = _wait_ready(process, port)
            assert ready["ready"] is True and ready["index_version"], ready
        finally:
            _stop(process)


# Appended to the shown training commands (argparse: the last value wins) so that they finish in seconds here:
# one whole epoch (so every end-of-epoch step, validation and checkpoints included, runs) of a tiny dataset.
SHORT_RUN = {"--epochs": "1", "--batch_size": "4", "--pairs-per-category": "2", "--workers": "0", "--no-progress": None}


def _make_sketchy(root: Path, classes: list[str], per_class: int = 3) -> None:
    """A tiny dataset in Sketchy's layout: photo/<c>/<id>.jpg and the sketch drawn from it, sketch/<c>/<id>-1.png."""
    for c, name in enumerate(classes):
        (root / "photo" / name).mkdir(parents=True)
        (root / "sketch" / name).mkdir(parents=True)
        for i in range(per_class):
            seed = c * per_class + i
            random_photo((64, 48), seed=seed).save(root / "photo" / name / f"n{seed:04d}.jpg")
            draw_sketch((64, 64), seed=seed).save(root / "sketch" / name / f"n{seed:04d}-1.png")


def _short(argv: list[str], help_text: str) -> list[str]:
    extra: list[str] = []
    for flag, value in SHORT_RUN.items():
        if re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text):
            extra += [flag] + ([value] if value is not None else [])
    return argv + extra


@pytest.mark.slow
def test_training_commands_run(tmp_path):
    """The shown training and evaluation commands, in order, on a tiny Sketchy-layout dataset whose unseen classes
    are the split's; each made short by SHORT_RUN. Evaluations read the checkpoints the trainings wrote."""
    shown = [_argv(c) for c in shown_commands() if _argv(c)[:3] == ["python", "-m", "training"]]
    assert shown
    reasons = {reason for argv in shown if (reason := pending(argv))}
    shown = [argv for argv in shown if not pending(argv)]
    if not shown:
        pytest.skip("; ".join(sorted(reasons)))
    for argv in shown:
        data = tmp_path / _option(argv, "--data")
        if not data.exists():
            unseen = (ROOT / "training" / "splits" / f"{_option(argv, '--split')}.txt").read_text().split()
            _make_sketchy(data, unseen + [f"seen_{i}" for i in range(6)])
    for argv in sorted(shown, key=lambda a: a[3] == "evaluate"):  # trainings first: they write the checkpoints
        command = _short(argv, _help("training", argv[3]))
        result = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=_run_env(), capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        if "--json" in argv:
            assert json.loads((tmp_path / _option(argv, "--json")).read_text())
    if reasons:
        pytest.skip("ran the others; " + "; ".join(sorted(reasons)))


def test_make_serve_commands_run(tmp_path):
    """`make serve` as shown, with GALLERY/INDEX/PORT pointing at temporary places; the venv is never touched."""
    commands = [c for c in shown_commands() if _argv(c)[:2] == ["make", "serve"]]
    assert commands
    dry = subprocess.run(["make", "-n", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if dry.returncode != 0 and "No rule to make target" in dry.stderr:
        pytest.skip("the Makefile has no `serve` target in this tree yet")
    if not (_has_cli("index_builder") and _has_cli("app")):
        pytest.skip("`python -m index_builder` / `python -m app` are not in this tree yet")
    venv = Path(sys.executable).parent.parent
    _make_gallery(tmp_path / "gallery")
    for number, command in enumerate(commands):
        port = _free_port()
        env = {**os.environ, "GALLERY": str(tmp_path / "gallery"), "INDEX": str(tmp_path / f"index{number}"),
               "PORT": str(port), "HOST": "127.0.0.1", "VENV": str(venv)}
        # `-o STAMP`: take the venv as installed, so the test never reinstalls into it
        script = f'make() {{ command make -o "$VENV/.installed" "$@"; }}; {command}'
        process = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            _wait_ready(process, port)
        finally:
            _stop(process)
