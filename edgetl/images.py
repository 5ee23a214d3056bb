"""Image decoding with Pillow, shared by training and the device side.

Training and on-device inference decode and resize with this one function, so
a model never sees pixels prepared differently from the ones it was trained on.

The result must not depend on the Pillow version either (``pyproject.toml``
allows a range of them, and a device often has another one than the
workstation). Pillow labels the same file differently across versions: a
16-bit greyscale PNG opens as mode ``I`` on Pillow 9 and ``I;16`` on newer
ones. So integer greyscale data is scaled by the bit depth the *file* declares
(PNG ``IHDR``, TIFF ``BitsPerSample``), never by the mode name or the image's
own maximum; tests/test_pillow_range.py decodes a zoo of unusual modes on the
lowest allowed Pillow and on the installed one and compares the bytes.
"""

from __future__ import annotations

import hashlib
import io
import stat
import warnings
from pathlib import Path
from typing import BinaryIO, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Pillow refuses larger images as possible decompression bombs; say so in our words.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 178956970

# The resampling filter of ``load_image`` (named in the decoded store's key).
RESIZE_FILTER = "bilinear"
# Bumped whenever ``load_image`` returns other pixels for the same file (a conversion rule
# changed): decoded stores made by an older edgetl are then rebuilt, not reused.
# 2: integer greyscale scaled by the file's declared bit depth (was: the image's own maximum for mode I).
DECODE_VERSION = 2


class ImageReadError(Exception):
    """An image file cannot be decoded; ``reason`` is a short human phrase."""

    def __init__(self, path: Union[str, Path], reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _declared_bits(image: Image.Image, header: bytes) -> Optional[int]:
    """Bits per sample the file declares, for the formats whose integer modes Pillow labels inconsistently.

    PNG: byte 24 of the file is the IHDR bit depth (the IHDR chunk must come
    first, PNG spec section 5.2/11.2.2). TIFF: the BitsPerSample tag (258).
    """
    if image.format == "PNG" and header[12:16] == b"IHDR" and len(header) > 24:
        return header[24]
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)
        if isinstance(bits, tuple):
            bits = bits[0] if bits else None
        return int(bits) if bits else None
    return None


