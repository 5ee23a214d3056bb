"""Backbone + new classification head as one flat functional Keras model.

The head is built on ``backbone.output`` inside the same graph (not by calling a
nested backbone model), because tfmot's ``quantize_model`` cannot quantize a
model nested inside another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import List, Optional, Union

from edgetl.config import ModelConfig
from edgetl.errors import WeightsError
from edgetl.model import registry
from edgetl.model.keras import keras

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
PREPROCESS_LAYER = "edgetl_preprocess"
POOL_LAYER = "edgetl_head_pool"
HIDDEN_LAYER = "edgetl_head_hidden"
DROPOUT_LAYER = "edgetl_head_dropout"
CLASSIFIER_LAYER = "edgetl_head_classifier"
HEAD_LAYERS = (POOL_LAYER, HIDDEN_LAYER, DROPOUT_LAYER, CLASSIFIER_LAYER, DROPOUT_LAYER + "_hidden")


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A ModelConfig with every default filled in from the registry.

    Attributes:
      spec: the backbone's registry entry.
      alpha: width multiplier built (None when the backbone has none).
      size: square input side.
      weights: None, 'imagenet' (not on this machine: ``download_imagenet``
        fetches it) or a file path.
      imagenet: the weights are Keras' ImageNet release (some builders add
        ImageNet-only layers, e.g. EfficientNet's input std scaling).
    """

    spec: registry.BackboneSpec
    alpha: Optional[float]
    size: int
    weights: Optional[str]
    imagenet: bool = False

    @property
    def default_checkpoint_size(self) -> int:
        """The input size of the ImageNet checkpoint to use: ``size`` when one exists for it, else the default."""
        return self.size if self.size in self.spec.imagenet_sizes else self.spec.default_size


# A mirror of Keras' weight files (a flat folder served over HTTP(S) holding Keras' file names) replaces
# the origins Keras downloads from; the tests point it at a server on 127.0.0.1.
WEIGHTS_URL_ENV = "EDGETL_WEIGHTS_URL"


def imagenet_search_path(config: ModelConfig) -> List[Path]:
    """The folders searched for ImageNet weight files, in order: --weights-dir, $EDGETL_WEIGHTS_DIR, ~/.keras/models."""
    folders = [config.weights_dir, os.environ.get("EDGETL_WEIGHTS_DIR"), str(Path.home() / ".keras" / "models")]
    return [Path(folder).expanduser() for folder in folders if folder]


def resolve(config: ModelConfig) -> ResolvedModel:
    """Validates ``config`` against the registry and picks the weights source.

    ImageNet weights are looked up, in order, in ``config.weights_dir``,
    ``$EDGETL_WEIGHTS_DIR``, Keras' own cache (``~/.keras/models``) and the
    files shipped with edgetl (``edgetl.bundled``). When none holds them,
    ``weights`` is 'imagenet' and ``download_imagenet`` fetches them with
    Keras' downloader when the model is built (online machines only). Nothing
    here touches the network.

    Raises:
      UnknownBackboneError, ConfigError, WeightsError.
    """
    spec = registry.get(config.backbone)
    alpha = spec.resolve_alpha(config.alpha)
    size = spec.resolve_size(config.size)
    weights = (config.weights or "none").strip()
    if weights.lower() in ("none", "random", ""):
        return ResolvedModel(spec, alpha, size, None)
    if weights.lower() == "imagenet":
        spec.check_imagenet(alpha, size)
        # Size-specific checkpoints first, then the default-size one: convolution weights
        # do not depend on the input size, and an offline folder rarely holds every size.
        names = list(dict.fromkeys((spec.weights_file(alpha, size), spec.weights_file(alpha, spec.default_size))))
        for folder in imagenet_search_path(config):
            for file_name in names:
                candidate = folder / file_name
                if candidate.is_file():
                    return ResolvedModel(spec, alpha, size, str(candidate), imagenet=True)
        if config.weights_dir:
            raise WeightsError(
                f"ImageNet weights file '{names[-1]}' for {spec.name} (alpha={alpha}) is not in "
                f"--weights-dir '{config.weights_dir}'. Copy it there from an online machine's ~/.keras/models."
            )
        from edgetl import bundled

        for file_name in names:
            shipped = bundled.weights_file(file_name)
            if shipped is not None:
                return ResolvedModel(spec, alpha, size, str(shipped), imagenet=True)
        return ResolvedModel(spec, alpha, size, "imagenet", imagenet=True)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"`weights`='{weights}' is neither 'imagenet', 'none' nor an existing file. "
            f"Pass a no-top .h5 weights file for {spec.name}, or --weights imagenet / none."
        )
    # A file under Keras' own ImageNet name is that release, wherever it was copied to.
    is_imagenet = spec.has_imagenet(alpha) and path.name in {spec.weights_file(alpha, size), spec.weights_file(alpha, spec.default_size)}
    return ResolvedModel(spec, alpha, size, str(path), imagenet=is_imagenet)


