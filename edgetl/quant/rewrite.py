"""Graph rewrite: an equivalent flat float model made only of layers tfmot can quantize, as pattern -> replacement units.

``tfmot.quantization.keras.quantize_model`` alone (TF 2.21, tf-keras, tfmot
0.8.1) quantizes only MobileNetV2 and the minimalistic MobileNetV3s, and only
without an input ``Rescaling``. Every other registry backbone holds something
it cannot clone or has no QuantizeConfig for. Each ``Rewrite`` below finds one
such pattern in a flat functional graph and says what replaces it, like tfmot's
own ``graph_transformations.Transform`` (which matches layer classes and their
configs only, so it cannot see the constants of raw ops these patterns test):

* ``InputNormalization``: ``Rescaling``, ``Normalization`` and EfficientNet's
  ImageNet ``tf.math.multiply`` at the start of the graph form a per-channel
  affine map. It becomes one frozen 1x1 ``DepthwiseConv2D``
  (``INPUT_NORM_LAYER``); the converter gives its weights per-channel int8
  scales (exact for one value per channel), TFLite runs it as one int8 op the
  Edge TPU maps, and the model keeps taking raw [0, 255] pixels. For QAT
  (``on_grid``) a map that is the same for every channel is moved onto the
  uint8 grid the int8 file reads (``edgetl.quant.fold.InputFold``).
* ``HardSwishOps`` / ``HardSigmoidOps``: MobileNetV3's hard-swish and
  squeeze-excite gate, built from raw ``TFOpLambda`` ops (``x + 3``,
  ``* 1/6``) that tfmot cannot clone, become ``HardSwish`` / ``HardSigmoid``
  layers.
* A backbone nested as a sub-model is inlined first, since tfmot refuses nested models.

The rewrite imports tf_keras but not tfmot: the float exports use it too, so
every variant converts the same graph. Walking a functional graph node by node
has no public Keras API; those accesses are in ``edgetl._internals``.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import logging
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from edgetl import _internals
from edgetl.errors import ExportError
from edgetl.model.keras import keras, tf
from edgetl.quant.fold import INPUT_NORM_LAYER, InputFold
from edgetl.quant.layers import HardSigmoid, HardSwish

logger = logging.getLogger(__name__)

# Element-wise ops with one tensor input that may take part in an input normalisation; the whole chain
# is then checked numerically to be a per-channel affine map.
_AFFINE_OPS = {"math.multiply", "__operators__.add", "math.add", "math.subtract", "math.truediv",
               "__operators__.truediv", "math.divide"}


# ============================================================================
# The graph a rewrite matches on
# ============================================================================


def op_name(layer) -> str:
    """The TensorFlow function a ``TFOpLambda`` layer calls ('math.multiply'), '' for any other layer."""
    return layer.get_config().get("function", "") if _internals.is_tf_op_layer(layer) else ""


def constant_operand(node) -> Optional[float]:
    """The Python-number operand of a one-tensor ``TFOpLambda`` call (the 3 of ``x + 3``), else None."""
    if len(node.keras_inputs) != 1:
        return None
    others = list(node.call_args[1:]) + [v for k, v in node.call_kwargs.items() if k != "name"]
    if len(others) != 1 or isinstance(others[0], bool) or not isinstance(others[0], (int, float)):
        return None
    return float(others[0])


class GraphView:
    """One flat functional graph, indexed for matching: who produces and who consumes each tensor.

    Attributes:
      model: the functional model.
      nodes: its layer calls in execution order.
    """

    def __init__(self, model, nodes: Sequence):
        self.model = model
        self.nodes = list(nodes)
        self.producer: Dict[str, object] = {}
        self.consumers: Dict[str, List] = collections.defaultdict(list)
        for node in self.nodes:
            for kt_id in node.flat_output_ids:
                self.producer[kt_id] = node
            for kt_id in _internals.node_input_ids(node):
                self.consumers[kt_id].append(node)
        self.by_output = {node.flat_output_ids[0]: node for node in self.nodes}
        self._output_ids = {_internals.tensor_id(t) for t in model.outputs}

    @staticmethod
    def first_input(node) -> str:
        """Id of the tensor a node reads first."""
        return _internals.node_input_ids(node)[0]

    def input_producer(self, node):
        """The node producing a node's first input, or None (a model input)."""
        return self.producer.get(self.first_input(node))

    def sole_consumer(self, node):
        """The only node reading ``node``'s output, or None when it has several readers or is a model output."""
        out = node.flat_output_ids[0]
        users = self.consumers.get(out, [])
        return users[0] if len(users) == 1 and out not in self._output_ids else None


