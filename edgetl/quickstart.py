"""``edgetl quickstart``: the whole pipeline, offline, on a generated dataset -> QuickstartResult.

Draws a small shapes dataset (``edgetl.demo_data``), trains MobileNetV2
alpha 0.35 at 96 px, runs QAT, exports every variant (each verified on the
validation images), and benchmarks each exported file on this host. ImageNet
weights are used when a local copy exists (``--weights-dir``,
``$EDGETL_WEIGHTS_DIR`` or ``~/.keras/models``); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, List, Optional

from edgetl.config import DataConfig, ExportConfig, ModelConfig, QATConfig, TrainConfig

BACKBONE = "mobilenet_v2"
ALPHA = 0.35
SIZE = 96


@dataclasses.dataclass
class QuickstartResult:
    """What the quickstart produced.

    Attributes:
      run_dir: the run directory (data/ holds the generated images).
      weights: 'imagenet (<file>)' or 'random init'.
      val_accuracy: Keras float accuracy after training.
      qat_accuracy: Keras QAT accuracy.
      export: the ExportResult (per-variant size and accuracy of the files).
      bench: one BenchResult per exported file.
    """

    run_dir: str
    weights: str
    val_accuracy: float
    qat_accuracy: Optional[float]
    export: object
    bench: List[object]

    def summary(self) -> str:
        """One table: variant, size, accuracy of the file, latency, speed-up vs fp32."""
        latency = {Path(b.model).name: b for b in self.bench}
        fp32 = next((latency[Path(v.path).name].p50_ms for v in self.export.variants if v.variant == "fp32"), None)
        lines = [
            f"weights: {self.weights}",
            f"Keras float val accuracy {self.val_accuracy:.2%}"
            + (f", QAT {self.qat_accuracy:.2%}" if self.qat_accuracy is not None else ""),
            "",
            f"{'variant':9} {'size KB':>8} {'accuracy':>9} {'p50 ms':>8} {'p90 ms':>8} {'speed-up':>9}",
        ]
        for variant in self.export.variants:
            bench = latency.get(Path(variant.path).name)
            accuracy = f"{variant.accuracy:.2%}" if variant.accuracy is not None else "-"
            p50 = f"{bench.p50_ms:.2f}" if bench else "-"
            p90 = f"{bench.p90_ms:.2f}" if bench else "-"
            speedup = f"{fp32 / bench.p50_ms:.2f}x" if bench and fp32 else "-"
            lines.append(f"{variant.variant:9} {variant.size_bytes / 1024:>8.0f} {accuracy:>9} {p50:>8} {p90:>8} {speedup:>9}")
        lines += ["", f"files: {self.export.out_dir} (labels and preprocessing embedded; see `edgetl inspect`)"]
        lines.extend(f"WARNING: {warning}" for warning in self.export.warnings)
        return "\n".join(lines)


def quickstart(out: str = "runs/quickstart", weights_dir: Optional[str] = None, epochs: int = 10,
               echo: Callable[[str], None] = print) -> QuickstartResult:
    """Runs data -> train -> qat -> export -> bench on a generated dataset, offline.

    Re-running reuses the finished training (the train stage resumes).

    Args:
      out: run directory.
      weights_dir: folder of Keras' ImageNet weight files.
      epochs: head epochs (fine-tuning and QAT epochs scale from it).
      echo: progress lines.

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
    echo(f"[1/4] data: generated shapes dataset in {data_dir}; weights: {weights}")

    from edgetl.train import train

    run_dir = root / "run"
    trained = train(DataConfig(path=str(data_dir), batch_size=32), model,
                    TrainConfig(epochs=epochs, fine_tune_epochs=max(1, epochs // 3), fine_tune_layers=30),
                    out=str(run_dir), echo=echo)
    echo(f"[2/4] train: val accuracy {trained.val_accuracy:.2%}")

    from edgetl.qat import quantize_aware_finetune

    qat = quantize_aware_finetune(str(run_dir), QATConfig(epochs=max(1, epochs // 5)), echo=echo)
    echo(f"[3/4] qat: Keras QAT accuracy {qat.qat_accuracy:.2%} (float {qat.float_accuracy:.2%})")

    from edgetl.export.tflite import export_run

    exported = export_run(str(run_dir), ExportConfig(variants=("fp32", "fp16", "dynamic", "int8", "qat-int8")), echo=echo)
    echo(exported.summary())

    from edgetl.bench import BenchConfig, benchmark

    results = benchmark([v.path for v in exported.variants], BenchConfig(runs=30, min_seconds=0.5, max_seconds=5.0))
    echo("[4/4] bench: done")
    return QuickstartResult(str(run_dir), weights, trained.val_accuracy, qat.qat_accuracy, exported, results)
