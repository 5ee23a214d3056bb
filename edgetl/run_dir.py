"""The on-disk layout of one run directory: every file and folder name of a run, in one Paths object (no TensorFlow).

runs/NAME/
  config.yaml            resolved configuration of every stage that ran
  dataset.json           class names, the exact train/val file lists, skipped files
  labels.txt             one class name per line, in output order
  model.keras            the trained float Keras model (stage `train`)
  train_result.json      accuracy, per-class accuracy, confusion matrix, history
  run.json               `edgetl run`'s record of each stage (key, token, time)
  report.md/.json/.csv   `edgetl run`'s comparison report
  checkpoints/           resumable training state, features and best weights
  logs/                  TensorBoard events and <stage>_history.csv
  plots/                 training curves, confusion matrices, accuracy vs latency
  store/                 decoded images, one folder per input size (edgetl.data.store)
  qat/                   model.h5 and qat_result.json (stage `qat`)
  export/                .tflite variants, labels.txt, manifest.json (stage `export`)
  eval/                  <variant>.json: each exported file on the validation split (stage `eval`)
  bench/                 bench.json (stage `bench`)

Modules ask ``RunPaths`` for a path instead of joining names themselves, so
this docstring is the whole layout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Tuple, Union

from edgetl.errors import RunDirError


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Every path of a run directory (see the module docstring for the layout).

    Attributes:
      root: the run directory.
    """

    root: Path

    # File names inside their folders, for code that builds a path elsewhere (``--out`` of export/qat).
    QAT_MODEL = "model.h5"
    QAT_RESULT = "qat_result.json"
    MANIFEST = "manifest.json"
    LABELS = "labels.txt"
    BENCH_RESULTS = "bench.json"
    REPORTS = ("report.md", "report.json", "report.csv")

    @classmethod
    def of(cls, root: Union[str, Path]) -> "RunPaths":
        return cls(Path(root))

    config = property(lambda self: self.root / "config.yaml")
    dataset = property(lambda self: self.root / "dataset.json")
    labels = property(lambda self: self.root / self.LABELS)
    model = property(lambda self: self.root / "model.keras")
    train_result = property(lambda self: self.root / "train_result.json")
    state = property(lambda self: self.root / "run.json")
    report_md = property(lambda self: self.root / self.REPORTS[0])
    report_json = property(lambda self: self.root / self.REPORTS[1])
    report_csv = property(lambda self: self.root / self.REPORTS[2])
    checkpoints = property(lambda self: self.root / "checkpoints")
    logs = property(lambda self: self.root / "logs")
    plots = property(lambda self: self.root / "plots")
    store = property(lambda self: self.root / "store")
    qat = property(lambda self: self.root / "qat")
    qat_model = property(lambda self: self.qat / self.QAT_MODEL)
    qat_result = property(lambda self: self.qat / self.QAT_RESULT)
    export = property(lambda self: self.root / "export")
    manifest = property(lambda self: self.export / self.MANIFEST)
    eval = property(lambda self: self.root / "eval")
    bench = property(lambda self: self.root / "bench")
    bench_results = property(lambda self: self.bench / self.BENCH_RESULTS)
    tune = property(lambda self: self.root / "tune")
    tune_result = property(lambda self: self.tune / "result.json")
    tune_weights = property(lambda self: self.tune / "best_trial.h5")
    train_state = property(lambda self: self.checkpoints / "state.json")
    training_curves = property(lambda self: self.plots / "training_curves.png")
    confusion_plot = property(lambda self: self.plots / "confusion_matrix.png")
    accuracy_latency_plot = property(lambda self: self.plots / "accuracy_latency.png")

    def eval_result(self, variant: str) -> Path:
        """``eval/<variant>.json``: one exported file evaluated on the validation split."""
        return self.eval / f"{variant}.json"

    def variant_confusion_plot(self, variant: str) -> Path:
        """``plots/confusion_matrix_<variant>.png``."""
        return self.plots / f"confusion_matrix_{variant}.png"

    def history(self, stage: str) -> Path:
        """``logs/<stage>_history.csv``: Keras' CSVLogger of a training stage."""
        return self.logs / f"{stage}_history.csv"

    def backup(self, stage: str) -> Path:
        """``checkpoints/<stage>_backup``: Keras' BackupAndRestore folder of a training stage."""
        return self.checkpoints / f"{stage}_backup"

    def weights(self, stage: str, which: str) -> Path:
        """``checkpoints/<stage>_<which>.h5``: a training stage's 'best' or 'final' weights."""
        return self.checkpoints / f"{stage}_{which}.h5"

    def features(self, split: str, view: int = 0) -> Path:
        """``checkpoints/features_<split>[_view<v>].npy``: cached backbone features of a split (stage 1).

        ``view`` is the ``edgetl.data.pipeline.dihedral`` index of a fixed flipped/rotated view (0 = as is).
        """
        return self.checkpoints / (f"features_{split}.npy" if view == 0 else f"features_{split}_view{view}.npy")

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
