"""``edgetl quickstart``: ``edgetl run`` on a generated dataset, offline -> QuickstartResult.

Draws a small shapes dataset (``edgetl.demo_data``) and runs the whole
pipeline on it: MobileNetV2 alpha 0.35 at 96 px, QAT, every export variant,
each file evaluated and benchmarked on this host, and the report. ImageNet
weights are used when a local copy exists (``--weights-dir``,
``$EDGETL_WEIGHTS_DIR`` or ``~/.keras/models``); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from edgetl.config import DataConfig, ExportConfig, ModelConfig, QATConfig, ReportConfig, TrainConfig

BACKBONE = "mobilenet_v2"
ALPHA = 0.35
SIZE = 96


@dataclasses.dataclass
class QuickstartResult:
    """What the quickstart produced.

    Attributes:
      weights: 'imagenet (<file>)' or 'random init'.
      data_dir: the generated image folder.
      run: the RunResult of ``edgetl run`` on it (stages and report).
    """

    weights: str
    data_dir: str
    run: object

    @property
    def run_dir(self) -> str:
        return self.run.run_dir

    def summary(self) -> str:
        """The weights used, then the run's stage lines and report table."""
        return f"weights: {self.weights}\n{self.run.summary()}"


def quickstart(out: str = "runs/quickstart", weights_dir: Optional[str] = None, epochs: int = 10,
               echo: Callable[[str], None] = print, progress: bool = True) -> QuickstartResult:
    """Runs ``edgetl run`` on a generated shapes dataset, offline, ending in the report.

    Re-running continues or reuses the finished stages (see ``edgetl.workflow``).

    Args:
      out: folder holding ``data/`` (the generated images) and ``run/`` (the run directory).
      weights_dir: folder of Keras' ImageNet weight files.
      epochs: head epochs (fine-tuning and QAT epochs scale from it).
      echo: progress lines.
      progress: progress bars.

    Example:
      >>> print(quickstart("runs/quickstart").summary())
    """
    from edgetl.demo_data import write_shapes_dataset
    from edgetl.errors import WeightsError
    from edgetl.model.head import resolve

    root = Path(out)
    data_dir = write_shapes_dataset(root / "data")
    model = ModelConfig(BACKBONE, alpha=ALPHA, size=SIZE, weights="imagenet", weights_dir=weights_dir)
    try:
        local = resolve(model).weights
    except WeightsError:  # --weights-dir without the file: fall back like an empty cache
        local = None
    if local and Path(local).is_file():
        weights = f"imagenet ({local})"
        model = dataclasses.replace(model, weights=local, weights_dir=None)
    else:
        weights = "random init"
        model = dataclasses.replace(model, weights="none", weights_dir=None)
        echo(f"No local ImageNet weights for {BACKBONE} alpha {ALPHA} (looked in --weights-dir, $EDGETL_WEIGHTS_DIR, "
             f"~/.keras/models). Running from RANDOM INIT: expect near-chance accuracy. Copy "
             f"'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{ALPHA}_224_no_top.h5' into one of those folders for a real result.")
    echo(f"data: generated shapes dataset in {data_dir}; weights: {weights}")

    from edgetl.workflow import run_configs

    configs = {
        "data": DataConfig(path=str(data_dir), batch_size=32),
        "model": model,
        "train": TrainConfig(epochs=epochs, fine_tune_epochs=max(1, epochs // 3), fine_tune_layers=30),
        "qat": QATConfig(epochs=max(1, epochs // 5)),
        "export": ExportConfig(variants=("fp32", "fp16", "dynamic", "int8", "qat-int8")),
        "report": ReportConfig(bench_runs=30, bench_seconds=0.5),
    }
    result = run_configs(configs, str(root / "run"), echo=echo, progress=progress)
    return QuickstartResult(weights, str(data_dir), result)
