"""Safe image decoding and sketch clean-up for real-world uploads.

``decode_image`` turns untrusted bytes into a loaded PIL image or raises a specific
:class:`InputError`; ``normalise_sketch`` turns any sketch-like image (any PIL mode, inverted,
photographed on grey paper, tiny ink on a huge canvas) into black ink on white, square, at the model's
input size: cropped to the ink (uploads) or keeping its whole canvas (dataset sketches drawn over a photo).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from .config import SKETCH_FRAMINGS, env_number
from .errors import EmptySketchError, ImageDecodeError, ImageTooLargeError, InputError
from .heif_header import largest_coded_pixels

DEFAULT_MAX_PIXELS = 40_000_000  # unless SBIR_MAX_IMAGE_PIXELS says otherwise (default_max_pixels)
ENV_MAX_PIXELS = "SBIR_MAX_IMAGE_PIXELS"
WHITE = 255
# Ink must be at least this much darker than the paper (0-255 grey levels) to count as a stroke.
MIN_INK_CONTRAST = 24
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
UNPREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}
F_GREY_LEVELS = 16.0  # a float image reaching this (and within 0..255) holds 8-bit grey levels, not HDR values
# The modes the photo and sketch paths convert themselves; any other is made RGB at decode.
HANDLED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
                           *HIGH_DEPTH_MODES})
# Cells per side of the grid on which uneven paper lighting is estimated.
PAPER_GRID = 16
# The paper is read from the image's outer band, this share of its shorter side wide: a frame or a scanner's edge
# shadow of a few pixels does not decide it.
PAPER_BAND = 0.05
# On a dark ground, light marks covering more than this share of the image are a page (a photo of paper on a
# table), not ink: drawings are thin lines.
PAGE_SHARE = 0.25
# Left out of an upload's crop: mostly-ink lines along an edge up to this share of the side deep (a frame, a
# scanner's edge shadow), and isolated specks of at most this share of the image's pixels (dust on a scan).
EDGE_SHARE = 0.02
SPECK_SHARE = 0.0001

# HEIC/HEIF (an iPhone's photos) opens like any Pillow format wherever this package decodes images: the service,
# the indexer and its workers, training. libheif applies the file's rotation itself (and resets the EXIF tag).
register_heif_opener()
ISO_MEDIA_FORMATS = ("HEIF", "AVIF")  # Pillow's names of the formats whose crop (clap) hides the decoded size


def default_max_pixels() -> int:
    """SBIR_MAX_IMAGE_PIXELS (unset or empty: ``DEFAULT_MAX_PIXELS``): a bad value is an :class:`InputError`
    naming it."""
    return env_number(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS, minimum=1, what="a whole number of pixels",
                      error=InputError)


def decode_image(
    source: bytes | str | Path, *, max_pixels: int | None = None, reduce_to: int | None = None
) -> Image.Image:
    """Decode bytes or a file into a fully loaded, EXIF-oriented PIL image (first frame).

    The pixel count is checked from the header, before any pixel memory is allocated. ``reduce_to``
    lets a JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) while both sides stay >= ``reduce_to``:
    a 12 MP photo bound for a 224 px model decodes several times faster.
    """
    max_pixels = default_max_pixels() if max_pixels is None else max_pixels
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageDecodeError("The image is empty (zero bytes).")
        stream = io.BytesIO(source)
    else:
        stream = Path(source)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as files:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # A path is opened here and handed over as a file: Pillow memory-maps an uncompressed file it opened
            # by name with the tile's size, and a rotated TIFF's size is already the turned one (scrambled pixels).
            opened = files.enter_context(open(stream, "rb")) if isinstance(stream, Path) else stream
            image = Image.open(opened)
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageDecodeError(f"The image has no pixels ({width}x{height}).")
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}."
                )
            if image.format in ISO_MEDIA_FORMATS:
                _check_coded_size(stream if isinstance(stream, Path) else source, image.format, max_pixels)
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            if reduce_to and image.format == "JPEG":
                image.draft(None, (reduce_to, reduce_to))
            bmp_pixels = _bmp_alpha_layout(image)
            image.load()
            if bmp_pixels is not None:
                image = _with_bmp_alpha(image, stream if isinstance(stream, Path) else source, *bmp_pixels)
            image = ImageOps.exif_transpose(image)
            if image.mode in UNPREMULTIPLIED:  # premultiplied alpha (TIFF ExtraSamples=1): La converts only to LA
                image = image.convert(UNPREMULTIPLIED[image.mode])
            elif image.mode not in HANDLED_MODES:  # e.g. BGR;16: read as RGB here, or refused as a decode error
                image = image.convert("RGB")
    except (ImageTooLargeError, ImageDecodeError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own guard fired (its limit, not ours): name the limit the caller set.
        raise ImageTooLargeError(
            f"The image declares more pixels than can be decoded safely; the limit is {max_pixels:,}."
        ) from error
    except UnidentifiedImageError as error:
        raise ImageDecodeError("The data is not an image in any supported format.") from error
    except FileNotFoundError as error:
        raise ImageDecodeError(f"No such image file: {source}") from error
    except Exception as error:  # noqa: BLE001 - PIL raises OSError/SyntaxError/ValueError/struct.error...
        raise ImageDecodeError(f"The image is corrupt or truncated ({type(error).__name__}: {error}).") from error
    return image


def _bmp_alpha_layout(image: Image.Image) -> tuple[int, int, int] | None:
    """(offset, stride, row order) of a 32-bit uncompressed BMP's pixels, whose fourth byte Pillow drops (BGRX)."""
    if image.format != "BMP" or len(image.tile) != 1:
        return None
    tile = image.tile[0]
    if tile[0] != "raw" or not isinstance(tile[3], tuple) or len(tile[3]) != 3 or tile[3][0] != "BGRX":
        return None
    _, stride, order = tile[3]
    return int(tile[2]), int(stride), int(order)


