"""Quantization-aware fine-tuning (tfmot) of a trained edgetl classifier, on every registry backbone.

``tfmot.quantization.keras.quantize_model`` alone (TF 2.21, tf-keras, tfmot
0.8.1) quantizes only MobileNetV2 and the minimalistic MobileNetV3s, and only
without an input ``Rescaling``. edgetl first rewrites the float model into an
equivalent graph of layers tfmot knows, then quantizes every layer:

* Input normalisation (``Rescaling``, ``Normalization`` and EfficientNet's
  ImageNet ``tf.math.multiply`` at the start of the graph) is a per-channel
  affine map. It becomes one frozen 1x1 ``DepthwiseConv2D`` quantized at its
  output; the converter gives its weights per-channel int8 scales (exact for
  one value per channel), TFLite runs it as a single int8 op the Edge TPU
  maps, and the model keeps taking raw [0, 255] pixels. When the map is the
  same for all three channels (MobileNet's ``x / 127.5 - 1``, a plain
  ``x / 255``), the int8 files fold it into the input tensor's own
  quantization instead (see ``InputFold``), as Google's TF2 PTQ MobileNets
  do: the device still feeds raw pixels and the full-resolution op is gone.
  EfficientNet's per-channel ImageNet mean/std keeps the depthwise op, since
  TFLite activations have one scale per tensor.
* MobileNetV3's hard-swish, built from raw ``TFOpLambda`` ops (``x + 3``,
  ``* 1/6``) that tfmot cannot clone, becomes a ``HardSwish`` layer (and the
  squeeze-excite gate a ``HardSigmoid`` layer) quantized at its output only, so
  the converter still fuses it into one TFLite ``HARD_SWISH`` op.
* ``Multiply`` (squeeze-excite in EfficientNet/V2 and MobileNetV3) has no
  tfmot registry entry; it gets an output-quantizing ``QuantizeConfig``, which
  matches TFLite's int8 ``MUL`` (inputs already quantized upstream).
* A backbone nested as a sub-model is inlined, since tfmot refuses nested models.

tfmot starts every activation range at [-6, 6] and moves it with a 0.999
moving average, so a few epochs of QAT would keep ranges far from the data.
edgetl initialises the ranges from calibration batches first (see
``calibrate_ranges``), like post-training quantization does, then fine-tunes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgetl._atomic import atomic_path, write_json
from edgetl._optional import import_optional
from edgetl.config import QATConfig
from edgetl.errors import ExportError, RunDirError
from edgetl.model.keras import keras, tf
from edgetl.run_dir import DatasetRecord, RunPaths

# tfmot reads TF_USE_LEGACY_KERAS at import: it must come after edgetl.model.keras.
tfmot = import_optional("tensorflow_model_optimization", "train", "Quantization-aware training")

from tensorflow_model_optimization.python.core.quantization.keras import quantizers as _tfmot_quantizers  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer as _tfmot_quantize_layer  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_configs as _tfmot_configs,
    default_8bit_quantize_scheme as _tfmot_scheme,
)
from tf_keras.src.layers.core.tf_op_layer import TFOpLambda  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = [
    "QATConfig",
    "QATResult",
    "HardSwish",
    "HardSigmoid",
    "FixedRangeOutputQuantizeConfig",
    "InputFold",
    "input_fold",
    "prepare_for_quantization",
    "quantize",
    "calibrate_ranges",
    "quantize_aware_finetune",
    "load_qat_model",
    "qat_scope",
    "INPUT_NORM_LAYER",
]

INPUT_NORM_LAYER = "edgetl_input_norm"
QAT_MODEL_FILE = "model.h5"
QAT_RESULT_FILE = "qat_result.json"
PIXEL_RANGE = (0.0, 255.0)
EAGER_STEPS = 8

# ============================================================================
# Layers that replace raw-op subgraphs
# ============================================================================


@keras.utils.register_keras_serializable(package="edgetl")
class HardSigmoid(keras.layers.Layer):
    """``relu6(x + 3) / 6``: MobileNetV3's gate, as one layer tfmot can wrap."""

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.utils.register_keras_serializable(package="edgetl")
class HardSwish(keras.layers.Layer):
    """``x * relu6(x + 3) / 6``: written so the TFLite converter fuses it into ``HARD_SWISH``."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.utils.register_keras_serializable(package="edgetl")
class FixedRangeOutputQuantizeConfig(_tfmot_configs.Default8BitOutputQuantizeConfig):
    """Quantizes a layer's output on a fixed ``[min_value, max_value]`` that training never moves.

    Used for the folded input normalisation, whose outputs are exactly the
    points of that grid: tfmot's moving-average quantizer would drift towards
    each batch's narrower range and round pixels differently from the int8 file.
    """

    def __init__(self, min_value: float, max_value: float):
        super().__init__(quantize_output=True)
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def get_output_quantizers(self, layer):
        return [_tfmot_quantizers.FixedQuantizer(num_bits=8, init_min=self.min_value, init_max=self.max_value,
                                                 narrow_range=False)]

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@dataclasses.dataclass(frozen=True)
class InputFold:
    """An input normalisation ``scale * (pixel - zero_point)``, the same for every channel, folded into int8 input quantization.

    The uint8 input tensor of an int8 file then carries ``(scale,
    zero_point)`` itself, as in Google's TF2 PTQ MobileNets: the device feeds
    raw pixels and TFLite skips the full-resolution op that would otherwise
    normalise them. A zero point must be an integer: MobileNet's
    ``x / 127.5 - 1`` has 127.5, rounded down to 127 as TFLite's own
    calibration of a [-1, 1] input does, so the int8 model reads pixel p as
    ``(p - 127) / 127.5``, 0.5 / 127.5 above the float model. QAT trains on
    that exact mapping (``quantize``); PTQ calibrates on it.

    Attributes:
      scale: real value of one pixel step (the input tensor's quantization scale).
      zero_point: pixel value read as 0.0 (the uint8 zero point; int8 is 128 less).
    """

    scale: float
    zero_point: int

    @classmethod
    def of(cls, scale: np.ndarray, offset: np.ndarray, exact: bool = False) -> Optional["InputFold"]:
        """The fold of ``pixel * scale + offset`` (per-channel arrays), or None when it cannot be folded.

        Args:
          scale: per-channel multiplier.
          offset: per-channel offset.
          exact: require an integer zero point (no half-level shift).
        """
        scale = np.asarray(scale, np.float64).ravel()
        offset = np.asarray(offset, np.float64).ravel()
        if scale.size == 0 or scale[0] <= 0 or not np.allclose(scale, scale[0], rtol=1e-6, atol=0.0):
            return None
        if not np.allclose(offset, offset[0], rtol=1e-6, atol=1e-9):
            return None
        step = float(scale[0])
        # Measured in float32, x / 127.5 comes out ~1e-7 off; keep the divisor the model meant.
        divisor = round(2.0 / step) / 2.0
        if abs(1.0 / step - divisor) < 1e-5 * divisor:
            step = 1.0 / divisor
        exact_zero = -float(offset[0]) / step
        nearest = round(exact_zero)
        if abs(exact_zero - nearest) < 1e-3:
            zero_point = int(nearest)
        elif exact:
            return None
        elif abs(exact_zero - np.floor(exact_zero) - 0.5) < 1e-3:
            zero_point = int(np.floor(exact_zero))  # 127.5 -> 127, as TFLite calibrates a [-1, 1] input
        else:
            zero_point = int(nearest)
        if not 0 <= zero_point <= 255:
            return None  # TFLite needs 0.0 inside the uint8 range
        return cls(step, zero_point)

    @property
    def range(self) -> Tuple[float, float]:
        """The real values of pixels 0 and 255: the input quantization range."""
        return self.scale * (PIXEL_RANGE[0] - self.zero_point), self.scale * (PIXEL_RANGE[1] - self.zero_point)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """What the int8 model's input tensor means for ``pixels`` in [0, 255], as float32."""
        return (np.asarray(pixels, np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def describe(self) -> str:
        """E.g. '(pixel - 127) * 0.00784314'."""
        return f"(pixel - {self.zero_point}) * {self.scale:.6g}"


def _custom_objects() -> Dict[str, object]:
    return {"HardSwish": HardSwish, "HardSigmoid": HardSigmoid,
            "edgetl>HardSwish": HardSwish, "edgetl>HardSigmoid": HardSigmoid,
            "FixedRangeOutputQuantizeConfig": FixedRangeOutputQuantizeConfig,
            "edgetl>FixedRangeOutputQuantizeConfig": FixedRangeOutputQuantizeConfig}


def qat_scope():
    """Scope in which tfmot's and edgetl's QAT objects deserialize (``load_model``, ``clone_model``).

    Example:
      >>> with qat_scope():
      ...     model = keras.models.load_model("run/qat/model.h5")
    """
    return tfmot.quantization.keras.quantize_scope(_custom_objects())


# ============================================================================
# Graph rewrite: an equivalent flat float model made only of quantizable layers
# ============================================================================

_AFFINE_OPS = {"math.multiply", "__operators__.add", "math.add", "math.subtract", "math.truediv",
               "__operators__.truediv", "math.divide"}


def _tensor_id(tensor) -> str:
    return str(id(tensor))


def _ordered_nodes(graph) -> List:
    """The graph's layer calls in execution order (what ``Functional`` runs)."""
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):  # pylint: disable=protected-access
        nodes.extend(node for node in graph._nodes_by_depth[depth] if not node.is_input)  # pylint: disable=protected-access
    return nodes


def _keras_inputs(node) -> List:
    return list(node.keras_inputs)


def _constant_operand(node) -> Optional[float]:
    """The Python-number operand of a one-tensor ``TFOpLambda`` call, else None."""
    if len(node.keras_inputs) != 1:
        return None
    others = [a for a in node.call_args[1:]] + [v for k, v in node.call_kwargs.items() if k != "name"]
    if len(others) != 1 or isinstance(others[0], bool) or not isinstance(others[0], (int, float)):
        return None
    return float(others[0])


def _op_name(layer) -> str:
    return layer.get_config().get("function", "") if isinstance(layer, TFOpLambda) else ""


class _Rewriter:
    """Rebuilds a functional model layer by layer with fresh layer copies and optional pattern rewrites."""

    def __init__(self, rewrite_patterns: bool, wrap: Optional[Callable] = None,
                 folds: Optional[Dict[str, InputFold]] = None):
        self.rewrite_patterns = rewrite_patterns
        self.wrap = wrap or (lambda layer: layer)
        # When given, foldable input normalisations are put on the uint8 grid and recorded here by layer name.
        self.folds = folds
        self.notes: "collections.Counter[str]" = collections.Counter()
        self._clones: Dict[int, object] = {}
        self._weights: List[Tuple[object, List[np.ndarray]]] = []
        self._names: set = set()
        self._counter = collections.Counter()

    # --- public entry -------------------------------------------------------
    def run(self, model):
        inputs = []
        for layer, tensor in zip(model._input_layers, model.inputs):  # pylint: disable=protected-access
            inputs.append(keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=layer.name))
            self._names.add(layer.name)
        outputs = self._emit(model, inputs, top=True)
        rebuilt = keras.Model(inputs, outputs, name=model.name)
        for layer, weights in self._weights:
            layer.set_weights(weights)
        return rebuilt

    # --- helpers ------------------------------------------------------------
    def _unique(self, name: str) -> str:
        candidate, index = name, 0
        while candidate in self._names:
            index += 1
            candidate = f"{name}_{index}"
        self._names.add(candidate)
        return candidate

    def _new_name(self, stem: str) -> str:
        self._counter[stem] += 1
        return self._unique(f"{stem}_{self._counter[stem]}")

    def _clone(self, layer):
        if id(layer) not in self._clones:
            config = layer.get_config()
            config["name"] = self._unique(layer.name)
            clone = layer.__class__.from_config(config)
            self._clones[id(layer)] = self.wrap(clone)
            if layer.weights:
                self._weights.append((clone, layer.get_weights()))
        return self._clones[id(layer)]

    @staticmethod
    def _map_args(node, tensors: Dict[str, object]):
        flat = list(node._flat_arguments)  # pylint: disable=protected-access
        for kt_id, index in node._keras_inputs_ids_and_indices:  # pylint: disable=protected-access
            flat[index] = tensors[kt_id]
        args, kwargs = tf.nest.pack_sequence_as((node.call_args, list(node.call_kwargs.values())), flat)
        return args, dict(zip(node.call_kwargs.keys(), kwargs))

    # --- the walk -------------------------------------------------------------
    def _emit(self, graph, inputs, top: bool):
        tensors = {_tensor_id(kt): t for kt, t in zip(graph.inputs, inputs)}
        nodes = _ordered_nodes(graph)
        replacements, absorbed = self._match(graph, nodes) if (self.rewrite_patterns and top) else ({}, set())
        for node in nodes:
            if id(node) in absorbed:
                continue
            if id(node) in replacements:
                source, build = replacements[id(node)]
                output = build(tensors[source])
                tensors[node.flat_output_ids[0]] = output
                continue
            layer = node.layer
            if isinstance(layer, keras.Model):
                if not getattr(layer, "_is_graph_network", False):
                    raise ExportError(
                        f"Layer '{layer.name}' is a subclassed Keras model, which cannot be quantized. "
                        f"Expected a functional or Sequential backbone; rebuild the classifier with edgetl.model.build_classifier."
                    )
                args, _ = self._map_args(node, tensors)
                outputs = self._emit(layer, tf.nest.flatten(args), top=False)
                self.notes[f"inlined nested model '{layer.name}' (tfmot cannot quantize a model inside a model)"] += 1
            else:
                args, kwargs = self._map_args(node, tensors)
                outputs = self._clone(layer)(*args, **kwargs)
            for kt_id, output in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensors[kt_id] = output
        return tf.nest.pack_sequence_as(graph._nested_outputs, [tensors[_tensor_id(t)] for t in graph.outputs])  # pylint: disable=protected-access

    # --- pattern matching (on a flat graph) -----------------------------------
    def _match(self, graph, nodes):
        producer = {}
        consumers: Dict[str, List] = collections.defaultdict(list)
        for node in nodes:
            for kt_id in node.flat_output_ids:
                producer[kt_id] = node
            for kt_id, _ in node._keras_inputs_ids_and_indices:  # pylint: disable=protected-access
                consumers[kt_id].append(node)
        output_ids = {_tensor_id(t) for t in graph.outputs}

        def sole_consumer(node):
            out = node.flat_output_ids[0]
            users = consumers.get(out, [])
            return users[0] if len(users) == 1 and out not in output_ids else None

        replacements: Dict[int, Tuple[str, Callable]] = {}
        absorbed: set = set()
        self._match_input_affine(graph, consumers, sole_consumer, replacements, absorbed)

        hard_sigmoids = {}  # id(mul node) -> (input id, add node, relu node)
        for node in nodes:
            if _op_name(node.layer) != "math.multiply" or id(node) in absorbed:
                continue
            factor = _constant_operand(node)
            relu = producer.get(node._keras_inputs_ids_and_indices[0][0]) if factor is not None else None  # pylint: disable=protected-access
            if factor is None or abs(factor - 1.0 / 6.0) > 1e-6 or relu is None:
                continue
            relu_config = relu.layer.get_config() if isinstance(relu.layer, keras.layers.ReLU) else {}
            if relu_config.get("max_value") != 6.0 or relu_config.get("threshold", 0) or relu_config.get("negative_slope", 0):
                continue
            add = producer.get(relu._keras_inputs_ids_and_indices[0][0])  # pylint: disable=protected-access
            if add is None or _op_name(add.layer) not in ("__operators__.add", "math.add") or _constant_operand(add) != 3.0:
                continue
            if sole_consumer(add) is not relu or sole_consumer(relu) is not node:
                continue
            hard_sigmoids[id(node)] = (add._keras_inputs_ids_and_indices[0][0], add, relu)  # pylint: disable=protected-access

        by_output = {node.flat_output_ids[0]: node for node in nodes}
        for node in nodes:
            if not isinstance(node.layer, keras.layers.Multiply) or len(node.keras_inputs) != 2:
                continue
            ids = [kt_id for kt_id, _ in node._keras_inputs_ids_and_indices]  # pylint: disable=protected-access
            for gate_id, other_id in ((ids[1], ids[0]), (ids[0], ids[1])):
                gate = by_output.get(gate_id)
                if gate is None or id(gate) not in hard_sigmoids:
                    continue
                source, add, relu = hard_sigmoids[id(gate)]
                if source != other_id or sole_consumer(gate) is not node:
                    continue
                del hard_sigmoids[id(gate)]
                absorbed.update({id(add), id(relu), id(gate)})
                name = self._new_name("edgetl_hard_swish")
                replacements[id(node)] = (source, lambda x, name=name: self.wrap(HardSwish(name=name))(x))
                self.notes["hard-swish (x * relu6(x+3)/6 as TFOpLambda ops) -> HardSwish layer"] += 1
                break
        for mul_id, (source, add, relu) in hard_sigmoids.items():
            absorbed.update({id(add), id(relu)})
            name = self._new_name("edgetl_hard_sigmoid")
            replacements[mul_id] = (source, lambda x, name=name: self.wrap(HardSigmoid(name=name))(x))
            self.notes["hard-sigmoid (relu6(x+3)/6 as TFOpLambda ops) -> HardSigmoid layer"] += 1
        return replacements, absorbed

    def _match_input_affine(self, graph, consumers, sole_consumer, replacements, absorbed):
        for input_tensor in graph.inputs:
            chain = []
            users = consumers.get(_tensor_id(input_tensor), [])
            node = users[0] if len(users) == 1 else None
            while node is not None and len(node.keras_inputs) == 1 and self._is_affine_layer(node):
                chain.append(node)
                node = sole_consumer(node)
            if not chain:
                continue
            affine = _measure_affine(input_tensor, chain[-1])
            if affine is None:
                logger.info("Input preprocessing %s is not a per-channel affine map; quantizing it as is.",
                            [n.layer.name for n in chain])
                continue
            scale, offset = affine
            absorbed.update(id(n) for n in chain[:-1])
            name = self._unique(INPUT_NORM_LAYER)
            replacements[id(chain[-1])] = (_tensor_id(input_tensor), lambda x, s=scale, b=offset, n=name: self._affine_layer(x, s, b, n))
            names = ", ".join(n.layer.name for n in chain)
            self.notes[f"input normalisation ({names}) -> frozen 1x1 DepthwiseConv2D '{name}'"] += 1

    @staticmethod
    def _is_affine_layer(node) -> bool:
        layer = node.layer
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return not (isinstance(layer, keras.layers.Normalization) and layer.get_config().get("invert"))
        # Element-wise ops with one tensor input; _measure_affine then checks numerically
        # that the whole chain is a per-channel affine map.
        return _op_name(layer) in _AFFINE_OPS

    def _affine_layer(self, x, scale: np.ndarray, offset: np.ndarray, name: str):
        channels = int(scale.shape[0])
        fold = InputFold.of(scale, offset) if self.folds is not None else None
        if fold is not None:
            # QAT then trains on exactly what the int8 file computes (see InputFold).
            scale = np.full(channels, fold.scale)
            offset = np.full(channels, -fold.scale * fold.zero_point)
            self.folds[name] = fold
        layer = keras.layers.DepthwiseConv2D(1, use_bias=True, name=name, trainable=False)
        output = self.wrap(layer)(x)
        self._weights.append((layer, [scale.reshape(1, 1, channels, 1).astype(np.float32), offset.astype(np.float32)]))
        return output


def _measure_affine(input_tensor, last_node) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Per-channel (scale, offset) of the preprocessing ending at ``last_node``, or None if not affine."""
    probe_model = keras.Model(input_tensor, last_node.outputs)
    shape = [d if d is not None else 8 for d in input_tensor.shape[1:]]
    if len(shape) != 3:
        return None
    rng = np.random.default_rng(0)
    probes = np.stack([np.zeros(shape), np.ones(shape), rng.uniform(0, 255, shape), rng.uniform(0, 255, shape)]).astype(np.float32)
    out = np.asarray(probe_model(probes, training=False), dtype=np.float64)
    if out.shape != probes.shape:
        return None
    offset = out[0, 0, 0]
    scale = out[1, 0, 0] - offset
    expected = probes.astype(np.float64) * scale + offset
    tolerance = 1e-4 * max(1.0, float(np.abs(out).max()))
    if not np.allclose(out, expected, rtol=1e-4, atol=tolerance):
        return None
    return scale, offset


def prepare_for_quantization(model) -> Tuple[object, List[str]]:
    """Returns an equivalent flat float model whose layers tfmot can all quantize.

    The input model is not modified; layers are copied with their weights.
    The returned model computes the same function (up to float rounding) and
    also serves the float/PTQ exports, so every variant shares one graph.

    Args:
      model: a functional ``tf_keras`` classifier (nested backbones allowed).

    Returns:
      ``(model, notes)``: the rewritten model and one line per kind of rewrite
      with its count, e.g. ``"... -> HardSwish layer (x19)"``.

    Raises:
      ExportError: for subclassed sub-models, which cannot be rewritten.

    Example:
      >>> float_model, notes = prepare_for_quantization(load_model("run/model.keras"))
    """
    return _rewrite(model)


def _rewrite(model, wrap: Optional[Callable] = None,
             folds: Optional[Dict[str, InputFold]] = None) -> Tuple[object, List[str]]:
    """``prepare_for_quantization``; ``wrap(layer)`` is applied to every layer of the result as it is built.

    With ``folds`` (a dict), foldable input normalisations are rewritten on the uint8 grid and recorded in it.
    """
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ExportError(
            f"`model` must be a functional tf_keras Model, got {type(model).__name__}. "
            f"Load it with edgetl.model.head.load_model or build it with build_classifier."
        )
    current = model
    notes: "collections.Counter[str]" = collections.Counter()
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        flattener = _Rewriter(rewrite_patterns=False)
        current = flattener.run(current)
        notes.update(flattener.notes)
    rewriter = _Rewriter(rewrite_patterns=True, wrap=wrap, folds=folds)
    rewritten = rewriter.run(current)
    notes.update(rewriter.notes)
    return rewritten, [f"{text} (x{count})" for text, count in notes.items()]


def input_fold(model, exact: bool = False) -> Optional[Tuple[InputFold, object]]:
    """The foldable input normalisation of a rewritten or QAT model, and the model after it.

    Looks for edgetl's frozen 1x1 ``DepthwiseConv2D`` (``INPUT_NORM_LAYER``,
    plain or QAT-wrapped) applied to the model's only input. The int8 export
    converts ``tail`` with ``(fold.scale, fold.zero_point)`` as its input
    quantization (see ``edgetl.export.tflite.TracedModel``).

    Args:
      model: a model from ``prepare_for_quantization`` or ``quantize``.
      exact: fold only a map whose zero point is already an integer. QAT
        models need it: they trained on the normalisation as it is, and one
        saved before edgetl put it on the uint8 grid keeps its depthwise op.

    Returns:
      ``(fold, tail)``, where ``tail`` is a Keras model from the normalised
      input to the outputs sharing the model's layers; None when the model
      has no such layer or its map differs between channels.

    Example:
      >>> fold, tail = input_fold(prepare_for_quantization(model)[0])
      >>> fold.scale, fold.zero_point
      (0.00784313725490196, 127)
    """
    if len(model.inputs) != 1:
        return None
    norm = next((layer for layer in model.layers if getattr(layer, "layer", layer).name == INPUT_NORM_LAYER), None)
    if norm is None:
        return None
    inner = getattr(norm, "layer", norm)
    if not isinstance(inner, keras.layers.DepthwiseConv2D) or not inner.use_bias:
        return None
    source = norm.input
    producer = getattr(source, "_keras_history", None)
    if producer is not None and isinstance(producer.layer, _tfmot_quantize_layer.QuantizeLayer):
        source = producer.layer.input
    if source is not model.inputs[0]:
        return None
    fold = InputFold.of(inner.depthwise_kernel.numpy(), inner.bias.numpy(), exact=exact)
    if fold is None:
        return None
    try:
        # The model's own name: it prefixes every tensor name in the .tflite, as in the float files.
        tail = keras.Model(norm.output, model.output, name=model.name)
    except ValueError:  # the raw input feeds other layers too: the normalisation is not all it goes through
        return None
    return fold, tail


# ============================================================================
# Quantization
# ============================================================================

_OUTPUT_QUANTIZED = (keras.layers.Multiply, HardSwish, HardSigmoid, keras.layers.Rescaling, keras.layers.Normalization)


def quantize(model, freeze_batch_norm: bool = True) -> Tuple[object, List[str]]:
    """Rewrites ``model`` (see ``prepare_for_quantization``) and wraps every layer for QAT.

    All weights become trainable except BatchNormalization (kept in inference
    mode: a few QAT epochs on a small dataset would wreck its statistics) and
    the frozen input normalisation. The input is quantized on the fixed
    pixel range [0, 255]. An input normalisation that is the same for all
    channels is put on the uint8 grid with a fixed output range (see
    ``InputFold``), which the int8 export folds into its input quantization;
    either way the int8 file takes raw pixels.

    Args:
      model: the trained float classifier.
      freeze_batch_norm: keep BatchNormalization frozen.

    Returns:
      ``(qat_model, notes)``: a new tfmot model (weights copied) and the rewrites applied.

    Raises:
      ExportError: when a layer cannot be quantized, naming it.

    Example:
      >>> qat_model, notes = quantize(load_model("run/model.keras"))
    """
    leftovers: List[str] = []
    output_quantized: "collections.Counter[str]" = collections.Counter()
    layer_quantize_map: Dict[str, dict] = {}
    folds: Dict[str, InputFold] = {}

    def annotate(layer):
        # Records each layer's QuantizeConfig as the rewritten graph is built: this is
        # what tfmot's quantize_annotate_model + quantize_apply extract with two clones.
        if isinstance(layer, (TFOpLambda, keras.layers.Lambda)):
            leftovers.append(layer.name)
            return layer
        input_norm = layer.name.startswith(INPUT_NORM_LAYER)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = not freeze_batch_norm
        else:
            layer.trainable = not input_norm
        if isinstance(layer, _OUTPUT_QUANTIZED):
            output_quantized[type(layer).__name__] += 1
        # The folded input normalisation is quantized at its output only: a QuantizeWrapper
        # makes every weight it fake-quantizes trainable, even in a frozen layer. Its
        # per-channel weights stay float here and the converter quantizes them (exactly).
        config = _tfmot_configs.Default8BitOutputQuantizeConfig() if isinstance(layer, _OUTPUT_QUANTIZED) or input_norm else None
        if input_norm and layer.name in folds:
            config = FixedRangeOutputQuantizeConfig(*folds[layer.name].range)
        layer_quantize_map[layer.name] = {"quantize_config": config}
        return layer

    float_model, notes = _rewrite(model, wrap=annotate, folds=folds)
    if leftovers:
        raise ExportError(
            f"Cannot quantize raw TensorFlow op / Lambda layers {leftovers[:5]}: tfmot has no QuantizeConfig for them "
            f"and edgetl knows no equivalent layer. Replace them with Keras layers in the model, or export without QAT "
            f"(--variants fp32,fp16,dynamic,int8)."
        )
    for class_name, count in sorted(output_quantized.items()):
        notes.append(f"{class_name} has no tfmot registry entry -> quantized at its output (x{count})")
    try:
        with qat_scope():
            qat_model = _quantize_apply(float_model, layer_quantize_map)
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        first = " ".join(str(e).split())[:300]
        raise ExportError(
            f"tfmot could not quantize '{model.name}': {first}. Expected every layer to have a QuantizeConfig; "
            f"export without QAT (--variants fp32,fp16,dynamic,int8) or report the layer to edgetl."
        ) from e
    _fix_input_range(qat_model)
    notes.append(f"input quantized on the fixed range {list(PIXEL_RANGE)} (raw pixels)")
    for fold in folds.values():
        notes.append(f"input normalisation on the uint8 grid, {fold.describe()}: int8 files fold it into their "
                     f"input quantization (scale {fold.scale:.6g}, zero point {fold.zero_point})")
    return qat_model, notes


def _quantize_apply(float_model, layer_quantize_map: Dict[str, dict]):
    """``tfmot.quantization.keras.quantize_apply`` for a private model whose every layer is annotated.

    tfmot's version first clones the model twice (to protect the caller's copy
    and to strip ``QuantizeAnnotate`` wrappers); edgetl's rewrite already made a
    private copy and recorded the configs, so this runs only the default 8-bit
    layout transform (Conv+BN+ReLU fusion...) and the final wrapping clone,
    with the same rules. It saves ~40% of the quantization time.
    """
    scheme = _tfmot_scheme.Default8BitQuantizeScheme()
    for input_layer in float_model._input_layers:  # pylint: disable=protected-access
        layer_quantize_map[input_layer.name] = {}
    transformed, layer_quantize_map = scheme.get_layout_transformer().apply(float_model, layer_quantize_map)
    registry = scheme.get_quantize_registry()

    def wrap(layer):
        if isinstance(layer, _tfmot_quantize_layer.QuantizeLayer):
            config = layer.get_config()
            config.update(layer_quantize_map.get(layer.name, {}))
            return _tfmot_quantize_layer.QuantizeLayer.from_config(config)
        if layer.name not in layer_quantize_map or isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            return layer
        config = layer_quantize_map[layer.name].get("quantize_config")
        if not config and registry.supports(layer):
            config = registry.get_quantize_config(layer)
        if not config:
            raise RuntimeError(f"Layer {layer.name} ({type(layer).__name__}) has no QuantizeConfig")
        return tfmot.quantization.keras.QuantizeWrapperV2(layer, config, name_prefix="quant_")

    return keras.models.clone_model(transformed, input_tensors=None, clone_function=wrap)


def _fix_input_range(qat_model) -> None:
    # tfmot's input quantizer keeps the min/max of all values seen; starting it at
    # [0, 255] (pixels never leave that range) makes int8 input = raw pixels exactly.
    for layer in qat_model.layers:
        if isinstance(layer, _tfmot_quantize_layer.QuantizeLayer) and getattr(layer, "quantizer_vars", None):
            layer.quantizer_vars["min_var"].assign(PIXEL_RANGE[0])
            layer.quantizer_vars["max_var"].assign(PIXEL_RANGE[1])


def _ema_range_variables(qat_model) -> List[Tuple[object, object]]:
    """(min, max) variable pairs of tfmot's moving-average activation quantizers."""
    pairs = []
    for layer in qat_model.layers:
        if not isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            continue
        # tfmot 0.8.1 internals; the pinned [train] extra keeps them stable.
        for activation in getattr(layer, "_quantize_activations", []):
            if isinstance(activation.quantizer, _tfmot_quantizers.MovingAverageQuantizer):
                for attr in ("_pre_activation_vars", "_post_activation_vars"):
                    variables = getattr(activation, attr, None)
                    if variables:
                        pairs.append((variables["min_var"], variables["max_var"]))
        output_quantizers = getattr(layer, "_output_quantizers", None)
        if output_quantizers and isinstance(output_quantizers[0], _tfmot_quantizers.MovingAverageQuantizer):
            variables = layer._output_quantizer_vars  # pylint: disable=protected-access
            pairs.append((variables["min_var"], variables["max_var"]))
    return pairs


