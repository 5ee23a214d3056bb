"""Every private TensorFlow, tf_keras and tfmot API edgetl uses, one function each: what it does, why, and the versions checked.

Checked against TensorFlow 2.21.0, tf-keras 2.21.0 and tensorflow-model-optimization
0.8.1, the triple the ``[train]`` extra pins. Everything else in edgetl goes
through public APIs; what is here has no public equivalent (each entry says
why). ``tests/test_internals.py`` calls every entry on a tiny model, so a
version bump that moves one fails there, naming it, before it fails inside a
stage. Nothing is imported when this module loads: TensorFlow is imported by the
functions, on first use.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

CHECKED_WITH = {"tensorflow": "2.21.0", "tf-keras": "2.21.0", "tensorflow-model-optimization": "0.8.1"}


# ============================================================================
# tf_keras functional graphs (edgetl.quant.rewrite)
# ============================================================================
# Keras has no public API for walking a functional model node by node and re-calling each layer on
# new tensors (``clone_model`` maps one layer to one layer; the rewrite replaces chains of raw ops
# and inlines nested models). ``Functional`` itself runs its graph with these attributes
# (tf_keras/src/engine/functional.py, ``_run_internal_graph``).


def is_functional(model: Any) -> bool:
    """True for a functional (or Sequential) graph network: ``Model._is_graph_network``."""
    return bool(getattr(model, "_is_graph_network", False))


def input_layers(model: Any) -> List[Any]:
    """The model's ``InputLayer`` objects, in input order (``Functional._input_layers``)."""
    return list(model._input_layers)  # pylint: disable=protected-access


def nested_outputs(model: Any) -> Any:
    """The model's outputs in their nested structure (``Functional._nested_outputs``)."""
    return model._nested_outputs  # pylint: disable=protected-access


def tensor_id(tensor: Any) -> str:
    """The key Keras gives a KerasTensor in a node's ``flat_output_ids`` (``str(id(tensor))``, node.py)."""
    return str(id(tensor))


def ordered_nodes(model: Any) -> List[Any]:
    """The model's layer calls (``Node`` objects) in the order ``Functional`` runs them, input nodes left out."""
    nodes = []
    by_depth = model._nodes_by_depth  # pylint: disable=protected-access
    for depth in sorted(by_depth, reverse=True):
        nodes.extend(node for node in by_depth[depth] if not node.is_input)
    return nodes


def node_input_ids(node: Any) -> List[str]:
    """The ids of the KerasTensors a node consumes, in argument order (``Node._keras_inputs_ids_and_indices``)."""
    return [kt_id for kt_id, _ in node._keras_inputs_ids_and_indices]  # pylint: disable=protected-access


def node_arguments(node: Any, tensors: Dict[str, Any]) -> Tuple[tuple, dict]:
    """The node's call arguments with every KerasTensor replaced by ``tensors[id]``.

    ``Node.map_arguments`` does this for ``Functional`` but pops from per-id lists;
    this reads one tensor per id, so a tensor used twice maps twice.
    """
    import tensorflow as tf

    flat = list(node._flat_arguments)  # pylint: disable=protected-access
    for kt_id, index in node._keras_inputs_ids_and_indices:  # pylint: disable=protected-access
        flat[index] = tensors[kt_id]
    args, kwargs = tf.nest.pack_sequence_as((node.call_args, list(node.call_kwargs.values())), flat)
    return args, dict(zip(node.call_kwargs.keys(), kwargs))


def producing_layer(tensor: Any) -> Optional[Any]:
    """The layer whose call produced a KerasTensor (``KerasTensor._keras_history.layer``), or None."""
    history = getattr(tensor, "_keras_history", None)
    return history.layer if history is not None else None


def is_tf_op_layer(layer: Any) -> bool:
    """True for the ``TFOpLambda`` layers Keras wraps raw TensorFlow ops in (``x + 3``, ``tf.math.multiply``).

    The class lives in ``tf_keras.src.layers.core.tf_op_layer`` and is not exported.
    """
    from tf_keras.src.layers.core.tf_op_layer import TFOpLambda

    return isinstance(layer, TFOpLambda)


# ============================================================================
# tfmot quantized models (edgetl.quant)
# ============================================================================
# tfmot's public API builds QAT models but does not expose the layer that quantizes the model
# input (``QuantizeLayer``) or the range variables of its quantizers.


def is_quantize_layer(layer: Any) -> bool:
    """True for tfmot's ``QuantizeLayer`` (quantize_layer.py), which fake-quantizes a model input.

    Only a model built with tfmot can hold one, so without tfmot loaded the answer is False
    and tfmot is not imported (the float exports never load it).
    """
    import sys

    if "tensorflow_model_optimization" not in sys.modules:
        return False
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer

    return isinstance(layer, QuantizeLayer)


def set_input_quantizer_range(qat_model: Any, low: float, high: float) -> int:
    """Sets the min/max variables of every ``QuantizeLayer`` of a QAT model; returns how many were set.

    The default 8-bit scheme quantizes a model input with an ``AllValuesQuantizer``
    (the min/max of all values seen) starting at [-6, 6]; starting it at the pixel
    range keeps it there. ``QuantizeLayer.quantizer_vars`` is the only handle on them.
    """
    count = 0
    for layer in qat_model.layers:
        if is_quantize_layer(layer) and getattr(layer, "quantizer_vars", None):
            layer.quantizer_vars["min_var"].assign(low)
            layer.quantizer_vars["max_var"].assign(high)
            count += 1
    return count