def _to_rgb(image: Image.Image, bits: Optional[int] = None) -> Image.Image:
    """RGB of any Pillow mode; ``bits`` is the file's declared sample depth (see ``_declared_bits``)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Integer greyscale: 0 .. 2**bits - 1 maps to 0 .. 255 (rounded), whatever Pillow calls the mode.
        # Without a declared depth the data is taken as 16-bit, the only depth these modes hold in the
        # formats edgetl reads; negative or larger values are clipped.
        depth = bits if bits and 8 < bits <= 32 else 16
        array = np.asarray(image, dtype=np.float64)
        scaled = np.clip(array, 0, 2.0**depth - 1) * (255.0 / (2.0**depth - 1)) + 0.5
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        # Floating point has no declared range: stretched to the image's own min..max.
        array = np.asarray(image, dtype=np.float64)
        span = max(float(array.max() - array.min()), 1e-12)
        image = Image.fromarray(((array - array.min()) / span * 255.0).astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _decode(handle: BinaryIO, draft_size: int) -> Image.Image:
    """The one decode of every caller: first frame, EXIF orientation, RGB."""
    header = handle.read(32)
    handle.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(handle) as image:
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.seek(0)
            image.load()
            bits = _declared_bits(image, header)
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image, bits)


def _check_regular(path: Path) -> None:
    info = path.stat()
    # A FIFO or device named *.jpg would block or never end.
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(path, "not a regular file (a pipe, socket or device)")
    if info.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def _read_error(path: Path, error: BaseException) -> ImageReadError:
    """The ImageReadError for whatever opening or decoding ``path`` raised."""
    if isinstance(error, ImageReadError):
        return error
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageReadError(path, f"too large (over {MAX_PIXELS:,} pixels)")
    if isinstance(error, UnidentifiedImageError):
        return ImageReadError(path, "not an image Pillow can read")
    if isinstance(error, PermissionError):
        return ImageReadError(path, "permission denied")
    if isinstance(error, FileNotFoundError):
        return ImageReadError(path, "missing (deleted, or a broken symlink)")
    if isinstance(error, MemoryError):
        return ImageReadError(path, "too large to decode in the available memory")
    text = " ".join(str(error).split())[:200]
    reason = "truncated or corrupt" if "truncat" in text.lower() or isinstance(error, EOFError) else f"corrupt ({text or type(error).__name__})"
    return ImageReadError(path, reason)


def open_rgb(path: Union[str, Path], draft_size: int = 0) -> Image.Image:
    """Opens, fully decodes and converts an image to RGB (first frame of animations).

    Args:
      path: image file.
      draft_size: when > 0, lets the JPEG decoder downscale by a power of two
        while keeping both sides >= this; far faster for large photos.

    Raises:
      ImageReadError: with a short reason (empty file, not an image, truncated...).
    """
    path = Path(path)
    try:
        _check_regular(path)
        with open(path, "rb") as handle:
            return _decode(handle, draft_size)
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise anything from SyntaxError to struct.error
        raise _read_error(path, e) from None


def load_image(path: Union[str, Path], size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """Decodes ``path`` to an RGB uint8 array resized (bilinear) to ``size``.

    Args:
      path: image file (JPEG, PNG, BMP, GIF, WebP...).
      size: side length, or ``(height, width)``.

    Returns:
      ``uint8`` array of shape ``(height, width, 3)``.

    Raises:
      ImageReadError: when the file cannot be decoded.
    """
    height, width = (size, size) if isinstance(size, int) else size
    return _resized(open_rgb(path, draft_size=max(height, width)), height, width)


def _resized(image: Image.Image, height: int, width: int) -> np.ndarray:
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def read_image_bytes(path: Union[str, Path]) -> bytes:
    """The bytes of an image file, after the checks ``open_rgb`` makes (regular, non-empty file).

    Raises:
      ImageReadError: not a regular file, empty, missing or unreadable.
    """
    path = Path(path)
    try:
        _check_regular(path)
        return path.read_bytes()
    except Exception as e:  # noqa: BLE001 - see open_rgb
        raise _read_error(path, e) from None


def decode_image_bytes(data: bytes, size: Union[int, Tuple[int, int]], path: Union[str, Path] = "<bytes>") -> np.ndarray:
    """``load_image`` of a file already read into memory (same decode, same pixels).

    Args:
      data: the file's bytes.
      size: side length, or ``(height, width)``.
      path: named in errors.

    Raises:
      ImageReadError: when the bytes cannot be decoded.
    """
    height, width = (size, size) if isinstance(size, int) else size
    try:
        image = _decode(io.BytesIO(data), max(height, width))
    except Exception as e:  # noqa: BLE001 - see open_rgb
        raise _read_error(Path(path), e) from None
    return _resized(image, height, width)


def load_image_digest(path: Union[str, Path], size: Union[int, Tuple[int, int]]) -> Tuple[np.ndarray, str]:
    """``load_image`` plus a digest of the file's bytes, reading the file once.

    The decoded store keys each image by this digest besides its size and
    modification time: a file only touched (copied without ``-p``, checked out
    again) is hashed, found unchanged and not decoded again.

    Returns:
      ``(pixels, digest)``: the array ``load_image`` returns and ``file_digest_bytes`` of the file.

    Raises:
      ImageReadError: when the file cannot be decoded.
    """
    data = read_image_bytes(path)
    return decode_image_bytes(data, size, path), file_digest_bytes(data)


def file_digest_bytes(data: bytes) -> str:
    """Hex BLAKE2b-128 of ``data``: the content identity of an image file (hashlib, no dependency)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
