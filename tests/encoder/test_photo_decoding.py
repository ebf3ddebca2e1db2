"""Photos decode at a reduced JPEG scale when the model needs far fewer pixels, without changing what it sees."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from encoder import decode_image
from encoder.errors import ImageDecodeError, ImageTooLargeError
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


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_a_photo_of_extreme_shape_is_cropped_before_the_resize_not_blown_up(tiny_encoder):
    # 10 x 2,000,000 px is a 20 Mpx PNG of a few KB; resized to the model's short side it was 64 x 12.8M px.
    preprocess = tiny_encoder.preprocess
    for size in ((10, 2_000_000), (1_000_000, 1), (1, 40_000)):
        tensor = preprocess.photo_file(png(Image.new("L", size, 128)))
        assert tensor.shape == (3, preprocess.image_size, preprocess.image_size) and torch.isfinite(tensor).all()
        pixels = preprocess.photo_file_pixels(png(Image.new("L", size, 128)))  # the index build's path
        assert pixels.shape == (3, preprocess.image_size, preprocess.image_size)


def test_photos_up_to_the_aspect_cap_are_untouched_and_longer_ones_keep_the_centre(tiny_encoder):
    preprocess = tiny_encoder.preprocess
    panorama = random_photo((10, 100), seed=4).resize((3200, 320), Image.Resampling.BICUBIC)  # 10:1
    assert torch.equal(preprocess.photo(panorama), preprocess.photo_eval(panorama))
    ribbon = random_photo((100, 5), seed=5).resize((64 * 60, 60), Image.Resampling.BICUBIC)  # 64:1, over the cap
    a, b = tiny_encoder.encode_photo(torch.stack([preprocess.photo(ribbon), preprocess.photo_eval(ribbon)]))
    assert float(a @ b) > 0.999


def test_an_iphone_heic_photo_decodes_like_its_jpeg_and_turns_upright(tiny_encoder):
    """HEIC (pillow-heif) decodes to the same picture as a JPEG of it, EXIF rotation applied once."""
    photo = random_photo((40, 30), seed=5).resize((640, 480), Image.Resampling.BICUBIC)
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": a phone held upright
    heic, jpeg = (io.BytesIO(), io.BytesIO())
    photo.save(heic, "HEIF", quality=95, exif=exif.tobytes())
    photo.save(jpeg, "JPEG", quality=95, exif=exif.tobytes())
    assert heic.getvalue()[4:12] == b"ftypheic"
    from_heic, from_jpeg = decode_image(heic.getvalue()), decode_image(jpeg.getvalue())
    assert from_heic.size == from_jpeg.size == (480, 640)
    a, b = tiny_encoder.encode_photo(torch.stack([tiny_encoder.preprocess.photo_file(heic.getvalue()),
                                                  tiny_encoder.preprocess.photo_file(jpeg.getvalue())]))
    assert float(a @ b) > 0.99


def test_a_heic_whose_crop_hides_its_coded_size_is_refused_before_decoding():
    """A HEIF's clap box crops what Pillow reports (64x64), while libheif decodes the whole coded image first: a
    decompression bomb in a few KB. The coded size (ispe) is what the pixel limit checks."""
    import struct

    buffer = io.BytesIO()
    Image.new("L", (2001, 1001), 255).save(buffer, "HEIF", quality=1)  # odd sides: the encoder writes a clap box
    data = bytearray(buffer.getvalue())
    at = data.find(b"clap")
    assert at > 0
    data[at + 4:at + 36] = struct.pack(">8I", 64, 1, 64, 1, 0, 1, 0, 1)  # show 64x64 of it
    assert Image.open(io.BytesIO(bytes(data))).size == (64, 64)
    with pytest.raises(ImageTooLargeError, match="pixels before its crop"):
        decode_image(bytes(data), max_pixels=1_000_000)
    assert decode_image(bytes(data), max_pixels=3_000_000).size == (64, 64)


def _cropped_heic(coded=(2001, 1001)) -> bytes:
    """A HEIC coding ``coded`` pixels whose clap crop shows 64x64 (Pillow reports the crop)."""
    import struct

    buffer = io.BytesIO()
    Image.new("L", coded, 255).save(buffer, "HEIF", quality=1)  # odd sides: the encoder writes a clap box
    data = bytearray(buffer.getvalue())
    at = data.find(b"clap")
    data[at + 4:at + 36] = struct.pack(">8I", 64, 1, 64, 1, 0, 1, 0, 1)
    return bytes(data)


def _insert_box(data: bytes, before: bytes, box: bytes, *, enclosing: bytes | None = None) -> bytes:
    """``box`` inserted before the first ``before`` box, growing the size of the ``enclosing`` box around it."""
    import struct

    at = data.find(before) - 4
    out = bytearray(data[:at] + box + data[at:])
    if enclosing is not None:
        start = data.find(enclosing) - 4
        out[start:start + 4] = struct.pack(">I", struct.unpack(">I", data[start:start + 4])[0] + len(box))
    return bytes(out)


def test_padding_before_or_inside_meta_does_not_hide_the_coded_size():
    """The boxes are walked by their headers: many small boxes before meta, or megabytes of padding inside it
    before the properties, still reach the ispe (a fixed read of the first boxes gave up and let the bomb decode)."""
    import struct

    from encoder.heif_header import largest_coded_pixels

    data = _cropped_heic()
    coded = largest_coded_pixels(io.BytesIO(data))
    assert coded is not None and coded >= 2001 * 1001
    many_small = _insert_box(data, b"meta", struct.pack(">I4s", 8, b"free") * 200)
    assert largest_coded_pixels(io.BytesIO(many_small)) == coded
    padded = _insert_box(data, b"iprp", struct.pack(">I4s", 8 + 5 * 2**20, b"free") + bytes(5 * 2**20),
                         enclosing=b"meta")
    assert largest_coded_pixels(io.BytesIO(padded)) == coded


def test_a_heif_that_declares_no_coded_size_is_refused_not_decoded_unchecked(tmp_path):
    data = _cropped_heic()
    hidden = data.replace(b"ispe", b"xspe")
    with pytest.raises(ImageDecodeError, match="declares no coded image size"):
        decode_image(hidden, max_pixels=10**9)
    path = tmp_path / "hidden.heic"
    path.write_bytes(hidden)
    with pytest.raises(ImageDecodeError, match="declares no coded image size"):
        decode_image(str(path), max_pixels=10**9)


def test_a_heic_named_by_a_str_path_decodes_as_by_a_path(tmp_path):
    """Training passes sample paths as str: the coded-size check opened them as bytes and refused every HEIC."""
    path = tmp_path / "photo.heic"
    path.write_bytes(_cropped_heic())
    assert decode_image(str(path), max_pixels=3_000_000).size == decode_image(path, max_pixels=3_000_000).size
    with pytest.raises(ImageTooLargeError, match="pixels before its crop"):
        decode_image(str(path), max_pixels=1_000_000)


def _ink_on(background: float, size=(40, 40)) -> np.ndarray:
    values = np.full(size[::-1], background, np.float32)
    values[size[1] // 2, :] = 0.0  # one dark line across
    return values


def test_a_tiff_of_premultiplied_alpha_decodes_as_plain_alpha():
    """ExtraSamples = 1 (associated alpha) gives mode La, which Pillow converts only to LA: a 500 on /search."""
    buffer = io.BytesIO()
    line = Image.fromarray(_ink_on(255.0).astype(np.uint8))
    Image.merge("LA", (Image.new("L", line.size, 0), Image.eval(line, lambda v: 255 - v))).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    at = data.find(b"\x52\x01\x03\x00\x01\x00\x00\x00")  # the ExtraSamples tag: 2 (unassociated) -> 1 (associated)
    data[at + 8:at + 10] = b"\x01\x00"
    image = decode_image(bytes(data))
    assert image.mode == "LA"
    grey = np.asarray(to_rgb(image).convert("L"))
    assert grey[0, 0] == 255 and grey[20, 5] < 50  # black ink on white


def test_a_png_colour_key_is_transparent_for_photos_too():
    """PNG tRNS on an RGB or L image keys a colour out, as browsers show it: on white, not as the keyed black."""
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[20, :] = (120, 0, 0)
    for image, key in ((Image.fromarray(rgb), (0, 0, 0)), (Image.fromarray(rgb[..., 0]), 0)):
        buffer = io.BytesIO()
        image.save(buffer, "PNG", transparency=key)
        shown = np.asarray(to_rgb(decode_image(buffer.getvalue())))
        assert shown[0, 0].tolist() == [255, 255, 255] and shown[20, 5].mean() < 128


def test_float_images_outside_zero_to_one_keep_their_picture():
    """A float TIFF in 0..4 (HDR or linear data) was taken as grey levels 0..4 (black); NaN no-data and +inf were
    black too. Now: rescaled by their own range, no-data read as paper."""
    from encoder.imaging import to_grayscale_on_white

    hdr = _ink_on(4.0)
    damaged = hdr.copy()
    damaged[:5] = np.nan
    damaged[6] = np.inf
    for values in (hdr, damaged):
        buffer = io.BytesIO()
        Image.fromarray(values, mode="F").save(buffer, "TIFF")
        grey = to_grayscale_on_white(decode_image(buffer.getvalue()))
        assert grey[0, 0] == 255 and grey[20, 5] == 0 and grey[6, 5] == 255
    buffer = io.BytesIO()
    Image.fromarray(_ink_on(250.0) + 3.0, mode="F").save(buffer, "TIFF")  # 8-bit grey levels stored as floats
    grey = to_grayscale_on_white(decode_image(buffer.getvalue()))
    assert grey[0, 0] == 253 and grey[20, 5] == 3  # as they are, not stretched


@pytest.mark.parametrize("mode", ["L", "RGBA"])  # modes Pillow memory-maps
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_a_turned_tiff_decodes_upright_from_a_path_as_from_its_bytes(tmp_path, compression, mode):
    """Pillow memory-mapped an uncompressed TIFF opened by name with its turned size: scrambled pixels."""
    stored = random_photo((30, 20), seed=5).resize((300, 200), Image.Resampling.NEAREST).convert(mode)
    exif = Image.Exif()
    exif[274] = 6  # turn 90° clockwise to show
    path = tmp_path / "turned.tif"
    stored.save(path, compression=compression, exif=exif.tobytes())
    upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    for source in (path, str(path), path.read_bytes()):
        shown = decode_image(source)
        assert shown.size == (200, 300)
        assert np.array_equal(np.asarray(shown), upright)
