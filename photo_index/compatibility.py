"""Whether a version's vectors can be mixed with (builder) or searched by (app) this encoder's.

Three things must match: the encoder's fingerprint (config + learned tensors), the backbone weights, and the photo
preprocessing version (:data:`encoder.PREPROCESSING_VERSION`): the same model fed differently decoded photos makes
other vectors. A manifest without the preprocessing field predates it and is refused the same way. The fingerprint
names where the weights come from, not what they are (a baseline index read from a weights file that was replaced
since kept its fingerprint), so a manifest also records a few values of the weights (``weights_sample``); one
written before it was recorded is not checked for them.
"""

from __future__ import annotations

from pathlib import Path

from encoder import PREPROCESSING_VERSION, PromptedCLIP
from encoder.model import compact_sample, other_weights


def encoder_section(encoder: PromptedCLIP, checkpoint: str | None = None) -> dict:
    """The manifest's ``encoder`` section for vectors made by ``encoder`` now."""
    return {
        "fingerprint": encoder.fingerprint(),
        "weights_sample": compact_sample(encoder.backbone_sample()),
        "preprocessing": PREPROCESSING_VERSION,
        "config": encoder.config.to_dict(),
        "checkpoint": str(Path(checkpoint).absolute()) if checkpoint else None,
        "random_weights": encoder.random_weights,
        "image_size": encoder.image_size,
        "precision": encoder.precision,  # not identity: vectors of either precision mix (encoder/precision.py)
    }


def embedding_identity(encoder: PromptedCLIP) -> str:
    """One string that changes whenever the vectors of a photo would (for staged vectors of a resumed build)."""
    return f"{encoder.fingerprint()}/preprocessing-{PREPROCESSING_VERSION}/weights-{encoder.weights_digest()}"


def weights_mismatch(manifest: dict, backbone_sample: dict[str, list[float]]) -> str | None:
    """Why the version's vectors came from other backbone weights than those sampled in ``backbone_sample`` (the
    encoder's :meth:`~encoder.PromptedCLIP.backbone_sample`), or None when they match or were not recorded."""
    recorded = manifest.get("encoder", {}).get("weights_sample")
    if recorded is None:
        return None
    version = manifest.get("version")
    try:
        differ = other_weights(recorded, backbone_sample)
    except ValueError as error:
        return f"Index version {version} has a damaged record of its backbone weights ({error})."
    if not differ:
        return None
    return (f"Index version {version} was embedded with other backbone weights ({len(differ)} of {len(recorded)} "
            f"sampled weights differ, e.g. {differ[0]}; the weights file was replaced?): point --pretrained at the "
            "weights it was built with, or rebuild it with --rebuild.")


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
