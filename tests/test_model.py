"""Every backbone builds a flat classifier; weights come from files, offline folders or Keras' cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

from edgetl.cli import main  # noqa: E402
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


@pytest.fixture
def weights_server(tmp_path):
    """A real HTTP server on 127.0.0.1 standing in for Keras' weights host; yields (base URL, folder, request log)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder, requests
    finally:
        server.shutdown()
        server.server_close()


def test_imagenet_weights_are_downloaded_with_keras_into_its_cache(tmp_path, monkeypatch, weights_server):
    url, served, requests = weights_server
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("EDGETL_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv(head.WEIGHTS_URL_ENV, url)
    source = keras.applications.MobileNet(include_top=False, weights=None, alpha=0.25, input_shape=(32, 32, 3))
    source.save_weights(str(served / "mobilenet_2_5_224_tf_no_top.h5"))
    config = ModelConfig("mobilenet_v1", alpha=0.25, size=32, weights="imagenet")
    assert head.resolve(config).weights == "imagenet"  # nothing local: to be downloaded
    model = head.build_classifier(config, 2)
    cached = home / ".keras" / "models" / "mobilenet_2_5_224_tf_no_top.h5"
    assert cached.is_file() and requests == ["/mobilenet_2_5_224_tf_no_top.h5"]
    np.testing.assert_array_equal(_first_conv_kernel(model), _first_conv_kernel(source))
    assert head.resolve(config).weights == str(cached)  # the next run finds Keras' cache, no second download
    head.build_classifier(config, 2)
    assert len(requests) == 1


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch, weights_server, tiny_folder):
    url, _, requests = weights_server  # serves nothing: 404
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGETL_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv(head.WEIGHTS_URL_ENV, url)
    with pytest.raises(WeightsError, match="'mobilenet_2_5_224_tf_no_top.h5'.*are not on this machine and the download "
                                           "from http://127.0.0.1.*failed.*--weights-dir.*--weights none"):
        head.build_classifier(ModelConfig("mobilenet_v1", alpha=0.25, size=32, weights="imagenet"), 2)
    assert requests == ["/mobilenet_2_5_224_tf_no_top.h5"]
    monkeypatch.setenv(head.WEIGHTS_URL_ENV, "http://127.0.0.1:9/")  # nothing listens on the discard port
    result = CliRunner().invoke(main, ["train", str(tiny_folder), "--backbone", "mobilenet_v1", "--alpha", "0.25",
                                       "--size", "32", "--epochs", "1", "--fine-tune-epochs", "0",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "download from http://127.0.0.1:9/mobilenet_2_5_224_tf_no_top.h5 failed" in error[0]
    assert "Traceback" not in result.output


def test_imagenet_takes_the_shipped_weights_offline(tmp_path, monkeypatch):
    """MobileNetV2 0.35 ships with edgetl: --weights imagenet works with an empty Keras cache and no network."""
    from edgetl import bundled

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EDGETL_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv(head.WEIGHTS_URL_ENV, "http://127.0.0.1:9/")  # a download attempt would fail loudly
    config = ModelConfig("mobilenet_v2", alpha=0.35, size=64, weights="imagenet")
    resolved = head.resolve(config)
    assert resolved.imagenet and resolved.weights == str(bundled.WEIGHTS_DIR / V2_035)
    model = head.build_classifier(config, 2)
    by_path = head.build_classifier(dataclasses.replace(config, weights=resolved.weights), 2)
    np.testing.assert_array_equal(_first_conv_kernel(model), _first_conv_kernel(by_path))
    random_model = head.build_classifier(dataclasses.replace(config, weights="none"), 2)
    assert not np.allclose(_first_conv_kernel(model), _first_conv_kernel(random_model))
    assert (bundled.WEIGHTS_DIR / "LICENSE").is_file() and "Apache License" in (bundled.WEIGHTS_DIR / "LICENSE").read_text()


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
