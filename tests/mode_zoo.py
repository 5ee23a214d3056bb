"""A zoo of image files in unusual Pillow modes, for the decode-consistency tests.

Written with the installed Pillow (and, for 16-bit PNGs, by hand: Pillow
writes 16-bit PNGs only in greyscale), then decoded by any Pillow version.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image


def _png16(pixels: np.ndarray, colour_type: int, path: Path) -> None:
    """A 16-bit PNG (PNG spec 11.2.2) from big-endian samples; filter 0 on every row."""
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_mode_zoo(out: Path) -> List[Path]:
    """Writes one file per unusual mode or format path into ``out``; returns them sorted."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    height, width = 37, 53
    grey16 = np.linspace(0, 40000, height * width).reshape(height, width).astype(np.uint16)
    Image.fromarray(grey16).save(out / "grey16.png")  # I on Pillow 9, I;16 on newer ones
    _png16(grey16[..., None], 0, out / "grey16_handmade.png")
    Image.fromarray(grey16).save(out / "grey16.tif")  # I;16
    Image.frombytes("I;16B", (width, height), grey16.astype(">u2").tobytes()).save(out / "grey16b.tif")
    Image.fromarray(grey16.astype(np.int32) * 3).save(out / "int32.tif")  # I, 32 bits declared
    Image.fromarray(np.linspace(-1, 3, height * width).reshape(height, width).astype(np.float32)).save(out / "float.tif")
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    alpha = rng.integers(0, 255, (height, width), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out / "rgba.png")
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out / "rgba.webp", lossless=True)
    Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(out / "la.png")
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(out / "p_transparency.png", transparency=3)
    palette.save(out / "p_transparency.gif", transparency=3)
    Image.fromarray(rgb).convert("CMYK").save(out / "cmyk.jpg", quality=90)
    Image.fromarray(rgb[..., 0] > 128).save(out / "bilevel.png")
    Image.fromarray(rgb[..., 1]).save(out / "grey.png")
    Image.fromarray(rgb).save(out / "rgb.bmp")
    Image.fromarray(rgb).save(out / "ycbcr.jpg", quality=90)
    photo = np.clip(rng.normal(128, 60, (600, 900, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(out / "photo_draft.jpg", quality=85)  # large enough for JPEG draft scaling
    Image.fromarray(photo[..., 0]).save(out / "grey_photo.jpg", quality=85)
    rotated = Image.fromarray(photo)
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to display
    rotated.save(out / "exif_orientation.jpg", exif=exif.tobytes(), quality=85)
    _png16(rng.integers(0, 65535, (height, width, 3)), 2, out / "rgb16.png")
    _png16(rng.integers(0, 65535, (height, width, 2)), 4, out / "la16.png")
    _png16(rng.integers(0, 65535, (height, width, 4)), 6, out / "rgba16.png")
    return sorted(out.iterdir())
