"""``edgetl run --tune``: a search of the training recipe on the validation split, in a time budget -> TuneResult.

The search uses Optuna (TPE sampler, median pruner, ``timeout``): a
maintained library that needs no particular Keras, where KerasTuner's tuners
build Keras 3 models and edgetl trains tf_keras (Keras 2) ones. It runs in two
phases that mirror the two training stages:

1. **Head** (stage 1): the backbone is frozen, so its pooled features are
   computed once and each trial trains only the head on them (seconds): the
   head's learning rate, ``head_trials`` trials.
2. **Fine-tuning** (stage 2): every trial starts from the best head of phase 1
   and the ImageNet backbone and fine-tunes with augmentation for the given
   number of epochs, searching the knobs measured to matter in
   docs/benchmarks.md ("Defaults that adapt to the data"): how many backbone
   layers to unfreeze, the peak learning rate, a warm-up epoch, and whether
   the photos may be rotated by 90 degrees (``augment.orientation``). A trial
   whose validation accuracy after an epoch (past the first third of them) is
   below the median of earlier trials at that epoch is stopped (Optuna's
   MedianPruner).

The first trial of each phase is the recipe as given (the rules' choice for
this folder, ``edgetl.auto_recipe``, or the user's values; the search varies
the fields above whoever set them), and the second fine-tuning trial is the
same recipe under the other orientation: whether the photos have a natural
up is the one knob no rule can read from file names, and the one that moved
TrashNet most (the rules' recipe: 90.52 % upright, 92.35 % with 90-degree
rotations, one run each; docs/benchmarks.md). So the search
returns the given recipe unless a trial beats it. The value of a trial is its
best epoch's validation accuracy (ties keep the earlier trial), the same
figure the training stage selects its checkpoint by; on a small validation
split that flatters every trial alike, which is why the report prints each
trial with the given recipe's figure next to it.

The images are read from the run's decoded store (decoded once for the whole
run: the training stage after the search reads the same rows). The best
recipe is returned as ``TrainConfig`` and ``AugmentConfig`` values and
written to RUN/config.yaml, so the tuned run can be repeated without
searching again. The winning trial's weights are kept too
(RUN/tune/best_trial.h5), and the run's training stage adopts them rather
than training the recipe a second time: that trial *is* a training run of the
recipe, by the same two stages, and a second run is another draw whose
accuracy differs by run-to-run noise alone (stop 21: the winner's 91.74 %
trial retrained to 89.60 % on TrashNet, docs/benchmarks.md). This is what
KerasTuner's ``get_best_models`` does.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from edgetl._atomic import atomic_path, write_json, write_text
from edgetl._optional import import_optional
from edgetl.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig, TuneConfig, dump_yaml, to_dict
from edgetl.run_dir import RunPaths

# Fine-tuning depths tried, as backbone layers from the top (-1 = all): the rules' two
# (30 and all, docs/benchmarks.md) and two between them.
FINE_TUNE_LAYERS = (30, 60, 100, -1)
# Peak fine-tuning learning rates, log-uniform: a decade either side of the rules' 1e-4 and 3e-4.
FINE_TUNE_LR = (3e-5, 1e-3)
HEAD_LR = (1e-4, 1e-2)


@dataclasses.dataclass
class Trial:
    """One trial of the search.

    Attributes:
      number: order in which it ran, from 0, across both phases.
      phase: 'head' (stage 1 on cached features) or 'fine_tune'.
      params: the values tried, by config field ('augment.orientation' for the augmentation).
      accuracy: best validation accuracy over its epochs (fraction), None when
        no epoch finished.
      best_epoch: the epoch (from 1) that reached it; 0 for a fine-tuning
        trial none of whose epochs beat the head (its figure is then the
        head's, as the training stage would keep the head's weights).
      epochs: epochs it ran.
      state: 'complete', 'pruned' (below the median of earlier trials after
        an epoch) or 'budget' (stopped at the deadline; does not compete).
      seconds: wall time.
      given: it is the recipe as given (the first trial of its phase).
    """

    number: int
    phase: str
    params: Dict[str, Any]
    accuracy: Optional[float]
    best_epoch: int
    epochs: int
    state: str
    seconds: float
    given: bool = False


@dataclasses.dataclass
class TuneResult:
    """What the search found.

    Attributes:
      trials: every trial, in order.
      train: the best recipe's training settings.
      augment: the best recipe's augmentation.
      best_accuracy: the best fine-tuning trial's validation accuracy (the
        best head trial's when no fine-tuning trial completed).
      given_accuracy: the given recipe's (its first fine-tuning trial's), None
        when that trial did not complete.
      seconds: wall time of the whole search.
      budget: the budget it had (seconds).
      val_images: images of the validation split the trials were scored on.
      weights_trial: the fine-tuning trial whose weights are kept in
        RUN/tune/best_trial.h5 (``RunPaths.tune_weights``), the winner;
        None when no fine-tuning trial completed (the run then trains the recipe).
    """

    trials: List[Trial]
    train: TrainConfig
    augment: AugmentConfig
    best_accuracy: Optional[float]
    given_accuracy: Optional[float]
    seconds: float
    budget: float
    val_images: int
    weights_trial: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TuneResult":
        return cls(trials=[Trial(**t) for t in data["trials"]], train=TrainConfig(**data["train"]),
                   augment=AugmentConfig(**data["augment"]), best_accuracy=data["best_accuracy"],
                   given_accuracy=data["given_accuracy"], seconds=data["seconds"], budget=data["budget"],
                   val_images=data["val_images"], weights_trial=data.get("weights_trial"))

    def best_trial(self) -> Optional[Trial]:
        """The trial whose recipe won (the best complete fine-tuning trial, else the best head trial)."""
        return best_of(self.trials, "fine_tune") or best_of(self.trials, "head")

    def summary(self) -> str:
        """One line: trials, best and given accuracy, time."""
        counts = {state: sum(t.state == state for t in self.trials if t.phase == "fine_tune")
                  for state in ("complete", "pruned", "budget")}
        best, given = _pct(self.best_accuracy), _pct(self.given_accuracy)
        return (f"{len(self.trials)} trials in {format_duration(self.seconds)} of {format_duration(self.budget)} "
                f"({sum(t.phase == 'head' for t in self.trials)} head, {counts['complete']} fine-tuning complete, "
                f"{counts['pruned']} pruned, {counts['budget']} stopped by the budget): best {best}, "
                f"the given recipe {given} on {self.val_images} validation images"
                + ("" if self.weights_trial is None else f"; the model is trial {self.weights_trial}'s weights"))

    HEADERS = ("#", "phase", "params", "val acc", "best epoch", "epochs", "state", "seconds")

    def table_rows(self) -> List[List[Any]]:
        best = self.best_trial()
        rows = []
        for t in self.trials:
            mark = " *" if best is not None and t.number == best.number else (" (given)" if t.given else "")
            params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
            best_epoch = t.best_epoch or ("head" if t.phase == "fine_tune" and t.accuracy is not None else "-")
            rows.append([f"{t.number}{mark}", t.phase, params, _pct(t.accuracy), best_epoch, t.epochs, t.state,
                         round(t.seconds)])
        return rows

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["number", "phase", "given", "state", "accuracy", "best_epoch", "epochs", "seconds",
                         "params_json"])
        for t in self.trials:
            writer.writerow([t.number, t.phase, t.given, t.state, "" if t.accuracy is None else t.accuracy,
                             t.best_epoch, t.epochs, round(t.seconds, 2), json.dumps(t.params, sort_keys=True)])
        return buffer.getvalue()


def best_of(trials: List[Trial], phase: str) -> Optional[Trial]:
    """The best complete trial of ``phase``; ties keep the earlier one, so the given recipe (trial 0 of its
    phase) is replaced only by a trial that beats it. Pruned trials and those the budget stopped do not compete."""
    done = [t for t in trials if t.phase == phase and t.state == "complete" and t.accuracy is not None]
    return max(done, key=lambda t: (t.accuracy, -t.number)) if done else None


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2%}"


def format_duration(seconds: float) -> str:
    """'90 s' below two minutes, else '30.0 min'."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _short(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def load_result(run_dir) -> Optional[TuneResult]:
    """The search's result saved in RUN/tune/result.json; None when there is none or it is damaged."""
    path = RunPaths.of(run_dir).tune_result
    try:
        return TuneResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Deadline:
    """The search's clock: trials stop at ``budget`` seconds after the search started."""

    def __init__(self, budget: float):
        self.started = time.perf_counter()
        self.budget = budget

    @property
    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)