def calibrate_ranges(qat_model, batches: Sequence[np.ndarray], ema_decay: float = 0.999) -> int:
    """Sets every activation range of a fresh QAT model from calibration batches.

    tfmot updates a range as ``v <- d*v + (1-d)*batch_range`` (d = 0.999) from
    an initial [-6, 6]. One training-mode forward pass per batch therefore
    reveals each quantizer's batch range exactly, ``(v1 - d*v0) / (1 - d)``,
    through the quantized upstream graph; the ranges are set to their mean over
    the batches (what the moving average converges to). Dropout is off during
    the passes so the ranges match inference. Weights do not change.

    Args:
      qat_model: a model from ``quantize``.
      batches: float image batches in [0, 255].
      ema_decay: tfmot's moving-average decay (0.999 in tfmot 0.8).

    Returns:
      The number of ranges set (0 when there were no batches).
    """
    pairs = _ema_range_variables(qat_model)
    if not batches or not pairs:
        return 0
    dropouts = [layer.layer for layer in qat_model.layers
                if isinstance(getattr(layer, "layer", None), keras.layers.Dropout)]
    rates = [layer.rate for layer in dropouts]
    for layer in dropouts:
        layer.rate = 0.0
    sums = [np.zeros(2) for _ in pairs]
    try:
        for batch in batches:
            before = [(float(lo.numpy()), float(hi.numpy())) for lo, hi in pairs]
            qat_model(tf.convert_to_tensor(batch, tf.float32), training=True)
            for index, ((lo, hi), (lo0, hi0)) in enumerate(zip(pairs, before)):
                lo_batch = (float(lo.numpy()) - ema_decay * lo0) / (1.0 - ema_decay)
                hi_batch = (float(hi.numpy()) - ema_decay * hi0) / (1.0 - ema_decay)
                sums[index] += (lo_batch, hi_batch)
                lo.assign(min(lo_batch, 0.0))
                hi.assign(max(hi_batch, 1e-6))
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
    for (lo, hi), total in zip(pairs, sums):
        lo.assign(min(total[0] / len(batches), 0.0))
        hi.assign(max(total[1] / len(batches), 1e-6))
    return len(pairs)


