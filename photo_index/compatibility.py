"""Whether a version's vectors can be mixed with (builder) or searched by (app) this encoder's.

Two things must match: the encoder's fingerprint (config + learned tensors) and the photo preprocessing
version (:data:`encoder.PREPROCESSING_VERSION`): the same model fed differently decoded photos makes other
vectors. A manifest without the preprocessing field predates it and is refused the same way.
"""

from __future__ import annotations

from pathlib import Path

from encoder import PREPROCESSING_VERSION, PromptedCLIP


def encoder_section(encoder: PromptedCLIP, checkpoint: str | None = None) -> dict:
    """The manifest's ``encoder`` section for vectors made by ``encoder`` now."""
    return {
        "fingerprint": encoder.fingerprint(),
        "preprocessing": PREPROCESSING_VERSION,
        "config": encoder.config.to_dict(),
        "checkpoint": str(Path(checkpoint).absolute()) if checkpoint else None,
        "random_weights": encoder.random_weights,
        "image_size": encoder.image_size,
    }


def embedding_identity(encoder: PromptedCLIP) -> str:
    """One string that changes whenever the vectors of a photo would (for staged vectors of a resumed build)."""
    return f"{encoder.fingerprint()}/preprocessing-{PREPROCESSING_VERSION}"


def preprocessing_mismatch(manifest: dict) -> str | None:
    """Why the version's photos were preprocessed otherwise than this code does, or None when they match."""
    recorded = manifest.get("encoder", {}).get("preprocessing")
    if recorded == PREPROCESSING_VERSION:
        return None
    was = "an older photo preprocessing (no version recorded)" if recorded is None else \
        f"photo preprocessing version {recorded}"
    return (f"Index version {manifest.get('version')} was embedded with {was}; this code preprocesses photos with "
            f"version {PREPROCESSING_VERSION}, so its vectors would not match: rebuild with --rebuild "
            "(python -m index_builder build --rebuild ...).")
