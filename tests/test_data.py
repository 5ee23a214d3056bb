"""Image-folder scanning, validation and splitting (no TensorFlow)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from edgetl.data.folder import scan_folder
from edgetl.data.split import class_weights, split_folder
from edgetl.errors import DatasetError
from edgetl.images import ImageReadError, load_image
from tests.conftest import make_image_folder


def test_scan_counts_classes_and_sorts(tiny_folder):
    folder = scan_folder(str(tiny_folder))
    assert folder.class_names == ("blue", "green", "red")
    assert folder.counts() == {"blue": 6, "green": 6, "red": 6}
    assert folder.skipped == ()
    assert "18 images in 3 classes" in folder.summary()


def test_nested_folders_and_every_format(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, per_class=2, classes={"a": (200, 0, 0), "b": (0, 0, 200)})
    nested = root / "a" / "deeper" / "more"
    nested.mkdir(parents=True)
    rgb = Image.new("RGB", (30, 20), (10, 20, 30))
    rgb.save(nested / "x.jpg")
    rgb.save(nested / "x.bmp")
    rgb.save(nested / "x.webp")
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    frames[0].save(nested / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(nested / "cmyk.jpg")
    Image.new("RGBA", (16, 16), (255, 0, 0, 128)).save(nested / "alpha.png")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(nested / "deep16.png")
    Image.new("L", (16, 16), 99).save(nested / "grey.png")
    folder = scan_folder(str(root))
    assert folder.counts()["a"] == 2 + 8
    for path in folder.paths:
        image = load_image(path, 24)
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8
    cmyk = load_image(nested / "cmyk.jpg", 8)
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60  # cyan-less magenta+yellow = red
    deep = load_image(nested / "deep16.png", 8)
    assert 150 < deep.mean() < 160  # 40000/65535*255 = 155.6, scaled, not clipped


def test_bad_files_are_skipped_and_listed(tiny_folder):
    red = tiny_folder / "red"
    (red / "zero.jpg").write_bytes(b"")
    (red / "notes.txt").write_text("hello")
    (red / "fake.png").write_bytes(b"this is not a png at all")
    good = (red / "img_0.png").read_bytes()
    (red / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = tiny_folder / "green" / "photo.jpg"
    Image.new("RGB", (64, 64), (0, 200, 0)).save(jpeg, quality=95)
    data = jpeg.read_bytes()
    (tiny_folder / "green" / "cut.jpg").write_bytes(data[: len(data) // 2])
    folder = scan_folder(str(tiny_folder))
    reasons = {os.path.basename(s.path): s.reason for s in folder.skipped}
    assert reasons["zero.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.txt"].startswith("not an image extension")
    assert reasons["fake.png"] == "not an image Pillow can read"
    assert "truncated" in reasons["truncated.png"] or "corrupt" in reasons["truncated.png"]
    assert "truncated" in reasons["cut.jpg"] or "corrupt" in reasons["cut.jpg"]
    assert folder.counts() == {"blue": 6, "green": 7, "red": 6}
    assert "skipped 5 files" in folder.summary()


def test_symlink_loop_is_not_followed_forever(tiny_folder):
    os.symlink(tiny_folder / "red", tiny_folder / "red" / "loop")
    folder = scan_folder(str(tiny_folder))
    assert folder.counts()["red"] == 6
    assert any("symlink loop" in s.reason for s in folder.skipped)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "No class folders found"),
        (lambda root: make_image_folder(root, 3, classes={"only": (1, 2, 3)}), "Only one class folder ('only')"),
        (lambda root: make_image_folder(root, 1, classes={"a": (1, 2, 3), "b": (200, 0, 0)}), "'a' has 1"),
    ],
    ids=["missing", "empty", "one-class", "too-few"],
)
def test_layout_errors_name_the_problem(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scan_folder(str(root))


def test_loose_images_get_a_hint(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    with pytest.raises(DatasetError, match="move them into one sub-folder per class"):
        scan_folder(str(root))


def test_split_is_stratified_and_deterministic(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=10, size=8)
    folder = scan_folder(str(root))
    first = split_folder(folder, 0.3, seed=7)
    again = split_folder(folder, 0.3, seed=7)
    other = split_folder(folder, 0.3, seed=8)
    assert first == again
    assert first.val.paths != other.val.paths
    assert first.val.counts() == {"blue": 3, "green": 3, "red": 3}
    assert set(first.train.paths).isdisjoint(first.val.paths)
    assert len(first.train) + len(first.val) == len(folder)


def test_class_weights_only_when_imbalanced(tmp_path):
    balanced = scan_folder(str(make_image_folder(tmp_path / "b", per_class=4, size=8)))
    assert class_weights(balanced, "auto") == {}
    assert class_weights(balanced, "on") == {0: 1.0, 1: 1.0, 2: 1.0}
    root = make_image_folder(tmp_path / "i", per_class=2, size=8, classes={"rare": (0, 0, 0)})
    make_image_folder(root, per_class=8, size=8, classes={"common": (255, 255, 255)})
    weights = class_weights(scan_folder(str(root)), "auto")
    assert weights[1] == pytest.approx(2.5) and weights[0] == pytest.approx(0.625)  # common=index 0
    assert class_weights(scan_folder(str(root)), "off") == {}


def test_load_image_errors_are_typed(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageReadError):
        load_image(bad, 16)
