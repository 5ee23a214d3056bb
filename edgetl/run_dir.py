"""The on-disk layout of one run directory, as a single Paths object (no TensorFlow).

runs/NAME/
  config.yaml            resolved configuration of every stage that ran
  dataset.json           class names, the exact train/val file lists, skipped files
  labels.txt             one class name per line, in output order
  model.keras            the trained float Keras model (stage `train`)
  train_result.json      accuracy, per-class accuracy, confusion matrix, history
  checkpoints/           resumable training state and best weights
  logs/                  TensorBoard events and history.csv
  plots/                 training_curves.png, confusion_matrix.png
  qat/                   QAT Keras model and its result (stage `qat`)
  export/                .tflite variants, labels.txt, manifest.json (stage `export`)
  bench/                 benchmark results
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Tuple, Union

from edgetl.errors import RunDirError


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Every path of a run directory.

    Attributes:
      root: the run directory.
    """

    root: Path

    @classmethod
    def of(cls, root: Union[str, Path]) -> "RunPaths":
        return cls(Path(root))

    config = property(lambda self: self.root / "config.yaml")
    dataset = property(lambda self: self.root / "dataset.json")
    labels = property(lambda self: self.root / "labels.txt")
    model = property(lambda self: self.root / "model.keras")
    train_result = property(lambda self: self.root / "train_result.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    logs = property(lambda self: self.root / "logs")
    plots = property(lambda self: self.root / "plots")
    qat = property(lambda self: self.root / "qat")
    export = property(lambda self: self.root / "export")
    bench = property(lambda self: self.root / "bench")

    def require_model(self) -> Path:
        """The trained Keras model, or a RunDirError saying how to make one."""
        if not self.root.is_dir():
            raise RunDirError(f"Run directory '{self.root}' does not exist. Train first: edgetl train DATA --out {self.root}")
        if not self.model.is_file():
            raise RunDirError(
                f"Run directory '{self.root}' has no trained model ({self.model.name} missing). "
                f"Finish training first: edgetl train DATA --out {self.root}"
            )
        return self.model

    def load_dataset(self) -> "DatasetRecord":
        """The split recorded at training time."""
        if not self.dataset.is_file():
            raise RunDirError(f"Run directory '{self.root}' has no dataset.json; it was not made by 'edgetl train'.")
        try:
            return DatasetRecord.from_dict(json.loads(self.dataset.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as e:
            raise RunDirError(f"'{self.dataset}' is damaged ({e}); re-run edgetl train.") from e


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    """The images a run trained and validated on.

    Attributes:
      class_names: labels in output order.
      image_size: square input side the model takes.
      train: (path, label) pairs used for training.
      val: (path, label) pairs used for validation.
    """

    class_names: Tuple[str, ...]
    image_size: int
    train: Tuple[Tuple[str, int], ...]
    val: Tuple[Tuple[str, int], ...]

    def to_dict(self) -> dict:
        return {
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "train": [list(item) for item in self.train],
            "val": [list(item) for item in self.val],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetRecord":
        return cls(
            class_names=tuple(data["class_names"]),
            image_size=int(data["image_size"]),
            train=tuple((str(p), int(l)) for p, l in data["train"]),
            val=tuple((str(p), int(l)) for p, l in data["val"]),
        )

    def paths_labels(self, split: str) -> Tuple[List[str], List[int]]:
        items = getattr(self, split)
        return [p for p, _ in items], [l for _, l in items]
