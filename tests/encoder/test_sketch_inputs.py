"""Real-world sketch uploads: every PIL mode, inverted ink, EXIF, odd shapes, hostile bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from encoder import (
    EmptySketchError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    decode_image,
    normalise_sketch,
)
from tests.imagegen import draw_sketch, png_declaring

SIZE = 64


def cross(size=(300, 200), width=6) -> Image.Image:
    """An off-centre black cross on white: the normaliser must crop and centre it."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.line([(40, 30), (120, 110)], fill=0, width=width)
    draw.line([(40, 110), (120, 30)], fill=0, width=width)
    return image


def ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32) < 128


def assert_clean_square_sketch(result: Image.Image) -> None:
    assert result.size == (SIZE, SIZE) and result.mode == "RGB"
    mask = ink(result)
    assert mask.sum() > 20, "ink must survive"
    gray = np.asarray(result.convert("L"))
    assert gray[0].min() > 230 and gray[-1].min() > 230 and gray[:, 0].min() > 230, "margins are white paper"
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    # Cropped to the ink and centred: the drawing spans most of the square, symmetric margins.
    assert rows[-1] - rows[0] > SIZE * 0.6 and cols[-1] - cols[0] > SIZE * 0.6
    assert abs(rows[0] - (SIZE - 1 - rows[-1])) <= 3 and abs(cols[0] - (SIZE - 1 - cols[-1])) <= 3


def as_mode(mode: str) -> Image.Image:
    base = cross()
    if mode == "RGBA":  # ink on a fully transparent background
        rgba = Image.new("RGBA", base.size, (0, 0, 0, 0))
        rgba.putalpha(Image.eval(base, lambda v: 255 - v))
        return rgba
    if mode == "LA":
        la = Image.new("LA", base.size, (0, 0))
        la.putalpha(Image.eval(base, lambda v: 255 - v))
        return la
    if mode == "P-transparent":  # index 0: transparent *black* background, index 1: black ink
        indices = (np.asarray(base) < 128).astype(np.uint8)
        palette = Image.fromarray(indices, mode="L").convert("P")
        palette.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
        palette.info["transparency"] = 0
        return palette
    if mode == "I;16":
        return Image.fromarray(np.asarray(base, dtype=np.uint16) * 257)  # full 16-bit range
    if mode == "I":
        return Image.fromarray(np.asarray(base, dtype=np.int32) * 1000)
    if mode == "F":
        return Image.fromarray(np.asarray(base, dtype=np.float32) / 255.0)
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["L", "1", "RGB", "RGBA", "LA", "P", "P-transparent", "CMYK", "I;16", "I", "F"])
def test_every_mode_normalises_to_black_ink_on_white(mode):
    assert_clean_square_sketch(normalise_sketch(as_mode(mode), SIZE))


def test_modes_agree_with_each_other():
    reference = np.asarray(normalise_sketch(cross(), SIZE).convert("L"), dtype=np.float32)
    for mode in ["RGBA", "I;16", "1"]:
        other = np.asarray(normalise_sketch(as_mode(mode), SIZE).convert("L"), dtype=np.float32)
        assert np.abs(other - reference).mean() < 12, mode


def _bmp32(rgba: Image.Image) -> bytes:
    """``rgba`` as a 32-bit BI_RGB BMP with its alpha in the fourth byte (as drawing apps write it)."""
    import struct

    pixels = np.asarray(rgba.convert("RGBA"))
    rows = pixels[::-1, :, [2, 1, 0, 3]].tobytes()
    height, width = pixels.shape[:2]
    return struct.pack("<2sIHHI", b"BM", 54 + len(rows), 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 32, 0, len(rows), 2835, 2835, 0, 0) + rows


