"""Errors of opening, reading and publishing to an index (all :class:`encoder.errors.SBIRError`)."""

from __future__ import annotations

from encoder.errors import SBIRError


class IndexNotFoundError(SBIRError):
    """No usable index version: no ``current`` pointer, or the version it names is missing."""


class IndexCorruptError(IndexNotFoundError):
    """A version exists but its files cannot be read (a subclass, so callers that wait for an index keep waiting)."""

    check = "open"  # the trust check it fails (the service's log line and ``sbir_index_refused{check}``)


class CountsMismatchError(IndexCorruptError):
    """A version's manifest and its parts disagree on how many photos they hold (found while opening it)."""

    check = "counts"


class BuildError(SBIRError):
    """A build or a publish cannot go on (bad arguments or settings, another build running, nothing readable, ...)."""


class TrainingError(BuildError):
    """An approximate index cannot be trained on the rows it is given (fewer than its lists or codes need)."""


class EngineUnavailableError(SBIRError):
    """The vector engine's server cannot be reached or answer in time (a temporary condition: retry later)."""


class DiskFullError(BuildError):
    """The disk filled up while writing (staging, a new version, the pointer); nothing live was changed."""
