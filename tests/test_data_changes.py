"""Runs notice changed data: added class, removed images, edited image, renamed class -> the right stages rerun.

Also: one run decodes each image once (training, QAT, calibration and evaluation
read the decoded store), and `edgetl train` on a changed folder starts over
instead of failing with a shape mismatch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import make_image_folder

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

from edgetl import images  # noqa: E402
from edgetl.cli import main  # noqa: E402

# Tiny and fast: the smallest backbone with random weights at 32 px, one head epoch, no fine-tuning, a token benchmark.
MODEL = ["--backbone", "mobilenet_v1", "--alpha", "0.25", "--weights", "none", "--size", "32", "--epochs", "1",
         "--fine-tune-epochs", "0"]
BENCH = ["--bench-threads", "1", "--bench-seconds", "0", "--bench-runs", "2", "--no-progress"]
FAST = MODEL + ["--variants", "fp32"] + BENCH
TWO = {"red": (220, 40, 40), "green": (40, 200, 60)}


def _run(data: Path, out: Path):
    result = CliRunner().invoke(main, ["run", str(data), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return result.output


def _stage(output: str, index: int, name: str) -> str:
    """The header line of stage ``name``, ``index`` among train..report (after the tune stage, off here)."""
    return next(line for line in output.splitlines() if line.startswith(f"[{index + 1}/7] {name}:"))


def _store_index(out: Path) -> dict:
    return json.loads(next((out / "store").glob("*/index.json")).read_text())


def test_changed_data_reruns_training_and_every_stage_after_it(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=5, size=40, classes=TWO)
    out = tmp_path / "run"
    _run(data, out)
    assert (out / "labels.txt").read_text() == "green\nred\n"
    assert _store_index(out)["rows"] == 10

    # Unchanged (files only touched): every stage skipped, nothing decoded again.
    for path in data.rglob("*.png"):
        path.touch()
    output = _run(data, out)
    assert "skipped" in _stage(output, 1, "train") and "skipped" in _stage(output, 4, "eval")
    assert "data changed" not in output

    # Added class: retrained on three classes, and export/eval/bench follow; only the new images are decoded.
    make_image_folder(data, per_class=5, size=40, classes={"blue": (40, 60, 220)}, seed=1)
    output = _run(data, out)
    assert "data changed since" in output and "class 'blue' added (5 images)" in output
    for index, stage in ((1, "train"), (3, "export"), (4, "eval"), (5, "bench")):
        assert "skipped" not in _stage(output, index, stage), output
    assert (out / "labels.txt").read_text() == "blue\ngreen\nred\n"
    assert json.loads((out / "export" / "manifest.json").read_text())["labels"] == ["blue", "green", "red"]
    assert _store_index(out)["rows"] == 15
    assert "Shape mismatch" not in output

    # Removed images, an edited image (same name, new pixels) and a renamed class folder, in one go to keep
    # the test short (tests/test_identity.py names each change on its own).
    (data / "red" / "img_3.png").unlink()
    (data / "red" / "img_4.png").unlink()
    Image.new("RGB", (40, 40), (10, 10, 10)).save(data / "blue" / "img_0.png")
    shutil.move(str(data / "green"), str(data / "lime"))
    output = _run(data, out)
    assert ("class 'green' renamed to 'lime'; 2 images removed (e.g. 'img_3.png'); 1 image edited (e.g. 'img_0.png')"
            in output), output
    for index, stage in ((1, "train"), (3, "export"), (4, "eval"), (5, "bench")):
        assert "skipped" not in _stage(output, index, stage), output
    assert (out / "labels.txt").read_text() == "blue\nlime\nred\n"
    record = json.loads((out / "dataset.json").read_text())
    assert not any(p.endswith(("red/img_3.png", "red/img_4.png")) for p, _ in record["train"] + record["val"])
    edited = str(data / "blue" / "img_0.png")
    assert record["identity"]["files"][edited][1] == images.file_digest_bytes(Path(edited).read_bytes())
    report = json.loads((out / "report.json").read_text())
    assert report["val_images"] == len(record["val"])

    # And the same command once more: all skipped again.
    output = _run(data, out)
    assert "skipped" in _stage(output, 1, "train") and "data changed" not in output


def test_one_run_decodes_each_image_once(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "data", per_class=6, size=40, classes=TWO)
    calls = []
    original = images._decode

    def counting(handle, draft_size):
        calls.append(draft_size)
        return original(handle, draft_size)

    monkeypatch.setattr(images, "_decode", counting)
    result = CliRunner().invoke(main, ["run", str(data), "--out", str(tmp_path / "run"), *MODEL, *BENCH,
                                       "--variants", "qat-int8", "--qat-epochs", "1", "--calibration-images", "8"])
    assert result.exit_code == 0, result.output
    # Training, QAT (calibration, fine-tuning, accuracy), the export's calibration and verification and the
    # eval stage all read the store: 12 files, 12 decodes.
    assert len(calls) == 12, len(calls)


def test_train_on_a_changed_folder_starts_over_instead_of_a_shape_mismatch(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=4, size=40, classes=TWO)
    out = tmp_path / "run"
    args = ["train", str(data), "--out", str(out), *MODEL]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    make_image_folder(data, per_class=4, size=40, classes={"blue": (40, 60, 220)}, seed=1)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "data changed since the checkpoints" in again.output and "class 'blue' added (4 images)" in again.output
    assert "Training starts over" in again.output and "resuming" not in again.output
    result = json.loads((out / "train_result.json").read_text())
    assert result["class_names"] == ["blue", "green", "red"] and np.asarray(result["confusion_matrix"]).shape == (3, 3)
    # The same data again: resumed, nothing retrained.
    third = CliRunner().invoke(main, args)
    assert third.exit_code == 0 and "resuming from checkpoints" in third.output and "[head] epoch" not in third.output


def test_full_disk_while_decoding_is_one_line_and_the_next_run_trains(tmp_path, monkeypatch):
    import errno

    from edgetl.data import store as store_lib

    data = make_image_folder(tmp_path / "data", per_class=4, size=40, classes=TWO)
    args = ["train", str(data), "--out", str(tmp_path / "run"), *MODEL]
    real = store_lib._pwrite
    written = {"rows": 0}

    def full_disk(fd, pixels, offset):
        written["rows"] += 1
        if written["rows"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, pixels, offset)

    monkeypatch.setattr(store_lib, "_pwrite", full_disk)
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 1
    errors = [line for line in failed.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: No space left on device while writing the decoded store")
    assert "Traceback" not in failed.output and not (tmp_path / "run" / "model.keras").exists()
    monkeypatch.setattr(store_lib, "_pwrite", real)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "run" / "train_result.json").read_text())["class_names"] == ["green", "red"]
