"""Shared fixtures: tiny generated image folders, the optional ../shared assets, markers."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A suite started in the background by a non-interactive shell (`bash -c '... &'`, `(... &)`) inherits SIGINT
# as ignored, and so does every process it starts: Python then installs no KeyboardInterrupt handler there and
# the tests that press Ctrl-C on a child (tests/test_interrupt.py) see training run to the end. An ignored
# SIGINT is reset to the default at exec only if this process handles it, so give it Python's own handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Models the sandbox verified are remembered for this test session only, never in ~/.cache/edgetl.
if "EDGETL_CACHE_DIR" not in os.environ:
    os.environ["EDGETL_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgetl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EDGETL_CACHE_DIR"], True)

REPO = Path(__file__).resolve().parents[1]
SHARED_ASSETS = Path(os.environ.get("EDGETL_SHARED_ASSETS", REPO.parent / "shared" / "assets"))
CORAL = SHARED_ASSETS / "coral-test-data"
HYMENOPTERA = SHARED_ASSETS / "hymenoptera_data"
KERAS_WEIGHTS = SHARED_ASSETS / "keras" / "models"

# Distinct hues so a tiny network separates the classes in a few steps.
CLASS_COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run slow tests (marked slow: real data, every backbone's int8)")
    parser.addoption("--run-edgetpu", action="store_true", help="run tests needing a Coral Edge TPU")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow test: pass --run-slow")
    skip_tpu = pytest.mark.skip(reason="needs an Edge TPU: pass --run-edgetpu")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "edgetpu" in item.keywords and not config.getoption("--run-edgetpu"):
            item.add_marker(skip_tpu)


def make_image_folder(root: Path, per_class: int = 6, size: int = 40, classes=None, fmt: str = "png", seed: int = 0) -> Path:
    """Writes root/<class>/<i>.<fmt>: solid class colours with a little noise."""
    rng = np.random.default_rng(seed)
    for name, colour in (classes or CLASS_COLOURS).items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            noise = rng.integers(-25, 25, size=(size, size, 3))
            pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{index}.{fmt}")
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """Three classes x 6 PNGs at 40 px, under a path with a space in it."""
    return make_image_folder(tmp_path / "image data", per_class=6)


@pytest.fixture
def shared_assets() -> Path:
    if not SHARED_ASSETS.is_dir():
        pytest.skip("../shared/assets is absent (a user's clone): skipping real-asset test")
    return SHARED_ASSETS


@pytest.fixture
def coral_data(shared_assets) -> Path:
    if not CORAL.is_dir():
        pytest.skip("coral-test-data absent")
    return CORAL


@pytest.fixture
def keras_home(tmp_path, monkeypatch, shared_assets) -> Path:
    """A temporary HOME whose ~/.keras/models holds the offline ImageNet weights."""
    home = tmp_path / "home"
    models = home / ".keras" / "models"
    models.mkdir(parents=True)
    for file in KERAS_WEIGHTS.glob("*.h5"):
        shutil.copy(file, models / file.name)
    monkeypatch.setenv("HOME", str(home))
    return home
