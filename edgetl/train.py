"""Two-stage transfer learning: the head on cached backbone features, then fine-tuning -> TrainResult.

Stage 1 freezes the backbone, so its output for an un-augmented image never
changes: edgetl computes the pooled features once and trains the head on them,
which gives the same head as fitting through the frozen backbone every epoch at
a fraction of the cost. Stage 2 unfreezes the top layers (BatchNorm stays
frozen) and trains on augmented images at a lower learning rate. Every epoch is
checkpointed; running the same command again resumes where it stopped.

Images are read from the run's decoded store (``edgetl.data.store``): each
file is decoded once, the scan's validation included, and both stages read
rows from disk, so memory does not grow with the folder. The data's identity
(class list, every file's content digest, the decode settings) is recorded
with the checkpoints; resuming happens only when it matches, otherwise the
run starts over with one line naming what changed (a checkpoint of other
classes would not even load: ``Shape mismatch``).

Several machines: with ``strategy='multiworker'`` every worker runs this same
function under ``tf.distribute.MultiWorkerMirroredStrategy`` (configured by
``TF_CONFIG``). Only the chief writes the run directory; the other workers
keep their store, logs and weights in a temporary folder that is removed at
the end, as the Keras multi-worker guide recommends for checkpoints (or in
``$EDGETL_WORKER_DIR``, kept, when that is set). Their
stage decisions (resume, skip stage 1) read the chief's run directory, as
Keras' BackupAndRestore does, so resuming needs the run directory at the same
path on every worker (a shared filesystem).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from edgetl import __version__, _internals
from edgetl._atomic import atomic_path, write_json, write_text
from edgetl.config import DataConfig, ModelConfig, TrainConfig, dump_yaml, load_yaml, to_dict
from edgetl.data.folder import ImageFolder, keep_usable, scan_candidates, scan_folder
from edgetl.data.identity import DataIdentity, data_identity, describe_changes, recorded_identity, store_digests
from edgetl.data.pipeline import store_dataset
from edgetl.data.split import Splits, class_weights, split_folder
from edgetl.data.store import ImageStore, store_folder
from edgetl.cluster import WorkerRole, worker_role
from edgetl.errors import ConfigError
from edgetl.metrics import classification_metrics
from edgetl.model import head as head_lib
from edgetl.model.keras import keras, tf
from edgetl.model_metadata import labels_text
from edgetl.run_dir import DatasetRecord, RunPaths
from edgetl.stats import split_size_note

logger = logging.getLogger(__name__)

STAGE1 = "head"
STAGE2 = "fine_tune"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` produced.

    Attributes:
      run_dir: the run directory.
      model_path: saved float Keras model.
      class_names: labels in output order.
      val_accuracy: top-1 accuracy of the final model on the validation split.
      per_class_accuracy: validation recall of each class.
      confusion_matrix: validation confusion matrix (rows = true class).
      history: ``{stage: Keras history}`` for the stages that ran.
      stage_seconds: wall time of each stage in this invocation.
      weights: the weights the backbone started from ('imagenet', a path or 'none').
      resumed: True when this call continued from checkpoints.
      skipped_files: number of files the scan skipped.
      val_predictions: top-1 class index of each validation image, in the
        order of ``dataset.json``'s ``val`` list (for paired comparisons
        with the exported files).
    """

    run_dir: str
    model_path: str
    class_names: List[str]
    val_accuracy: float
    per_class_accuracy: Dict[str, float]
    confusion_matrix: List[List[int]]
    history: Dict[str, Dict[str, List[float]]]
    stage_seconds: Dict[str, float]
    weights: str
    resumed: bool
    skipped_files: int
    val_predictions: List[int] = dataclasses.field(default_factory=list)
    orientation: str = ""
    orientation_test: Optional[Dict[str, object]] = None

    def summary(self) -> str:
        """A short human-readable report."""
        width = max(len(n) for n in self.class_names)
        lines = [
            f"val accuracy: {self.val_accuracy:.4f}  (weights: {self.weights}{', resumed' if self.resumed else ''})",
            "per-class accuracy:",
            *[f"  {name:<{width}}  {acc:.4f}" for name, acc in self.per_class_accuracy.items()],
            f"model: {self.model_path}",
            f"run directory: {self.run_dir} (config.yaml, labels.txt, plots/, logs/)",
        ]
        return "\n".join(lines)


