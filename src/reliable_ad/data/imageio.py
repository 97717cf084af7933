"""Safe image decoding: a pixel limit against decompression bombs and errors that name the file."""

from __future__ import annotations

import io
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from reliable_ad.data.config import DEFAULT_MAX_PIXELS
from reliable_ad.errors import InputError


class ImageDecodeError(InputError):
    """An image that is missing, corrupt, truncated, too large or of an unexpected mode."""


def decode(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully load image bytes; the size is checked from the header before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"{source}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
                )
            image.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as error:  # its message names only an in-memory buffer
        raise ImageDecodeError(
            f"{source}: cannot decode image (not an image, or a format Pillow cannot read)"
        ) from error
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise ImageDecodeError(f"{source}: cannot decode image ({error})") from error
    return image


def to_rgb(image: Image.Image) -> NDArray[np.uint8]:
    return np.asarray(image.convert("RGB"))


def to_rgba(image: Image.Image) -> NDArray[np.uint8]:
    return np.asarray(image.convert("RGBA"))


def encode_png(array: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
