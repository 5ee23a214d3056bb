"""Every backbone builds a flat classifier; weights come from files, offline folders or Keras' cache."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

from edgetl.config import ModelConfig  # noqa: E402
from edgetl.errors import WeightsError  # noqa: E402
from edgetl.model import head, registry  # noqa: E402
from edgetl.model.keras import keras  # noqa: E402
from tests.conftest import KERAS_WEIGHTS  # noqa: E402

V2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.mark.parametrize("name", registry.list_backbones())
def test_every_backbone_builds_flat_and_predicts(name):
    model = head.build_classifier(ModelConfig(name, size=32, weights="none"), num_classes=3)
    assert head.is_flat(model)
    assert model.input_shape == (None, 32, 32, 3)
    probabilities = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"), verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert all(not layer.trainable for layer in head.backbone_layers(model))
    has_rescaling = head.PREPROCESS_LAYER in [layer.name for layer in model.layers]
    assert has_rescaling == (not registry.get(name).preprocessing.in_model)


def test_hidden_layer_head_and_fine_tune_keeps_batchnorm_frozen():
    model = head.build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=32, weights="none", hidden_units=16), 2)
    assert head.head_layer_names(model) == [
        "edgetl_head_dropout_hidden", "edgetl_head_hidden", "edgetl_head_dropout", "edgetl_head_classifier"]
    unfrozen = head.set_fine_tune(model, 20)
    trainable = [layer for layer in head.backbone_layers(model) if layer.trainable]
    assert 0 < unfrozen <= 20 and trainable
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert all(model.get_layer(name).trainable for name in head.head_layer_names(model))


def test_saved_model_reloads_in_safe_mode(tmp_path):
    model = head.build_classifier(ModelConfig("mobilenet_v3_small", size=32, weights="none"), 2)
    model.save(str(tmp_path / "m.keras"))
    loaded = head.load_model(tmp_path / "m.keras")
    x = np.full((1, 32, 32, 3), 128.0, np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_weights_file_that_does_not_fit_is_a_clear_error(tmp_path):
    other = keras.applications.MobileNet(include_top=False, weights=None, alpha=0.25, input_shape=(32, 32, 3))
    other.save_weights(str(tmp_path / "v1.h5"))
    with pytest.raises(WeightsError, match=r"do not fit mobilenet_v2 \(alpha=0.35"):
        head.build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=32, weights=str(tmp_path / "v1.h5")), 2)


def test_missing_weights_file_and_bad_alpha():
    with pytest.raises(WeightsError, match="neither 'imagenet', 'none' nor an existing file"):
        head.resolve(ModelConfig("mobilenet_v2", weights="/nope/w.h5"))
    with pytest.raises(WeightsError, match="alpha=0.6"):
        head.resolve(ModelConfig("mobilenet_v2", alpha=0.6, weights="imagenet"))


def test_weights_dir_without_the_file(tmp_path):
    with pytest.raises(WeightsError, match=f"'{V2_035}'.*is not in --weights-dir"):
        head.resolve(ModelConfig("mobilenet_v2", alpha=0.35, weights="imagenet", weights_dir=str(tmp_path)))


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    from tf_keras.src.utils import data_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/x.h5: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_utils, "get_file", offline)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EDGETL_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError, match="Could not get ImageNet weights.*Offline\\? Copy the file into ~/.keras/models"):
        head.build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=32, weights="imagenet"), 2)


def _first_conv_kernel(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)).get_weights()[0]


def test_offline_weights_dir_loads_real_imagenet_weights(shared_assets):
    if not (KERAS_WEIGHTS / V2_035).is_file():
        pytest.skip("MobileNetV2 0.35 weights absent")
    model = head.build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=96, weights="imagenet",
                                              weights_dir=str(KERAS_WEIGHTS)), 2)
    random_model = head.build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=96, weights="none"), 2)
    assert not np.allclose(_first_conv_kernel(model), _first_conv_kernel(random_model))
    features = head.feature_extractor(model).predict(np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)), verbose=0)
    assert features.std() > 0.01  # real weights: informative features, not the ~1e-12 of random init


def test_imagenet_from_keras_cache_under_home(keras_home, monkeypatch):
    monkeypatch.delenv("EDGETL_WEIGHTS_DIR", raising=False)
    if not (keras_home / ".keras" / "models" / V2_035).is_file():
        pytest.skip("MobileNetV2 0.35 weights absent")
    resolved = head.resolve(ModelConfig("mobilenet_v2", alpha=0.35, size=64, weights="imagenet"))
    assert resolved.weights == str(keras_home / ".keras" / "models" / V2_035)  # the 224 px file serves 64 px
    model = head.build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=64, weights="imagenet"), 2)
    from_dir = head.build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=64, weights="imagenet",
                                                 weights_dir=str(KERAS_WEIGHTS)), 2)
    np.testing.assert_array_equal(_first_conv_kernel(model), _first_conv_kernel(from_dir))


def test_local_imagenet_file_keeps_keras_imagenet_only_layers(tmp_path, monkeypatch):
    # EfficientNet adds an ImageNet std scaling layer only for weights='imagenet'; a local copy of
    # the ImageNet file must build the same graph, not the one for custom weights.
    monkeypatch.setenv("HOME", str(tmp_path))
    source = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    source.save_weights(str(weights_dir / "efficientnetb0_notop.h5"))
    resolved = head.resolve(ModelConfig("efficientnet_b0", size=32, weights="imagenet", weights_dir=str(weights_dir)))
    assert resolved.imagenet and resolved.weights.endswith("efficientnetb0_notop.h5")
    from_dir = head.build_classifier(ModelConfig("efficientnet_b0", size=32, weights="imagenet", weights_dir=str(weights_dir)), 2)
    by_path = head.build_classifier(ModelConfig("efficientnet_b0", size=32, weights=str(weights_dir / "efficientnetb0_notop.h5")), 2)
    random = head.build_classifier(ModelConfig("efficientnet_b0", size=32, weights="none"), 2)
    layer_counts = [len(m.layers) for m in (from_dir, by_path, random)]
    assert layer_counts[0] == layer_counts[1] == layer_counts[2] + 1  # the ImageNet-only input multiply
