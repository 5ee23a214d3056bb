"""The Keras-side entries of the bad-input catalogue (docs/errors.md): run directories and a full disk during export."""

from __future__ import annotations

import builtins
import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.tf

from device_models import build_colour_model  # noqa: E402
from test_errors_catalogue import assert_clean_error  # noqa: E402

from edgetl import _atomic  # noqa: E402
from edgetl.cli import main  # noqa: E402
from edgetl.config import ModelConfig, dump_yaml  # noqa: E402
from edgetl.model_metadata import labels_text  # noqa: E402
from edgetl.run_dir import DatasetRecord, RunPaths  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory as `edgetl train` leaves it, with an untrained MobileNetV2 alpha 0.35 at 32 px."""
    from edgetl.model.head import build_classifier

    root = tmp_path_factory.mktemp("catalogue") / "run"
    paths = RunPaths.of(root)
    root.mkdir()
    config = ModelConfig("mobilenet_v2", alpha=0.35, size=SIZE, weights="none")
    build_classifier(config, 2).save(paths.model)
    paths.dataset.write_text(json.dumps(DatasetRecord(("ants", "bees"), SIZE, (), ()).to_dict()))
    paths.labels.write_text(labels_text(["ants", "bees"]))
    paths.config.write_text(dump_yaml({"model": config}))
    return root


def copy_run(run_dir: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, target)
    return target


@pytest.mark.parametrize("command", ["export", "qat"])
def test_run_dir_model_damaged(run_dir, tmp_path, command):
    run = copy_run(run_dir, tmp_path / "run")
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])
    assert_clean_error(CliRunner().invoke(main, [command, str(run)]), "model.keras", "damaged or truncated", "edgetl train")


def test_run_dir_model_with_python_code(tmp_path):
    """A Lambda layer would run arbitrary code on load: safe_mode refuses it, edgetl says why."""
    from edgetl.model.keras import keras

    run = tmp_path / "run"
    run.mkdir()
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x * 2.0)(inputs)))
    keras.Model(inputs, outputs).save(run / "model.keras")
    assert_clean_error(CliRunner().invoke(main, ["export", str(run), "--variants", "fp32", "--no-verify"]),
                       "holds Python code (a Lambda layer)", "safe_mode=True")


def test_full_disk_during_export_keeps_finished_files(run_dir, tmp_path, monkeypatch):
    """The disk fills while the .tflite bytes are written: one line, earlier files intact, no temp file left."""
    run = copy_run(run_dir, tmp_path / "run")
    export = run / "export"
    export.mkdir()
    previous = {name: data for name, data in (("mobilenet_v2_0.35_32_fp32.tflite", build_colour_model()),
                                              ("labels.txt", b"ants\nbees\n"), ("manifest.json", b"{}\n"))}
    for name, data in previous.items():
        (export / name).write_bytes(data)
    real_open = builtins.open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:4096])
            raise OSError(errno.ENOSPC, "No space left on device")

    def filling_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode and ".tflite" in str(file) else handle

    monkeypatch.setattr(_atomic, "open", filling_open, raising=False)
    result = CliRunner().invoke(main, ["export", str(run), "--variants", "fp32", "--no-verify"])
    assert_clean_error(result, "no space left on device while writing", "fp32.tflite", "intact")
    for name, data in previous.items():
        assert (export / name).read_bytes() == data, name
    assert sorted(p.name for p in export.iterdir()) == sorted(previous), "a temporary file was left behind"
