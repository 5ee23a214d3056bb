"""Two-stage training: cached features == frozen backbone, CLI artifacts, bad input, SIGKILL + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

from edgetl.cli import main  # noqa: E402
from edgetl.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from edgetl.model import head  # noqa: E402
from edgetl.train import train  # noqa: E402
from tests.conftest import REPO, make_image_folder  # noqa: E402
from tests.tf_helpers import calibrated_backbone_weights  # noqa: E402


@pytest.fixture(scope="module")
def backbone_weights(tmp_path_factory) -> Path:
    return calibrated_backbone_weights(tmp_path_factory.mktemp("weights") / "mnv2_035_calibrated.h5")


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "colours", per_class=10, size=48)


def _head_weights(run_dir: Path):
    model = head.load_model(run_dir / "model.keras")
    return model.get_layer(head.CLASSIFIER_LAYER).get_weights()


def test_cached_features_give_the_same_head_as_the_frozen_backbone(colour_folder, backbone_weights, tmp_path):
    # One full batch per epoch makes the gradient independent of shuffling order.
    data = DataConfig(path=str(colour_folder), batch_size=64, augment=AugmentConfig(enabled=False))
    model = ModelConfig("mobilenet_v2", alpha=0.35, size=48, weights=str(backbone_weights), dropout=0.0)
    runs = {}
    for cached in (True, False):
        config = TrainConfig(epochs=4, fine_tune_epochs=0, cache_features=cached, early_stopping_patience=0, seed=3)
        runs[cached] = train(data, model, config, out=str(tmp_path / f"cached_{cached}"), echo=lambda line: None)
    cached_kernel, cached_bias = _head_weights(tmp_path / "cached_True")
    naive_kernel, naive_bias = _head_weights(tmp_path / "cached_False")
    assert np.abs(cached_kernel).max() > 0  # the head really trained
    np.testing.assert_allclose(cached_kernel, naive_kernel, atol=2e-4)
    np.testing.assert_allclose(cached_bias, naive_bias, atol=2e-4)
    assert runs[True].history["head"]["val_accuracy"] == pytest.approx(runs[False].history["head"]["val_accuracy"])


def test_cli_train_writes_every_artifact(colour_folder, backbone_weights, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", str(colour_folder), "--backbone", "mobilenet_v2", "--alpha", "0.35", "--size", "48",
        "--weights", str(backbone_weights), "--epochs", "15", "--fine-tune-epochs", "1", "--fine-tune-layers", "10",
        "--batch-size", "8", "--out", str(out), "--seed", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "val accuracy:" in result.output and "per-class accuracy:" in result.output
    for name in ("config.yaml", "dataset.json", "labels.txt", "model.keras", "train_result.json",
                 "plots/training_curves.png", "plots/confusion_matrix.png", "logs/head_history.csv"):
        assert (out / name).is_file(), name
    assert any((out / "logs" / "tensorboard").rglob("events.out.tfevents*"))
    assert (out / "labels.txt").read_text() == "blue\ngreen\nred\n"
    import json

    summary = json.loads((out / "train_result.json").read_text())
    assert summary["val_accuracy"] >= 0.8  # three solid colours through a calibrated random backbone
    assert len(summary["confusion_matrix"]) == 3
    from edgetl.config import from_dict, load_yaml

    saved = load_yaml(str(out / "config.yaml"))
    assert from_dict(ModelConfig, saved["model"]) == ModelConfig(
        "mobilenet_v2", alpha=0.35, size=48, weights=str(backbone_weights))
    assert from_dict(TrainConfig, saved["train"]).epochs == 15


def test_corrupt_files_are_skipped_and_training_goes_on(tmp_path, backbone_weights):
    root = make_image_folder(tmp_path / "d", per_class=4, size=48)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "red" / "empty.png").write_bytes(b"")
    result = CliRunner().invoke(main, [
        "train", str(root), "--alpha", "0.35", "--size", "48", "--weights", str(backbone_weights),
        "--epochs", "1", "--fine-tune-epochs", "0", "--out", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    assert "skipped 2 files" in result.output and "empty file (0 bytes)" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}"], "does not exist"),
        (["{empty}"], "No class folders found"),
        (["{one}"], "Only one class folder"),
        (["{few}"], "'a' has 1 (need at least 2 per class)"),
        (["{data}", "--backbone", "mobilenetv2"], "Unknown backbone 'mobilenetv2'. Did you mean 'mobilenet_v2'"),
        (["{data}", "--alpha", "0.6", "--weights", "imagenet"], "No ImageNet weights exist for 'mobilenet_v2' with alpha=0.6"),
        (["{data}", "--alpha", "0.35", "--weights", "{wrong}"], "do not fit mobilenet_v2"),
        (["{data}", "--size", "16", "--weights", "none"], "`size`=16 is too small"),
        (["{data}", "--val-fraction", "0"], "`val_fraction`=0.0 is out of range"),
    ],
    ids=["missing", "empty", "one-class", "too-few", "unknown-backbone", "no-imagenet-alpha", "wrong-weights",
         "tiny-size", "bad-fraction"],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    make_image_folder(tmp_path / "one", 3, size=8, classes={"only": (1, 2, 3)})
    make_image_folder(tmp_path / "few", 1, size=8, classes={"a": (1, 2, 3), "b": (200, 0, 0)})
    make_image_folder(tmp_path / "few", 3, size=8, classes={"b": (200, 0, 0)})
    make_image_folder(tmp_path / "data", 3, size=8)
    wrong = tmp_path / "wrong.h5"
    if "{wrong}" in args:
        from edgetl.model.keras import keras

        keras.applications.MobileNet(include_top=False, weights=None, alpha=0.25, input_shape=(32, 32, 3)).save_weights(str(wrong))
    names = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "one": tmp_path / "one",
             "few": tmp_path / "few", "data": tmp_path / "data", "wrong": wrong}
    argv = ["train", *[a.format(**names) for a in args], "--out", str(tmp_path / "run"), "--epochs", "1", "--fine-tune-epochs", "0"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def _train_cmd(data: Path, weights: Path, out: Path):
    return [sys.executable, "-m", "edgetl", "train", str(data), "--alpha", "0.35", "--size", "64",
            "--weights", str(weights), "--epochs", "2", "--fine-tune-epochs", "8", "--fine-tune-layers", "-1",
            "--patience", "0", "--batch-size", "4", "--seed", "5", "--out", str(out)]


def test_sigkill_mid_training_then_resume_continues(tmp_path, backbone_weights):
    data = make_image_folder(tmp_path / "data", per_class=8, size=64)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    reference = subprocess.run(_train_cmd(data, backbone_weights, tmp_path / "reference"), env=env,
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "killed"
    process = subprocess.Popen(_train_cmd(data, backbone_weights, out), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    history = out / "logs" / "fine_tune_history.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done_before_kill = len(history.read_text().splitlines()) - 1
    assert 2 <= done_before_kill < 8
    assert not (out / "model.keras").exists()

    resumed = subprocess.run(_train_cmd(data, backbone_weights, out), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoints" in resumed.stdout
    epochs_run = [line for line in resumed.stdout.splitlines() if line.startswith("[fine_tune] epoch")]
    assert 1 <= len(epochs_run) <= 8 - done_before_kill + 1  # at most the interrupted epoch is redone
    assert "[head] epoch" not in resumed.stdout  # stage 1 is not repeated
    assert len(history.read_text().splitlines()) - 1 >= 8 - (8 - done_before_kill - len(epochs_run))
    import json

    final = json.loads((out / "train_result.json").read_text())["val_accuracy"]
    expected = json.loads((tmp_path / "reference" / "train_result.json").read_text())["val_accuracy"]
    assert abs(final - expected) <= 0.34  # 6 val images: within two images of the uninterrupted run


def test_distribution_strategy_option(colour_folder, backbone_weights, tmp_path):
    from edgetl.model.keras import tf
    from edgetl.train import get_strategy

    assert isinstance(get_strategy("mirrored"), tf.distribute.MirroredStrategy)
    if len(tf.config.list_physical_devices("GPU")) < 2:
        assert not isinstance(get_strategy("auto"), tf.distribute.MirroredStrategy)
    result = train(DataConfig(path=str(colour_folder), batch_size=8),
                   ModelConfig("mobilenet_v2", alpha=0.35, size=48, weights=str(backbone_weights)),
                   TrainConfig(epochs=2, fine_tune_epochs=1, fine_tune_layers=5, strategy="mirrored"),
                   out=str(tmp_path / "mirrored"), echo=lambda line: None)
    assert set(result.history) == {"head", "fine_tune"}
    assert (tmp_path / "mirrored" / "model.keras").is_file()


def test_recipe_sets_defaults_and_typed_flags_override(tmp_path, monkeypatch, colour_folder):
    import edgetl.train as train_module

    seen = {}

    def fake_train(data, model, train_config, out, fresh, echo, progress=True):
        seen.update(data=data, model=model, train=train_config, out=out)
        raise SystemExit(0)

    monkeypatch.setattr(train_module, "train", fake_train)
    recipe = REPO / "models" / "mobilenet_v2_035_224.yaml"
    result = CliRunner().invoke(main, ["train", str(colour_folder), "--recipe", str(recipe), "--epochs", "3",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert seen["model"] == ModelConfig("mobilenet_v2", alpha=0.35, size=224, weights="imagenet", dropout=0.2)
    assert seen["train"].epochs == 3 and seen["train"].fine_tune_layers == 30
    assert seen["data"].path == str(colour_folder)


def test_bad_recipe_is_rejected_before_training(tmp_path, colour_folder):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  backbone: mobilenet_v2\n  alph: 0.35\n")
    result = CliRunner().invoke(main, ["train", str(colour_folder), "--recipe", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: Recipe '%s': Unknown key `model.alph`. Did you mean 'alpha'? Valid keys: "
                                     "backbone, alpha, size, weights, weights_dir, dropout, hidden_units." % recipe)
    assert not (tmp_path / "o").exists()


def test_dihedral_views_are_the_symmetries_of_a_square():
    from edgetl.data.pipeline import RandomDihedral, dihedral
    from edgetl.model.keras import tf

    image = np.arange(4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    views = {index: dihedral(tf.constant(image), index).numpy() for index in range(8)}
    expected = {0: image, 1: image[:, :, ::-1], 2: image[:, ::-1], 3: np.rot90(image, 2, axes=(1, 2)),
                4: image.transpose(0, 2, 1, 3), 5: np.rot90(image, -1, axes=(1, 2)), 6: np.rot90(image, 1, axes=(1, 2)),
                7: np.rot90(image, 2, axes=(1, 2)).transpose(0, 2, 1, 3)}
    for index in range(8):
        np.testing.assert_array_equal(views[index], expected[index])
    assert len({v.tobytes() for v in views.values()}) == 8
    # Objects in any orientation: rotations only when mirror images are not the same class.
    assert AugmentConfig(orientation="any", flip=False).views() == (0, 5, 3, 6)
    assert AugmentConfig(orientation="any").views()[:3] == (0, 1, 5) and len(AugmentConfig(orientation="any").views()) == 8
    assert AugmentConfig().views() == (0, 1) and AugmentConfig(enabled=False).views() == (0,)
    batch = np.repeat(image, 64, axis=0)
    for mirror, allowed in ((False, (0, 3, 5, 6)), (True, tuple(range(8)))):
        out = RandomDihedral(mirror=mirror, seed=1)(tf.constant(batch), training=True).numpy()
        seen = {next(i for i in range(8) if np.array_equal(o[None], views[i])) for o in out}
        assert seen <= set(allowed) and len(seen) >= 3, (mirror, seen)
    np.testing.assert_array_equal(RandomDihedral()(tf.constant(batch), training=False).numpy(), batch)


def test_stage1_trains_on_the_feature_views(colour_folder, backbone_weights, tmp_path):
    lines = []
    data = DataConfig(path=str(colour_folder), batch_size=16, augment=AugmentConfig(orientation="any"))
    model = ModelConfig("mobilenet_v2", alpha=0.35, size=32, weights=str(backbone_weights))
    result = train(data, model, TrainConfig(epochs=1, fine_tune_epochs=0, feature_views=3), out=str(tmp_path / "run"),
                   echo=lines.append)
    checkpoints = tmp_path / "run" / "checkpoints"
    features = [np.load(checkpoints / name) for name in
                ("features_train.npy", "features_train_view1.npy", "features_train_view5.npy")]
    assert not (checkpoints / "features_train_view2.npy").exists()
    assert len({f.shape for f in features}) == 1 and not np.allclose(features[0], features[2])
    assert any("(view 3 of 3)" in line for line in lines) and 0 <= result.val_accuracy <= 1


@pytest.mark.parametrize("schedule, warmup, expected", [
    ("cosine", 0, {0: 3e-4, 50: 1.5e-4, 100: 0.0}),
    ("cosine", 2, {0: 0.0, 10: 1.5e-4, 20: 3e-4, 60: 1.5e-4, 100: 0.0}),  # 2 epochs of 10 steps to the peak
    ("constant", 2, {0: 0.0, 10: 1.5e-4, 20: 3e-4, 60: 3e-4, 100: 3e-4}),
])
def test_fine_tune_schedule_warms_up_then_follows_the_schedule(schedule, warmup, expected):
    from edgetl.train import fine_tune_schedule

    rate = fine_tune_schedule(TrainConfig(fine_tune_epochs=10, fine_tune_learning_rate=3e-4, lr_schedule=schedule,
                                          warmup_epochs=warmup), steps_per_epoch=10)
    for step, value in expected.items():
        assert float(rate(step)) == pytest.approx(value, abs=1e-9), step
    assert fine_tune_schedule(TrainConfig(lr_schedule="constant"), 10) == TrainConfig().fine_tune_learning_rate
