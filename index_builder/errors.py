"""Errors of the index builder and reader (all :class:`encoder.errors.SBIRError`)."""

from __future__ import annotations

from encoder.errors import SBIRError


class IndexNotFoundError(SBIRError):
    """No usable index version: no ``current`` pointer, or the version it names is missing."""


class IndexCorruptError(IndexNotFoundError):
    """A version exists but its files cannot be read (a subclass, so callers that wait for an index keep waiting)."""


class BuildError(SBIRError):
    """A build cannot go on (bad arguments, another build running, nothing readable, ...)."""


class FingerprintMismatchError(BuildError):
    """The encoder differs from the one the current version was built with: incremental mode is refused."""


class EngineUnavailableError(SBIRError):
    """The vector engine's server cannot be reached or answer in time (a temporary condition: retry later)."""