def tune(data: DataConfig, model: ModelConfig, train_config: TrainConfig, out: str, config: TuneConfig = TuneConfig(enabled=True),
         echo: Callable[[str], None] = print, progress: bool = True) -> TuneResult:
    """Searches the training recipe for ``data`` on its validation split within ``config.budget`` seconds.

    Args:
      data: the folder, split and augmentation (its orientation is one of the knobs).
      model: backbone, width, size and weights (not searched).
      train_config: the given recipe: the first trial of each phase, and the
        values of every field the search does not vary (epochs, seed...).
      out: the run directory: the decoded store is shared with training, the
        trials go to ``out/tune`` (result.json, trials.csv, best.yaml, and
        best_trial.h5: the winning trial's weights).
      config: the budget and trial counts.
      echo: one line per trial.
      progress: a progress bar over the budget.

    Returns:
      TuneResult; ``train``/``augment`` are the given values when no trial beat them.

    Raises:
      MissingDependencyError: Optuna is not installed (``pip install "edgetl[train]"``).
      DatasetError, WeightsError, StoreError: as ``edgetl.train.train``.
    """
    optuna = import_optional("optuna", "train", "`edgetl run --tune`")
    from tqdm import tqdm

    from edgetl import train as train_lib
    from edgetl.data.pipeline import store_dataset
    from edgetl.data.split import class_weights
    from edgetl.data.store import ImageStore, store_folder
    from edgetl.model import head as head_lib
    from edgetl.model.keras import keras

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    BestEpoch, Report, StopAt = _callback_classes(keras)
    deadline = _Deadline(config.budget)
    paths = RunPaths.of(out)
    folder = paths.tune
    folder.mkdir(parents=True, exist_ok=True)
    paths.tune_weights.unlink(missing_ok=True)  # an earlier search's winner is not this one's
    resolved = head_lib.resolve(model)
    store = ImageStore(store_folder(paths.root, resolved.size), resolved.size, echo=echo)
    splits, _ = train_lib.load_data(data, store, progress=progress)
    weights_by_class = class_weights(splits.train, data.class_weights) or None
    train_rows, val_rows = store.rows(splits.train.paths), store.rows(splits.val.paths)
    train_labels, val_labels = np.asarray(splits.train.labels), np.asarray(splits.val.labels)
    batch = data.batch_size
    val_dataset = store_dataset(store, val_rows, val_labels, batch)

    keras.utils.set_random_seed(train_config.seed)
    classifier = head_lib.build_classifier(model, len(splits.class_names))
    echo(f"tuning for {format_duration(config.budget)} on {len(splits.train)} train / {len(splits.val)} val images")
    bar = tqdm(total=round(config.budget), desc="tuning", unit="s", leave=False, disable=None if progress else True)
    trials: List[Trial] = []

    def tick():
        bar.n = min(round(config.budget - deadline.left), bar.total)
        bar.refresh()

    def record(trial: Trial) -> None:
        trials.append(trial)
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        where = f" at epoch {trial.best_epoch}" if trial.best_epoch else (" (the head's: no epoch beat it)"
                                                                          if trial.phase == "fine_tune" else "")
        echo(f"  trial {trial.number} ({trial.phase}{', as given' if trial.given else ''}): {params} -> "
             f"{_pct(trial.accuracy)}{where}, {trial.state}, {trial.seconds:.0f} s")
        tick()

    # Phase 1: the head on features of the frozen backbone, computed once.
    train_features = train_lib.extract_features(
        head_lib.feature_extractor(classifier), store_dataset(store, train_rows, train_labels, batch),
        folder / "features_train.npy", len(train_rows), echo, -(-len(train_rows) // batch), progress)
    val_features = train_lib.extract_features(
        head_lib.feature_extractor(classifier), val_dataset, folder / "features_val.npy", len(val_rows), echo,
        -(-len(val_rows) // batch), progress)
    head = head_lib.head_model(classifier)
    given_orientation = data.augment.orientation
    if data.augment.enabled and given_orientation == "auto":
        # What a run without --tune would do (edgetl.orientation), so that the given recipe is that run's recipe.
        from edgetl.orientation import ROTATE_90, measure

        def turned(sample):
            return train_lib.extract_features(
                head_lib.feature_extractor(classifier),
                store_dataset(store, np.asarray(train_rows)[sample], train_labels[sample], batch, view=ROTATE_90),
                folder / "features_turned.npy", len(sample), echo, -(-len(sample) // batch), progress)

        choice = measure(head, turned, train_features, train_labels, val_features, val_labels, train_config, batch,
                         data.seed, weights_by_class)
        echo(choice.line())
        given_orientation = choice.orientation
    elif not data.augment.enabled:
        given_orientation = "upright" if given_orientation == "auto" else given_orientation
    initial_head = head.get_weights()
    best_head = {"accuracy": -1.0, "weights": initial_head, "lr": train_config.learning_rate}

    def head_objective(trial) -> float:
        started = time.perf_counter()
        lr = trial.suggest_float("learning_rate", *HEAD_LR, log=True)
        keras.utils.set_random_seed(train_config.seed)
        head.set_weights(initial_head)
        head.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        keeper, stopper = BestEpoch(head), StopAt(deadline)
        callbacks = [keeper, stopper]
        if train_config.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=train_config.early_stopping_patience))
        head.fit(train_features, train_labels, batch_size=batch, epochs=train_config.epochs,
                 validation_data=(val_features, val_labels), shuffle=True, class_weight=weights_by_class,
                 callbacks=callbacks, verbose=0)
        state = "budget" if stopper.fired else "complete"
        record(Trial(len(trials), "head", {"learning_rate": lr}, keeper.accuracy, keeper.epoch, keeper.epochs_run,
                     state, time.perf_counter() - started, given=trial.number == 0))
        if state != "complete" or keeper.accuracy is None:
            raise optuna.TrialPruned()
        if keeper.accuracy > best_head["accuracy"]:
            best_head.update(accuracy=keeper.accuracy, weights=keeper.weights, lr=lr)
        return keeper.accuracy

    sampler_seed = train_config.seed
    if config.head_trials and train_config.epochs > 0:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed))
        study.enqueue_trial({"learning_rate": train_config.learning_rate})
        study.optimize(head_objective, n_trials=config.head_trials, timeout=max(deadline.left, 0.001),
                       catch=())
    elif train_config.epochs > 0:
        try:
            head_objective(_FixedTrial({"learning_rate": train_config.learning_rate}))
        except optuna.TrialPruned:
            pass  # stopped by the budget: the head keeps its initial weights, as recorded
    head.set_weights(best_head["weights"])
    stage1_accuracy = best_head["accuracy"] if best_head["accuracy"] >= 0 else None
    start_weights = classifier.get_weights()

    # Phase 2: fine-tuning trials from the best head.
    backbone_size = len(head_lib.backbone_layers(classifier))
    # The given depth is one of the choices, so the first trial can be the recipe as given.
    depths = sorted({-1 if layers < 0 or layers >= backbone_size else layers
                     for layers in FINE_TUNE_LAYERS + (train_config.fine_tune_layers,)},
                    key=lambda n: n if n >= 0 else math.inf)
    orientations = ("upright", "any") if data.augment.enabled else (given_orientation,)
    steps_per_epoch = -(-len(train_rows) // batch)
    train_sets: Dict[str, Any] = {}
    epochs = train_config.fine_tune_epochs
    outcome: Dict[int, Dict[str, Any]] = {}
    kept: Dict[str, Any] = {"trial": None, "accuracy": None}
    # No warm-up or one epoch of it (the rules' choice), or the given number; always fewer than the epochs.
    max_warmup = min(max(1, train_config.warmup_epochs), max(epochs - 1, 0))

    def fine_tune_objective(trial) -> float:
        started = time.perf_counter()
        given = trial.number == 0
        layers = trial.suggest_categorical("fine_tune_layers", depths)
        lr = trial.suggest_float("fine_tune_learning_rate", *FINE_TUNE_LR, log=True)
        warmup = trial.suggest_int("warmup_epochs", 0, max_warmup)
        orientation = trial.suggest_categorical("augment.orientation", orientations)
        candidate = dataclasses.replace(train_config, fine_tune_layers=layers, fine_tune_learning_rate=lr,
                                        warmup_epochs=warmup, learning_rate=best_head["lr"])
        augment = dataclasses.replace(data.augment, orientation=orientation)
        if orientation not in train_sets:
            train_sets[orientation] = store_dataset(store, train_rows, train_labels, batch, shuffle=True,
                                                    seed=data.seed, augment=augment)
        keras.utils.set_random_seed(train_config.seed)
        classifier.set_weights(start_weights)
        head_lib.set_fine_tune(classifier, layers)
        classifier.compile(optimizer=keras.optimizers.Adam(train_lib.fine_tune_schedule(candidate, steps_per_epoch)),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        keeper, pruner, stopper = BestEpoch(classifier), Report(trial), StopAt(deadline)
        callbacks = [keeper, pruner, stopper]
        if train_config.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=train_config.early_stopping_patience))
        if progress:
            from tqdm.keras import TqdmCallback

            callbacks.append(TqdmCallback(epochs=epochs, desc=f"trial {len(trials)}", leave=False, disable=None))
        classifier.fit(train_sets[orientation], epochs=epochs, validation_data=val_dataset, class_weight=weights_by_class,
                       callbacks=callbacks, verbose=0)
        state = "budget" if stopper.fired else ("pruned" if pruner.pruned else "complete")
        # Stage 2 keeps the head-only weights when no epoch beats them, so neither does a trial score lower
        # (best epoch 0: the head's).
        accuracy, best_epoch = keeper.accuracy, keeper.epoch
        if accuracy is not None and stage1_accuracy is not None and stage1_accuracy >= accuracy:
            accuracy, best_epoch = stage1_accuracy, 0
        record(Trial(len(trials), "fine_tune", {"fine_tune_layers": layers, "fine_tune_learning_rate": lr,
                                                "warmup_epochs": warmup, "augment.orientation": orientation},
                     accuracy, best_epoch, keeper.epochs_run, state, time.perf_counter() - started, given=given))
        outcome[trials[-1].number] = {"train": candidate, "augment": augment}
        if state != "complete" or accuracy is None:
            raise optuna.TrialPruned()
        if kept["accuracy"] is None or accuracy > kept["accuracy"]:  # ties keep the earlier trial, as best_of does
            # The weights the training stage would have kept: its best epoch's, or the head's when none beat it.
            classifier.set_weights(keeper.weights if best_epoch else start_weights)
            with atomic_path(paths.tune_weights, suffix=".h5") as tmp:
                classifier.save_weights(str(tmp))
            kept.update(trial=trials[-1].number, accuracy=accuracy)
        return accuracy

    best_train, best_augment = dataclasses.replace(train_config, learning_rate=best_head["lr"]), data.augment
    best_accuracy, given_accuracy = stage1_accuracy, None
    if epochs > 0 and train_config.fine_tune_layers != 0 and deadline.left > 0:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed),
            # No pruning in the first third of the epochs: the warm-up epoch and the high early rates of a cosine
            # schedule make early accuracies a poor guide (stop 21's first search pruned warm-up trials at epoch 2).
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 3)))
        given_layers = train_config.fine_tune_layers
        first = {"fine_tune_layers": -1 if given_layers >= backbone_size else given_layers,
                 "fine_tune_learning_rate": train_config.fine_tune_learning_rate,
                 "warmup_epochs": min(train_config.warmup_epochs, max_warmup),
                 "augment.orientation": given_orientation}
        study.enqueue_trial(first)
        # Then the same recipe under the other orientation: whether the photos have an up is the one knob
        # no rule can read from the folder, and the one that moved TrashNet most (docs/benchmarks.md).
        for orientation in orientations:
            if orientation != given_orientation:
                study.enqueue_trial({**first, "augment.orientation": orientation})
        study.optimize(fine_tune_objective, n_trials=config.max_trials or None, timeout=max(deadline.left, 0.001),
                       catch=())
        winner = best_of(trials, "fine_tune")
        if winner is not None:
            best_train, best_augment = outcome[winner.number]["train"], outcome[winner.number]["augment"]
            best_accuracy = winner.accuracy
        first = next((t for t in trials if t.phase == "fine_tune" and t.given), None)
        given_accuracy = first.accuracy if first is not None and first.state == "complete" else None
    if given_accuracy is None and epochs > 0 and train_config.fine_tune_layers != 0:
        echo("note: the given recipe's fine-tuning trial did not finish within the budget, so the search cannot "
             "say another recipe beats it" + ("" if best_of(trials, "fine_tune") else "; training uses the given one")
             + ". Give the search more time (--tune-budget).")
    bar.close()
    winner = best_of(trials, "fine_tune")
    result = TuneResult(trials, best_train, best_augment, best_accuracy, given_accuracy,
                        time.perf_counter() - deadline.started, config.budget, len(val_rows),
                        weights_trial=kept["trial"] if winner is not None and kept["trial"] == winner.number else None)
    write_json(paths.tune_result, result.to_dict())
    write_text(folder / "trials.csv", result.to_csv())
    write_text(folder / "best.yaml", dump_yaml({"train": best_train, "data": {"augment": to_dict(best_augment)}}))
    for cache in ("features_train.npy", "features_val.npy", "features_turned.npy"):
        (folder / cache).unlink(missing_ok=True)  # the training stage computes its own; the search's are done
    echo(f"tuning: {result.summary()}")
    return result


