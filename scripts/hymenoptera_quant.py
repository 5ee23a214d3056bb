"""Float vs PTQ-int8 vs QAT-int8 accuracy and size of the exported files of a trained hymenoptera run.

Copies the run's trained model, dataset.json, labels.txt and config.yaml into
a work folder (the source run is left untouched), runs `edgetl qat` and
`edgetl export` (the default variants, or --variants) there through the library, and prints a
Markdown table of the numbers measured on the exported files with the
LiteRT interpreter. Run from the repository root (the run's dataset.json may
hold paths relative to it):

  python scripts/hymenoptera_quant.py /tmp/hymeno_run --work /tmp/hymeno_quant --qat-epochs 3
  python scripts/hymenoptera_quant.py /tmp/hymeno_run --variants fp32,fp16,dynamic,int8,qat-int8,int16x8
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="trained run directory (model.keras, dataset.json, labels.txt)")
    parser.add_argument("--work", default="/tmp/hymeno_quant", help="folder the run is copied into")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--qat-lr", type=float, default=1e-5)
    parser.add_argument("--qat-batch-size", type=int, default=32)
    parser.add_argument("--distillation", type=float, default=None,
                        help="weight of the float model's probabilities in the QAT loss (default: QATConfig's)")
    parser.add_argument("--seed", type=int, default=42, help="QAT shuffle/augmentation seed")
    parser.add_argument("--calibration-batches", type=int, default=4, help="QAT range-initialisation batches (0 = tfmot's [-6, 6])")
    parser.add_argument("--calibration-images", type=int, default=300, help="int8 PTQ calibration images")
    parser.add_argument("--io-type", default="uint8", choices=["uint8", "int8"])
    parser.add_argument("--variants", default=None,
                        help="comma-separated export variants (default: the table's defaults; add int16x8 to measure it)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    from edgetl.config import ExportConfig, QATConfig
    from edgetl.export.tflite import export_run
    from edgetl.export.variants import DEFAULT_VARIANTS, parse_variants
    from edgetl.quant.qat import quantize_aware_finetune

    variants = parse_variants(args.variants) if args.variants else DEFAULT_VARIANTS
    source = Path(args.run_dir)
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("model.keras", "dataset.json", "labels.txt", "config.yaml"):
        if (source / name).is_file():
            shutil.copy(source / name, work / name)

    started = time.perf_counter()
    qat = quantize_aware_finetune(
        work,
        QATConfig(epochs=args.qat_epochs, learning_rate=args.qat_lr, batch_size=args.qat_batch_size,
                  calibration_batches=args.calibration_batches, seed=args.seed,
                  **({} if args.distillation is None else {"distillation": args.distillation})),
        echo=print,
    )
    qat_seconds = time.perf_counter() - started
    print(qat.summary())
    started = time.perf_counter()
    export = export_run(
        work,
        ExportConfig(variants=variants, io_type=args.io_type,
                     calibration_images=args.calibration_images, verify_images=10**6),
        echo=print,
    )
    export_seconds = time.perf_counter() - started
    print(export.summary())

    fp32 = export.get("fp32")
    keras_float = export.keras_float_accuracy
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"Command: `{command}`",
        "",
        f"Host: {platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}; "
        f"QAT {qat_seconds:.0f} s ({args.qat_epochs} epochs, lr {args.qat_lr:g}, {qat.calibrated_ranges} ranges calibrated "
        f"on {args.calibration_batches} batches); export of {len(variants)} variants {export_seconds:.0f} s.",
        "",
        f"Validation images: {export.val_images}. Keras float accuracy: {keras_float:.2%}. "
        f"Keras QAT (fake-quant) accuracy: {qat.qat_accuracy:.2%}. PTQ calibration images: {export.calibration_images}.",
        "",
        "| variant | file | size (bytes) | size / fp32 | input | TFLite accuracy | vs Keras float (pts) | top-1 agreement with Keras float |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for result in export.variants:
        lines.append(
            f"| {result.variant} | {Path(result.path).name} | {result.size_bytes} | {result.size_bytes / fp32.size_bytes:.3f} | "
            f"{result.input.dtype} (scale {result.input.scale:g}, zp {result.input.zero_point}) | {result.accuracy:.2%} | "
            f"{-result.accuracy_drop_pts:+.2f} | {result.agreement:.2%} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command, "qat": qat.to_dict(), "export": {
                "keras_float_accuracy": keras_float, "val_images": export.val_images,
                "variants": [r.to_dict() for r in export.variants]},
            "qat_seconds": qat_seconds, "export_seconds": export_seconds, "markdown": table,
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
