"""TFLite conversion of a run into one file per variant (``edgetl.export.variants``), each verified and carrying its edgetl metadata.

Each model is traced once into a concrete function (batch 1, static shape),
and every variant converts from it through the converter's frozen-graph path
(``TFLiteConverter.from_concrete_functions`` with its public
``experimental_lower_to_saved_model = False``): the variables become
constants in memory and nothing is written or read back. The converter's
default instead saves the function as a SavedModel and loads it twice per
conversion (``from_keras_model`` even re-saves the whole Keras object graph);
for MobileNetV2 alpha 0.35 that was ~5 s per conversion and ~5 s per trace,
against ~1.5 s and ~1 s this way (``docs/benchmarks.md``, quickstart timing).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgetl import __version__
from edgetl._atomic import file_sha256, write_bytes, write_json, write_text
from edgetl._native import capture_native_output
from edgetl.config import ExportConfig, load_yaml
from edgetl.errors import EdgetlError, ExportError, RunDirError
from edgetl.export.metadata import embed_metadata
from edgetl.export.min_runtime import DEFAULT_MIN_RUNTIME, needed_settings, runtime_warning
from edgetl.export.representative import load_images, representative_dataset, representative_images
from edgetl.export.variants import (DEFAULT_VARIANTS, REFERENCE_VARIANT, VARIANTS, TFLiteVariant, float_variant_names,
                                     get_variant)
from edgetl.labels import labels_from_text
from edgetl.metrics import top1_accuracy
from edgetl.model.keras import tf
from edgetl.model_metadata import EdgetlMetadata, TensorSpec, labels_text
from edgetl.run_dir import DatasetRecord, RunPaths

logger = logging.getLogger(__name__)

MANIFEST_FILE = RunPaths.MANIFEST
LABELS_FILE = RunPaths.LABELS
SERVING_INPUT = "image"
SERVING_OUTPUT = "probabilities"


# ============================================================================
# Conversion
# ============================================================================


class TracedModel:
    """A Keras model traced once into a concrete function (batch 1, static shape) for repeated conversion.

    Use as a context manager. With ``fold`` (an ``edgetl.quant.fold.InputFold``), ``model`` is the
    part after the input normalisation and takes normalised values, and integer
    variants get the fold's input quantization: a QAT model (``qat=True``)
    through a fake-quant op on ``fold.range`` in front of it, a float model
    by calibrating on ``fold.normalise(pixels)`` and pinning the input's
    calibrated range to ``fold.range``.

    Attributes:
      function: the traced ``tf.function``'s concrete function, ``{"probabilities": [1, classes]}``
        from ``image`` ``[1, size, size, 3]`` float32.
      seconds: time spent tracing.
    """

    def __init__(self, model, size: int, fold=None, qat: bool = False):
        self.model = model
        self.size = size
        self.fold = fold
        self.qat = qat
        self.function = None
        self.seconds = 0.0

    def __enter__(self) -> "TracedModel":
        started = time.perf_counter()
        model = self.model
        spec = tf.TensorSpec([1, self.size, self.size, 3], tf.float32, name=SERVING_INPUT)
        if self.fold is None or not self.qat:
            serve = tf.function(lambda image: {SERVING_OUTPUT: model(image, training=False)}, input_signature=[spec])
        else:
            low, high = self.fold.range
            # This fake-quant op is where the converter takes the input tensor's (scale, zero point) from.
            serve = tf.function(
                lambda image: {SERVING_OUTPUT: model(tf.quantization.fake_quant_with_min_max_args(
                    image, min=low, max=high, num_bits=8, narrow_range=False), training=False)},
                input_signature=[spec])
        self.function = serve.get_concrete_function()
        self.seconds = time.perf_counter() - started
        return self

    def __exit__(self, *exc) -> None:
        self.function = None

    def convert(self, variant: TFLiteVariant, io_type: str = "uint8",
                representative: Optional[np.ndarray] = None, min_runtime: str = DEFAULT_MIN_RUNTIME) -> bytes:
        """Converts the traced model as ``variant``'s row says, keeping op versions loadable by TFLite ``min_runtime`` where it can.

        Raises:
          ExportError: when the converter fails or calibration images are missing.
        """
        from edgetl import _internals

        converter = tf.lite.TFLiteConverter.from_concrete_functions([self.function], self.model)
        # Freeze in memory instead of a SavedModel round trip per conversion (see the module docstring).
        converter.experimental_lower_to_saved_model = False
        for setting in needed_settings(variant.min_runtime_settings, min_runtime):
            setting.apply(converter)  # a private switch gone in another TensorFlow: the min-runtime check stays
        if variant.optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant.supported_types:
            converter.target_spec.supported_types = [getattr(tf, name) for name in variant.supported_types]
        if variant.needs_calibration:
            if representative is None or len(representative) == 0:
                raise ExportError(
                    f"Variant '{variant.name}' needs calibration images, got none. Pass --calibration-dir FOLDER, "
                    f"or drop '{variant.name}' from --variants."
                )
            images = representative[:variant.calibration_cap] if variant.calibration_cap else representative
            converter.representative_dataset = representative_dataset(
                images, self.fold.normalise if self.fold is not None else None)
        if variant.supported_ops:
            converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, name) for name in variant.supported_ops]
        if variant.integer_io:
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
        pin_input = variant.integer_io and self.fold is not None and not self.qat
        if pin_input:
            # A fake-quant op in a float graph would not do: its output is calibrated like any tensor,
            # and data that never reaches pixel 0 or 255 adds a requantizing op behind the input.
            _internals.calibrate_only(converter)
        captured = {"text": ""}
        try:
            with capture_native_output((1, 2)) as captured:
                data = converter.convert()
                return self._quantize_calibrated(data, io_type) if pin_input else data
        except EdgetlError:
            raise
        except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError...
            first = " ".join(str(e).split())[:300]
            tail = " ".join(captured["text"].split())[-300:]
            raise ExportError(
                f"TFLite conversion to '{variant.name}' failed: {first} {tail}. Expected a model of built-in "
                f"TFLite ops; re-run with --debug and report it, or export other variants."
            ) from e

    def _quantize_calibrated(self, calibrated: bytes, io_type: str) -> bytes:
        """Quantizes a calibrated float model after setting its input's range to the fold's pixel grid.

        This is the converter's own last step (``edgetl._internals.quantize_calibrated``),
        with one recorded range replaced.
        """
        from edgetl import _internals, tflite_schema

        buffer = bytearray(calibrated)
        graph = tflite_schema.reader().Model.GetRootAs(buffer, 0).Subgraphs(0)
        params = graph.Tensors(graph.Inputs(0)).Quantization()
        if params is None or params.MinLength() != 1 or params.MaxLength() != 1:
            raise ExportError(
                "The calibrated model records no range for its input, so the input normalisation cannot be folded "
                "into the input quantization. Re-run with --debug and report it."
            )
        # Views into ``buffer``: the range is rewritten in place.
        params.MinAsNumpy()[0], params.MaxAsNumpy()[0] = self.fold.range
        return _internals.quantize_calibrated(bytes(buffer), getattr(tf, io_type), getattr(tf, io_type))


def convert_variants(
    float_model,
    variants: Sequence[str],
    size: int,
    representative: Optional[np.ndarray] = None,
    qat_model=None,
    io_type: str = "uint8",
    on_done: Optional[Callable[[str, bytes, float], None]] = None,
    timings: Optional[Dict[str, float]] = None,
    fold_input: bool = True,
    folds: Optional[Dict[str, object]] = None,
    min_runtime: str = DEFAULT_MIN_RUNTIME,
) -> Dict[str, bytes]:
    """Converts ``float_model`` (and ``qat_model``) into every variant, tracing each model once.

    For the integer-I/O variants (int8, qat-int8), an input normalisation
    that is the same for every channel (``edgetl.quant.fold.input_fold``)
    becomes the input tensor's quantization instead of an op; the part of the
    model after it is traced once more for them.

    Args:
      float_model: the float classifier (ideally from ``edgetl.quant.rewrite.prepare_for_quantization``).
      variants: variant names.
      size: square input side.
      representative: uint8 calibration images for the calibrated variants.
      qat_model: the QAT model; needed for the QAT variants (qat-int8).
      io_type: 'uint8' or 'int8' for the integer variants.
      on_done: called as ``on_done(name, data, seconds)`` after each conversion.
      timings: when given, receives ``trace`` (seconds spent tracing/saving)
        and one entry per variant (seconds converting).
      fold_input: fold the input normalisation where possible (False keeps
        the frozen depthwise op and an input of scale ~1, zero point 0).
      folds: when given, receives ``{variant name: InputFold}`` for each
        variant that was folded, before ``on_done`` is called for it.
      min_runtime: the oldest TFLite runtime the files should load in
        (``edgetl.export.min_runtime``).

    Returns:
      ``{variant name: .tflite bytes}`` without edgetl metadata.

    Raises:
      ExportError: a conversion failed or a QAT variant was asked without a QAT model.

    Example:
      >>> files = convert_variants(model, ["fp32", "int8"], 224, representative_images(dataset, 224))
    """
    chosen = [get_variant(name) for name in variants]
    results: Dict[str, bytes] = {}
    plain = [v for v in chosen if not v.needs_qat]
    quantized = [v for v in chosen if v.needs_qat]
    if quantized and qat_model is None:
        raise ExportError(f"Variant '{quantized[0].name}' needs the QAT model; run `edgetl qat RUN_DIR` first.")
    jobs = []  # (model to trace, variants, calibration images, InputFold or None)
    float_fold = _input_fold(float_model, exact=False) if fold_input and any(v.integer_io for v in plain) else None
    if float_fold is None:
        jobs.append((float_model, plain, representative, None))
    else:
        jobs.append((float_model, [v for v in plain if not v.integer_io], representative, None))
        jobs.append((float_fold[1], [v for v in plain if v.integer_io], representative, float_fold[0]))
    if quantized:
        qat_fold = _input_fold(qat_model, exact=True) if fold_input else None
        jobs.append((qat_model, quantized, representative, None) if qat_fold is None
                    else (qat_fold[1], quantized, representative, qat_fold[0]))
    for model, group, images, fold in jobs:
        if not group:
            continue
        with TracedModel(model, size, fold, qat=any(v.needs_qat for v in group)) as traced:
            if timings is not None:
                timings["trace"] = timings.get("trace", 0.0) + traced.seconds
            for variant in group:
                started = time.perf_counter()
                data = traced.convert(variant, io_type, images, min_runtime)
                results[variant.name] = data
                if timings is not None:
                    timings[variant.name] = time.perf_counter() - started
                if folds is not None and fold is not None:
                    folds[variant.name] = fold
                if on_done is not None:
                    on_done(variant.name, data, time.perf_counter() - started)
    return {variant.name: results[variant.name] for variant in chosen}


def _input_fold(model, exact: bool):
    if model is None or not getattr(model, "inputs", None):
        return None
    from edgetl.quant.fold import input_fold

    return input_fold(model, exact=exact)


# ============================================================================
# Verification (LiteRT interpreter)
# ============================================================================


def _tensor_spec(tensor) -> TensorSpec:
    return TensorSpec(
        shape=tuple(int(d) for d in tensor.shape),
        dtype=tensor.dtype,
        scale=float(tensor.scale[0]) if tensor.quantized else 0.0,
        zero_point=int(tensor.zero_point[0]) if tensor.quantized else 0,
    )


def tensor_specs(data: bytes) -> Tuple[TensorSpec, TensorSpec]:
    """The (input, output) contracts of a ``.tflite`` model, read from its flatbuffer."""
    from edgetl.modelfile import parse_model

    info = parse_model(data, "exported model")
    return _tensor_spec(info.inputs[0]), _tensor_spec(info.outputs[0])


def predict_tflite(path: Union[str, Path], images: np.ndarray) -> np.ndarray:
    """Top-1 class of each uint8 image (``[N, H, W, 3]``, pixels 0-255), run as the device side runs it."""
    from edgetl.runtime.interpreter import load_interpreter
    from edgetl.runtime.tensors import input_transform

    loaded = load_interpreter(path, delegate="xnnpack", threads=os.cpu_count() or 1)
    # The embedded edgetl metadata says how pixels become the input tensor, as on the device.
    transform = input_transform(loaded.model.inputs[0], loaded.model.edgetl_metadata, model_name=str(path))
    predictions = np.empty(len(images), dtype=np.int64)
    for index, image in enumerate(images):
        # Quantized outputs have a positive scale, so argmax needs no dequantization.
        predictions[index] = int(np.argmax(loaded.run(transform(image))[0]))
    return predictions


def predict_keras(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Top-1 class of each uint8 image with a Keras model."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size].astype(np.float32))
        outputs.append(np.argmax(model(batch, training=False).numpy(), axis=-1))
    return np.concatenate(outputs) if outputs else np.zeros(0, np.int64)


# ============================================================================
# The stage
# ============================================================================


@dataclasses.dataclass
class VariantResult:
    """One exported file and how it did.

    Attributes:
      variant: variant name.
      path: the ``.tflite`` file.
      size_bytes: file size.
      sha256: file digest.
      input: input tensor contract.
      output: output tensor contract.
      conversion_seconds: converter time for this variant.
      accuracy: TFLite top-1 accuracy on the verification images (None when not verified).
      agreement: share of images where the TFLite and Keras float top-1 agree.
      accuracy_drop_pts: Keras float accuracy minus this accuracy, in points.
      flagged: the drop exceeds ``ExportConfig.flag_drop``.
      warning: the flag's explanation, or ''.
      edgetpu_check: the Edge TPU's verdict on the file (``edgetl.edgetpu``, as ``inspect`` shows it).
      edgetpu: the compiler's result, when it ran.
      min_runtime_version: the oldest TFLite runtime the file loads in (the
        converter's ``min_runtime_version``).
      runtime_warning: why it is newer than the ``--min-runtime`` target, or ''.
    """

    variant: str
    path: str
    size_bytes: int
    sha256: str
    input: TensorSpec
    output: TensorSpec
    conversion_seconds: float
    accuracy: Optional[float] = None
    agreement: Optional[float] = None
    accuracy_drop_pts: Optional[float] = None
    flagged: bool = False
    warning: str = ""
    edgetpu_check: Optional[dict] = None
    edgetpu: Optional[dict] = None
    min_runtime_version: str = ""
    runtime_warning: str = ""

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["name"] = Path(self.path).name
        return data


@dataclasses.dataclass
class ExportResult:
    """Everything ``export_run`` wrote and measured.

    Attributes:
      out_dir: the export folder.
      variants: one result per variant, in the order exported.
      keras_float_accuracy: the Keras float model's accuracy on the same images.
      val_images: verification images used (0 = not verified).
      calibration_images: images used to calibrate int8.
      manifest_path: the ``manifest.json`` written.
      labels_path: the ``labels.txt`` written.
      trace_seconds: time spent tracing the model(s) once.
      seconds: wall time of the whole export.
      warnings: flagged variants and other problems, one line each.
      notes: informational lines (rewrites, Edge TPU compiler availability...).
    """

    out_dir: str
    variants: List[VariantResult]
    keras_float_accuracy: Optional[float]
    val_images: int
    calibration_images: int
    manifest_path: str
    labels_path: str
    trace_seconds: float
    seconds: float
    warnings: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    def get(self, variant: str) -> VariantResult:
        """The result of ``variant``; KeyError when it was not exported."""
        for result in self.variants:
            if result.variant == variant:
                return result
        raise KeyError(variant)

    def summary(self) -> str:
        """A table of the exported files, their size and verified accuracy, then warnings."""
        reference = next((v.size_bytes for v in self.variants if v.variant == REFERENCE_VARIANT), None)
        lines = [f"Exported {len(self.variants)} model(s) to {self.out_dir} in {self.seconds:.0f} s"
                 f" (traced once: {self.trace_seconds:.1f} s)."]
        if self.keras_float_accuracy is not None:
            lines.append(f"Keras float accuracy on {self.val_images} validation images: {self.keras_float_accuracy:.2%}")
        lines.append(f"{'variant':9} {'file':44} {'size':>10} {'x ' + REFERENCE_VARIANT:>7} {'io':>7} {'accuracy':>9} {'drop':>7} "
                     f"{'runtime':>8}")
        for v in self.variants:
            ratio = f"{v.size_bytes / reference:.2f}" if reference else "-"
            accuracy = f"{v.accuracy:.2%}" if v.accuracy is not None else "-"
            drop = f"{v.accuracy_drop_pts:+.1f}" if v.accuracy_drop_pts is not None else "-"
            flag = "  FLAGGED" if v.flagged else ""
            runtime = f">={v.min_runtime_version}" if v.min_runtime_version else "-"
            lines.append(f"{v.variant:9} {Path(v.path).name:44} {v.size_bytes / 1024:>8.0f}KB {ratio:>7} "
                         f"{v.input.dtype:>7} {accuracy:>9} {drop:>7} {runtime:>8}{flag}")
            if v.edgetpu_check and get_variant(v.variant).edgetpu_compatible:
                lines.append(f"          Edge TPU check: {v.edgetpu_check['summary']}")
            if v.edgetpu:
                lines.append(f"          Edge TPU: {v.edgetpu['message']}")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"WARNING: {warning}" for warning in self.warnings)
        return "\n".join(lines)


def _model_identity(paths: RunPaths, model) -> Tuple[str, Optional[float], str]:
    """(backbone, alpha, preprocessing description) from config.yaml, else from the model name."""
    backbone, alpha, recorded = "", None, False
    if paths.config.is_file():
        try:
            section = load_yaml(str(paths.config)).get("model") or {}
            backbone, alpha, recorded = str(section.get("backbone") or ""), section.get("alpha"), True
        except (EdgetlError, AttributeError):
            pass
    if not backbone and str(model.name).startswith("edgetl_"):
        backbone = model.name[len("edgetl_"):]
    description = ""
    try:
        from edgetl.model.registry import get

        spec = get(backbone)
        # alpha=None in config.yaml means the backbone's default; without config.yaml it is unknown.
        alpha = spec.resolve_alpha(alpha) if recorded else alpha
        description = spec.preprocessing.description
    except EdgetlError:
        pass
    return backbone or "model", (float(alpha) if alpha is not None else None), description


def _labels(paths: RunPaths, dataset: Optional[DatasetRecord], num_classes: int) -> Tuple[str, ...]:
    if dataset is not None:
        labels = tuple(dataset.class_names)
    elif paths.labels.is_file():
        labels = labels_from_text(paths.labels.read_text(encoding="utf-8"))
    else:
        raise RunDirError(f"Run directory '{paths.root}' has neither dataset.json nor labels.txt; re-run edgetl train.")
    if len(labels) != num_classes:
        raise RunDirError(
            f"The model has {num_classes} outputs but the run lists {len(labels)} labels; "
            f"dataset.json/labels.txt do not belong to this model. Re-run edgetl train."
        )
    return labels


def _resolve_variants(config: ExportConfig, paths: RunPaths, echo) -> Tuple[str, ...]:
    qat_path = paths.qat_model
    if config.variants:
        needs_qat = [name for name in config.variants if get_variant(name).needs_qat]
        if needs_qat and not qat_path.is_file():
            raise RunDirError(
                f"Variant '{needs_qat[0]}' needs a QAT model, but '{qat_path}' does not exist. "
                f"Run quantization-aware training first: edgetl qat {paths.root}"
            )
        return config.variants
    if qat_path.is_file():
        return DEFAULT_VARIANTS
    plain = float_variant_names(DEFAULT_VARIANTS)
    echo(f"No QAT model in {paths.qat}: exporting {', '.join(plain)} (run `edgetl qat` for "
         f"{', '.join(n for n in DEFAULT_VARIANTS if n not in plain)}).")
    return tuple(plain)


def _verification_images(dataset: Optional[DatasetRecord], size: int, limit: int, store=None
                         ) -> Tuple[np.ndarray, np.ndarray]:
    if dataset is None or not dataset.val:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    items = list(dataset.val)[:limit]
    if store is not None and store.size == size:
        rows, labels, _ = store.usable([p for p, _ in items], [l for _, l in items])
        if not len(rows):
            return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
        return store.read(rows), labels.astype(np.int64)
    images, labels = [], []
    for path, label in items:
        loaded, skipped = load_images([path], size)
        if len(loaded):
            images.append(loaded[0])
            labels.append(label)
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(images), np.asarray(labels, np.int64)


def _run_store(paths: RunPaths, dataset: Optional[DatasetRecord], size: int, config: ExportConfig, calibrate: bool,
               progress: bool, echo):
    """The run's decoded store, current for the images this export reads (calibration sample, verification)."""
    from edgetl.data.store import open_run_store
    from edgetl.export.representative import sample_paths

    if dataset is None:
        return None
    wanted: List[str] = []
    if calibrate and not config.calibration_dir:
        wanted += sample_paths(list(dataset.train), config.calibration_images, config.seed)
    if config.verify:
        wanted += [p for p, _ in list(dataset.val)[:config.verify_images]]
    if not wanted:
        return None
    return open_run_store(paths.root, size, wanted, progress=progress, echo=echo)


def accuracy_drop_warning(variant: str, accuracy: float, reference: float, allowed_pts: float, images: int,
                          num_classes: int) -> Optional[str]:
    """The warning for a file that loses more than ``allowed_pts`` accuracy points against the Keras float model, else None.

    A pure function of the measured numbers, so the rule is tested with known
    values whatever a CPU's kernels give (tests/test_export.py).

    Args:
      variant: the variant name (its row's ``accuracy_remedy`` is appended).
      accuracy: the file's top-1 accuracy on the verification images, in [0, 1].
      reference: the Keras float model's accuracy on the same images.
      allowed_pts: the largest drop, in points, that is not flagged (``--flag-drop``).
      images: how many images were used.
      num_classes: output classes (chance level is 1 / num_classes).

    Returns:
      One line with both accuracies, the drop and a remedy; None when within ``allowed_pts``.
    """
    drop = round((reference - accuracy) * 100, 2)
    if not drop > allowed_pts:
        return None
    text = (f"{variant}: TFLite accuracy {accuracy:.1%} is {drop:.1f} pts below the Keras float model "
            f"({reference:.1%}) on {images} validation images (allowed: {allowed_pts:.1f} pts).")
    if accuracy <= 1.0 / num_classes + 0.05 < reference:
        text += " The model collapsed to chance level."
    remedy = get_variant(variant).accuracy_remedy
    return text + (f" {remedy}" if remedy else "")


def export_run(
    run_dir: Union[str, Path],
    config: Optional[ExportConfig] = None,
    echo: Callable[[str], None] = logger.info,
    progress: bool = True,
    qat_model=None,
) -> ExportResult:
    """Exports a trained run to TFLite: one verified ``.tflite`` per variant, labels and a manifest.

    Every file embeds its model metadata (labels, input contract, preprocessing,
    backbone, edgetl version), readable on a device without TensorFlow via
    ``edgetl.model_metadata.read_edgetl_metadata``, and the standard TFLite metadata that
    MediaPipe and the Task Library read (``edgetl.export.metadata``), with
    ``labels.txt`` in a zip after the flatbuffer. The converter keeps op
    versions loadable by TFLite ``config.min_runtime`` where it can; a file
    that still needs a newer runtime is named in a warning. The input of
    every variant is RGB pixels in [0, 255] (float32, or uint8/int8 per
    ``io_type``: raw pixels, minus 128 for int8); the backbone's
    normalisation is inside the model, or, in
    int8 files of backbones whose normalisation is the same for every
    channel, in the input quantization (the metadata's mean/std say which). Each file
    is written atomically, then reloaded with the LiteRT interpreter and run
    on validation images; a variant losing more than ``flag_drop``
    points against the Keras float model is flagged with a warning.

    Args:
      run_dir: a run directory with ``model.keras`` (and ``dataset.json``).
      config: variants, io type, calibration and verification options.
      echo: receives progress and warning lines.
      progress: show a progress bar.
      qat_model: the QAT model as ``RUN/qat/model.h5`` holds it, already in
        memory (``QATResult.model`` of this process); None loads the file.
        Reloading the HDF5 file rebuilds every tfmot wrapper, ~10 s for MobileNetV2.

    Returns:
      An ExportResult with one VariantResult per file.

    Raises:
      RunDirError: no trained model, no QAT model for qat-int8, missing labels.
      ExportError: no calibration images for int8, or a conversion failed.
      ConfigError: an unknown variant name (when ``config`` was built without validation).

    Example:
      >>> result = export_run("runs/flowers", ExportConfig(variants=("fp32", "int8")))
      >>> print(result.summary())
    """
    from edgetl.model.head import load_model

    config = config or ExportConfig()
    started = time.perf_counter()
    paths = RunPaths.of(run_dir)
    paths.require_model()
    variants = [get_variant(name) for name in _resolve_variants(config, paths, echo)]
    dataset = paths.load_dataset() if paths.dataset.is_file() else None
    model = load_model(paths.model)
    size = int(model.input_shape[1])
    num_classes = int(model.output_shape[-1])
    labels = _labels(paths, dataset, num_classes)
    backbone, alpha, preprocessing = _model_identity(paths, model)
    out_dir = Path(config.out_dir) if config.out_dir else paths.export
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{backbone}" + (f"_{alpha:g}" if alpha is not None else "") + f"_{size}"
    notes: List[str] = []
    warnings: List[str] = []

    calibrate = any(v.needs_calibration for v in variants)
    store = _run_store(paths, dataset, size, config, calibrate, progress, echo)
    representative = None
    if calibrate:
        representative = representative_images(dataset, size, config.calibration_images, config.calibration_dir, config.seed,
                                                store=store)
        echo(f"Calibration: {len(representative)} images.")
    qat_variants = [v.name for v in variants if v.needs_qat]
    if not qat_variants:
        qat_model = None
    else:
        from edgetl.quant.qat import load_qat_model

        qat_model = qat_model if qat_model is not None else load_qat_model(paths.qat_model)
        if paths.qat_model.is_file() and paths.qat_model.stat().st_mtime < paths.model.stat().st_mtime:
            warnings.append(f"{paths.qat_model} is older than {paths.model.name}: {', '.join(qat_variants)} comes from "
                            f"an earlier training. Re-run `edgetl qat {paths.root}` to match the current model.")

    from edgetl.quant.rewrite import prepare_for_quantization

    try:
        export_model, rewrites = prepare_for_quantization(model)
        notes.extend(f"graph rewrite: {note}" for note in rewrites)
    except ExportError as e:
        export_model = model
        notes.append(f"exporting the model as trained; graph rewrite skipped ({e})")

    val_images, val_labels = (_verification_images(dataset, size, config.verify_images, store) if config.verify
                              else (np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)))
    keras_predictions = predict_keras(model, val_images) if len(val_images) else None
    keras_accuracy = top1_accuracy(keras_predictions, val_labels) if keras_predictions is not None else None
    if config.verify and not len(val_images):
        warnings.append("No validation images in dataset.json: exported files were not verified.")

    write_text(out_dir / LABELS_FILE, labels_text(list(labels)))
    results: List[VariantResult] = []
    manifest_path = out_dir / MANIFEST_FILE

    def write_manifest() -> None:
        write_json(manifest_path, {
            "edgetl_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "run_dir": str(paths.root),
            "backbone": backbone,
            "alpha": alpha,
            "input_size": size,
            "labels_file": LABELS_FILE,
            "labels": list(labels),
            "keras_float_accuracy": keras_accuracy,
            "val_images": int(len(val_images)),
            "calibration_images": int(len(representative)) if representative is not None else 0,
            "io_type": config.io_type,
            "min_runtime_target": config.min_runtime,
            "flag_drop_pts": config.flag_drop,
            "models": [r.to_dict() for r in results],
        })

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(variants), desc="export", unit="variant", leave=False, disable=None)

    folds: Dict[str, object] = {}

    def finish(name: str, data: bytes, seconds: float) -> None:
        from edgetl.modelfile import parse_model

        variant = get_variant(name)
        info = parse_model(data, f"{name} conversion")
        input_spec, output_spec = _tensor_spec(info.inputs[0]), _tensor_spec(info.outputs[0])
        fold = folds.get(name)
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        text = (f"input is RGB pixels in [0, 255]; in-model: {preprocessing}" if preprocessing
                else "input is RGB pixels in [0, 255]; normalisation is inside the model")
        if fold is not None:
            # (pixel - mean) / std, quantized with the input's own scale and zero point, gives back the
            # pixel itself: any metadata reader feeds raw pixels, and the edgetl metadata states what the model reads.
            mean, std = (float(fold.zero_point),) * 3, (float(f"{1.0 / fold.scale:.9g}"),) * 3
            text = (f"input is RGB pixels in [0, 255], fed unchanged as {input_spec.dtype}"
                    f"{' minus 128' if input_spec.dtype == 'int8' else ''}; the backbone's normalisation"
                    f"{' (' + preprocessing + ')' if preprocessing else ''} is folded into the input quantization: "
                    f"the model reads pixel p as (p - {fold.zero_point}) * {fold.scale:.6g}")
        metadata = EdgetlMetadata(
            labels=labels, input=input_spec, output=output_spec, mean=mean, std=std,
            backbone=backbone, alpha=alpha, variant=name, preprocessing=text,
            edgetl_version=__version__,
            extra={"run": paths.root.name, "io_type": variant.io_dtype(config.io_type),
                   "calibration_images": int(len(representative)) if variant.integer_io and representative is not None else 0},
        )
        path = out_dir / f"{stem}_{variant.suffix}.tflite"
        write_bytes(path, embed_metadata(data, metadata, info))
        write_text(path.with_suffix(".json"), metadata.to_json() + "\n")
        result = VariantResult(variant=name, path=str(path), size_bytes=path.stat().st_size, sha256=file_sha256(path),
                               input=input_spec, output=output_spec, conversion_seconds=round(seconds, 2),
                               min_runtime_version=info.min_runtime_version)
        result.runtime_warning = runtime_warning(name, info.min_runtime_version, config.min_runtime) or ""
        if result.runtime_warning:
            warnings.append(result.runtime_warning)
            echo(f"WARNING: {result.runtime_warning}")
        if len(val_images):
            predictions = predict_tflite(path, val_images)
            result.accuracy = top1_accuracy(predictions, val_labels)
            result.agreement = top1_accuracy(predictions, keras_predictions)
            result.accuracy_drop_pts = round((keras_accuracy - result.accuracy) * 100, 2)
            warning = accuracy_drop_warning(name, result.accuracy, keras_accuracy, config.flag_drop, len(val_images),
                                            num_classes)
            if warning:
                result.flagged, result.warning = True, warning
                warnings.append(warning)
                echo(f"WARNING: {warning}")
        # The verdict `edgetl inspect` gives on the file as written (metadata included), for every file.
        result.edgetpu_check = parse_model(path.read_bytes(), str(path)).edgetpu.to_dict()
        results.append(result)
        write_manifest()
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{name} {result.size_bytes / 1024:.0f} KB")
        accuracy = f", accuracy {result.accuracy:.2%}" if result.accuracy is not None else ""
        echo(f"  {path.name}: {result.size_bytes / 1024:.0f} KB{accuracy}")

    timings: Dict[str, float] = {}
    try:
        convert_variants(export_model, [v.name for v in variants], size, representative, qat_model,
                         config.io_type, on_done=finish, timings=timings, folds=folds, min_runtime=config.min_runtime)
    finally:
        if bar is not None:
            bar.close()
    if config.edgetpu:
        _compile_for_edgetpu(results, out_dir, notes, warnings, echo)
        write_manifest()
    return ExportResult(
        out_dir=str(out_dir), variants=results, keras_float_accuracy=keras_accuracy, val_images=int(len(val_images)),
        calibration_images=int(len(representative)) if representative is not None else 0,
        manifest_path=str(manifest_path), labels_path=str(out_dir / LABELS_FILE),
        trace_seconds=round(timings.get("trace", 0.0), 2), seconds=round(time.perf_counter() - started, 2),
        warnings=warnings, notes=notes,
    )