def test_a_32_bit_bmp_keeps_the_alpha_of_its_fourth_byte():
    """Pillow reads it as BGRX: a transparent sketch's black background hid its black ink (browsers use the alpha
    when some pixel has one); a BMP whose fourth byte is all 0 (Windows' padding) stays opaque RGB."""
    transparent = as_mode("RGBA")
    decoded = decode_image(_bmp32(transparent))
    assert decoded.mode == "RGBA"
    reference = np.asarray(normalise_sketch(transparent, SIZE).convert("L"), dtype=np.float32)
    assert np.array_equal(np.asarray(normalise_sketch(decoded, SIZE).convert("L"), dtype=np.float32), reference)
    padded = cross().convert("RGBA")
    padded.putalpha(0)
    opaque = decode_image(_bmp32(padded))
    assert opaque.mode == "RGB" and np.array_equal(np.asarray(opaque), np.asarray(cross().convert("RGB")))


def test_white_on_black_is_inverted():
    normal = np.asarray(normalise_sketch(cross(), SIZE).convert("L"), dtype=np.float32)
    inverted = np.asarray(normalise_sketch(Image.eval(cross(), lambda v: 255 - v), SIZE).convert("L"), np.float32)
    assert np.abs(normal - inverted).mean() < 3


def test_grey_paper_is_levelled_to_white():
    paper = Image.eval(cross(), lambda v: 90 + int(v * 0.55))  # ink 90, paper ~230
    result = np.asarray(normalise_sketch(paper, SIZE).convert("L"))
    assert result.max() == 255 and result.min() < 40


def _framed(frame: int) -> Image.Image:
    image = cross()
    ImageDraw.Draw(image).rectangle([0, 0, image.width - 1, image.height - 1], outline=0, width=frame)
    return image


def _on_a_dark_table(paper: Image.Image, table: int = 60, border: int = 60) -> Image.Image:
    photo = Image.new("L", (paper.width + 2 * border, paper.height + 2 * border), table)
    photo.paste(paper, (border, border))
    return photo


@pytest.mark.parametrize("case", ["framed by 2 px", "underexposed paper", "a page on a dark table"])
def test_the_ink_is_told_from_the_paper_by_its_contrast_not_by_the_outermost_pixels(case):
    """Dark ink stays dark whatever the outermost pixels are: a frame a screenshot drew round the canvas, paper
    photographed too dark (grey 110 under black ink), or a page on a dark table (only the page is kept)."""
    image = {"framed by 2 px": lambda: _framed(2),
             "underexposed paper": lambda: Image.eval(cross(), lambda v: 20 + int(v * 90 / 255)),
             "a page on a dark table": lambda: _on_a_dark_table(cross())}[case]()
    result = np.asarray(normalise_sketch(image, SIZE).convert("L"), dtype=np.float32)
    assert ink(Image.fromarray(result.astype(np.uint8))).mean() < 0.25, "a line drawing, not an inverted slab"
    reference = np.asarray(normalise_sketch(cross(), SIZE).convert("L"), dtype=np.float32)
    assert np.abs(result - reference).mean() < 12


def _with_speck(image: Image.Image) -> Image.Image:
    image = image.copy()
    image.putpixel((image.width - 3, image.height - 3), 0)  # a grain of dust on the scan, far from the drawing
    image.putpixel((image.width - 4, image.height - 3), 0)
    return image


def _with_edge_shadow(image: Image.Image) -> Image.Image:
    image = image.copy()
    ImageDraw.Draw(image).rectangle([image.width - 3, 0, image.width - 1, image.height - 1], fill=40)
    return image


@pytest.mark.parametrize("damage", [_with_speck, _with_edge_shadow, lambda image: _framed(3)])
def test_specks_edge_shadows_and_frames_do_not_set_the_crop(damage):
    reference = np.asarray(normalise_sketch(cross(), SIZE).convert("L"), dtype=np.float32)
    result = np.asarray(normalise_sketch(damage(cross()), SIZE).convert("L"), dtype=np.float32)
    assert np.abs(result - reference).mean() < 1


def test_a_small_mark_that_is_part_of_the_drawing_stays_in_the_crop():
    image = cross()
    ImageDraw.Draw(image).ellipse([200, 60, 216, 76], fill=0)  # a drawn dot (a ball), set apart from the cross
    result = normalise_sketch(image, SIZE)
    cols = np.flatnonzero(ink(result).any(axis=0))
    assert cols[-1] - cols[0] > SIZE * 0.8  # the crop spans cross and ball


