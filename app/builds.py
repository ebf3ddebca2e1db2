"""Index builds started through the API (POST /admin/builds): `python -m index_builder build` in a child process.

The service never imports the builder: it runs the same command an operator would, with the service's encoder
and engine settings, so the build lock, crash safety and the consistency checks before publishing all hold as
for a CLI build, and the index poller swaps to the new version as it does after any build. One build at a time:
while this service runs one, or any process (the CLI) holds the index folder's build lock, another is refused.
Progress is read from the builder's progress bars (stderr), the result from its ``--json`` report (stdout).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import APIError

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("app.builds")

BUILDER_MODULE = "index_builder"  # run as `python -m BUILDER_MODULE build ...`, never imported
LOCK_FILE = ".lock"  # the builder's POSIX record lock in the index folder (index_builder.layout.build_lock)
KEEP_JOBS = 20  # finished jobs remembered for GET /admin/builds/{id}
STOP_GRACE_S = 30.0  # on shutdown a running build gets this long to unwind after SIGTERM
# a tqdm line: "embedding:  45%|####5     | 9/20 [...]" or, without a total, "scanning: 20file [...]"
_PROGRESS = re.compile(r"\s*([A-Za-z][\w -]*?):\s+(?:\d+%\|[^|]*\|\s*)?(\d+)(?:/(\d+))?")

State = Literal["queued", "running", "finished", "failed"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def lock_held(index_dir: Path) -> bool:
    """Whether another process holds the build lock of `index_dir` (a build from the CLI, or another replica's).

    Probed by taking the lock without waiting and letting it go at once. Never call it from a process that
    builds in-process: closing any descriptor of the file drops that process's own lockf lock."""
    try:
        handle = open(index_dir / LOCK_FILE, "r+b")  # noqa: SIM115 - closed below; lockf needs it writable
    except FileNotFoundError:
        return False  # no build ever ran here
    except OSError:
        return False  # no permission, a read-only volume, a folder of that name: the build says why in its error
    with handle:
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            # held elsewhere; any other failure (ENOLCK on an NFS without a lock daemon) is the build's to report
            return error.errno in (errno.EACCES, errno.EAGAIN)
        fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)
    return False


def read_report(stdout: bytes) -> dict[str, Any]:
    """The build's ``--json`` report: all of stdout, or where something printed lines before it (a library on
    the child's stdout), the JSON object opening on the last line that starts with "{" (the report's own)."""
    try:
        return json.loads(stdout)
    except ValueError:
        start = stdout.rfind(b"\n{")
        if start < 0:
            raise
        return json.loads(stdout[start + 1:])


def parse_progress(segment: str) -> dict[str, Any] | None:
    """{"stage", "done", "total"} of one progress-bar update; None when the text is not one."""
    match = _PROGRESS.match(segment)
    if match is None:
        return None
    stage, done, total = match.groups()
    return {"stage": stage.strip(), "done": int(done), "total": int(total) if total else None}


@dataclass
class BuildJob:
    id: str
    state: State = "queued"
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    task: asyncio.Task | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("id", "state", "started_at", "finished_at", "progress",
                                                       "result", "error")}


def build_command(settings: Settings, gallery: Path, module: str = BUILDER_MODULE) -> list[str]:
    """The CLI command of an incremental build of `gallery` with the service's encoder and engine settings."""
    command = [sys.executable, "-m", module, "build", "--gallery", str(gallery), "--out", str(settings.index_dir),
               "--json", "--engine", settings.engine, "--device", settings.device]
    options = {"--backbone": settings.backbone, "--pretrained": settings.pretrained,
               "--activation": settings.activation, "--checkpoint": settings.checkpoint,
               "--collection": settings.collection}
    for flag, value in options.items():
        if value is not None:
            command += [flag, str(value)]
    if settings.checkpoint is None:  # the baseline, said outright: the child would fall back to SBIR_CHECKPOINT
        command += ["--checkpoint", ""]
    return command


def build_environment(settings: Settings) -> dict[str, str]:
    """The build's environment: the service's, plus the Milvus URI and token, which may hold credentials and so
    never go into the command line (any local user can read a process's argv)."""
    private = {"SBIR_MILVUS_URI": settings.milvus_uri,
                "SBIR_MILVUS_TOKEN": settings.milvus_token.get_secret_value() if settings.milvus_token else None}
    return {**os.environ, **{name: value for name, value in private.items() if value}}


class BuildRunner:
    """The builds this service started: at most one running, the last KEEP_JOBS remembered."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs: OrderedDict[str, BuildJob] = OrderedDict()
        self.active: BuildJob | None = None

    def get(self, job_id: str) -> BuildJob | None:
        return self.jobs.get(job_id)

    def start(self, gallery: Path) -> BuildJob:
        """Queue a build of `gallery` (409 while one runs); runs in a task of the current event loop."""
        if self.active is not None:
            raise APIError(409, "build_running", f"Build {self.active.id} is running; wait for it to finish.")
        if lock_held(Path(self.settings.index_dir)):
            raise APIError(409, "build_running", "Another build (e.g. from the command line) holds the index "
                           "folder's build lock; retry when it has finished.")
        job = BuildJob(id=secrets.token_hex(8))
        self.jobs[job.id] = job
        while len(self.jobs) > KEEP_JOBS:
            self.jobs.popitem(last=False)
        self.active = job
        job.task = asyncio.create_task(self._run(job, build_command(self.settings, gallery)),
                                       name=f"build-{job.id}")
        return job

    async def _run(self, job: BuildJob, command: list[str]) -> None:
        errors: deque[str] = deque(maxlen=5)
        try:
            job.process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=build_environment(self.settings))
            job.state, job.started_at = "running", _now()
            stdout, _ = await asyncio.gather(job.process.stdout.read(), self._follow(job, errors))
            code = await job.process.wait()
            if code == 0:
                job.result = read_report(stdout)
                job.state = "finished"
            else:
                job.state = "failed"
                job.error = next((line for line in reversed(errors) if line.startswith("error")),
                                 errors[-1] if errors else f"the build exited with status {code}")
        except (OSError, ValueError) as error:  # could not start, or a report that is not JSON
            job.state, job.error = "failed", f"the build could not run: {error}"
        except asyncio.CancelledError:
            job.state, job.error = "failed", "the service stopped during the build"
            raise
        finally:
            job.finished_at = _now()
            job.process = None
            self.active = None
            log.info("build %s %s%s", job.id, job.state, f": {job.error}" if job.error else "")

    @staticmethod
    async def _follow(job: BuildJob, errors: deque[str]) -> None:
        """Read the build's stderr: progress bars (\\r-separated updates) and the last lines (its errors)."""
        pending = ""
        while chunk := await job.process.stderr.read(4096):
            pending += chunk.decode("utf-8", "replace")
            *segments, pending = re.split(r"[\r\n]", pending)
            for segment in filter(None, (s.strip() for s in segments)):
                progress = parse_progress(segment)
                if progress is not None:
                    job.progress = progress
                else:
                    errors.append(segment[:500])
        if pending.strip():
            errors.append(pending.strip()[:500])

    async def stop(self) -> None:
        """On shutdown: ask a running build to stop (it unwinds, keeping the live version and its staging for
        the next run), then kill it if it does not within STOP_GRACE_S."""
        job = self.active
        if job is None or job.task is None:
            return
        process = job.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        job.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
