"""Real data: MobileNetV2 a0.35@224 with ImageNet weights on hymenoptera vs the same recipe from random init."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.tf, pytest.mark.slow, pytest.mark.shared]

from click.testing import CliRunner  # noqa: E402

from edgetl.cli import main  # noqa: E402
from tests.conftest import HYMENOPTERA, KERAS_WEIGHTS  # noqa: E402

WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def _train(out, weights_args):
    argv = ["train", str(HYMENOPTERA / "train"), "--val", str(HYMENOPTERA / "val"), "--backbone", "mobilenet_v2",
            "--alpha", "0.35", "--size", "224", "--epochs", "10", "--fine-tune-epochs", "5", "--seed", "42",
            "--out", str(out), *weights_args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    import json

    return json.loads((out / "train_result.json").read_text())["val_accuracy"]


def test_imagenet_transfer_beats_random_init_on_hymenoptera(keras_home, tmp_path):
    if not (HYMENOPTERA / "val").is_dir() or not (KERAS_WEIGHTS / WEIGHTS).is_file():
        pytest.skip("hymenoptera data or MobileNetV2 0.35 weights absent")
    pretrained = _train(tmp_path / "imagenet", ["--weights", "imagenet"])  # found in the temp HOME's Keras cache
    scratch = _train(tmp_path / "scratch", ["--weights", "none"])
    print(f"hymenoptera val accuracy: imagenet {pretrained:.4f}, random init {scratch:.4f}")
    assert pretrained >= 0.88
    assert scratch <= 0.70 and pretrained - scratch >= 0.2
