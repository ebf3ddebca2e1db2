"""Exception types raised by the encoder package.

Everything a caller can cause with bad input derives from :class:`InputError` (a ``ValueError``),
so services map it to an HTTP 4xx and CLIs to a message and a non-zero exit; nothing here should
surface as a bare crash.
"""

from __future__ import annotations


class SBIRError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(SBIRError, ValueError):
    """The caller's input (image bytes, strokes) cannot be used. Safe to show to the user."""


class ImageDecodeError(InputError):
    """The bytes are not a decodable image: empty, truncated, corrupt or another file type."""


class ImageTooLargeError(InputError):
    """The image declares more pixels than allowed (a decompression bomb or an absurd upload)."""


class EmptySketchError(InputError):
    """The image or the strokes hold no ink at all."""


class StrokeFormatError(InputError):
    """Strokes are not in a supported format, are empty or degenerate, or hold non-finite numbers."""


class TooManyPointsError(StrokeFormatError):
    """Strokes hold more points than the configured limit."""


class WeightsUnavailableError(SBIRError):
    """Pretrained backbone weights cannot be had (offline, not cached, missing file, unknown tag)."""


class CheckpointError(SBIRError):
    """A checkpoint is unreadable or does not fit the backbone it is loaded onto."""


class BrokenEncoderError(SBIRError):
    """The encoder answers a plain query with NaN or infinite numbers: its weights are damaged."""


class ActivationMismatchError(SBIRError, ValueError):
    """The requested MLP activation (or a checkpoint's) contradicts what the backbone weights were trained with."""


class PrecisionError(SBIRError, ValueError):
    """An unknown precision was asked for, or one the loaded encoder can no longer run."""


class LanesError(SBIRError, ValueError):
    """An encoder lane count that is neither ``auto`` nor a positive integer (encoder/lanes.py)."""
