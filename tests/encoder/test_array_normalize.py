"""Eval preprocessing in numpy (encoder.preprocess.ArrayNormalize) makes the very tensors torchvision's makes."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from encoder.imaging import normalise_sketch


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_photo_and_sketch_tensors_equal_torchvision(tiny_baseline, mode):
    preprocess = tiny_baseline.preprocess
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)).convert(mode)
    photo = preprocess.photo(image)
    assert torch.equal(photo, preprocess.photo_eval(image)) and photo.is_contiguous()

    normalize = next(t for t in preprocess.photo_eval.transforms if isinstance(t, T.Normalize))
    sketch = Image.fromarray(np.where(rng.random((80, 80)) < 0.05, 0, 255).astype(np.uint8))
    expected = T.Compose([T.ToTensor(), normalize])(normalise_sketch(sketch, preprocess.image_size))
    assert torch.equal(preprocess.sketch(sketch), expected)


def test_photo_pixels_sent_as_uint8_normalise_to_the_very_tensors_of_photo_file(tiny_baseline):
    """The index build's workers send uint8 planes (a quarter of float32's bytes); the batch normalised in the main
    process equals the per-photo float tensors, whatever the file's mode and size."""
    preprocess = tiny_baseline.preprocess
    rng = np.random.default_rng(2)
    files = []
    for mode, size, fmt in [("RGB", (90, 70), "JPEG"), ("L", (400, 300), "JPEG"), ("RGBA", (50, 80), "PNG"),
                            ("P", (64, 64), "PNG"), ("RGB", (1200, 900), "JPEG")]:
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        files.append(buffer.getvalue())
    pixels = [preprocess.photo_file_pixels(data) for data in files]
    assert all(p.dtype == np.uint8 and p.shape == (3, preprocess.image_size, preprocess.image_size) for p in pixels)
    batch = preprocess.photo_batch(torch.from_numpy(np.stack(pixels)))
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([preprocess.photo_file(data) for data in files]))
    assert preprocess.photo_batch(batch) is batch  # already normalised: passed through


def test_photo_pixels_of_an_eval_pipeline_without_a_closing_normalize_are_the_float_tensor(tiny_baseline):
    """Eval transforms of another shape (nothing after Normalize to split off) send the finished float tensor."""
    base = tiny_baseline.preprocess
    odd = T.Compose([*base.photo_eval.transforms, T.Lambda(lambda tensor: tensor * 2)])
    preprocess = replace(base, photo_eval=odd)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(buffer, "PNG")
    pixels = preprocess.photo_file_pixels(buffer.getvalue())
    assert pixels.dtype == np.float32
    assert torch.equal(torch.from_numpy(pixels), preprocess.photo_file(buffer.getvalue()))
    batch = torch.from_numpy(pixels[None])
    assert preprocess.photo_batch(batch) is batch
