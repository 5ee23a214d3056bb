"""``augment.orientation: auto``: whether the photos have a natural up, measured on the data before stage 1.

A photo of a scene, a person or an animal has an up: turned by 90 degrees it
is a different picture, and training on turned copies teaches the model
images it will never see. Objects on a table, waste on a board, cells under a
microscope have none: turned copies are more of the same, and 90-degree
rotations with vertical flips are free augmentation (on TrashNet 92.35 %
against 90.52 % upright, one run each — single runs move by about as much,
docs/benchmarks.md). File names do not say which, so
the training stage measures it with the frozen backbone:

1. the pooled features of the training images as they are (stage 1 needs
   them anyway) and of the same images turned by 90 degrees (one more pass of
   the backbone over at most ``PROBE_IMAGES`` of them);
2. two heads trained on those features with the stage-1 settings, one on
   the images as they are, one on them and their turned copies;
3. both scored on the validation split as it is. If the turned copies cost
   nothing there (the second head is at least as accurate), the photos have
   no up that matters: ``any``; otherwise ``upright``.

The validation split is the data the device will see; a class that turned
copies would confuse (a 6 and a 9, an arrow, sky above ground) shows up as a
loss there. Measured (docs/benchmarks.md, "Orientation from the data"): on
TrashNet turned copies lift the head from 84.2 to 87.6 %, on hymenoptera from
90.2 to 91.1 %, and on a set whose classes are the same photos turned
(orientation *is* the label) they drop it far below, so the rule says ``any``,
``any`` and ``upright``.

No library offers this test; it is a few lines on top of edgetl's own stage 1.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from edgetl.config import TrainConfig

# At most this many training images are turned for the test: the decision needs a sample, not the folder
# (50 k images would cost a backbone pass of several minutes on 2 cores).
PROBE_IMAGES = 2000
# edgetl.data.pipeline.dihedral index of a 90-degree rotation.
ROTATE_90 = 5


@dataclasses.dataclass(frozen=True)
class OrientationChoice:
    """The outcome of the orientation test.

    Attributes:
      orientation: 'any' or 'upright'.
      upright_accuracy: validation accuracy of the head trained on the images as they are.
      turned_accuracy: the same with their 90-degree turned copies added.
      images: training images the test used.
      val_images: validation images it was scored on.
    """

    orientation: str
    upright_accuracy: float
    turned_accuracy: float
    images: int
    val_images: int

    def line(self) -> str:
        verdict = ("cost nothing, so the photos are taken as having no up: 90-degree rotations and vertical flips "
                   "join the augmentation" if self.orientation == "any" else
                   "cost accuracy, so the photos are taken as upright: no 90-degree rotations")
        return (f"orientation from the data: a head trained with 90-degree turned copies of {self.images} training "
                f"images scores {self.turned_accuracy:.2%} on the {self.val_images} validation images, without them "
                f"{self.upright_accuracy:.2%}; turned copies {verdict} (set --orientation to choose yourself)")


def decide(upright_accuracy: float, turned_accuracy: float) -> str:
    """'any' when the turned copies cost no validation accuracy, else 'upright'."""
    return "any" if turned_accuracy >= upright_accuracy else "upright"


def probe_rows(count: int, seed: int) -> np.ndarray:
    """Indices of the training images the test turns: all of them up to PROBE_IMAGES, else a seeded sample (sorted)."""
    if count <= PROBE_IMAGES:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, PROBE_IMAGES, replace=False))


def choose_orientation(head, train_features: np.ndarray, turned_features: np.ndarray, train_labels: np.ndarray,
                       val_features: np.ndarray, val_labels: np.ndarray, epochs: int, learning_rate: float,
                       batch_size: int, seed: int, patience: int = 5,
                       class_weight: Optional[dict] = None) -> OrientationChoice:
    """Runs the test on pooled backbone features.

    Args:
      head: the classifier's head as a model from features (``edgetl.model.head.head_model``);
        its weights are restored before returning.
      train_features: ``[N, C]`` float32 features of the sampled training images as they are.
      turned_features: ``[N, C]`` the same images turned by 90 degrees.
      train_labels: ``[N]`` their class indices.
      val_features, val_labels: ``[M, C]`` and ``[M]``, the validation split as it is.
      epochs, learning_rate, batch_size, patience: stage 1's settings (Adam; early stopping on val loss).
      seed: seed of both heads' initialisation and shuffling (the same for both).
      class_weight: stage 1's class weights, if any.

    Returns:
      OrientationChoice: the best epoch's validation accuracy of each head and the decision.
    """
    from edgetl.model.keras import keras

    initial = head.get_weights()

    def best_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
        keras.utils.set_random_seed(seed)
        head.set_weights(initial)
        head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                     metrics=["accuracy"])
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)] if patience else []
        history = head.fit(features, labels, batch_size=batch_size, epochs=max(epochs, 1),
                           validation_data=(val_features, val_labels), shuffle=True, class_weight=class_weight,
                           callbacks=callbacks, verbose=0)
        return float(max(history.history["val_accuracy"]))

    try:
        upright = best_accuracy(train_features, train_labels)
        turned = best_accuracy(np.concatenate([train_features, turned_features]), np.tile(train_labels, 2))
    finally:
        head.set_weights(initial)
    return OrientationChoice(decide(upright, turned), upright, turned, len(train_labels), len(val_labels))


def measure(head, turned_features_of: Callable[[np.ndarray], np.ndarray], train_features: np.ndarray,
            train_labels: np.ndarray, val_features: np.ndarray, val_labels: np.ndarray, config: TrainConfig,
            batch_size: int, sample_seed: int, class_weight: Optional[dict] = None) -> OrientationChoice:
    """The whole test as the training stage and ``edgetl.tune`` run it: sample, turn, choose.

    Args:
      head: as ``choose_orientation``.
      turned_features_of: given ``[K]`` indices into the training split, the
        ``[K, C]`` backbone features of those images turned by ``ROTATE_90``
        (the caller owns the backbone pass, and its cache or progress bar).
      train_features, train_labels: ``[N, C]`` and ``[N]``, the whole training split as it is.
      val_features, val_labels: ``[M, C]`` and ``[M]``.
      config: stage 1's epochs, learning rate, seed and patience.
      batch_size: stage 1's batch size.
      sample_seed: seed of the sample of at most PROBE_IMAGES images (the split's seed).
      class_weight: stage 1's class weights, if any.
    """
    sample = probe_rows(len(train_labels), sample_seed)
    return choose_orientation(head, train_features[sample], turned_features_of(sample), train_labels[sample],
                              val_features, val_labels, config.epochs, config.learning_rate, batch_size, config.seed,
                              config.early_stopping_patience, class_weight)


__all__ = ["OrientationChoice", "choose_orientation", "decide", "measure", "probe_rows", "PROBE_IMAGES", "ROTATE_90"]
