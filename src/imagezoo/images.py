"""Safe image decoding shared by data preparation, the Spaces and the batch job.

Files are recognised by content (Pillow sniffs the header), never by extension, and every
mode a microscope or a phone produces is normalised to 8-bit RGB the same way everywhere,
so a model sees identical pixels in training, in the demo and in bulk scoring. HEIC / HEIF,
phones' default photo format, opens through Pillow like any other once this module is
imported (pillow-heif's opener; Gradio's upload check, which opens files with Pillow, too).
"""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

register_heif_opener()

ImageSource = Union[str, Path, bytes, Image.Image]

#: Refuse images above this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An input that cannot be turned into an RGB image; the message says why."""


def file_sha256(path: str | Path, name: str | None = None) -> str:
    """SHA-256 of a file's bytes, read through one reused 256 KiB buffer (as ``hashlib.file_digest``
    does from Python 3.11): constant memory on any size, and on a 30 KB slide 5x faster than
    allocating a fresh 1 MiB chunk per read. A named pipe, socket or device is refused (``name``: how the
    error names it): opening a pipe would wait for a writer forever."""
    if not stat.S_ISREG(Path(path).stat().st_mode):
        raise ImageError(f"{name or path}: not a regular file (a pipe, socket or device)")
    digest = hashlib.sha256()
    buffer = bytearray(1 << 18)
    view = memoryview(buffer)
    with Path(path).open("rb", buffering=0) as fp:
        while size := fp.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


#: bit depths of the sensors whose images come stored in 16 bits (their largest value becomes 255)
CAMERA_DEPTHS = (8, 10, 12, 14, 16)


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to 8-bit RGB.

    16-bit and 32-bit integer images are scaled linearly, not stretched per image, so intensities
    stay comparable with 8-bit captures: the largest value of the smallest camera depth (8, 10, 12,
    14 or 16 bits) holding the image's maximum becomes 255. A 12-bit capture saved in 16 bits keeps
    its 4096 levels as 256 (divided by 257 it kept 16, almost black); a full-range 16-bit image is
    divided by 257; larger 32-bit values by their maximum. The file does not record the camera's
    depth, so a dim image is taken for fewer bits (a 12-bit image peaking at 1000 reads as 10-bit).
    Transparency (an alpha channel or a transparent colour) is flattened onto black.
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return Image.fromarray(to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        lo, hi = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        gray = np.zeros(pixels.shape, np.uint8) if hi <= lo else np.rint(255 * (pixels - lo) / (hi - lo))
        return Image.fromarray(np.nan_to_num(gray).astype(np.uint8), mode="L").convert("RGB")
    if "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_uint8(pixels: np.ndarray, coverage: np.ndarray | None = None) -> np.ndarray:
    """Integer intensities of any depth as uint8, scaled by the smallest camera depth holding their maximum
    (see :func:`to_rgb`), then multiplied by ``coverage`` (alpha in 0-1, broadcastable) if given: the depth
    is read from the colour alone, so transparency darkens a pixel instead of changing the scale.
    float32 (exact for 16-bit values) keeps a 50-megapixel colour image within a few hundred MB."""
    peak = float(pixels.max()) if pixels.size else 0.0
    depth = next((bits for bits in CAMERA_DEPTHS if peak < 2**bits), None)
    scale = (2**depth - 1) / 255.0 if depth else peak / 255.0
    scaled = pixels.astype(np.float32) / np.float32(scale)
    if coverage is not None:
        scaled *= coverage
    return np.clip(np.rint(scaled, out=scaled), 0, 255).astype(np.uint8)


def is_16bit_colour(image: Image.Image) -> bool:
    """Whether an opened, not yet loaded file stores 16 bits per colour sample: Pillow has no such mode and
    loads it as 8-bit ``RGB`` / ``RGBA`` from the high bytes, which leaves a 12-bit capture almost black."""
    return image.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in image.tile)


def decode_16bit_colour(data: bytes, name: str) -> Image.Image:
    """A 16-bit colour PNG or TIFF decoded at full depth by OpenCV, scaled like 16-bit grey (:func:`to_uint8`),
    alpha flattened onto black."""
    import cv2  # only these files need it

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageError(f"{name}: a 16-bit colour image OpenCV cannot decode")
    alpha = pixels[..., 3:].astype(np.float32) / np.iinfo(pixels.dtype).max if pixels.shape[2] == 4 else None
    return Image.fromarray(to_uint8(pixels[..., 2::-1], alpha), mode="RGB")  # BGR(A) -> RGB


def upright(image: Image.Image) -> Image.Image:
    """``image`` as viewers show it: turned by its EXIF orientation (phones store photos sideways and tag
    them). A damaged EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error):
        return image


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Decode ``source`` (path, bytes or PIL image) to RGB or raise :class:`ImageError`.

    The pixel count is checked from the header before any decoding, so a
    decompression bomb costs nothing; truncated files raise instead of returning a
    half-grey image. 16-bit colour files are decoded at full depth and photos tagged with an
    EXIF orientation are turned upright. ``name`` is how errors refer to the input (default: its path).
    """
    if isinstance(source, Image.Image):  # decoded by the caller, or opened lazily: its size is known
        name = name or "<image>"
        if source.width * source.height > max_pixels:
            raise ImageError(f"{name}: too large ({source.width}x{source.height} pixels, limit {max_pixels:,})")
        try:
            source.load()  # an image opened lazily decodes here: a truncated file fails like a path would
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"{name}: corrupt or truncated image ({err})") from err
        return to_rgb(upright(source))
    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{name}: empty input (0 bytes)")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        try:
            fp = path.open("rb")
        except OSError as err:  # no permission to read it, a vanished mount
            raise ImageError(f"{name}: cannot be read ({err.strerror or err})") from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(fp)
            except UnidentifiedImageError as err:
                raise ImageError(f"{name}: not a recognised image format") from err
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise ImageError(f"{name}: too large to decode safely ({err})") from err
            except (OSError, SyntaxError, ValueError) as err:  # a header cut short (e.g. a JPEG of 200 bytes)
                raise ImageError(f"{name}: corrupt or truncated image ({err})") from err
            if image.width * image.height > max_pixels:
                raise ImageError(
                    f"{name}: too large to decode safely ({image.width}x{image.height} pixels, limit {max_pixels:,})"
                )
            deep_colour = is_16bit_colour(image)
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as err:
                raise ImageError(f"{name}: corrupt or truncated image ({err})") from err
        if deep_colour:
            fp.seek(0)
            orientation = image.getexif()
            image = decode_16bit_colour(fp.read(), name)
            image.info["exif"] = orientation.tobytes()  # what upright reads
        return to_rgb(upright(image))
    finally:
        fp.close()


def shrink(image: Image.Image, max_side: int = 256) -> Image.Image:
    """A copy no larger than ``max_side`` on its longest side (aspect kept): how prepared datasets
    store photos that the models see at 192-256 px anyway."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image