def download_imagenet(resolved: ResolvedModel) -> ResolvedModel:
    """Fetches the ImageNet weights file with Keras' downloader into its cache (``~/.keras/models``).

    Keras' ``get_file`` shows its own progress bar and reuses a file already
    in its cache. The origin is the backbone's ``weights_origin``, or the
    mirror in ``$EDGETL_WEIGHTS_URL`` (a flat folder of Keras' file names).

    Args:
      resolved: a ResolvedModel whose ``weights`` is 'imagenet' (from ``resolve``).

    Returns:
      The same model with ``weights`` set to the downloaded file.

    Raises:
      WeightsError: the download failed (offline, blocked or not found),
        naming the file, where it was fetched from and where to put it.
    """
    spec = resolved.spec
    file_name = spec.weights_file(resolved.alpha, resolved.default_checkpoint_size)
    base = os.environ.get(WEIGHTS_URL_ENV) or spec.weights_origin
    origin = base.rstrip("/") + "/" + file_name
    logger.info("downloading ImageNet weights %s from %s", file_name, origin)
    cache = Path.home() / ".keras"
    try:
        # Keras falls back to /tmp/.keras when ~/.keras does not exist yet; edgetl looks in ~/.keras/models.
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    try:
        path = keras.utils.get_file(file_name, origin=origin, cache_subdir="models", cache_dir=str(cache))
    except Exception as e:  # noqa: BLE001 - Keras wraps every download failure in a bare Exception
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        folder = Path.home() / ".keras" / "models"
        raise WeightsError(
            f"ImageNet weights '{file_name}' for {spec.name} (alpha={resolved.alpha}) are not on this machine and the "
            f"download from {origin} failed ({reason}). Offline? Copy that file from a machine with internet (Keras "
            f"keeps it in ~/.keras/models) into {folder} or a folder passed as --weights-dir / $EDGETL_WEIGHTS_DIR, "
            f"or train from random init with --weights none."
        ) from None
    return dataclasses.replace(resolved, weights=str(path))


@contextlib.contextmanager
def _keras_imagenet_from(path: Optional[str]):
    """Makes Keras' ImageNet download resolve to a local file while a backbone is built.

    Passing weights='imagenet' (rather than the file path) keeps every layer
    Keras adds only for its ImageNet weights, such as EfficientNet's input
    std scaling; the local file stands in for the download.
    """
    if path is None:
        yield
        return
    from edgetl import _internals

    with _internals.keras_get_file_returns(path):
        yield


def _build_backbone(resolved: ResolvedModel, input_tensor):
    if resolved.weights == "imagenet":
        resolved = download_imagenet(resolved)
    spec = resolved.spec
    builder = getattr(keras.applications, spec.keras_name)
    kwargs = dict(spec.builder_kwargs)
    if resolved.alpha is not None:
        kwargs["alpha"] = resolved.alpha
    keras_weights = "imagenet" if resolved.imagenet else resolved.weights
    try:
        with _keras_imagenet_from(resolved.weights if resolved.imagenet else None):
            return builder(include_top=False, weights=keras_weights, input_tensor=input_tensor, **kwargs)
    except (ValueError, OSError, KeyError, TypeError) as e:
        if resolved.weights is None:
            raise
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"Weights '{resolved.weights}' do not fit {spec.name} (alpha={resolved.alpha}, size={resolved.size}): "
            f"{first_line[:300]}. Use the no-top file made for this backbone and width."
        ) from e


