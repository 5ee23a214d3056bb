"""``edgetl quickstart``: ``edgetl run`` on real photos that ship with edgetl, offline -> QuickstartResult.

The default is the job edgetl exists for, end to end in a few minutes on a
laptop CPU: a recycling sorter for a Raspberry Pi. It trains MobileNetV2
alpha 0.35 from the ImageNet weights shipped in ``edgetl.bundled`` on the
TrashNet subset shipped beside them (six classes of real waste photos, MIT
licence), runs QAT, exports every variant, evaluates and benchmarks each file
on this machine and ends in the run's report. Nothing is downloaded.

``data`` and ``backbone``/``alpha``/``size`` point the same command at a
user's own folder and model (ImageNet weights for other backbones come from
the usual places, see ``edgetl.model.head.resolve``).

The recipe below is short on purpose, and its numbers are measured
(``scripts/bench_quickstart.py``, ``docs/benchmarks.md``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Tuple

from edgetl.config import AugmentConfig, DataConfig, ExportConfig, ModelConfig, QATConfig, ReportConfig, TrainConfig
from edgetl.errors import DatasetError

BACKBONE = "mobilenet_v2"
ALPHA = 0.35
SIZE = 160
QAT_STEPS = 40
FEATURE_VIEWS = 4


def quickstart_configs(data: Optional[str] = None, backbone: str = BACKBONE, alpha: Optional[float] = ALPHA,
                       size: Optional[int] = SIZE, weights_dir: Optional[str] = None) -> dict:
    """The ``edgetl run`` configs of the quickstart: ``{data, model, train, qat, export, report}``.

    Args:
      data: an image folder (one sub-folder per class, or ``train/`` and
        ``val/`` holding the same class folders); None = the shipped TrashNet subset.
      backbone: registry name.
      alpha: width multiplier (None = the backbone's default).
      size: input side in pixels (None = the backbone's default).
      weights_dir: folder of Keras' ImageNet weight files.

    Raises:
      DatasetError: ``data`` is not a folder.
    """
    train_dir, val_dir = _folders(data)
    return {
        # TrashNet's objects lie on a board in any orientation: flips and 90-degree rotations keep the class.
        "data": DataConfig(path=train_dir, val_path=val_dir, batch_size=32, augment=AugmentConfig(orientation="any")),
        "model": ModelConfig(backbone, alpha=alpha, size=size, weights="imagenet", weights_dir=weights_dir),
        # The head on cached features of 4 flipped/rotated views of each photo, no fine-tuning: on the shipped
        # photos 1 view reached 82.4 %, 4 views 88.0 %, all 8 89.4 % at twice the cost (docs/benchmarks.md).
        "train": TrainConfig(epochs=20, fine_tune_epochs=0, feature_views=FEATURE_VIEWS),
        # A head-only model's quantized copy fine-tuned the usual way (20 steps at 1e-5, labels, augmentation)
        # stayed at 78.9 %; 40 steps at 1e-4 that also match the float model's probabilities (distillation) on
        # un-augmented photos reached the float model's 88.0 % (docs/benchmarks.md).
        "qat": QATConfig(epochs=1, steps_per_epoch=QAT_STEPS, learning_rate=1e-4, distillation=0.5, augment=False),
        "export": ExportConfig(calibration_images=100),  # the table's default variants
        "report": ReportConfig(bench_runs=20, bench_seconds=0.25),
    }


def _folders(data: Optional[str]) -> Tuple[str, Optional[str]]:
    """(training folder, validation folder or None) of the quickstart data."""
    if data is None:
        from edgetl.bundled import quickstart_dataset

        root = quickstart_dataset()
        return str(root / "train"), str(root / "val")
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"--data '{data}' is not a folder. Pass a folder laid out as <folder>/<class_name>/<image>.jpg "
                           f"(or <folder>/train/<class>/... and <folder>/val/<class>/...).")
    train, val = root / "train", root / "val"
    if train.is_dir() and val.is_dir():
        return str(train), str(val)
    return str(root), None


@dataclasses.dataclass
class QuickstartResult:
    """What the quickstart produced.

    Attributes:
      data_dir: the training image folder.
      run: the RunResult of ``edgetl run`` (stages and report).
    """

    data_dir: str
    run: object

    @property
    def run_dir(self) -> str:
        return self.run.run_dir

    def summary(self) -> str:
        """The run's stage lines and report table."""
        return self.run.summary()


def quickstart(out: str = "runs/quickstart", data: Optional[str] = None, backbone: str = BACKBONE,
               alpha: Optional[float] = ALPHA, size: Optional[int] = SIZE, weights_dir: Optional[str] = None,
               echo: Callable[[str], None] = print, progress: bool = True) -> QuickstartResult:
    """Runs ``edgetl run`` on the shipped TrashNet photos (or ``data``), offline, ending in the report.

    Re-running continues or reuses the finished stages (see ``edgetl.workflow``).

    Args:
      out: the run directory.
      data: an image folder instead of the shipped photos.
      backbone: registry name.
      alpha: width multiplier.
      size: input side in pixels.
      weights_dir: folder of Keras' ImageNet weight files.
      echo: progress lines.
      progress: progress bars.

    Returns:
      The QuickstartResult.

    Raises:
      DatasetError, WeightsError, ConfigError: from the stages, before any training where possible.

    Example:
      >>> print(quickstart("runs/quickstart").summary())
    """
    from edgetl.workflow import run_configs

    configs = quickstart_configs(data, backbone, alpha, size, weights_dir)
    if data is None:
        echo(f"data: TrashNet subset shipped with edgetl (6 classes of waste photos, MIT licence: "
             f"{Path(configs['data'].path).parent / 'README.md'})")
    result = run_configs(configs, out, echo=echo, progress=progress)
    return QuickstartResult(configs["data"].path, result)