class _FixedTrial:
    """Stands in for an Optuna trial with given values (a phase with no search)."""

    number = 0

    def __init__(self, params: Dict[str, Any]):
        self.params = params

    def suggest_float(self, name, *args, **kwargs):
        return self.params[name]


def _callback_classes(keras):
    """The search's Keras callbacks (defined here so that importing this module loads no TensorFlow)."""

    class BestEpoch(keras.callbacks.Callback):
        """Keeps the best epoch's validation accuracy (and the weights of ``keep``, when given)."""

        def __init__(self, keep=None):
            super().__init__()
            self.keep = keep
            self.accuracy: Optional[float] = None
            self.epoch = 0
            self.epochs_run = 0
            self.weights = None

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_run = epoch + 1
            value = (logs or {}).get("val_accuracy")
            if value is not None and (self.accuracy is None or value > self.accuracy):
                self.accuracy, self.epoch = float(value), epoch + 1
                if self.keep is not None:
                    self.weights = self.keep.get_weights()

    class Report(keras.callbacks.Callback):
        """Reports each epoch's validation accuracy to Optuna and stops the trial when the pruner says so."""

        def __init__(self, trial):
            super().__init__()
            self.trial = trial
            self.pruned = False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is None or not hasattr(self.trial, "report"):
                return
            self.trial.report(float(value), epoch)
            if self.trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    class StopAt(keras.callbacks.Callback):
        """Stops training at the search's deadline, mid-epoch included."""

        def __init__(self, deadline: _Deadline):
            super().__init__()
            self.deadline = deadline
            self.fired = False

        def on_train_batch_end(self, batch, logs=None):
            if self.deadline.left <= 0:
                self.fired = True
                self.model.stop_training = True

    return BestEpoch, Report, StopAt


__all__ = ["tune", "TuneResult", "Trial", "best_of", "load_result", "format_duration", "FINE_TUNE_LAYERS", "FINE_TUNE_LR", "HEAD_LR"]
