"""A small, deterministic, offline image dataset for ``edgetl quickstart`` (no TensorFlow).

Three classes of drawn shapes (circle, square, triangle) in random colours,
sizes and positions over noisy backgrounds: nothing to download or license,
and the same seed always writes the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgetl._atomic import atomic_path

CLASSES = ("circle", "square", "triangle")


def _draw(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    background = rng.integers(0, 256, size=3)
    noise = rng.normal(0, 18, size=(size, size, 3))
    pixels = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in (background + rng.integers(80, 176, size=3)) % 256)
    radius = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif shape == "square":
        angle = rng.uniform(0, np.pi / 2)
        corners = [(cx + radius * np.cos(angle + k * np.pi / 2), cy + radius * np.sin(angle + k * np.pi / 2)) for k in range(4)]
        draw.polygon(corners, fill=colour)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        corners = [(cx + radius * np.cos(angle + k * 2 * np.pi / 3), cy + radius * np.sin(angle + k * 2 * np.pi / 3)) for k in range(3)]
        draw.polygon(corners, fill=colour)
    return image


def write_shapes_dataset(root: Path, per_class: int = 60, size: int = 96, seed: int = 0) -> Path:
    """Writes ``root/<shape>/<i>.png`` for the three shape classes and returns ``root``.

    Files that already exist are kept, so calling it again is cheap and idempotent.

    Example:
      >>> write_shapes_dataset(Path("runs/quickstart/data"))
    """
    rng = np.random.default_rng(seed)
    for shape in CLASSES:
        folder = Path(root) / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = _draw(shape, size, rng)  # draw even when skipping: keeps the sequence deterministic
            path = folder / f"{shape}_{index:03d}.png"
            if not path.is_file():
                with atomic_path(path, suffix=".png") as tmp:
                    image.save(tmp)
    return Path(root)