def load_qat_model(path: Union[str, Path]):
    """Loads a QAT model saved by ``quantize_aware_finetune`` (tfmot and edgetl objects in scope).

    The file is HDF5 (see ``quantize_aware_finetune``), where Keras' safe mode
    does not apply: load only QAT files edgetl wrote.

    Raises:
      RunDirError: when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"No QAT model at '{path}'. Run quantization-aware training first: edgetl qat RUN_DIR")
    with qat_scope():
        return keras.models.load_model(str(path), compile=False, safe_mode=True)


# ============================================================================
# The stage
# ============================================================================


@dataclasses.dataclass
class QATResult:
    """Outcome of quantization-aware fine-tuning.

    Attributes:
      float_accuracy: Keras accuracy of the float model on the validation images.
      qat_accuracy: Keras accuracy of the QAT model (fake-quantized) on the same images.
      val_images: number of validation images evaluated (0: no validation split).
      epochs: epochs run.
      steps: optimizer steps run.
      calibrated_ranges: activation ranges initialised from calibration batches.
      rewrites: graph rewrites applied to make the backbone quantizable.
      history: per-epoch training loss and accuracy.
      seconds: wall time of the stage.
      model_path: where the QAT model was saved, or None.
      backbone: the backbone's registry name when known.
      model: the QAT Keras model (not serialised).
    """

    float_accuracy: Optional[float]
    qat_accuracy: Optional[float]
    val_images: int
    epochs: int
    steps: int
    calibrated_ranges: int
    rewrites: List[str]
    history: Dict[str, List[float]]
    seconds: float
    model_path: Optional[str] = None
    backbone: str = ""
    model: object = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(dataclasses.replace(self, model=None))
        data.pop("model")
        return data

    def summary(self) -> str:
        """A few human lines: float vs QAT accuracy and what was rewritten."""
        lines = [f"QAT: {self.epochs} epoch(s), {self.steps} step(s), {self.calibrated_ranges} activation ranges "
                 f"calibrated, {self.seconds:.0f} s."]
        if self.val_images:
            delta = (self.qat_accuracy - self.float_accuracy) * 100
            lines.append(f"Keras accuracy on {self.val_images} validation images: float {self.float_accuracy:.2%}, "
                         f"QAT {self.qat_accuracy:.2%} ({delta:+.1f} pts).")
        else:
            lines.append("No validation images: accuracy not measured.")
        lines.extend(f"  rewrite: {note}" for note in self.rewrites)
        if self.model_path:
            lines.append(f"Saved {self.model_path}. Next: edgetl export {Path(self.model_path).parent.parent} --variants qat-int8")
        return "\n".join(lines)


def _image_batches(store, rows: Sequence[int], batch_size: int, limit: int) -> List[np.ndarray]:
    """The first ``limit`` rows of the decoded store as float32 batches (activation-range calibration)."""
    rows = list(rows)[:limit]
    return [store.read(rows[i:i + batch_size]).astype(np.float32) for i in range(0, len(rows), batch_size)]


def _accuracy(model, dataset) -> float:
    correct = total = 0
    for images, labels in dataset:
        predictions = np.argmax(model(images, training=False).numpy(), axis=-1)
        correct += int(np.sum(predictions == labels.numpy()))
        total += int(labels.shape[0])
    return correct / total if total else float("nan")


def _load_source(source) -> Tuple[object, Optional[DatasetRecord], Optional[RunPaths]]:
    if isinstance(source, (str, Path)):
        paths = RunPaths.of(source)
        paths.require_model()
        from edgetl.model.head import load_model

        return load_model(paths.model), paths.load_dataset(), paths
    if isinstance(source, keras.Model):
        return source, None, None
    raise ExportError(
        f"`source`={source!r} is neither a run directory nor a tf_keras Model. "
        f"Pass the directory written by 'edgetl train' or a loaded classifier."
    )


def quantize_aware_finetune(
    source,
    config: Optional[QATConfig] = None,
    dataset: Optional[DatasetRecord] = None,
    out: Optional[Union[str, Path]] = None,
    echo: Callable[[str], None] = logger.info,
    progress: bool = True,
) -> QATResult:
    """Quantizes a trained classifier with tfmot and fine-tunes it briefly.

    Rewrites the graph so every layer of every registry backbone is quantized
    (see the module docstring), initialises activation ranges from
    ``config.calibration_batches`` training batches, fine-tunes at a low
    learning rate, and measures the Keras float and QAT accuracy on the
    validation split. With a run directory, the QAT model and its result are
    saved under ``RUN/qat/``.

    Args:
      source: a run directory (``model.keras`` + ``dataset.json``) or a tf_keras model.
      config: epochs, learning rate, batch size...; defaults to ``QATConfig()``.
      dataset: the train/val split; required with a model, read from the run otherwise.
      out: folder for ``model.h5`` and ``qat_result.json``; default ``RUN/qat``
        for a run directory, nothing saved for a model.
      echo: receives progress lines.
      progress: show a progress bar during fine-tuning.

    Returns:
      A QATResult holding the QAT model and the accuracies.

    Raises:
      RunDirError: missing model or dataset.json.
      ExportError: when a layer cannot be quantized or there are no training images.

    Example:
      >>> result = quantize_aware_finetune("runs/flowers", QATConfig(epochs=2))
      >>> print(result.summary())
    """
    from edgetl.data.pipeline import store_dataset
    from edgetl.data.store import open_run_store

    config = config or QATConfig()
    started = time.perf_counter()
    model, recorded, run_paths = _load_source(source)
    dataset = dataset or recorded
    if dataset is None:
        raise ExportError("`dataset` is required when `source` is a model: pass the DatasetRecord of its train/val split.")
    train_paths, train_labels = dataset.paths_labels("train")
    if not train_paths:
        raise ExportError(
            "QAT needs training images, but the dataset has 0 (train split empty). "
            "Re-run 'edgetl train' on a folder with images."
        )
    size = int(model.input_shape[1] or dataset.image_size)
    val_paths, val_labels = dataset.paths_labels("val")
    # The run's decoded store: the images training decoded are read, not decoded again.
    store = open_run_store(run_paths.root if run_paths is not None else None, size, list(train_paths) + list(val_paths),
                           progress=progress, echo=echo)
    train_rows, train_row_labels, missing = store.usable(train_paths, train_labels)
    val_rows, val_row_labels, missing_val = store.usable(val_paths, val_labels)
    if missing or missing_val:
        echo(f"{len(missing) + len(missing_val)} image(s) of the run's split cannot be read any more (e.g. "
             f"'{(missing + missing_val)[0]}'); QAT goes on without them.")
    if not len(train_rows):
        raise ExportError(f"QAT needs training images, but none of the {len(train_paths)} of the run's split can be "
                          f"read now. Re-run 'edgetl train' on the folder as it is.")
    # Same seed, same QAT model: without op determinism, parallel tf.data augmentation and
    # multi-threaded reductions make every run differ, by more than the accuracy goals of QAT.
    with _op_determinism(config.deterministic):
        tf.keras.utils.set_random_seed(config.seed) if hasattr(tf.keras.utils, "set_random_seed") else None

        qat_model, notes = quantize(model)
        for note in notes:
            echo(f"  rewrite: {note}")
        calibration = _image_batches(store, train_rows, config.batch_size, config.calibration_batches * config.batch_size)
        calibrated = calibrate_ranges(qat_model, calibration) if config.calibration_batches else 0
        echo(f"Calibrated {calibrated} activation ranges on {sum(len(b) for b in calibration)} training images.")

        from edgetl.config import AugmentConfig

        augment = AugmentConfig() if config.augment else None
        train_ds = store_dataset(store, train_rows, train_row_labels, config.batch_size, shuffle=True, seed=config.seed,
                                 augment=augment)
        val_ds = store_dataset(store, val_rows, val_row_labels, config.batch_size) if len(val_rows) else None

        steps_per_epoch = config.steps_per_epoch or max(1, -(-len(train_rows) // config.batch_size))
        trainer = _Distiller(qat_model, model, config.distillation) if config.distillation else qat_model
        trainer.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
            # Tracing the training graph of a QAT model costs ~10 eager steps (EfficientNetB3:
            # 22 s vs 2 s); a handful of steps is faster run eagerly, with the same result.
            run_eagerly=config.epochs * steps_per_epoch <= EAGER_STEPS,
        )
        callbacks = []
        if progress:
            callbacks.append(_TqdmCallback(config.epochs, steps_per_epoch))
        history = trainer.fit(
            train_ds.repeat(), epochs=config.epochs, steps_per_epoch=steps_per_epoch, verbose=0, callbacks=callbacks,
        ) if config.epochs else None

    float_accuracy = qat_accuracy = None
    if val_ds is not None:
        float_accuracy = _accuracy(model, val_ds)
        qat_accuracy = _accuracy(qat_model, val_ds)
    result = QATResult(
        float_accuracy=float_accuracy,
        qat_accuracy=qat_accuracy,
        val_images=len(val_rows),
        epochs=config.epochs,
        steps=config.epochs * steps_per_epoch,
        calibrated_ranges=calibrated,
        rewrites=notes,
        history={k: [float(v) for v in values] for k, values in (history.history.items() if history else [])},
        seconds=0.0,
        backbone=_backbone_of(model),
        model=qat_model,
    )
    out_dir = Path(out) if out is not None else (run_paths.qat if run_paths is not None else None)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        model_path = out_dir / QAT_MODEL_FILE
        # HDF5, not .keras: tf_keras' .keras format saves tfmot's QuantizeLayer
        # variables twice and then refuses to load them.
        with atomic_path(model_path, suffix=".h5") as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*HDF5.*legacy", category=UserWarning)
            qat_model.save(tmp, save_format="h5")
        result.model_path = str(model_path)
    result.seconds = time.perf_counter() - started
    if out_dir is not None:
        write_json(out_dir / QAT_RESULT_FILE, {**result.to_dict(), "config": dataclasses.asdict(config)})
    return result


@contextlib.contextmanager
def _op_determinism(enabled: bool):
    """TensorFlow's op determinism for the block, restored afterwards (it is process-wide)."""
    from tensorflow.python.framework import config as tf_config  # the public API can only turn it on

    switch = enabled and not tf_config.is_op_determinism_enabled()
    if switch:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            tf_config.disable_op_determinism()