def build_classifier(config: ModelConfig, num_classes: int):
    """Builds backbone + head as one flat functional ``tf_keras`` model.

    The model takes float RGB pixels in [0, 255] (input name ``image``) and
    returns class probabilities (softmax). MobileNet's [-1, 1] scaling is a
    ``Rescaling`` layer inside the graph; EfficientNet and MobileNetV3 scale
    internally. The backbone starts frozen.

    Args:
      config: the backbone, width, size, weights and head options.
      num_classes: output classes (>= 2).

    Returns:
      A ``tf_keras.Model``.

    Raises:
      UnknownBackboneError, ConfigError, WeightsError.

    Example:
      >>> model = build_classifier(ModelConfig("mobilenet_v2", alpha=0.35, size=96, weights="none"), 3)
      >>> model.output_shape
      (None, 3)
    """
    resolved = resolve(config)
    spec = resolved.spec
    inputs = keras.Input(shape=(resolved.size, resolved.size, 3), name=INPUT_NAME)
    x = inputs
    if spec.preprocessing.scale is not None:
        x = keras.layers.Rescaling(spec.preprocessing.scale, spec.preprocessing.offset, name=PREPROCESS_LAYER)(x)
    backbone = _build_backbone(resolved, x)
    backbone.trainable = False
    features = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(backbone.output)
    outputs = _apply(_head_layers(config, num_classes), features)
    return keras.Model(inputs, outputs, name=f"edgetl_{spec.name}")


def _head_layers(config: ModelConfig, num_classes: int) -> List:
    layers = []
    if config.hidden_units:
        layers.append(keras.layers.Dropout(config.dropout, name=DROPOUT_LAYER + "_hidden"))
        layers.append(keras.layers.Dense(config.hidden_units, activation="relu", name=HIDDEN_LAYER))
    layers.append(keras.layers.Dropout(config.dropout, name=DROPOUT_LAYER))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name=CLASSIFIER_LAYER))
    return layers


def _apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def head_layer_names(model) -> List[str]:
    """Names of the head's layers after the pooling layer, in order."""
    names = [layer.name for layer in model.layers]
    return names[names.index(POOL_LAYER) + 1:]


def backbone_layers(model) -> List:
    """The backbone's layers (everything between the input and the head)."""
    head = set(head_layer_names(model)) | {POOL_LAYER, INPUT_NAME, PREPROCESS_LAYER}
    return [layer for layer in model.layers if layer.name not in head]


def feature_extractor(model):
    """Model from the classifier's input to the pooled backbone features (shares weights)."""
    return keras.Model(model.input, model.get_layer(POOL_LAYER).output, name="edgetl_features")


def head_model(model):
    """Model from pooled features to probabilities, sharing the classifier's head layers.

    Training it updates the classifier's own head weights.
    """
    pool = model.get_layer(POOL_LAYER)
    inputs = keras.Input(shape=pool.output.shape[1:], name="features")
    x = inputs
    for name in head_layer_names(model):
        x = model.get_layer(name)(x)
    return keras.Model(inputs, x, name="edgetl_head")


def set_fine_tune(model, layers: int) -> int:
    """Unfreezes the top ``layers`` backbone layers (-1 = all); BatchNorm stays frozen.

    Frozen BatchNorm layers run in inference mode, keeping ImageNet statistics
    that a small dataset would otherwise wreck.

    Returns:
      The number of backbone layers left trainable.
    """
    backbone = backbone_layers(model)
    model.trainable = True
    start = 0 if layers < 0 else max(0, len(backbone) - layers)
    trainable = 0
    for index, layer in enumerate(backbone):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= start and not is_bn
        trainable += int(layer.trainable and bool(layer.weights))
    return trainable


