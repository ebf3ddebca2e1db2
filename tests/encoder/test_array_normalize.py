"""Eval preprocessing in numpy (encoder.preprocess.ArrayNormalize) makes the very tensors torchvision's makes."""

from __future__ import annotations

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