@dataclasses.dataclass
class Replacement:
    """A matched subgraph and what replaces it.

    Attributes:
      node: the subgraph's last node; its readers read the replacement's output instead.
      source: id of the tensor the replacement reads.
      absorbed: the subgraph's other nodes, dropped from the graph.
      build: called on the source tensor while the graph is rebuilt; returns the new output tensor.
      note: what was rewritten, one line (counted per kind in the notes).
    """

    node: object
    source: str
    absorbed: Tuple[object, ...]
    build: Callable[[object], object]
    note: str

    @property
    def nodes(self) -> Tuple[object, ...]:
        return (self.node,) + tuple(self.absorbed)


class Rewrite(abc.ABC):
    """One pattern -> replacement unit.

    ``find`` returns the replacements of every match in the graph, leaving out
    nodes an earlier rewrite claimed; new layer names are taken from
    ``rewriter`` when a match is made, so they do not depend on the walk.
    """

    @abc.abstractmethod
    def find(self, graph: GraphView, claimed: Set[int], rewriter: "Rewriter") -> List[Replacement]:
        """Every match of the pattern in ``graph`` that uses no node in ``claimed`` (ids of nodes)."""


class InputNormalization(Rewrite):
    """Affine preprocessing layers and ops right after a model input -> one frozen 1x1 ``DepthwiseConv2D``."""

    def find(self, graph, claimed, rewriter):
        found = []
        for input_tensor in graph.model.inputs:
            chain = []
            users = graph.consumers.get(_internals.tensor_id(input_tensor), [])
            node = users[0] if len(users) == 1 else None
            while node is not None and len(node.keras_inputs) == 1 and _is_affine_layer(node) and id(node) not in claimed:
                chain.append(node)
                node = graph.sole_consumer(node)
            if not chain:
                continue
            affine = measure_affine(input_tensor, chain[-1])
            if affine is None:
                logger.info("Input preprocessing %s is not a per-channel affine map; quantizing it as is.",
                            [n.layer.name for n in chain])
                continue
            scale, offset = affine
            name = rewriter.unique(INPUT_NORM_LAYER)
            names = ", ".join(n.layer.name for n in chain)
            found.append(Replacement(
                node=chain[-1], source=_internals.tensor_id(input_tensor), absorbed=tuple(chain[:-1]),
                build=lambda x, s=scale, b=offset, n=name: rewriter.affine_layer(x, s, b, n),
                note=f"input normalisation ({names}) -> frozen 1x1 DepthwiseConv2D '{name}'"))
        return found


def _is_affine_layer(node) -> bool:
    layer = node.layer
    if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
        return not (isinstance(layer, keras.layers.Normalization) and layer.get_config().get("invert"))
    return op_name(layer) in _AFFINE_OPS


def _hard_sigmoid(graph: GraphView, node, claimed: Set[int]) -> Optional[Tuple[str, object, object]]:
    """``(source id, add node, relu node)`` when ``node`` ends ``relu6(source + 3) * (1/6)`` as raw ops."""
    if op_name(node.layer) != "math.multiply" or id(node) in claimed:
        return None
    factor = constant_operand(node)
    relu = graph.input_producer(node) if factor is not None else None
    if factor is None or abs(factor - 1.0 / 6.0) > 1e-6 or relu is None:
        return None
    relu_config = relu.layer.get_config() if isinstance(relu.layer, keras.layers.ReLU) else {}
    if relu_config.get("max_value") != 6.0 or relu_config.get("threshold", 0) or relu_config.get("negative_slope", 0):
        return None
    add = graph.input_producer(relu)
    if add is None or op_name(add.layer) not in ("__operators__.add", "math.add") or constant_operand(add) != 3.0:
        return None
    if graph.sole_consumer(add) is not relu or graph.sole_consumer(relu) is not node:
        return None
    if id(add) in claimed or id(relu) in claimed:
        return None
    return graph.first_input(add), add, relu