def _compile_for_edgetpu(results: List[VariantResult], out_dir: Path, notes: List[str], warnings: List[str], echo) -> None:
    from edgetl.export.edgetpu import INSTALL_HINT, compile_edgetpu, find_compiler

    candidates = [r for r in results if get_variant(r.variant).edgetpu_compatible]
    if not candidates:
        names = [name for name, variant in VARIANTS.items() if variant.edgetpu_compatible]
        notes.append(f"--edgetpu: no {' or '.join(names)} file was exported, nothing to compile.")
        return
    if not find_compiler():
        notes.append(INSTALL_HINT)
        echo(INSTALL_HINT)
        return
    for result in candidates:
        if result.edgetpu_check and result.edgetpu_check["refused"]:
            warnings.append(f"{result.variant}: not compiled for the Edge TPU: {result.edgetpu_check['summary']}")
            continue
        compiled = compile_edgetpu(result.path, str(out_dir))
        result.edgetpu = compiled.to_dict()
        if compiled.path is None:
            warnings.append(f"{result.variant}: {compiled.message}")
        else:
            path = Path(compiled.path)
            result.edgetpu.update(size_bytes=path.stat().st_size, sha256=file_sha256(path), name=path.name)
        echo(f"  Edge TPU: {compiled.message}")


__all__ = ["ExportResult", "TracedModel", "VariantResult", "convert_variants", "export_run", "predict_keras",
           "predict_tflite", "tensor_specs"]