def get_strategy(name: str):
    """The tf.distribute strategy for ``name``.

    'auto': MirroredStrategy when several GPUs are visible, else the default;
    'mirrored': MirroredStrategy over this machine's GPUs (or its CPU);
    'multiworker': MultiWorkerMirroredStrategy over the machines ``TF_CONFIG`` names;
    'default': no distribution.
    """
    if name == "multiworker":
        worker_role(name)  # a clear line instead of TensorFlow's own error when TF_CONFIG is wrong
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def load_splits(config: DataConfig, progress: bool = True, store: Optional[ImageStore] = None) -> Splits:
    """Scans the folder(s) and returns the train/validation split.

    With ``store``, every candidate file is decoded once into it (the decode is
    also the validation: an undecodable file is skipped with its reason) and
    entries of files no longer in the folders are dropped from it. Without, the
    scan decodes a small draft of each file only to validate it.
    """
    if store is not None:
        return load_data(config, store, progress)[0]
    train_folder = scan_folder(config.path, min_images_per_class=config.min_images_per_class, progress=progress)
    if config.val_path:
        val_folder = scan_folder(config.val_path, class_names=train_folder.class_names, min_images_per_class=1, progress=progress)
        return Splits(train_folder, val_folder)
    return _split(config, train_folder)


def _split(config: DataConfig, train_folder: ImageFolder) -> Splits:
    splits = split_folder(train_folder, config.val_fraction, config.seed)
    return Splits(dataclasses.replace(splits.train, skipped=train_folder.skipped), splits.val)


def load_data(config: DataConfig, store: ImageStore, progress: bool) -> Tuple[Splits, DataIdentity]:
    """The split, with every image in ``store``, and the identity of the folder(s) (as ``current_identity``)."""
    train_candidates = scan_candidates(config.path)
    folders = [train_candidates]
    if config.val_path:
        folders.append(scan_candidates(config.val_path, class_names=train_candidates.class_names))
    every = [path for folder in folders for path in folder.paths]
    reasons = store.update(every, progress=progress, prune=True, desc="decoding images (once per run)")
    identity = data_identity(folders, store_digests(store), store.size)
    train_folder = keep_usable(train_candidates, reasons[:len(train_candidates)], config.min_images_per_class)
    if config.val_path:
        return Splits(train_folder, keep_usable(folders[1], reasons[len(train_candidates):], 1)), identity
    return _split(config, train_folder), identity


def _check_resumable(paths: RunPaths, sections: Dict[str, object]) -> None:
    """Refuses to resume a run directory trained with different data/model settings."""
    if not paths.config.is_file():
        return
    old = load_yaml(str(paths.config))
    for section in ("data", "model"):
        new = to_dict(sections[section])
        before = old.get(section) or {}
        changed = [k for k in new if k in before and before[k] != new[k]]
        if changed:
            key = changed[0]
            raise ConfigError(
                f"Run directory '{paths.root}' was trained with {section}.{key}={before[key]!r}, now {new[key]!r}. "
                f"Pass --fresh to start over there, or choose another --out."
            )


def _best_from_csv(path: Path, key: str = "val_accuracy") -> Optional[float]:
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        values = [float(row[key]) for row in csv.DictReader(handle) if row.get(key) not in (None, "")]
    return max(values) if values else None