class HardSwishOps(Rewrite):
    """``x * (relu6(x + 3) * 1/6)`` as raw ops (MobileNetV3's hard-swish) -> one ``HardSwish`` layer."""

    def find(self, graph, claimed, rewriter):
        found = []
        taken: Set[int] = set()
        for node in graph.nodes:
            if not isinstance(node.layer, keras.layers.Multiply) or len(node.keras_inputs) != 2 or id(node) in claimed:
                continue
            ids = _internals.node_input_ids(node)
            for gate_id, other_id in ((ids[1], ids[0]), (ids[0], ids[1])):
                gate = graph.by_output.get(gate_id)
                matched = _hard_sigmoid(graph, gate, claimed | taken) if gate is not None else None
                if matched is None:
                    continue
                source, add, relu = matched
                if source != other_id or graph.sole_consumer(gate) is not node:
                    continue
                name = rewriter.new_name("edgetl_hard_swish")
                replacement = Replacement(node, source, (add, relu, gate),
                                          lambda x, name=name: HardSwish(name=name)(x),
                                          "hard-swish (x * relu6(x+3)/6 as TFOpLambda ops) -> HardSwish layer")
                taken.update(id(n) for n in replacement.nodes)
                found.append(replacement)
                break
        return found


class HardSigmoidOps(Rewrite):
    """``relu6(x + 3) * 1/6`` as raw ops (MobileNetV3's squeeze-excite gate) -> one ``HardSigmoid`` layer."""

    def find(self, graph, claimed, rewriter):
        found = []
        for node in graph.nodes:
            matched = _hard_sigmoid(graph, node, claimed)
            if matched is None:
                continue
            source, add, relu = matched
            name = rewriter.new_name("edgetl_hard_sigmoid")
            found.append(Replacement(node, source, (add, relu), lambda x, name=name: HardSigmoid(name=name)(x),
                                     "hard-sigmoid (relu6(x+3)/6 as TFOpLambda ops) -> HardSigmoid layer"))
        return found


# Applied in this order; a node claimed by one is not seen by the next (hard-swish contains a hard-sigmoid).
REWRITES: Tuple[Rewrite, ...] = (InputNormalization(), HardSwishOps(), HardSigmoidOps())


