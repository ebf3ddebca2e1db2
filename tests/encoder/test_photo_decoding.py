"""Photos decode at a reduced JPEG scale when the model needs far fewer pixels, without changing what it sees."""

from __future__ import annotations

import io

import torch
from PIL import Image

from encoder import decode_image
from encoder.imaging import to_rgb
from tests.imagegen import random_photo


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=92)
    return buffer.getvalue()


def big_photo() -> Image.Image:
    return random_photo((40, 30), seed=3).resize((2400, 1800), Image.Resampling.BICUBIC)


def test_large_jpeg_decodes_reduced_but_never_below_the_requested_size():
    data = encoded(big_photo(), "JPEG")
    reduced = decode_image(data, reduce_to=224)
    assert reduced.size == (300, 225)  # 1/8 scale: the largest reduction keeping both sides >= 224
    assert decode_image(data).size == (2400, 1800)
    assert decode_image(encoded(big_photo(), "PNG"), reduce_to=224).size == (2400, 1800)  # only JPEG has DCT scaling


def test_reduced_decoding_gives_the_same_embedding(tiny_encoder):
    data = encoded(big_photo(), "JPEG")
    full = tiny_encoder.preprocess.photo(to_rgb(decode_image(data)))
    fast = tiny_encoder.preprocess.photo_file(data)
    a, b = tiny_encoder.encode_photo(torch.stack([full, fast]))
    assert float(a @ b) > 0.999