def is_flat(model) -> bool:
    """True when no layer of ``model`` is itself a Model (what tfmot requires)."""
    return not any(isinstance(layer, keras.Model) for layer in model.layers)


def load_model(path: Union[str, Path]):
    """Loads a saved edgetl Keras model with ``safe_mode=True`` (no arbitrary code).

    Raises:
      RunDirError: the file is damaged, truncated or not a Keras model, or it
        holds Python code (a Lambda layer) that safe mode refuses to run.
    """
    from edgetl.errors import RunDirError

    try:
        return keras.models.load_model(str(path), compile=False, safe_mode=True)
    except ValueError as e:
        if "safe_mode" in str(e) or "arbitrary code" in str(e):
            raise RunDirError(
                f"'{path}' holds Python code (a Lambda layer); edgetl loads models with safe_mode=True and never runs "
                f"code from a model file. Train the model with edgetl train, whose models have no Lambda layers."
            ) from None
        raise RunDirError(f"'{path}' is not a Keras model edgetl can load ({' '.join(str(e).split())[:200]}); "
                          f"re-run edgetl train.") from e
    except (OSError, KeyError, TypeError, AttributeError) as e:  # h5py/zipfile errors of a damaged or foreign file
        raise RunDirError(f"'{path}' is damaged or truncated and cannot be loaded ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}); re-run edgetl train to write it again.") from e



@dataclasses.dataclass(frozen=True)
class BackboneCost:
    """Size and compute of a backbone without its ImageNet top.

    Attributes:
      name: registry name.
      alpha: width multiplier built (None when the backbone has none).
      size: square input side.
      params: parameters (weights) of the backbone.
      macs: multiply-accumulates of one image through the convolutions and
        dense layers (the usual convention of the MobileNet/EfficientNet
        papers; element-wise ops and BatchNorm, which folds away, are not counted).
      imagenet_file: the local ImageNet weights file found, '' when none.
    """

    name: str
    alpha: Optional[float]
    size: int
    params: int
    macs: int
    imagenet_file: str = ""


def count_macs(model) -> int:
    """Multiply-accumulates of one input through ``model``'s Conv2D, DepthwiseConv2D and Dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output_shape
            total += height * width * channels * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output_shape
            in_channels = layer.input_shape[-1]
            total += (height * width * out_channels * layer.kernel_size[0] * layer.kernel_size[1]
                      * in_channels // layer.groups)
        elif isinstance(layer, keras.layers.Dense):
            positions = 1
            for dim in layer.output_shape[1:-1]:
                positions *= dim
            total += positions * layer.input_shape[-1] * layer.units
    return int(total)


def backbone_cost(name: str, alpha: Optional[float] = None, size: Optional[int] = None,
                  weights_dir: Optional[str] = None) -> BackboneCost:
    """Builds ``name`` (random weights, no top) and counts its parameters and MACs.

    Example:
      >>> cost = backbone_cost("mobilenet_v2", alpha=1.0, size=224)
      >>> round(cost.macs / 1e6)   # the paper's 300 M, less the 1.3 M of its ImageNet classifier
      299
    """
    resolved = resolve(ModelConfig(name, alpha=alpha, size=size, weights="none"))
    local = ""
    if resolved.spec.has_imagenet(resolved.alpha):
        try:
            found = resolve(ModelConfig(name, alpha=alpha, size=size, weights="imagenet", weights_dir=weights_dir)).weights
            local = found if found and found != "imagenet" else ""
        except WeightsError:
            local = ""
    inputs = keras.Input(shape=(resolved.size, resolved.size, 3))
    backbone = _build_backbone(resolved, inputs)
    try:
        return BackboneCost(name, resolved.alpha, resolved.size, int(backbone.count_params()), count_macs(backbone), local)
    finally:
        keras.backend.clear_session()