def _with_bmp_alpha(image: Image.Image, source: bytes | bytearray | memoryview | Path, offset: int, stride: int,
                    order: int) -> Image.Image:
    """The image with the alpha a 32-bit BI_RGB BMP carries in its fourth byte, which the format calls reserved but
    drawing apps fill (a transparent sketch's background is then black in RGB). As browsers do: used when some pixel
    has a non-zero alpha and not all are opaque; a file whose fourth byte is all 0 or all 255 stays RGB."""
    size = stride * image.size[1]
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
    else:
        data = bytes(source[offset : offset + size])
    if len(data) < size:
        return image  # truncated: what Pillow decoded stands
    rgba = Image.frombytes("RGBA", image.size, data, "raw", "BGRA", stride, order)
    alpha = np.asarray(rgba.getchannel("A"))
    if not alpha.any() or alpha.min() == 255:
        return image
    return rgba


def _check_coded_size(source: bytes | bytearray | memoryview | Path, kind: str, max_pixels: int) -> None:
    """The largest image a HEIF/AVIF file codes (heif_header) within the limit: Pillow reports its size after the
    crop. One that declares no coded size is refused (fail closed: its decoding cost is unknown)."""
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            coded = largest_coded_pixels(handle)
    else:
        coded = largest_coded_pixels(io.BytesIO(source))
    if coded is None:
        raise ImageDecodeError(f"The {kind} file declares no coded image size (no ispe property in its meta box); "
                               "it is damaged or hand-made.")
    if coded > max_pixels:  # shown cropped, decoded whole
        raise ImageTooLargeError(f"The image codes {coded:,} pixels before its crop; the limit is {max_pixels:,}.")


def _composited(rgba: Image.Image, background: int) -> np.ndarray:
    canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("L"), dtype=np.float32)


