"""Errors of the batch job only; the index's own errors are :mod:`photo_index.errors`."""

from __future__ import annotations

from photo_index.errors import BuildError


class FingerprintMismatchError(BuildError):
    """The encoder differs from the one the current version was built with: incremental mode is refused."""