def test_light_ink_on_a_dark_ground_still_is_inverted_and_a_chalkboard_page_is_not_a_page():
    chalk = Image.eval(cross(width=12), lambda v: 255 - v)  # thick white strokes on black: ink, not a page
    reference = np.asarray(normalise_sketch(cross(width=12), SIZE).convert("L"), dtype=np.float32)
    assert np.abs(np.asarray(normalise_sketch(chalk, SIZE).convert("L"), dtype=np.float32) - reference).mean() < 3


@pytest.mark.parametrize("size", [(4000, 40), (40, 4000), (3, 900)])
def test_extreme_aspect_ratios_give_a_square_sketch(size):
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(0, 0), (size[0] - 1, size[1] - 1)], fill=0, width=2)
    result = normalise_sketch(image, SIZE)
    assert result.size == (SIZE, SIZE) and ink(result).sum() > 10


def test_thin_strokes_on_a_huge_canvas_stay_visible():
    image = Image.new("L", (3000, 3000), 255)
    ImageDraw.Draw(image).rectangle([100, 100, 2900, 2900], outline=0, width=1)
    gray = np.asarray(normalise_sketch(image, SIZE).convert("L"))
    assert gray.min() < 110, "a one-pixel outline must remain dark after a 45x downscale"


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (300, 100), "white")
    ImageDraw.Draw(wide).line([(20, 50), (280, 50)], fill="black", width=8)  # a horizontal bar
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° turn
    buffer = io.BytesIO()
    wide.save(buffer, "JPEG", exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue())
    assert decoded.size == (100, 300)


def test_blank_canvas_is_an_empty_sketch():
    with pytest.raises(EmptySketchError, match="blank"):
        normalise_sketch(Image.new("RGB", (200, 200), "white"), SIZE)
    with pytest.raises(EmptySketchError):
        normalise_sketch(Image.new("RGBA", (200, 200), (0, 0, 0, 0)), SIZE)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()




@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"", ImageDecodeError, "empty"),
        (b"hello, I am not an image", ImageDecodeError, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ImageDecodeError, "image"),
        (png_declaring(100_000, 100_000), ImageTooLargeError, "limit"),
    ],
    ids=["zero-bytes", "text", "broken-png", "bomb"],
)
def test_hostile_bytes_raise_documented_errors(payload, error, message):
    with pytest.raises(error, match=message):
        decode_image(payload)


def test_truncated_image_is_a_decode_error():
    data = png_bytes(draw_sketch((400, 400)).convert("RGB"))
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])
    assert issubclass(ImageDecodeError, InputError) and issubclass(InputError, ValueError)


def test_pixel_limit_is_configurable():
    data = png_bytes(Image.new("L", (100, 100), 255))
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=5_000)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)


