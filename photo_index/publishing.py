"""Rules every writer follows when it publishes a version: the live version as a build's base, and the report
the version records."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .api import Previous
from .errors import BuildError, IndexCorruptError, IndexNotFoundError


def live_base(open_live: Callable[[], Previous], *, rebuild: bool, what: str) -> Previous | None:
    """The live version as a build's base. When it cannot be read: None with ``rebuild`` (the build starts over
    without it), else a :class:`BuildError` that says so (the live version is never silently replaced)."""
    try:
        return open_live()
    except (IndexNotFoundError, BuildError, OSError, ValueError, KeyError) as error:
        if rebuild:
            return None
        kind = "damaged" if isinstance(error, IndexCorruptError) else "unreadable"
        raise BuildError(f"{what} is {kind} ({error}); run with --rebuild.") from None


def version_report(report: Mapping, version: str) -> tuple[dict, dict]:
    """(the full report, its counts for the manifest's ``build`` section) of ``version``."""
    full = {**report, "version": version}
    return full, {**full, "skipped": len(full.get("skipped") or [])}
