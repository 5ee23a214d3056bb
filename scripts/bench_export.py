"""Time of exporting all five TFLite variants with edgetl (one trace per model) vs five from_keras_model calls.

Both sides convert the same float model (fp32, fp16, dynamic, int8) and the
same QAT model (qat-int8) with the same calibration images and settings; only
the conversion path differs. Verification and file writing are not timed.
The baseline runs first, then edgetl, in one process, and the ratio is printed:

  python scripts/bench_export.py --backbone mobilenet_v2 --alpha 0.35 --size 96
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args(argv)

    import numpy as np

    from edgetl.config import ModelConfig
    from edgetl.export.representative import representative_dataset
    from edgetl._native import capture_native_output
    from edgetl.export.tflite import convert_variants
    from edgetl.export.variants import get_variant
    from edgetl.model.head import build_classifier
    from edgetl.model.keras import tf
    from edgetl.quant.qat import calibrate_ranges
    from edgetl.quant.rewrite import prepare_for_quantization
    from edgetl.quant.scheme import quantize

    model = build_classifier(ModelConfig(args.backbone, alpha=args.alpha, size=args.size, weights="none"), args.classes)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.calibration_images, args.size, args.size, 3), dtype=np.uint8)
    qat_model, _ = quantize(model)
    calibrate_ranges(qat_model, [images[:8].astype(np.float32)])

    def baseline(variant: str) -> bytes:
        source = qat_model if variant == "qat-int8" else model
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
        if variant == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif variant == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif variant in ("int8", "qat-int8"):
            calibration = images if variant == "int8" else images[:get_variant("qat-int8").calibration_cap]
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset(calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        with capture_native_output((1, 2)):
            return converter.convert()

    variants = ["fp32", "fp16", "dynamic", "int8", "qat-int8"]
    baseline_times = {}
    started = time.perf_counter()
    for variant in variants:
        one = time.perf_counter()
        baseline(variant)
        baseline_times[variant] = time.perf_counter() - one
    baseline_total = time.perf_counter() - started

    timings = {}
    started = time.perf_counter()
    export_model, _ = prepare_for_quantization(model)
    rewrite = time.perf_counter() - started
    files = convert_variants(export_model, variants, args.size, images, qat_model, "uint8", timings=timings)
    edgetl_total = time.perf_counter() - started
    assert sorted(files) == sorted(variants)

    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    print(f"Command: `{command}`")
    from edgetl.runtime.environment import cpu_model

    print(f"Host: {cpu_model()} ({platform.machine()}, {os.cpu_count()} logical cores), Python {platform.python_version()}, TensorFlow {tf.__version__}; "
          f"{args.backbone} alpha {args.alpha} at {args.size} px, {args.calibration_images} calibration images.")
    print()
    print("| variant | 5x from_keras_model (s) | edgetl convert (s) |")
    print("|---|---:|---:|")
    for variant in variants:
        print(f"| {variant} | {baseline_times[variant]:.1f} | {timings[variant]:.1f} |")
    print(f"| graph rewrite + tracing (once per model; the float model's tail again for folded int8) | - | "
          f"{rewrite + timings['trace']:.1f} |")
    print(f"| **total** | **{baseline_total:.1f}** | **{edgetl_total:.1f}** |")
    print()
    print(f"Speed-up: {baseline_total / edgetl_total:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