def _history_from_csv(path: Path) -> Dict[str, List[float]]:
    """The full history of a stage, including epochs run before a resume."""
    if not path.is_file():
        return {}
    history: Dict[str, List[float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "epoch" and value not in (None, ""):
                    history.setdefault(key, []).append(float(value))
    return history


def _callbacks(paths: RunPaths, work: RunPaths, stage: str, config: TrainConfig, best_path: Path, echo,
               initial_best: Optional[float], epochs: int, progress: bool = True):
    """Keras callbacks of a stage; ``paths`` is the run directory, ``work`` where this worker writes."""
    def epoch_line(epoch, logs):
        shown = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        echo(f"[{stage}] epoch {epoch + 1}/{epochs} {shown}")

    callbacks = [
        # Every worker names the chief's backup folder: Keras restores all of them from it and sends the
        # other workers' writes to temporary sub-folders it deletes (tf_keras worker_training_state).
        keras.callbacks.BackupAndRestore(str(paths.backup(stage))),
        # A kill mid-save never leaves a corrupt best .h5: every save goes to a temporary file first.
        _internals.atomic_model_checkpoint(
            filepath=str(best_path), monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True,
            initial_value_threshold=initial_best,
        ),
        keras.callbacks.CSVLogger(str(work.history(stage)), append=True),
        keras.callbacks.LambdaCallback(on_epoch_end=epoch_line),  # one line per epoch, also without a TTY
    ]
    if progress:
        from tqdm.keras import TqdmCallback

        callbacks.append(TqdmCallback(epochs=epochs, desc=stage, leave=False, disable=None))
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience))
    return callbacks


def _predict_batches(model, dataset, steps: int, desc: str, progress: bool = True) -> np.ndarray:
    """``model`` on every batch of ``dataset``, concatenated (float32 numpy).

    A compiled loop in this process rather than ``Model.predict``: under a
    multi-worker strategy every worker computes the same un-augmented outputs
    locally, with no collective op to keep in step.
    """
    from tqdm import tqdm

    infer = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    outputs = [infer(images).numpy() for images, _ in tqdm(dataset, total=steps, desc=desc, unit="batch",
                                                           leave=False, disable=None if progress else True)]
    if not outputs:
        return np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)


def _barrier(strategy) -> None:
    """Waits until every worker gets here (a one-number all-reduce); a no-op without multi-worker.

    After ``fit``, the chief has written its best checkpoint (ModelCheckpoint saves in
    ``on_epoch_end``, before ``fit`` returns); past the barrier every worker sees it
    and takes the same branch, so their later collective ops pair up.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.function(lambda: tf.constant(1.0))), axis=None)


def _local_copy(model, strategy):
    """``model`` as an ordinary model of this process, for inference under a multi-worker strategy.

    Reading a BatchNorm moving statistic (an ON_READ variable) under
    MultiWorkerMirroredStrategy is a collective op across workers; inside a
    traced inference loop the workers' collectives can pair up in different
    orders and abort ("Shape mismatch in the collective instance"). So every
    worker copies the weights once, layer by layer in one eager order (each read
    an all-reduce all workers join), into a clone outside the strategy, and
    predicts and saves with that clone. Without multi-worker: ``model`` itself.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    clone = keras.models.clone_model(model)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            clone.get_layer(layer.name).set_weights(weights)
    for layer in model.layers:
        clone.get_layer(layer.name).trainable = layer.trainable
    return clone


def feature_views(data: DataConfig, config: TrainConfig) -> Tuple[int, ...]:
    """The fixed views (``pipeline.dihedral`` indices) of each training image that stage 1 trains on."""
    views = data.augment.views()
    return views[:config.feature_views] if config.feature_views else views


def extract_features(model, dataset, cache_file: Path, count: int, echo, steps: int = 0, progress: bool = True,
                      what: str = "") -> np.ndarray:
    """Pooled backbone features of un-augmented images, cached on disk for resumes (N x channels float32)."""
    if cache_file.is_file():
        features = np.load(cache_file)
        if features.shape[0] == count:
            return features
    echo(f"computing backbone features once for {count} images{what} ...")
    features = _predict_batches(head_lib.feature_extractor(model), dataset, steps, "backbone features", progress)
    with atomic_path(cache_file, suffix=".npy") as tmp:
        np.save(tmp, features)
    return features