def measure_affine(input_tensor, last_node) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Per-channel (scale, offset) of the preprocessing from ``input_tensor`` to ``last_node``, or None if not affine."""
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


# ============================================================================
# Rebuilding the graph
# ============================================================================


class Rewriter:
    """Rebuilds a functional model layer by layer with fresh layer copies, applying ``rewrites`` to the top graph.

    Attributes:
      notes: what was rewritten, counted per kind.
      folds: input normalisations put on the uint8 grid, by layer name (``on_grid`` only).
    """

    def __init__(self, rewrites: Sequence[Rewrite] = (), on_grid: bool = False):
        self.rewrites = tuple(rewrites)
        self.on_grid = on_grid
        self.notes: "collections.Counter[str]" = collections.Counter()
        self.folds: Dict[str, InputFold] = {}
        self._clones: Dict[int, object] = {}
        self._weights: List[Tuple[object, List[np.ndarray]]] = []
        self._names: Set[str] = set()
        self._counter: "collections.Counter[str]" = collections.Counter()

    def run(self, model):
        """The rebuilt model, weights copied."""
        inputs = []
        for layer, tensor in zip(_internals.input_layers(model), model.inputs):
            inputs.append(keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=layer.name))
            self._names.add(layer.name)
        outputs = self._emit(model, inputs, top=True)
        rebuilt = keras.Model(inputs, outputs, name=model.name)
        for layer, weights in self._weights:
            layer.set_weights(weights)
        return rebuilt

    # --- names and layers the rewrites use ------------------------------------
    def unique(self, name: str) -> str:
        """``name``, or ``name_N`` when taken."""
        candidate, index = name, 0
        while candidate in self._names:
            index += 1
            candidate = f"{name}_{index}"
        self._names.add(candidate)
        return candidate

    def new_name(self, stem: str) -> str:
        """``stem_1``, ``stem_2``... for layers the rewrite adds."""
        self._counter[stem] += 1
        return self.unique(f"{stem}_{self._counter[stem]}")

    def affine_layer(self, x, scale: np.ndarray, offset: np.ndarray, name: str):
        """A frozen 1x1 DepthwiseConv2D computing ``x * scale + offset`` per channel, called on ``x``."""
        channels = int(scale.shape[0])
        fold = InputFold.of(scale, offset) if self.on_grid else None
        if fold is not None:
            # QAT then trains on exactly what the int8 file computes (see InputFold).
            scale = np.full(channels, fold.scale)
            offset = np.full(channels, -fold.scale * fold.zero_point)
            self.folds[name] = fold
        layer = keras.layers.DepthwiseConv2D(1, use_bias=True, name=name, trainable=False)
        output = layer(x)
        self._weights.append((layer, [scale.reshape(1, 1, channels, 1).astype(np.float32), offset.astype(np.float32)]))
        return output

    # --- the walk -------------------------------------------------------------
    def _clone(self, layer):
        if id(layer) not in self._clones:
            config = layer.get_config()
            config["name"] = self.unique(layer.name)
            clone = layer.__class__.from_config(config)
            self._clones[id(layer)] = clone
            if layer.weights:
                self._weights.append((clone, layer.get_weights()))
        return self._clones[id(layer)]

    def _match(self, graph: GraphView) -> Tuple[Dict[int, Replacement], Set[int]]:
        replacements: Dict[int, Replacement] = {}
        claimed: Set[int] = set()
        for rewrite_unit in self.rewrites:
            for replacement in rewrite_unit.find(graph, claimed, self):
                replacements[id(replacement.node)] = replacement
                claimed.update(id(n) for n in replacement.nodes)
                self.notes[replacement.note] += 1
        absorbed = {id(n) for r in replacements.values() for n in r.absorbed}
        return replacements, absorbed

    def _emit(self, graph, inputs, top: bool):
        tensors = {_internals.tensor_id(kt): t for kt, t in zip(graph.inputs, inputs)}
        nodes = _internals.ordered_nodes(graph)
        replacements, absorbed = self._match(GraphView(graph, nodes)) if (self.rewrites and top) else ({}, set())
        for node in nodes:
            if id(node) in absorbed:
                continue
            if id(node) in replacements:
                replacement = replacements[id(node)]
                tensors[node.flat_output_ids[0]] = replacement.build(tensors[replacement.source])
                continue
            layer = node.layer
            if isinstance(layer, keras.Model):
                if not _internals.is_functional(layer):
                    raise ExportError(
                        f"Layer '{layer.name}' is a subclassed Keras model, which cannot be quantized. "
                        f"Expected a functional or Sequential backbone; rebuild the classifier with edgetl.model.build_classifier."
                    )
                args, _ = _internals.node_arguments(node, tensors)
                outputs = self._emit(layer, tf.nest.flatten(args), top=False)
                self.notes[f"inlined nested model '{layer.name}' (tfmot cannot quantize a model inside a model)"] += 1
            else:
                args, kwargs = _internals.node_arguments(node, tensors)
                outputs = self._clone(layer)(*args, **kwargs)
            for kt_id, output in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensors[kt_id] = output
        return tf.nest.pack_sequence_as(_internals.nested_outputs(graph),
                                        [tensors[_internals.tensor_id(t)] for t in graph.outputs])


@dataclasses.dataclass
class Rewritten:
    """What ``rewrite`` returns.

    Attributes:
      model: the flat float model.
      notes: one line per kind of rewrite with its count, e.g. ``"... -> HardSwish layer (x19)"``.
      folds: input normalisations put on the uint8 grid, by layer name (empty unless ``on_grid``).
    """

    model: object
    notes: List[str]
    folds: Dict[str, InputFold]


def rewrite(model, on_grid: bool = False) -> Rewritten:
    """An equivalent flat float model whose layers tfmot can all quantize (see the module docstring).

    Args:
      model: a functional ``tf_keras`` classifier (nested backbones allowed); not modified.
      on_grid: put an input normalisation that is the same for every channel
        onto the uint8 grid the int8 file reads (QAT); the float exports keep it exact.

    Raises:
      ExportError: ``model`` is not functional, or holds a subclassed sub-model.
    """
    if not isinstance(model, keras.Model) or not _internals.is_functional(model):
        raise ExportError(
            f"`model` must be a functional tf_keras Model, got {type(model).__name__}. "
            f"Load it with edgetl.model.head.load_model or build it with build_classifier."
        )
    current = model
    notes: "collections.Counter[str]" = collections.Counter()
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        flattener = Rewriter()
        current = flattener.run(current)
        notes.update(flattener.notes)
    rewriter = Rewriter(REWRITES, on_grid=on_grid)
    rewritten = rewriter.run(current)
    notes.update(rewriter.notes)
    return Rewritten(rewritten, [f"{text} (x{count})" for text, count in notes.items()], dict(rewriter.folds))


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
    rewritten = rewrite(model)
    return rewritten.model, rewritten.notes


__all__ = ["GraphView", "HardSigmoidOps", "HardSwishOps", "InputNormalization", "REWRITES", "Replacement", "Rewrite",
           "Rewriter", "Rewritten", "constant_operand", "measure_affine", "op_name", "prepare_for_quantization",
           "rewrite"]
