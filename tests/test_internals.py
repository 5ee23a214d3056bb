"""Every private TensorFlow / tf_keras / tfmot API edgetl uses (edgetl._internals), exercised on tiny models.

A version of TensorFlow, tf-keras or tfmot that moves one of them fails here, naming it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")
pytestmark = pytest.mark.tf

from edgetl import _internals  # noqa: E402
from edgetl.model.keras import keras, tf  # noqa: E402

SIZE = 8


def _model():
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    shifted = x + 3.0  # a raw op: Keras wraps it in a TFOpLambda layer
    x = keras.layers.GlobalAveragePooling2D(name="pool")(shifted)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="dense")(x), name="tiny")


def test_functional_graph_accessors():
    model = _model()
    assert _internals.is_functional(model) and not _internals.is_functional(keras.layers.Dense(1))
    assert [layer.name for layer in _internals.input_layers(model)] == ["image"]
    assert _internals.nested_outputs(model) is model.outputs[0] or _internals.nested_outputs(model) == model.outputs
    nodes = _internals.ordered_nodes(model)
    assert [node.layer.name for node in nodes][:2] == ["scale", "conv"] and nodes[-1].layer.name == "dense"
    add = next(node for node in nodes if _internals.is_tf_op_layer(node.layer))
    conv = next(node for node in nodes if node.layer.name == "conv")
    assert _internals.node_input_ids(add) == [_internals.tensor_id(conv.outputs)]
    assert _internals.producing_layer(conv.outputs) is conv.layer
    marker = tf.constant(1.0)
    args, kwargs = _internals.node_arguments(add, {_internals.tensor_id(conv.outputs): marker})
    assert args[0] is marker and 3.0 in list(args[1:]) + list(kwargs.values())


def test_tfmot_quantizer_accessors():
    from edgetl.quant.scheme import quantize

    qat_model, _ = quantize(_model_without_raw_ops())
    quantize_layers = [layer for layer in qat_model.layers if _internals.is_quantize_layer(layer)]
    assert len(quantize_layers) == 1 and not _internals.is_quantize_layer(qat_model.layers[-1])
    assert _internals.set_input_quantizer_range(qat_model, 0.0, 255.0) == 1
    assert quantize_layers[0].quantizer_vars["max_var"].numpy() == 255.0
    pairs = _internals.moving_average_range_variables(qat_model)
    assert len(pairs) >= 2 and all(lo.shape == () and hi.shape == () for lo, hi in pairs)


def _model_without_raw_ops():
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="dense")(x))


def test_converter_internals(tmp_path):
    model = _model_without_raw_ops()
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    _internals.calibrate_only(converter)
    calibrated = converter.convert()
    quantized = _internals.quantize_calibrated(calibrated, tf.uint8, tf.uint8)
    from edgetl.modelfile import parse_model

    assert not parse_model(calibrated).fully_integer and parse_model(quantized).inputs[0].dtype == "uint8"
    assert _internals.keep_dense_weights_per_tensor(converter)  # the switch exists (set here, not used)
    assert hasattr(_internals.tensorflow_tflite_schema(), "ModelT")  # the object API, as ai-edge-litert's


def test_keras_utilities_and_determinism(tmp_path):
    from tf_keras.src.utils import data_utils

    with _internals.keras_get_file_returns("/some/file.h5"):
        assert data_utils.get_file("x", origin="http://example.invalid/x") == "/some/file.h5"
    assert data_utils.get_file.__name__ == "get_file"
    model = _model_without_raw_ops()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    best = tmp_path / "best.h5"
    checkpoint = _internals.atomic_model_checkpoint(filepath=str(best), monitor="accuracy", save_weights_only=True)
    model.fit(np.zeros((2, SIZE, SIZE, 3), np.float32), np.array([0, 1]), epochs=1, verbose=0, callbacks=[checkpoint])
    assert best.is_file() and [p.name for p in tmp_path.iterdir()] == ["best.h5"]
    before = _internals.op_determinism_enabled()
    with _internals.op_determinism(True):
        assert _internals.op_determinism_enabled()
    assert _internals.op_determinism_enabled() == before