def _backbone_of(model) -> str:
    name = getattr(model, "name", "") or ""
    return name[len("edgetl_"):] if name.startswith("edgetl_") else ""


def read_qat_result(path: Union[str, Path]) -> Optional[dict]:
    """The saved ``qat_result.json`` of a run's QAT folder, or None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


class _Distiller(keras.Model):
    """Trains the QAT model towards the float model's probabilities on each (augmented) batch.

    The goal of QAT is an int8 model that decides like the float one, so the
    float model's soft output is a better target than the labels alone: it
    carries how sure the float model was, and it does not pull the QAT model
    away from the float one on training images the float model got wrong.
    """

    def __init__(self, student, teacher, weight: float):
        super().__init__(name="edgetl_qat_distiller")
        self.student = student
        self.teacher = teacher
        self.weight = float(weight)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def train_step(self, data):
        images, labels = data
        target = tf.stop_gradient(self.teacher(images, training=False))
        with tf.GradientTape() as tape:
            probabilities = self.student(images, training=True)
            hard = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
            soft = keras.losses.kl_divergence(target, probabilities)
            loss = tf.reduce_mean(self.weight * soft + (1.0 - self.weight) * hard)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        correct = tf.equal(tf.argmax(probabilities, axis=-1), tf.cast(tf.reshape(labels, [-1]), tf.int64))
        return {"loss": loss, "accuracy": tf.reduce_mean(tf.cast(correct, tf.float32))}


class _TqdmCallback(keras.callbacks.Callback):
    """One tqdm bar over all QAT steps, with the running loss and accuracy."""

    def __init__(self, epochs: int, steps_per_epoch: int):
        super().__init__()
        self.total = epochs * steps_per_epoch
        self.bar = None

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="QAT", unit="step", leave=False, disable=None)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            if logs:
                self.bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", acc=f"{logs.get('accuracy', 0):.3f}")

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
