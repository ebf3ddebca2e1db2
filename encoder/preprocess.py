"""Image → model input tensor, for photos and for sketches, at the backbone's input size.

Photos use open_clip's own transforms (eval, or train-time augmentation). Sketches are cleaned up
first (:func:`normalise_sketch`) and then go through the same CLIP normalisation. The object is
small and picklable, so DataLoader workers can use it without the model.

Two sketch framings (docs/encoder.md, "Inputs"): an upload (``sketch``, ``sketch_strokes``) is always cropped to its
ink, because its canvas has no relation to any gallery photo; a dataset sketch (``dataset_sketch``,
``sketch_file``) is framed as the encoder's training sketches were (``sketch_framing``, recorded in its config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from .config import SKETCH_FRAMINGS
from .imaging import decode_image, default_max_pixels, normalise_sketch, to_rgb
from .strokes import default_max_points, parse_strokes, rasterize_strokes

# Bump whenever photo preprocessing changes the tensors it makes (decoding, colour handling, resizing, crop):
# an index records the version it was embedded with, and one embedded with another is refused (rebuild it).
#   1: full-size decode, then open_clip's resize + centre crop
#   2: JPEGs decoded at a reduced DCT scale that keeps the model's input size (encoder/imaging.py)
PREPROCESSING_VERSION = 2
# Uploads are cropped to their ink whatever the encoder was trained on: a phone photo of paper, a doodle in the corner
# of a large canvas or a stroke file has a frame that says nothing about where things sit in a gallery photo.
UPLOAD_FRAMING = "ink"
# Photos longer than this (long side ÷ short side) are centre-cropped to it before the eval resize (:class:`CapAspect`).
MAX_PHOTO_ASPECT = 32


def uint8_planes(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels as uint8 planes ``[C, H, W]`` (a view): what ``ToTensor`` reads before it divides."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels.transpose(2, 0, 1)


class ArrayNormalize:
    """``ToTensor`` + ``Normalize`` of a PIL image in numpy: the same float32 arithmetic (equal tensors, tested),
    in the calling thread only.

    torch's elementwise kernels start an OpenMP team in whichever thread calls them. The service decodes
    requests in many threads beside the encoder, so each 224² division became a team of its own competing with
    the encoder's for the cores (a 256-px sketch took ~4 ms on a loaded 2-core box, mostly these two steps)."""

    def __init__(self, normalize: T.Normalize) -> None:
        self.mean = np.asarray(normalize.mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(normalize.std, dtype=np.float32).reshape(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        planes = uint8_planes(image).astype(np.float32, order="C")
        planes /= np.float32(255.0)
        planes -= self.mean
        planes /= self.std
        return torch.from_numpy(planes)

    def batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 planes ``[B, C, H, W]`` → the float32 tensors :meth:`__call__` makes of each (the same operations
        in the same order: equal tensors, tested), in one pass over the batch in the calling thread's torch."""
        planes = pixels.to(torch.float32)
        planes /= 255.0
        planes -= torch.from_numpy(self.mean)
        planes /= torch.from_numpy(self.std)
        return planes


class CapAspect:
    """Centre-crops a PIL image longer than ``max_aspect``:1 to that ratio, before the eval transforms' resize.

    That resize scales the short side to the model's size and the centre crop keeps a square of it, so a
    10 x 2,000,000 px photo (21 KB as a PNG) was resized to 224 x 44.8M px, gigabytes, to keep 224 x 224. The
    crop keeps everything the centre crop sees. Photos up to the ratio (every real one: panoramas are ~10:1) pass
    untouched, so indexes embedded before need no new PREPROCESSING_VERSION; a longer one gets a vector within
    resampling error of the uncropped resize (the sub-pixel grid moves)."""

    def __init__(self, max_aspect: float = MAX_PHOTO_ASPECT) -> None:
        self.max_aspect = max_aspect

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short = min(width, height)
        keep = max(1, round(short * self.max_aspect))
        if max(width, height) <= keep:
            return image
        if width > height:
            left = (width - keep) // 2
            return image.crop((left, 0, left + keep, height))
        top = (height - keep) // 2
        return image.crop((0, top, width, top + keep))


def _array_eval(compose: T.Compose) -> T.Compose:
    """``compose`` with its closing ToTensor + Normalize done by :class:`ArrayNormalize` (as is when it has
    another shape)."""
    steps = list(compose.transforms)
    if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
        return compose
    return T.Compose([*steps[:-2], ArrayNormalize(steps[-1])])


@dataclass
class Preprocessor:
    image_size: int
    photo_eval: T.Compose
    photo_train: T.Compose
    max_pixels: int = field(default_factory=default_max_pixels)
    max_stroke_points: int = field(default_factory=default_max_points)  # read here: a bad setting stops at start
    # How the encoder's training sketches were framed ("ink" | "canvas"): dataset sketches are framed the same way.
    sketch_framing: str = "ink"

    def __post_init__(self) -> None:
        if self.sketch_framing not in SKETCH_FRAMINGS:
            raise ValueError(f"sketch_framing must be one of {', '.join(SKETCH_FRAMINGS)}, got {self.sketch_framing!r}")
        normalize = next(t for t in self.photo_eval.transforms if isinstance(t, T.Normalize))
        self._sketch_eval = T.Compose([ArrayNormalize(normalize)])
        self._photo_eval = T.Compose([CapAspect(), *_array_eval(self.photo_eval).transforms])
        last = self._photo_eval.transforms[-1]
        # photo_file_pixels: the eval steps before the normalisation, and the normalisation (None: no such split)
        self._photo_normalize = last if isinstance(last, ArrayNormalize) else None
        self._photo_resize = T.Compose(self._photo_eval.transforms[:-1])
        self._sketch_train = T.Compose(
            [
                T.RandomHorizontalFlip(),
                T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.85, 1.05), fill=255),
                T.ToTensor(),
                normalize,
            ]
        )

    def photo(self, image: Image.Image, *, train: bool = False) -> torch.Tensor:
        return (self.photo_train if train else self._photo_eval)(image)

    def sketch(self, image: Image.Image, *, train: bool = False, framing: str = UPLOAD_FRAMING) -> torch.Tensor:
        """A sketch image → model input; by default framed as an upload (cropped to its ink)."""
        clean = normalise_sketch(image, self.image_size, framing=framing)
        return (self._sketch_train if train else self._sketch_eval)(clean)

    def dataset_sketch(self, image: Image.Image, *, train: bool = False) -> torch.Tensor:
        """A sketch of a dataset (training, evaluation, benchmarks), framed as the encoder's training sketches."""
        return self.sketch(image, train=train, framing=self.sketch_framing)

    def _photo_image(self, source: bytes | str | Path) -> Image.Image:
        return to_rgb(decode_image(source, max_pixels=self.max_pixels, reduce_to=self.image_size))

    def photo_file(self, source: bytes | str | Path, *, train: bool = False) -> torch.Tensor:
        return self.photo(self._photo_image(source), train=train)

    def photo_file_pixels(self, source: bytes | str | Path) -> np.ndarray:
        """A photo file → its eval input in a compact form for passing between processes: uint8 planes
        ``[3, S, S]`` before normalisation, a quarter of the float32 tensor's bytes (the index build's workers send
        one per photo); :meth:`photo_batch` normalises a batch of them. Where the eval transforms do not end in
        the usual ToTensor + Normalize, the normalised float32 tensor itself."""
        image = self._photo_image(source)
        if self._photo_normalize is None:
            return self._photo_eval(image).numpy()
        return np.ascontiguousarray(uint8_planes(self._photo_resize(image)))

    def photo_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """A batch of :meth:`photo_file_pixels` → model input ``[B, 3, S, S]`` float32, equal to stacking
        :meth:`photo_file`'s tensors (float batches are returned as they are)."""
        if pixels.dtype != torch.uint8:
            return pixels
        return self._photo_normalize.batch(pixels)

    def sketch_file(self, source: bytes | str | Path, *, train: bool = False) -> torch.Tensor:
        """A dataset's sketch file → model input (:meth:`dataset_sketch`)."""
        return self.dataset_sketch(decode_image(source, max_pixels=self.max_pixels), train=train)

    def sketch_strokes(
        self, data: bytes | str | dict, *, line_width: float = 3.0, max_points: int | None = None
    ) -> torch.Tensor:
        """Strokes in any supported format → sketch tensor (rasterised large, then normalised)."""
        max_points = self.max_stroke_points if max_points is None else max_points
        raster = rasterize_strokes(parse_strokes(data, max_points=max_points), size=256, line_width=line_width)
        return self.sketch(raster)