def _has_alpha(image: Image.Image) -> bool:
    """An alpha channel, or a palette or colour key (PNG tRNS on P, L or RGB) that makes pixels transparent."""
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode → RGB for a photo: transparency composited on white, 16/32-bit and float images
    rescaled to 0..255 (a plain ``convert("RGB")`` clips 16-bit values to white and float 0..1 to black)."""
    if image.mode == "RGB" and not _has_alpha(image):
        return image
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (WHITE, WHITE, WHITE, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if image.mode.startswith("I;16"):  # 16-bit: scale the type's range, 0..65535 → 0..255
        grey = np.asarray(image, dtype=np.float32) / 257.0
    elif image.mode in HIGH_DEPTH_MODES:
        grey = to_grayscale_on_white(image)
    else:
        return image.convert("RGB")
    return Image.fromarray(np.clip(grey, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")


def to_grayscale_on_white(image: Image.Image) -> np.ndarray:
    """Any PIL mode → float32 grey levels 0..255, transparency composited on white."""
    mode = image.mode
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        on_white = _composited(rgba, WHITE)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
        if np.ptp(on_white) < MIN_INK_CONTRAST <= np.ptp(alpha):
            # Light ink on a transparent background (dark-mode apps): it only shows on black.
            return _composited(rgba, 0)
        return on_white
    if mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float32)
        finite = np.isfinite(values)
        if not finite.all():  # no-data (NaN) and +inf read as the lightest value (paper), -inf as the darkest
            top, bottom = (float(values[finite].max()), float(values[finite].min())) if finite.any() else (0.0, 0.0)
            values = np.nan_to_num(values, nan=top, posinf=top, neginf=bottom)
        low, high = float(values.min()), float(values.max())
        if mode == "F" and low >= 0 and high <= 1.0:  # float images in 0..1
            return values * 255.0
        # Wide-range images (16-bit, 32-bit) and floats of a small range (HDR or linear data, e.g. 0..4) are
        # rescaled to 0..255 by their own range; floats up to 255 reaching F_GREY_LEVELS are 8-bit grey levels.
        if high > 255 or low < 0 or (mode == "F" and high < F_GREY_LEVELS):
            values = (values - low) * (255.0 / max(high - low, 1e-6))
        return values
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.float32)
    return np.asarray(image.convert("RGB").convert("L"), dtype=np.float32)


def _outer_band(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape
    k = max(1, round(PAPER_BAND * min(height, width)))
    return np.concatenate([gray[:k].ravel(), gray[-k:].ravel(), gray[k:-k, :k].ravel(), gray[k:-k, -k:].ravel()])


def _paper_level(gray: np.ndarray) -> float:
    band = _outer_band(gray)
    return float(np.median(band[:: max(1, len(band) // 4096)]))  # a few thousand pixels tell the paper's level


def _dark_ground(gray: np.ndarray) -> np.ndarray | None:
    """Where the image stands out lighter than its outer band, when that outweighs what stands out darker: light
    ink on a dark ground (a chalkboard, a dark-mode canvas), or a page lighter than its surroundings. None when the
    ground is the light side (dark ink on paper of any shade, even underexposed grey)."""
    paper = _paper_level(gray)
    lighter = gray > paper + MIN_INK_CONTRAST
    if np.count_nonzero(lighter) <= np.count_nonzero(gray < paper - MIN_INK_CONTRAST):
        return None
    return lighter


def _page_or_inverted(gray: np.ndarray, lighter: np.ndarray) -> np.ndarray:
    """On a dark ground: a large light area is a page photographed on a darker surface (the page alone is kept:
    the rows and columns that are mostly page); thin light marks are ink, inverted to dark on light."""
    if lighter.mean() > PAGE_SHARE:
        rows = np.flatnonzero(lighter.mean(axis=1) > 0.5)
        cols = np.flatnonzero(lighter.mean(axis=0) > 0.5)
        if len(rows) and len(cols):
            return gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return gray
    return 255.0 - gray


def _flatten_lighting(gray: np.ndarray, grid: int = PAPER_GRID) -> np.ndarray:
    """Divide out uneven lighting (a photo of paper, darker on one side) so the paper is white everywhere.

    The paper level of each cell of a ``grid``×``grid`` grid is its brightest 4x4-averaged pixel (averaging
    keeps sensor noise out); a cell much darker than its brightest neighbour is covered by ink and takes
    that neighbour's level. The levels are interpolated smoothly. Applied only when the cells along the
    border differ by more than the ink contrast: evenly lit scans and drawings are returned unchanged.
    """
    height, width = gray.shape
    if min(height, width) < 16 * grid:
        return gray
    small = gray[: height - height % 4, : width - width % 4]
    small = small.reshape(small.shape[0] // 4, 4, small.shape[1] // 4, 4).mean(axis=(1, 3))
    rows = np.linspace(0, small.shape[0], grid + 1).astype(int)[:-1]
    cols = np.linspace(0, small.shape[1], grid + 1).astype(int)[:-1]
    cells = np.maximum.reduceat(np.maximum.reduceat(small, rows, axis=0), cols, axis=1)
    border = np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]])
    if border.max() - border.min() <= MIN_INK_CONTRAST:
        return gray
    padded = np.pad(cells, 1, mode="edge")
    brightest = np.max([padded[dy:dy + grid, dx:dx + grid] for dy in range(3) for dx in range(3)], axis=0)
    paper = np.where(cells < brightest - MIN_INK_CONTRAST, brightest, cells).astype(np.float32)
    paper = np.asarray(Image.fromarray(paper, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(gray * (255.0 / np.maximum(paper, 1.0)), 0, 255)


def _min_pool(gray: np.ndarray, factor: int) -> np.ndarray:
    """The darkest pixel of each ``factor``×``factor`` block (partial blocks at the edges), so that strong
    reductions keep one-pixel strokes. Memory stays proportional to the input, whatever its shape."""
    if factor < 2:
        return gray
    rows = np.minimum.reduceat(gray, np.arange(0, gray.shape[0], factor), axis=0)
    return np.minimum.reduceat(rows, np.arange(0, gray.shape[1], factor), axis=1)


def normalise_sketch(image: Image.Image, size: int, *, margin: float = 0.06, framing: str = "ink") -> Image.Image:
    """Black ink on white, square, resized to ``size``; ``framing`` picks the frame (``SKETCH_FRAMINGS``).

    ``ink`` crops to the ink's box with a ``margin`` and centres it (uploads, whose canvas is arbitrary);
    ``canvas`` keeps the whole canvas, padded to square with white (centred), so every stroke keeps its place
    relative to the canvas (dataset sketches drawn over their photo's frame, as Sketchy's: that place is
    information for fine-grained matching and patch shuffling). White-on-black drawings
    (chalkboard, dark-mode canvases) are inverted and a page photographed on a dark table is cropped to the page
    (:func:`_dark_ground`); grey paper is levelled to white.
    Raises :class:`EmptySketchError` when there is no ink.
    """
    if framing not in SKETCH_FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(SKETCH_FRAMINGS)}, got {framing!r}")
    gray, ink = _levelled(image)
    if framing == "ink":
        gray = gray[_drawing_box(ink)]
    region = gray.astype(np.uint8)

    def border(side: int) -> int:
        return max(2, round(margin * side)) if framing == "ink" else 0

    # Reduce before padding square: a long thin stroke (say 5x200,000 px) must not become a 200,000² canvas.
    side = max(region.shape)
    reduced = Image.fromarray(_min_pool(region, (side + 2 * border(side)) // size), mode="L")

    side = max(reduced.width, reduced.height)
    square_side = side + 2 * border(side)
    square = Image.new("L", (square_side, square_side), WHITE)
    square.paste(reduced, ((square_side - reduced.width) // 2, (square_side - reduced.height) // 2))
    if square_side != size:
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return square.convert("RGB")


def _drawing_box(ink: np.ndarray) -> tuple[slice, slice]:
    """The box of the drawing in the ink mask: its lines along the image's edges that are mostly ink (a frame, a
    scanner's edge shadow; at most EDGE_SHARE of the side deep) and marks set apart from the drawing by blank rows
    or columns that are only specks (dust on a scan: at most SPECK_SHARE of the image and 1 % of the ink) are left
    out."""
    height, width = ink.shape
    top, bottom = _edge_lines(ink)
    left, right = _edge_lines(ink.T)
    inside = ink[top:bottom, left:right]
    profile = inside.sum(axis=1)
    if not profile.any():  # nothing but edge lines: they are the drawing
        top, bottom, left, right, inside = 0, height, 0, width, ink
        profile = inside.sum(axis=1)
    speck = min(SPECK_SHARE * ink.size, 0.01 * int(profile.sum()))
    rows = _without_specks(profile, speck)
    cols = _without_specks(inside[rows].sum(axis=0), speck)
    if (cols.start, cols.stop) != (0, inside.shape[1]):  # columns cut away may have held a row group's ink
        rows = _without_specks(inside[:, cols].sum(axis=1), speck)
    return slice(top + rows.start, top + rows.stop), slice(left + cols.start, left + cols.stop)


def _edge_lines(ink: np.ndarray) -> tuple[int, int]:
    """(first, end) of the rows between the runs of mostly-ink rows at the top and the bottom, each at most
    EDGE_SHARE of the height deep (deeper is a drawing that fills the canvas: kept)."""
    length = ink.shape[0]
    deepest = max(1, round(EDGE_SHARE * length))
    window = min(deepest + 1, length)
    lead = _leading_run(ink[:window].mean(axis=1) > 0.5)
    trail = _leading_run(ink[length - window:][::-1].mean(axis=1) > 0.5)
    return (lead if lead <= deepest else 0), length - (trail if trail <= deepest else 0)


def _leading_run(flags: np.ndarray) -> int:
    return int(np.argmin(flags)) if not flags.all() else len(flags)


def _without_specks(profile: np.ndarray, speck: float) -> slice:
    """The inked lines of a profile (ink per row or column) without the groups at either end that a blank line
    sets apart from the rest and that hold at most ``speck`` pixels of ink."""
    lines = np.flatnonzero(profile)
    if not len(lines):
        return slice(0, len(profile))
    if lines[-1] - lines[0] + 1 == len(lines):  # one group, nothing set apart
        return slice(int(lines[0]), int(lines[-1]) + 1)
    gaps = np.flatnonzero(np.diff(lines) > 1)
    starts, stops = np.r_[lines[0], lines[gaps + 1]], np.r_[lines[gaps], lines[-1]] + 1
    mass = np.add.reduceat(profile, starts)  # the blank lines between groups add nothing
    first, last = 0, len(starts) - 1
    while first < last and mass[first] <= speck:
        first += 1
    while last > first and mass[last] <= speck:
        last -= 1
    return slice(int(starts[first]), int(stops[last]))


def _levelled(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels with the paper white and the darkest ink black, and the mask of the ink."""
    gray = to_grayscale_on_white(image)
    lighter = _dark_ground(gray)
    if lighter is not None:
        gray = _page_or_inverted(gray, lighter)
    gray = _flatten_lighting(gray)
    paper = _paper_level(gray)
    darkest = float(gray.min())
    contrast = paper - darkest
    if contrast < MIN_INK_CONTRAST:
        raise EmptySketchError("The sketch is blank: no strokes darker than the background were found.")
    # Level: paper → white, darkest ink → black.
    gray = np.clip((gray - darkest) * (255.0 / contrast), 0, 255)
    return gray, gray < 255.0 - MIN_INK_CONTRAST * 255.0 / contrast
