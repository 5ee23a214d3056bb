"""Files that ship inside edgetl: ImageNet weights and the quickstart photos, each with its licence (no TensorFlow).

``weights/`` holds the MobileNetV2 alpha 0.35 ImageNet no-top weights (Apache
2.0, see ``weights/README.md``), so the default backbone trains offline;
``trashnet/`` holds a small subset of TrashNet (MIT, see ``trashnet/README.md``)
for ``edgetl quickstart``. Everything else edgetl needs from the network
(other backbones' weights) is fetched by Keras' own downloader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent
WEIGHTS_DIR = ROOT / "weights"
QUICKSTART_DATASET = ROOT / "trashnet"


def weights_file(name: str) -> Optional[Path]:
    """The shipped weights file called ``name`` (Keras' cache name), or None when edgetl does not ship it."""
    path = WEIGHTS_DIR / name
    return path if name.endswith(".h5") and path.is_file() else None


def quickstart_dataset() -> Path:
    """The shipped quickstart image folder: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``."""
    return QUICKSTART_DATASET
