"""Data identity: each kind of change is noticed and named; computing it decodes nothing (no TensorFlow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_image_folder
from edgetl import images
from edgetl.data.identity import current_identity, describe_changes
from edgetl.data.store import ImageStore, store_folder

TWO = {"red": (220, 40, 40), "green": (40, 200, 60)}


@pytest.fixture
def data(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data", per_class=3, size=24, classes=TWO)


def _identity(data: Path, run: Path):
    return current_identity(str(data), None, str(run), 16)


@pytest.mark.parametrize("change, expected", [
    (lambda d: make_image_folder(d, 2, 24, classes={"blue": (0, 0, 200)}), "class 'blue' added (2 images)"),
    (lambda d: shutil.rmtree(d / "red") or make_image_folder(d, 1, 24, classes={"x": (1, 1, 1)}),
     "class 'x' added (1 image); class 'red' removed"),
    (lambda d: (d / "red" / "img_2.png").unlink(), "1 image removed (e.g. 'img_2.png')"),
    (lambda d: Image.new("RGB", (24, 24), (5, 5, 5)).save(d / "green" / "img_1.png"), "1 image edited (e.g. 'img_1.png')"),
    (lambda d: shutil.move(str(d / "green"), str(d / "lime")), "class 'green' renamed to 'lime'"),
    (lambda d: shutil.copy(d / "red" / "img_0.png", d / "red" / "copy.png"), "1 image added (e.g. 'copy.png')"),
], ids=["added-class", "replaced-class", "removed-image", "edited-image", "renamed-class", "added-image"])
def test_each_change_is_named(data, tmp_path, change, expected):
    before = _identity(data, tmp_path / "run")
    change(data)
    after = _identity(data, tmp_path / "run")
    assert after.key != before.key
    assert describe_changes(before, after) == expected


def test_touched_files_keep_the_identity_and_nothing_is_decoded(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    store = ImageStore(store_folder(run, 16), 16)
    store.update([str(p) for p in data.rglob("*.png")], progress=False)
    before = _identity(data, run)
    monkeypatch.setattr(images, "_decode", lambda *a: pytest.fail("computing the identity decoded an image"))
    for path in data.rglob("*.png"):
        os.utime(path, ns=(10**18, 10**18))
    assert _identity(data, run).key == before.key
    assert describe_changes(before, _identity(data, run)) == "nothing changed"
    assert describe_changes(None, before).startswith("the run recorded no identity")
