"""The prompted-CLIP encoder: one package that turns a sketch or a photo into a vector.

Used by ``training`` (learns the prompts), ``index_builder`` (embeds photos) and ``app``
(embeds query sketches), so a checkpoint written by one is exactly what the others load.
"""

from .backbone import build_backbone, register_model_configs
from .checkpoint import load_checkpoint, load_encoder, read_checkpoint, resolve_device, save_checkpoint
from .config import EncoderConfig, PromptConfig, add_encoder_args
from .errors import (
    CheckpointError,
    EmptySketchError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    SBIRError,
    StrokeFormatError,
    TooManyPointsError,
    WeightsUnavailableError,
)
from .imaging import decode_image, normalise_sketch
from .lanes import ENV_LANES, EncoderLanes, LanesError, add_lanes_arg, resolve_lanes
from .model import MODALITIES, PromptedCLIP, build_encoder
from .precision import PRECISIONS, PrecisionChoice, add_precision_arg, apply_precision, resolve_precision
from .preprocess import PREPROCESSING_VERSION, Preprocessor
from .strokes import iter_ndjson_drawings, load_drawing_json, parse_strokes, rasterize_strokes
from .svg_strokes import looks_like_svg

__all__ = [
    "MODALITIES",
    "PRECISIONS",
    "PREPROCESSING_VERSION",
    "CheckpointError",
    "ENV_LANES",
    "EncoderLanes",
    "EmptySketchError",
    "EncoderConfig",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InputError",
    "LanesError",
    "Preprocessor",
    "PrecisionChoice",
    "PromptConfig",
    "PromptedCLIP",
    "SBIRError",
    "StrokeFormatError",
    "TooManyPointsError",
    "WeightsUnavailableError",
    "add_encoder_args",
    "add_lanes_arg",
    "add_precision_arg",
    "apply_precision",
    "build_backbone",
    "build_encoder",
    "decode_image",
    "iter_ndjson_drawings",
    "load_checkpoint",
    "load_drawing_json",
    "looks_like_svg",
    "load_encoder",
    "normalise_sketch",
    "parse_strokes",
    "rasterize_strokes",
    "read_checkpoint",
    "register_model_configs",
    "resolve_device",
    "resolve_lanes",
    "resolve_precision",
    "save_checkpoint",
]