def test_animated_gif_uses_the_first_frame():
    frames = [cross(), Image.new("L", (300, 200), 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert_clean_square_sketch(normalise_sketch(decode_image(buffer.getvalue()), SIZE))


def test_sketch_tensor_from_file_bytes(tiny_encoder):
    tensor = tiny_encoder.preprocess.sketch_file(png_bytes(cross()))
    assert tensor.shape == (3, 64, 64)
    assert tiny_encoder.encode_sketch(tensor[None]).shape == (1, tiny_encoder.embed_dim)


# ----------------------------------------------------------------------------- framing: ink (uploads) vs canvas
def _ink_centre(image: Image.Image) -> tuple[float, float]:
    """Centre of the ink as a fraction of the image's width and height."""
    rows, cols = np.nonzero(ink(image))
    return (cols.mean() + 0.5) / image.width, (rows.mean() + 0.5) / image.height


def _stroke_on_canvas(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    canvas = Image.new("L", size, 255)
    ImageDraw.Draw(canvas).rectangle(box, fill=0)
    return canvas


def test_canvas_framing_keeps_a_stroke_at_the_same_relative_position_as_in_the_source_canvas():
    # A Sketchy sketch shares its photo's frame: a stroke in the lower-left stays in the lower-left.
    source = _stroke_on_canvas((256, 256), (20, 180, 59, 199))
    x, y = _ink_centre(source)
    result = normalise_sketch(source, SIZE, framing="canvas")
    assert result.size == (SIZE, SIZE)
    got_x, got_y = _ink_centre(result)
    assert abs(got_x - x) < 1.5 / SIZE and abs(got_y - y) < 1.5 / SIZE
    # Cropping to the ink (uploads) moves the same stroke to the centre and fills the frame with it.
    cropped_x, cropped_y = _ink_centre(normalise_sketch(source, SIZE, framing="ink"))
    assert abs(cropped_x - 0.5) < 0.05 and abs(cropped_y - 0.5) < 0.05


def test_canvas_framing_pads_a_non_square_canvas_to_square_without_cropping_it():
    # 300 x 200: padded to 300 x 300 with 50 white rows above and below, nothing cut.
    source = _stroke_on_canvas((300, 200), (240, 10, 279, 29))
    x, y = _ink_centre(source)
    got_x, got_y = _ink_centre(normalise_sketch(source, SIZE, framing="canvas"))
    assert abs(got_x - x) < 1.5 / SIZE  # full width kept
    assert abs(got_y - (50 + y * 200) / 300) < 1.5 / SIZE  # centred vertically in the square


def test_canvas_framing_reduces_a_huge_canvas_keeping_one_pixel_strokes_and_refuses_blank_ones():
    source = Image.new("L", (4000, 4000), 255)
    ImageDraw.Draw(source).line([(100, 2000), (3900, 2000)], fill=0, width=1)
    result = normalise_sketch(source, SIZE, framing="canvas")
    assert ink(result).any(axis=1).sum() >= 1 and ink(result).any(axis=0).sum() > SIZE * 0.9
    with pytest.raises(EmptySketchError):
        normalise_sketch(Image.new("L", (100, 100), 255), SIZE, framing="canvas")
    with pytest.raises(ValueError, match="framing"):
        normalise_sketch(source, SIZE, framing="crop")


def test_the_encoder_records_its_framing_and_frames_dataset_sketches_by_it_but_uploads_by_the_ink(tmp_path):
    from encoder import EncoderConfig, PromptConfig, build_encoder, load_checkpoint, save_checkpoint

    config = EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig(), sketch_framing="canvas")
    encoder = build_encoder(config)
    assert encoder.preprocess.sketch_framing == "canvas"
    reloaded = load_checkpoint(save_checkpoint(encoder, tmp_path / "c.safetensors"))
    assert reloaded.config.sketch_framing == "canvas" and reloaded.preprocess.sketch_framing == "canvas"
    assert reloaded.fingerprint() == encoder.fingerprint()
    source = _stroke_on_canvas((256, 256), (20, 180, 59, 199))
    preprocess = reloaded.preprocess
    dataset = preprocess.dataset_sketch(source)
    upload = preprocess.sketch(source)  # what the service calls for an uploaded image
    assert torch.equal(dataset, preprocess.sketch(source, framing="canvas"))
    assert torch.equal(upload, preprocess.sketch(source, framing="ink")) and not torch.equal(upload, dataset)
    path = tmp_path / "s.png"
    source.save(path)
    assert torch.equal(preprocess.sketch_file(path), dataset)


def test_ink_framing_is_the_implicit_value_so_older_configs_and_fingerprints_are_unchanged():
    from encoder import EncoderConfig, PromptConfig

    ink_config = EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig())
    assert "sketch_framing" not in ink_config.to_dict()
    assert EncoderConfig.from_dict(ink_config.to_dict()).sketch_framing == "ink"
    canvas = EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig(), sketch_framing="canvas")
    assert EncoderConfig.from_json(canvas.to_json()) == canvas
    with pytest.raises(ValueError, match="sketch_framing"):
        EncoderConfig(sketch_framing="crop")
