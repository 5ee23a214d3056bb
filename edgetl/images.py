"""Image decoding with Pillow, shared by training and the device side.

Training and on-device inference decode and resize with this one function, so
a model never sees pixels prepared differently from the ones it was trained on.
"""

from __future__ import annotations

import stat
import warnings
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Pillow refuses larger images as possible decompression bombs; say so in our words.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 178956970


class ImageReadError(Exception):
    """An image file cannot be decoded; ``reason`` is a short human phrase."""

    def __init__(self, path: Union[str, Path], reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip (convert('L') clips at 255).
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = max(float(array.max() - array.min()), 1e-12)
        image = Image.fromarray(((array - array.min()) / span * 255.0).astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


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
        info = path.stat()
        # A FIFO or device named *.jpg would block or never end.
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(path, "not a regular file (a pipe, socket or device)")
        if info.st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if draft_size and image.format == "JPEG":
                    image.draft("RGB", (draft_size, draft_size))
                image.seek(0)
                image.load()
                image = ImageOps.exif_transpose(image) or image
                return _to_rgb(image)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(path, f"too large (over {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image Pillow can read") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except FileNotFoundError:
        raise ImageReadError(path, "missing (deleted, or a broken symlink)") from None
    except MemoryError:
        raise ImageReadError(path, "too large to decode in the available memory") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise anything from SyntaxError to struct.error
        text = " ".join(str(e).split())[:200]
        reason = "truncated or corrupt" if "truncat" in text.lower() or isinstance(e, EOFError) else f"corrupt ({text or type(e).__name__})"
        raise ImageReadError(path, reason) from None


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
    image = open_rgb(path, draft_size=max(height, width))
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
