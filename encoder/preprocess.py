"""Image → model input tensor, for photos and for sketches, at the backbone's input size.

Photos use open_clip's own transforms (eval, or train-time augmentation). Sketches are cleaned up
first (:func:`normalise_sketch`) and then go through the same CLIP normalisation. The object is
small and picklable, so DataLoader workers can use it without the model.

Two sketch framings (docs/encoder.md, "Inputs"): an upload (``sketch``, ``sketch_strokes``) is always cropped to its
ink, because its canvas has no relation to any gallery photo; a dataset sketch (``dataset_sketch``,
``sketch_file``) is framed as the encoder's training sketches were (``sketch_framing``, recorded in its config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from .config import SKETCH_FRAMINGS
from .imaging import DEFAULT_MAX_PIXELS, decode_image, normalise_sketch, to_rgb
from .strokes import DEFAULT_MAX_POINTS, parse_strokes, rasterize_strokes

# Bump whenever photo preprocessing changes the tensors it makes (decoding, colour handling, resizing, crop):
# an index records the version it was embedded with, and one embedded with another is refused (rebuild it).
#   1: full-size decode, then open_clip's resize + centre crop
#   2: JPEGs decoded at a reduced DCT scale that keeps the model's input size (encoder/imaging.py)
PREPROCESSING_VERSION = 2
# Uploads are cropped to their ink whatever the encoder was trained on: a phone photo of paper, a doodle in the corner
# of a large canvas or a stroke file has a frame that says nothing about where things sit in a gallery photo.
UPLOAD_FRAMING = "ink"


@dataclass
class Preprocessor:
    image_size: int
    photo_eval: T.Compose
    photo_train: T.Compose
    max_pixels: int = DEFAULT_MAX_PIXELS
    # How the encoder's training sketches were framed ("ink" | "canvas"): dataset sketches are framed the same way.
    sketch_framing: str = "ink"

    def __post_init__(self) -> None:
        if self.sketch_framing not in SKETCH_FRAMINGS:
            raise ValueError(f"sketch_framing must be one of {', '.join(SKETCH_FRAMINGS)}, got {self.sketch_framing!r}")
        normalize = next(t for t in self.photo_eval.transforms if isinstance(t, T.Normalize))
        self._sketch_eval = T.Compose([T.ToTensor(), normalize])
        self._sketch_train = T.Compose(
            [
                T.RandomHorizontalFlip(),
                T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.85, 1.05), fill=255),
                T.ToTensor(),
                normalize,
            ]
        )

    def photo(self, image: Image.Image, *, train: bool = False) -> torch.Tensor:
        return (self.photo_train if train else self.photo_eval)(image)

    def sketch(self, image: Image.Image, *, train: bool = False, framing: str = UPLOAD_FRAMING) -> torch.Tensor:
        """A sketch image → model input; by default framed as an upload (cropped to its ink)."""
        clean = normalise_sketch(image, self.image_size, framing=framing)
        return (self._sketch_train if train else self._sketch_eval)(clean)

    def dataset_sketch(self, image: Image.Image, *, train: bool = False) -> torch.Tensor:
        """A sketch of a dataset (training, evaluation, benchmarks), framed as the encoder's training sketches."""
        return self.sketch(image, train=train, framing=self.sketch_framing)

    def photo_file(self, source: bytes | str | Path, *, train: bool = False) -> torch.Tensor:
        decoded = decode_image(source, max_pixels=self.max_pixels, reduce_to=self.image_size)
        return self.photo(to_rgb(decoded), train=train)

    def sketch_file(self, source: bytes | str | Path, *, train: bool = False) -> torch.Tensor:
        """A dataset's sketch file → model input (:meth:`dataset_sketch`)."""
        return self.dataset_sketch(decode_image(source, max_pixels=self.max_pixels), train=train)

    def sketch_strokes(
        self, data: bytes | str | dict, *, line_width: float = 3.0, max_points: int = DEFAULT_MAX_POINTS
    ) -> torch.Tensor:
        """Strokes in any supported format → sketch tensor (rasterised large, then normalised)."""
        raster = rasterize_strokes(parse_strokes(data, max_points=max_points), size=256, line_width=line_width)
        return self.sketch(raster)