def moving_average_range_variables(qat_model: Any) -> List[Tuple[Any, Any]]:
    """(min, max) variable pairs of every ``MovingAverageQuantizer`` of a QAT model, in layer order.

    ``QuantizeWrapper`` keeps them in ``_quantize_activations`` (activation
    quantizers: ``_pre_activation_vars`` / ``_post_activation_vars``) and in
    ``_output_quantizers`` / ``_output_quantizer_vars`` (output quantizers); range
    calibration reads and sets them directly (``edgetl.quant.qat.calibrate_ranges``).
    """
    import tensorflow_model_optimization as tfmot

    moving_average = tfmot.quantization.keras.quantizers.MovingAverageQuantizer
    pairs = []
    for layer in qat_model.layers:
        if not isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            continue
        for activation in getattr(layer, "_quantize_activations", []):
            if isinstance(activation.quantizer, moving_average):
                for attribute in ("_pre_activation_vars", "_post_activation_vars"):
                    variables = getattr(activation, attribute, None)
                    if variables:
                        pairs.append((variables["min_var"], variables["max_var"]))
        output_quantizers = getattr(layer, "_output_quantizers", None)
        if output_quantizers and isinstance(output_quantizers[0], moving_average):
            variables = layer._output_quantizer_vars  # pylint: disable=protected-access
            pairs.append((variables["min_var"], variables["max_var"]))
    return pairs


# ============================================================================
# The TFLite converter (edgetl.export)
# ============================================================================


def calibrate_only(converter: Any) -> None:
    """Makes ``convert()`` return the calibrated float model, with each tensor's recorded range, unquantized.

    ``TFLiteConverter._experimental_calibrate_only``: edgetl rewrites the
    input's range there (the folded input normalisation) before quantizing
    with ``quantize_calibrated``. No public switch stops between the two steps.
    """
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access


def quantize_calibrated(calibrated: bytes, input_type: Any, output_type: Any) -> bytes:
    """Quantizes a model from ``calibrate_only``: the converter's own last step (``TFLiteConverter._quantize``).

    ``tensorflow.lite.python.convert.mlir_quantize`` is not exported.
    """
    from tensorflow.lite.python.convert import mlir_quantize

    return mlir_quantize(calibrated, False, input_data_type=input_type, output_data_type=output_type)


def tensorflow_tflite_schema() -> Any:
    """TFLite's flatc-generated schema module with the object API, as TensorFlow ships it.

    ``ai_edge_litert.schema_py_generated`` is the one edgetl uses; where only
    TensorFlow is installed, its copy (``tensorflow.lite.python.schema_py_generated``,
    not exported) repacks models the same way (``edgetl.tflite_schema.object_api``).

    Raises:
      ImportError: TensorFlow is not installed.
    """
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def keep_dense_weights_per_tensor(converter: Any) -> bool:
    """Dynamic-range quantization with one scale per FULLY_CONNECTED weight tensor; False when the flag is gone.

    Since TF 2.17 the dynamic-range quantizer writes per-channel dense weights,
    FULLY_CONNECTED op version 12 (TFLite >= 2.17); the private
    ``_experimental_disable_per_channel_quantization_for_dense_layers`` keeps
    version 9 (TFLite 2.4) at the same size. See ``edgetl.export.min_runtime``.
    """
    attribute = "_experimental_disable_per_channel_quantization_for_dense_layers"
    if not hasattr(converter, attribute):
        return False
    setattr(converter, attribute, True)
    return True


# ============================================================================
# tf_keras utilities and TensorFlow configuration
# ============================================================================


@contextlib.contextmanager
def keras_get_file_returns(path: str) -> Iterator[None]:
    """Makes Keras' ImageNet download (``tf_keras.src.utils.data_utils.get_file``) return a local file.

    ``keras.applications.X(weights="imagenet")`` keeps layers it adds only for
    its ImageNet weights (EfficientNet's input std scaling); passing the file path
    instead would drop them. ``applications`` calls the module-level ``get_file``,
    so it is replaced for the duration of the build.
    """
    from tf_keras.src.utils import data_utils

    original = data_utils.get_file
    data_utils.get_file = lambda *args, **kwargs: path
    try:
        yield
    finally:
        data_utils.get_file = original


def atomic_model_checkpoint(**kwargs: Any) -> Any:
    """A ``keras.callbacks.ModelCheckpoint`` whose every save goes to a temporary file renamed into place.

    A kill during a save must not leave a corrupt best-weights file; the only
    hook between "decide to save" and "write the file" is the private
    ``ModelCheckpoint._save_handler(filepath)``.
    """
    from edgetl._atomic import atomic_path
    from edgetl.model.keras import keras

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        def _save_handler(self, filepath):
            with atomic_path(filepath, suffix=".h5") as tmp:
                super()._save_handler(str(tmp))

    return AtomicModelCheckpoint(**kwargs)


@contextlib.contextmanager
def op_determinism(enabled: bool) -> Iterator[None]:
    """TensorFlow's op determinism for the block, restored afterwards (it is process-wide).

    ``tf.config.experimental.enable_op_determinism`` is public, but turning it
    off again and asking whether it is on are not
    (``tensorflow.python.framework.config``).
    """
    from tensorflow.python.framework import config as tf_config

    switch = enabled and not tf_config.is_op_determinism_enabled()
    if switch:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            tf_config.disable_op_determinism()


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on (``tensorflow.python.framework.config``)."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


__all__ = ["CHECKED_WITH", "atomic_model_checkpoint", "calibrate_only", "input_layers", "is_functional",
           "is_quantize_layer", "is_tf_op_layer", "keep_dense_weights_per_tensor", "keras_get_file_returns",
           "moving_average_range_variables", "nested_outputs", "node_arguments", "node_input_ids",
           "op_determinism", "op_determinism_enabled", "ordered_nodes", "producing_layer", "quantize_calibrated",
           "set_input_quantizer_range", "tensor_id", "tensorflow_tflite_schema"]