def _train_head(model, splits, datasets, data: DataConfig, config: TrainConfig, paths: RunPaths, work: RunPaths,
                weights_by_class, echo, strategy=None, progress: bool = True, view_dataset=None):
    """Stage 1: the head alone, on cached features (of ``feature_views``) or through the frozen backbone.

    ``view_dataset(view)`` gives the un-shuffled training images under a fixed ``dihedral`` view.
    """
    best_path = work.weights(STAGE1, "best")
    callbacks = _callbacks(paths, work, STAGE1, config, best_path, echo, _best_from_csv(paths.history(STAGE1)),
                           config.epochs, progress)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if config.cache_features:
        steps = -(-len(splits.train) // data.batch_size)
        local = _local_copy(model, strategy)
        views = feature_views(data, config)
        # Each view is a fixed flip or 90-degree rotation of every training image: the only augmentation
        # features computed once can carry. The validation split stays as it is, as the device will see it.
        train_features = np.concatenate([
            extract_features(local, view_dataset(view), work.features("train", view), len(splits.train), echo, steps,
                              progress, f" (view {position + 1} of {len(views)})" if len(views) > 1 else "")
            for position, view in enumerate(views)])
        train_labels = np.tile(np.asarray(splits.train.labels), len(views))
        val_features = extract_features(local, datasets["val"], work.features("val"), len(splits.val),
                                         echo, -(-len(splits.val) // data.batch_size), progress)
        trainable = head_lib.head_model(model)
        trainable.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        trainable.fit(
            train_features, train_labels, batch_size=data.batch_size, epochs=config.epochs,
            validation_data=(val_features, np.asarray(splits.val.labels)), shuffle=True,
            class_weight=weights_by_class or None, callbacks=callbacks, verbose=0,
        )
    else:
        trainable = model
        trainable.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        trainable.fit(
            datasets["train_shuffled"], epochs=config.epochs, validation_data=datasets["val"],
            class_weight=weights_by_class or None, callbacks=callbacks, verbose=0,
        )
    _barrier(strategy)
    best = paths.checkpoints / best_path.name  # the chief's: every worker loads the same weights
    if best.is_file():
        trainable.load_weights(str(best))


def fine_tune_schedule(config: TrainConfig, steps_per_epoch: int):
    """Stage 2's learning rate: a float (constant) or a Keras schedule of the optimizer step.

    'cosine' decays from ``fine_tune_learning_rate`` to 0 over the fine-tuning
    steps (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts); with
    ``warmup_epochs`` the rate first rises linearly from 0 to the peak over
    that many epochs, and the cosine (or the constant rate) takes the rest.
    """
    steps = config.fine_tune_epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    if config.lr_schedule == "constant" and not warmup:
        return config.fine_tune_learning_rate
    # Keras' CosineDecay does the warm-up (0 -> peak, linear) itself; alpha=1 keeps 'constant' constant after it.
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.fine_tune_learning_rate, max(steps - warmup, 1),
        alpha=0.0 if config.lr_schedule == "cosine" else 1.0,
        warmup_target=config.fine_tune_learning_rate if warmup else None, warmup_steps=warmup)


def _fine_tune(model, datasets, config: TrainConfig, paths: RunPaths, work: RunPaths, weights_by_class, echo,
               stage1_best: Optional[float], strategy=None, progress: bool = True) -> bool:
    """Stage 2: unfreeze the top layers and train on augmented images.

    Returns:
      True when an epoch beat stage 1 on validation accuracy (its weights are kept).
    """
    unfrozen = head_lib.set_fine_tune(model, config.fine_tune_layers)
    warm = f" after {config.warmup_epochs} warm-up epoch(s)" if config.warmup_epochs else ""
    echo(f"fine-tuning {unfrozen} backbone layers (BatchNorm frozen) at lr {config.fine_tune_learning_rate:g}{warm}")
    learning_rate = fine_tune_schedule(config, int(datasets["train"].cardinality().numpy()))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best_path = work.weights(STAGE2, "best")
    initial = _best_from_csv(paths.history(STAGE2))
    initial = max(v for v in (initial, stage1_best, 0.0) if v is not None)
    callbacks = _callbacks(paths, work, STAGE2, config, best_path, echo, initial, config.fine_tune_epochs, progress)
    callbacks.append(keras.callbacks.TensorBoard(str(work.logs / "tensorboard"), profile_batch=0, write_graph=False))
    model.fit(
        datasets["train"], epochs=config.fine_tune_epochs, validation_data=datasets["val"],
        class_weight=weights_by_class or None, callbacks=callbacks, verbose=0,
    )
    _barrier(strategy)
    best = paths.checkpoints / best_path.name  # the chief's: every worker loads the same weights
    if best.is_file():
        model.load_weights(str(best))
        return True
    return False


def _resolve_orientation(data: DataConfig, config: TrainConfig, classifier, store: ImageStore, splits: Splits,
                         train_rows, val_rows, work: RunPaths, state: Dict[str, object], role: WorkerRole,
                         weights_by_class, echo, progress: bool) -> Tuple[DataConfig, Optional[Dict[str, object]]]:
    """``data`` with ``augment.orientation`` 'auto' replaced by what ``edgetl.orientation`` measures.

    The decision is kept in the checkpoints' state, so a resumed run fine-tunes
    with the augmentation it started with. Returns the test's figures (None when no test ran).
    """
    from edgetl.orientation import ROTATE_90, measure

    augment = data.augment
    if not augment.enabled or augment.orientation != "auto":
        return data, None

    def resolved(orientation: str) -> DataConfig:
        return dataclasses.replace(data, augment=dataclasses.replace(augment, orientation=orientation))

    if state.get("orientation") in ("upright", "any"):
        echo(f"orientation from the data: {state['orientation']} (decided when this run's training started)")
        return resolved(str(state["orientation"])), None
    fine_tunes = config.fine_tune_epochs > 0 and config.fine_tune_layers != 0
    if not fine_tunes and config.feature_views == 1:
        return resolved("upright"), None  # no augmentation is applied: nothing to decide
    if not config.cache_features or config.epochs == 0 or role.workers > 1:
        echo("note: --orientation auto is decided on cached stage-1 features on one machine; this run has none "
             "(--no-cache-features, --epochs 0 or several workers), so the photos are taken as upright. Pass "
             "--orientation any when objects are photographed in any orientation.")
        return resolved("upright"), None
    batch = data.batch_size
    labels = np.asarray(splits.train.labels)
    extractor = head_lib.feature_extractor(classifier)
    features = extract_features(extractor, store_dataset(store, train_rows, labels, batch), work.features("train"),
                                len(splits.train), echo, -(-len(splits.train) // batch), progress)
    val_labels = np.asarray(splits.val.labels)
    val_features = extract_features(extractor, store_dataset(store, val_rows, val_labels, batch), work.features("val"),
                                    len(splits.val), echo, -(-len(splits.val) // batch), progress)

    def turned(sample):
        return _predict_batches(extractor, store_dataset(store, np.asarray(train_rows)[sample], labels[sample], batch,
                                                         view=ROTATE_90),
                                -(-len(sample) // batch), "turned copies (orientation test)", progress)

    choice = measure(head_lib.head_model(classifier), turned, features, labels, val_features, val_labels, config, batch,
                     data.seed, weights_by_class or None)
    keras.utils.set_random_seed(config.seed)  # stage 1 starts from the same random state as without the test
    echo(choice.line())
    state["orientation"] = choice.orientation
    _write_state(work, state)
    return resolved(choice.orientation), dataclasses.asdict(choice)


def _read_state(paths: RunPaths) -> Dict[str, object]:
    state_file = paths.train_state
    try:
        return json.loads(state_file.read_text()) if state_file.is_file() else {}
    except ValueError:
        return {}  # damaged: treated as no record, so the data check below starts over


def _write_state(paths: RunPaths, state: Dict[str, object]) -> None:
    write_json(paths.train_state, state)


def _has_checkpoints(paths: RunPaths) -> bool:
    return paths.checkpoints.is_dir() and any(
        p != paths.train_state for p in paths.checkpoints.iterdir())


def train(
    data: DataConfig,
    model: ModelConfig,
    train_config: TrainConfig,
    out: str,
    fresh: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    adopt: Optional[str] = None,
) -> TrainResult:
    """Trains a classifier on an image folder and saves everything under ``out``.

    Args:
      data: the folder, split, batching and augmentation.
      model: backbone, width, size, weights and head.
      train_config: epochs, learning rates, fine-tuning depth, seed, strategy.
      out: run directory; an existing one with checkpoints is resumed when its
        data (class list and every image's content) is unchanged, and started
        over, with a line naming what changed, when not.
      fresh: delete checkpoints in ``out`` and start over (the decoded store is
        kept: it is keyed by each file's content and the decode settings).
      echo: where progress lines go (``click.echo`` in the CLI).
      progress: show progress bars (``tqdm``; off with ``--no-progress``). The
        one line per epoch goes to ``echo`` either way.
      adopt: an .h5 weights file already trained by exactly this recipe on
        this data (the winning trial of ``edgetl.tune``,
        RUN/tune/best_trial.h5): loaded and evaluated instead of training
        again. ``train_config`` must then be the trial's recipe, with an
        orientation of 'upright' or 'any'.

    Returns:
      TrainResult with the validation metrics and artifact paths.

    Raises:
      DatasetError, ConfigError, WeightsError, UnknownBackboneError, StoreError.

    Example:
      >>> result = train(DataConfig(path="data/flowers"),
      ...                ModelConfig("mobilenet_v2", alpha=0.35, size=224),
      ...                TrainConfig(epochs=10, fine_tune_epochs=5), out="runs/flowers")
      >>> print(result.summary())
    """
    paths = RunPaths.of(out)
    sections = {"data": data, "model": model, "train": train_config}
    role = worker_role(train_config.strategy)
    # MultiWorkerMirroredStrategy must exist before other TensorFlow work starts in this process.
    strategy = get_strategy(train_config.strategy)
    resolved = head_lib.resolve(model)  # bad backbone/alpha/weights fail before the scan
    temporary = None
    if role.chief:
        work = paths
    elif os.environ.get("EDGETL_WORKER_DIR"):
        work = RunPaths.of(os.environ["EDGETL_WORKER_DIR"])  # kept, e.g. to compare a worker's weights with the chief's
        echo(f"{role.task} of {role.workers} workers: the chief writes {paths.root}; this worker writes {work.root}")
    else:
        temporary = tempfile.mkdtemp(prefix=f"edgetl-{role.task.replace(':', '-')}-")
        work = RunPaths.of(temporary)
        echo(f"{role.task} of {role.workers} workers: the chief writes {paths.root}; this worker keeps its files in "
             f"{temporary} until training ends")
    try:
        return _train(data, model, train_config, paths, work, role, strategy, resolved, sections, fresh, echo, progress,
                      adopt)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _train(data: DataConfig, model: ModelConfig, train_config: TrainConfig, paths: RunPaths, work: RunPaths,
           role: WorkerRole, strategy, resolved, sections, fresh: bool, echo, progress: bool = True,
           adopt: Optional[str] = None) -> TrainResult:
    if fresh and role.chief:
        for stale in (paths.checkpoints, paths.logs):
            shutil.rmtree(stale, ignore_errors=True)
        paths.config.unlink(missing_ok=True)
    _check_resumable(paths, sections)

    if resolved.weights is None:
        echo("note: --weights none starts from random weights. A frozen random backbone gives almost constant "
             "features, so expect near-chance accuracy unless you have lots of data and fine-tune everything "
             "(--fine-tune-layers -1). Use --weights imagenet for transfer learning.")
    size = resolved.size
    for folder in (work.root, work.checkpoints, work.logs, work.plots):
        folder.mkdir(parents=True, exist_ok=True)
    store = ImageStore(store_folder(work.root, size), size, echo=echo)
    splits, identity = load_data(data, store, progress=progress)
    echo(splits.train.summary() if not data.val_path else f"{splits.train.summary()}\n{splits.val.summary()}")
    echo(f"split: {len(splits.train)} train / {len(splits.val)} val images (seed {data.seed})")
    small = split_size_note(len(splits.val), splits.val.counts())
    if small:
        echo(f"note: {small}")

    # Resume only from checkpoints of this very data: other classes would not even load (shape
    # mismatch), other images would give a model that matches no dataset.json. Every worker decides
    # from the chief's run directory, so all of them resume or start over together.
    state = {} if fresh else _read_state(paths)  # fresh: the chief deleted it, maybe not yet when a worker reads
    if (state or _has_checkpoints(paths)) and state.get("data") != identity.key:
        what = describe_changes(recorded_identity(paths), identity)
        echo(f"data changed since the checkpoints in {paths.checkpoints} were written: {what}. "
             f"Training starts over on the data as it is now.")
        if role.chief:
            for stale in (paths.checkpoints, paths.logs):
                shutil.rmtree(stale, ignore_errors=True)
            for folder in (paths.checkpoints, paths.logs):
                folder.mkdir(parents=True, exist_ok=True)
        state = {}
    resumed = any(key != "data" for key in state) or _has_checkpoints(paths)
    state["data"] = identity.key
    write_text(work.config, dump_yaml({**sections, "edgetl_version": __version__}))
    record = DatasetRecord(
        tuple(splits.class_names), size,
        # Absolute paths: qat and export read this file from any working directory.
        tuple(zip(map(os.path.abspath, splits.train.paths), splits.train.labels)),
        tuple(zip(map(os.path.abspath, splits.val.paths), splits.val.labels)),
    )
    write_json(work.dataset, {**record.to_dict(), "skipped": [dataclasses.asdict(s) for s in _all_skipped(splits)],
                              "identity": identity.to_dict()})
    write_text(work.labels, labels_text(list(splits.class_names)))
    _write_state(work, state)

    if resumed:
        echo(f"resuming from checkpoints in {paths.checkpoints}")
    keras.utils.set_random_seed(train_config.seed)
    weights_by_class = class_weights(splits.train, data.class_weights)
    if weights_by_class:
        echo("class weights: " + ", ".join(f"{splits.class_names[i]}={w:.2f}" for i, w in weights_by_class.items()))

    train_rows, val_rows = store.rows(splits.train.paths), store.rows(splits.val.paths)
    shard = "data" if role.workers > 1 else None
    datasets = {
        "train_shuffled": store_dataset(store, train_rows, splits.train.labels, data.batch_size, shuffle=True,
                                        seed=data.seed, shard_policy=shard),
        "train": store_dataset(store, train_rows, splits.train.labels, data.batch_size, shuffle=True,
                               seed=data.seed, augment=data.augment, shard_policy=shard),
        "val": store_dataset(store, val_rows, splits.val.labels, data.batch_size, shard_policy=shard),
    }
    with strategy.scope():
        classifier = head_lib.build_classifier(model, len(splits.class_names))
    with strategy.scope():  # the test trains the classifier's own head: its optimizer belongs to the same strategy
        data, orientation_test = _resolve_orientation(data, train_config, classifier, store, splits, train_rows,
                                                      val_rows, work, state, role, weights_by_class, echo, progress)
    if data.augment.orientation == "any":
        datasets["train"] = store_dataset(store, train_rows, splits.train.labels, data.batch_size, shuffle=True,
                                          seed=data.seed, augment=data.augment, shard_policy=shard)

    stage_seconds: Dict[str, float] = {}
    # Written to this worker's folder; read back from the chief's when a stage is skipped, so every
    # worker takes the same branch.
    stage1_weights = work.weights(STAGE1, "final")
    if adopt:
        echo(f"using the weights the recipe search trained with this recipe ({adopt}) instead of training it again")
        head_lib.set_fine_tune(classifier, train_config.fine_tune_layers)
        classifier.load_weights(str(adopt))
        state["adopted"] = str(adopt)
        _write_state(work, state)
    elif train_config.epochs > 0:
        if state.get(STAGE1) == "done" and (paths.checkpoints / stage1_weights.name).is_file():
            classifier.load_weights(str(paths.checkpoints / stage1_weights.name))
        else:
            started = time.perf_counter()
            with strategy.scope():
                _train_head(classifier, splits, datasets, data, train_config, paths, work, weights_by_class, echo, strategy,
                            progress,
                            lambda view: store_dataset(store, train_rows, splits.train.labels, data.batch_size, view=view))
            with atomic_path(stage1_weights, suffix=".h5") as tmp:
                classifier.save_weights(str(tmp))
            state[STAGE1] = "done"
            _write_state(work, state)
            stage_seconds[STAGE1] = time.perf_counter() - started

    fine_tunes = train_config.fine_tune_epochs > 0 and train_config.fine_tune_layers != 0
    if not adopt and fine_tunes and state.get(STAGE2) != "done":
        started = time.perf_counter()
        with strategy.scope():
            improved = _fine_tune(classifier, datasets, train_config, paths, work, weights_by_class, echo,
                                  _best_from_csv(paths.history(STAGE1)), strategy, progress)
        stage1_file = stage1_weights if stage1_weights.is_file() else paths.checkpoints / stage1_weights.name
        if not improved and stage1_file.is_file():
            echo("fine-tuning did not beat the head-only validation accuracy; keeping the stage-1 weights")
            head_lib.set_fine_tune(classifier, 0)
            classifier.load_weights(str(stage1_file))
        state[STAGE2] = "done"
        _write_state(work, state)
        stage_seconds[STAGE2] = time.perf_counter() - started
    elif not adopt and state.get(STAGE2) == "done":
        best = paths.weights(STAGE2, "best")
        if best.is_file():
            head_lib.set_fine_tune(classifier, train_config.fine_tune_layers)
            classifier.load_weights(str(best))

    classifier = _local_copy(classifier, strategy)
    scores = _predict_batches(classifier, datasets["val"], -(-len(splits.val) // data.batch_size), "validation", progress)
    metrics = classification_metrics(splits.val.labels, scores, splits.class_names)
    classifier.trainable = False
    with atomic_path(work.model, suffix=".keras") as tmp:
        classifier.save(str(tmp))
    history = {stage: _history_from_csv(work.history(stage)) for stage in (STAGE1, STAGE2)}
    history = {stage: values for stage, values in history.items() if values}

    from edgetl.plots import plot_confusion_matrix, plot_training_curves

    if history:
        plot_training_curves(history, work.training_curves)
    plot_confusion_matrix(metrics.confusion_matrix, splits.class_names, work.confusion_plot,
                          title=f"validation, accuracy {metrics.accuracy:.3f}")
    result = TrainResult(
        run_dir=str(paths.root), model_path=str(paths.model), class_names=list(splits.class_names),
        val_accuracy=metrics.accuracy, per_class_accuracy=metrics.per_class_accuracy,
        confusion_matrix=metrics.confusion_matrix, history=history, stage_seconds=stage_seconds,
        weights=resolved.weights or "none", resumed=resumed, skipped_files=len(_all_skipped(splits)),
        val_predictions=[int(v) for v in np.argmax(scores, axis=1)],
        orientation=data.augment.orientation if data.augment.enabled else "",
        orientation_test=orientation_test,
    )
    write_json(work.train_result, dataclasses.asdict(result))
    return result


def _all_skipped(splits: Splits):
    return tuple(splits.train.skipped) + tuple(splits.val.skipped)


__all__ = ["train", "TrainResult", "load_splits", "get_strategy", "worker_role", "WorkerRole", "ImageFolder"]
