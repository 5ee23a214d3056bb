"""The QAT stage: quantization-aware fine-tuning (tfmot) of a trained classifier, with range calibration and distillation.

The model is quantized with ``edgetl.quant.scheme.quantize`` (every registry
backbone: see ``edgetl.quant.rewrite``). tfmot starts every activation range at
[-6, 6] and moves it with a 0.999 moving average, so a few epochs of QAT would
keep ranges far from the data: the ranges are first set from calibration
batches (``calibrate_ranges``), as post-training quantization does, then the
model is fine-tuned at a low learning rate, optionally towards the float
model's probabilities (``QATConfig.distillation``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgetl import _internals
from edgetl._atomic import atomic_path, write_json
from edgetl.config import AugmentConfig, QATConfig, from_dict, load_yaml
from edgetl.errors import ConfigError, ExportError, RunDirError
from edgetl.metrics import top1_accuracy
from edgetl.model.keras import keras, tf
from edgetl.quant.scheme import qat_scope, quantize
from edgetl.run_dir import DatasetRecord, RunPaths

logger = logging.getLogger(__name__)

# A QAT fit this short runs eagerly (see ``quantize_aware_finetune``).
EAGER_STEPS = 8


def calibrate_ranges(qat_model, batches: Sequence[np.ndarray], ema_decay: float = 0.999) -> int:
    """Sets every activation range of a fresh QAT model from calibration batches.

    tfmot updates a range as ``v <- d*v + (1-d)*batch_range`` (d = 0.999) from
    an initial [-6, 6]. One training-mode forward pass per batch therefore
    reveals each quantizer's batch range exactly, ``(v1 - d*v0) / (1 - d)``,
    through the quantized upstream graph; the ranges are set to their mean over
    the batches (what the moving average converges to). Dropout is off during
    the passes so the ranges match inference. Weights do not change.

    Args:
      qat_model: a model from ``edgetl.quant.scheme.quantize``.
      batches: float image batches in [0, 255].
      ema_decay: tfmot's moving-average decay (0.999 in tfmot 0.8).

    Returns:
      The number of ranges set (0 when there were no batches).
    """
    pairs = _internals.moving_average_range_variables(qat_model)
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


def read_qat_result(path: Union[str, Path]) -> Optional[dict]:
    """The saved ``qat_result.json`` of a run's QAT folder, or None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


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
        from edgetl.export.variants import qat_variant_names

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
            lines.append(f"Saved {self.model_path}. Next: edgetl export {Path(self.model_path).parent.parent} "
                         f"--variants {','.join(qat_variant_names())}")
        return "\n".join(lines)


def _image_batches(store, rows: Sequence[int], batch_size: int, limit: int) -> List[np.ndarray]:
    """The first ``limit`` rows of the decoded store as float32 batches (activation-range calibration)."""
    rows = list(rows)[:limit]
    return [store.read(rows[i:i + batch_size]).astype(np.float32) for i in range(0, len(rows), batch_size)]


def _keras_accuracy(model, dataset) -> float:
    predicted, labels = [], []
    for images, batch_labels in dataset:
        predicted.append(np.argmax(model(images, training=False).numpy(), axis=-1))
        labels.append(batch_labels.numpy())
    if not labels:
        return float("nan")
    return top1_accuracy(np.concatenate(predicted), np.concatenate(labels))


def _training_augmentation(paths: Optional[RunPaths], echo) -> AugmentConfig:
    """The augmentation the run's fine-tuning used: RUN/config.yaml's ``data.augment``, with the orientation the
    training stage decided (train_result.json) in place of 'auto'.

    QAT trains the same weights on the same images: 90-degree turns a run decided against (the orientation
    carries the label) would teach it another task, and leaving them out where training used them drops
    views the model was fitted to. Photos are taken as upright where the run has no record (a model passed
    in, a run directory of an older edgetl).
    """
    augment = AugmentConfig()
    if paths is not None and paths.config.is_file():
        try:
            augment = from_dict(AugmentConfig, (load_yaml(str(paths.config)).get("data") or {}).get("augment"),
                                "data.augment")
        except (ConfigError, AttributeError) as e:
            echo(f"note: the run's augmentation cannot be read from {paths.config} ({e}); QAT uses the defaults.")
    orientation = augment.orientation
    if orientation == "auto":
        try:
            decided = json.loads(paths.train_result.read_text(encoding="utf-8")).get("orientation") if paths else None
        except (OSError, ValueError, AttributeError):
            decided = None
        orientation = decided if decided in ("upright", "any") else "upright"
    return dataclasses.replace(augment, enabled=True, orientation=orientation)


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
    (``edgetl.quant.rewrite``), initialises activation ranges from
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
      progress: show progress bars (``tqdm.keras.TqdmCallback``) during fine-tuning.

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
    with _internals.op_determinism(config.deterministic):
        tf.keras.utils.set_random_seed(config.seed) if hasattr(tf.keras.utils, "set_random_seed") else None

        qat_model, notes = quantize(model)
        for note in notes:
            echo(f"  rewrite: {note}")
        calibration = _image_batches(store, train_rows, config.batch_size, config.calibration_batches * config.batch_size)
        calibrated = calibrate_ranges(qat_model, calibration) if config.calibration_batches else 0
        echo(f"Calibrated {calibrated} activation ranges on {sum(len(b) for b in calibration)} training images.")

        augment = _training_augmentation(run_paths, echo) if config.augment else None
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
        if not trainer.run_eagerly:
            # Adam's slots created inside the first step make tf.function trace the whole QAT training
            # step a second time (~10 s for MobileNetV2); created here, the step is traced once.
            trainer.optimizer.build(qat_model.trainable_variables)
        callbacks = []
        if progress:
            from tqdm.keras import TqdmCallback

            callbacks.append(TqdmCallback(epochs=config.epochs, desc="QAT", leave=False, disable=None))
        history = trainer.fit(
            train_ds.repeat(), epochs=config.epochs, steps_per_epoch=steps_per_epoch, verbose=0, callbacks=callbacks,
        ) if config.epochs else None

    float_accuracy = qat_accuracy = None
    if val_ds is not None:
        float_accuracy = _keras_accuracy(model, val_ds)
        qat_accuracy = _keras_accuracy(qat_model, val_ds)
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
        model_path = out_dir / RunPaths.QAT_MODEL
        # HDF5, not .keras: tf_keras' .keras format saves tfmot's QuantizeLayer
        # variables twice and then refuses to load them.
        with atomic_path(model_path, suffix=".h5") as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*HDF5.*legacy", category=UserWarning)
            qat_model.save(tmp, save_format="h5")
        result.model_path = str(model_path)
    result.seconds = time.perf_counter() - started
    if out_dir is not None:
        write_json(out_dir / RunPaths.QAT_RESULT, {**result.to_dict(), "config": dataclasses.asdict(config)})
    return result


def _backbone_of(model) -> str:
    name = getattr(model, "name", "") or ""
    return name[len("edgetl_"):] if name.startswith("edgetl_") else ""


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


__all__ = ["EAGER_STEPS", "QATConfig", "QATResult", "calibrate_ranges", "load_qat_model", "quantize_aware_finetune",
           "read_qat_result"]
