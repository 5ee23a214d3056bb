"""Acceptance benchmark of the device side: harness overhead, start-up/RSS vs TensorFlow, int8 vs fp32.

Prints a Markdown section (and writes it with --out) holding every measured
number next to the command that produced it. Parts whose inputs are missing
are reported as not run; nothing is estimated.

Example:
  python scripts/bench_device.py --out docs/benchmarks_device.md
  python scripts/bench_device.py --fp32 runs/mnv2/export/model_fp32.tflite \\
      --int8 runs/mnv2/export/model_int8.tflite --out docs/benchmarks_device.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgetl._atomic import write_text  # noqa: E402
from edgetl.bench import BenchConfig, benchmark, run_benchmark  # noqa: E402
from edgetl.runtime.environment import host_fingerprint, usable_cores  # noqa: E402
from edgetl.modelfile import parse_model  # noqa: E402
from edgetl.runtime.interpreter import find_runtime, load_interpreter  # noqa: E402

CORAL = REPO.parent / "shared" / "assets" / "coral-test-data"
CORAL_V2 = CORAL / "mobilenet_v2_1.0_224_quant.tflite"
CORAL_PTQ = CORAL / "tf2_mobilenet_v2_1.0_224_ptq.tflite"


# Linux carries the parent's RSS high-water mark into a child across fork+exec, so a child started
# from this (large) process would report at least this process's RSS. A fresh, small interpreter
# starts the command instead and reports the command's own rusage.
_LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def measure_child(argv: Sequence[str]) -> Tuple[float, float, int]:
    """Runs ``argv``; returns (wall seconds, peak RSS in MB of that command alone, exit code)."""
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *argv], capture_output=True, text=True, check=True)
    wall, peak_kib, code = done.stdout.split()
    return float(wall), int(peak_kib) / 1024.0, int(code)


def harness_overhead(model: Path, runs: int, rounds: int, threads: int) -> Dict[str, float]:
    """edgetl's timed loop vs a bare ``invoke()`` loop on the same interpreter, alternating to share the noise."""
    loaded = load_interpreter(model, "xnnpack", threads=threads)
    interpreter = loaded.interpreter
    config = BenchConfig(threads=(threads,), runs=runs, min_seconds=0, warmup_runs=runs // 10, warmup_seconds=0,
                         keep_times=False)
    run_benchmark(loaded, config)  # the bare loop below reuses the input this sets
    bare, harness_wall, harness_mean = [], [], []
    for _ in range(rounds):
        for _ in range(runs // 10):
            interpreter.invoke()
        start = time.perf_counter_ns()
        for _ in range(runs):
            interpreter.invoke()
        bare.append((time.perf_counter_ns() - start) / runs / 1e6)
        result = run_benchmark(loaded, config)
        harness_wall.append(result.wall_seconds * 1e3 / result.runs)
        harness_mean.append(result.mean_ms)
    bare_ms = statistics.median(bare)
    wall_ms = statistics.median(harness_wall)
    mean_ms = statistics.median(harness_mean)
    return {"bare_ms": bare_ms, "edgetl_wall_ms": wall_ms, "edgetl_mean_ms": mean_ms,
            "overhead_pct": (wall_ms - bare_ms) / bare_ms * 100, "reported_pct": (mean_ms - bare_ms) / bare_ms * 100,
            "spread_pct": (max(bare) - min(bare)) / bare_ms * 100}


def startup(model: Path, repeats: int) -> Dict[str, Dict[str, float]]:
    """Wall time and peak RSS of `edgetl bench` (one run), `edgetl --version` and `python -c 'import tensorflow'`."""
    edgetl = [sys.executable, "-m", "edgetl"]
    commands = {
        "edgetl --version": edgetl + ["--version"],
        "edgetl bench (1 run)": edgetl + ["bench", str(model), "--runs", "1", "--warmup", "0", "--min-seconds", "0",
                                          "--warmup-seconds", "0", "--threads", "1", "--no-progress"],
        "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
    }
    found = {}
    for name, argv in commands.items():
        walls, peaks = [], []
        for _ in range(repeats):
            wall, peak, code = measure_child(argv)
            if code != 0:
                break
            walls.append(wall)
            peaks.append(peak)
        if walls:
            found[name] = {"seconds": statistics.median(walls), "rss_mb": max(peaks), "argv": " ".join(map(shlex.quote, argv))}
    return found


def latency_rows(models: Dict[str, Path], threads: Sequence[int], runs: int, seconds: float):
    config = BenchConfig(threads=tuple(threads), delegates=("xnnpack",), runs=runs, min_seconds=seconds, keep_times=False)
    return {name: benchmark([str(path)], config) for name, path in models.items()}


def keras_latency(keras_path: Optional[str], runs: int) -> Optional[Dict[str, float]]:
    """Mean/median latency of a float Keras MobileNetV2 α1.0@224 ``model(x)`` at batch 1, when TensorFlow is importable."""
    try:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import numpy as np
        import tf_keras
    except ImportError:
        return None
    if keras_path:
        model = tf_keras.models.load_model(keras_path, compile=False)
        source = keras_path
    else:
        # Latency does not depend on the weight values: an untrained MobileNetV2 has the same graph.
        model = tf_keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None)
        source = "tf_keras.applications.MobileNetV2(alpha=1.0, weights=None), 224x224, 1000 classes"
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    for _ in range(5):
        model(x, training=False)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        model(x, training=False)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return {"mean_ms": statistics.fmean(times), "p50_ms": statistics.median(times), "runs": runs, "source": source}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(CORAL_V2), help="model for the overhead and start-up parts")
    parser.add_argument("--fp32", help="edgetl-exported MobileNetV2 α1.0@224 fp32 .tflite")
    parser.add_argument("--int8", help="edgetl-exported MobileNetV2 α1.0@224 int8 .tflite")
    parser.add_argument("--keras", help="the Keras model the pair was exported from (default: an untrained MobileNetV2)")
    parser.add_argument("--runs", type=int, default=300, help="invokes per overhead round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating overhead rounds")
    parser.add_argument("--repeats", type=int, default=5, help="start-up measurements per command")
    parser.add_argument("--out", help="also write the Markdown section here")
    args = parser.parse_args(argv)

    model = Path(args.model)
    words = [str(Path(__file__).relative_to(REPO))] + (argv if argv is not None else sys.argv[1:])
    command = "python " + " ".join(shlex.quote(word) for word in words)
    env = host_fingerprint()
    runtime = find_runtime()
    lines = [
        "## Device side (edgetl bench / runtime)",
        "",
        f"Measured with `{command}` on {env['cpu']} ({env['usable_cores']} usable cores), {env['os']} {env['machine']}, "
        f"{env['python']}, {runtime.package} {runtime.version}. Times are medians over repeats.",
        "",
    ]

    overhead = harness_overhead(model, args.runs, args.rounds, threads=1)
    lines += [
        "### Harness overhead (goal <= 3 %)",
        "",
        f"{model.name}, XNNPACK, 1 thread, {args.rounds} alternating rounds of {args.runs} invokes on one interpreter:",
        "",
        "| loop | ms per invoke |",
        "|---|---|",
        f"| bare `interpreter.invoke()` loop | {overhead['bare_ms']:.3f} |",
        f"| edgetl timed loop, wall time per run (timing + bookkeeping) | {overhead['edgetl_wall_ms']:.3f} |",
        f"| edgetl reported mean latency | {overhead['edgetl_mean_ms']:.3f} |",
        "",
        f"Overhead: {overhead['overhead_pct']:+.2f} % (wall per run vs bare), {overhead['reported_pct']:+.2f} % (reported mean vs bare); "
        f"run-to-run spread of the bare loop: {overhead['spread_pct']:.1f} %.",
        "",
    ]

    found = startup(model, args.repeats)
    lines += ["### Start-up and memory (goals: >= 10x faster start than importing TensorFlow, <= 150 MB)", "",
              "| command | wall s | peak RSS MB |", "|---|---|---|"]
    for name, row in found.items():
        lines.append(f"| `{name}` | {row['seconds']:.2f} | {row['rss_mb']:.0f} |")
    lines += ["", "Exact commands (each started by a fresh small launcher so the RSS is the command's own):", ""]
    lines += [f"- `{row['argv']}`" for row in found.values()]
    bench_row = found.get("edgetl bench (1 run)")
    tf_row = found.get("python -c 'import tensorflow'")
    lines.append("")
    if bench_row and tf_row:
        lines.append(f"`edgetl bench` on {model.name} (start, load, 1 inference, exit) is {tf_row['seconds'] / bench_row['seconds']:.1f}x "
                     f"faster than importing TensorFlow alone, with {bench_row['rss_mb']:.0f} MB peak RSS "
                     f"(TensorFlow import: {tf_row['rss_mb']:.0f} MB).")
    elif bench_row:
        lines.append("TensorFlow is not importable here: no start-up comparison.")
    lines.append("")

    lines += ["### int8 vs fp32 (XNNPACK)", ""]
    pair = {k: Path(v) for k, v in (("edgetl fp32", args.fp32), ("edgetl int8", args.int8)) if v}
    if CORAL_PTQ.exists():
        pair["TF2 PTQ (coral-test-data)"] = CORAL_PTQ
    if args.fp32 and args.int8:
        threads = sorted({1, usable_cores()})
        rows = latency_rows(pair, threads, runs=100, seconds=2.0)
        lines += ["| model | threads | mean ms | p50 ms | p99 ms | MB |", "|---|---|---|---|---|---|"]
        for name, results in rows.items():
            for r in results:
                lines.append(f"| {name} | {r.threads} | {r.mean_ms:.2f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                             f"| {r.model_size_bytes / 1e6:.2f} |")
        for t in threads:
            fp32 = next(r for r in rows["edgetl fp32"] if r.threads == t)
            int8 = next(r for r in rows["edgetl int8"] if r.threads == t)
            lines.append(f"\n{t} thread(s): int8 is {fp32.p50_ms / int8.p50_ms:.2f}x the speed of fp32 (p50).")
            if "TF2 PTQ (coral-test-data)" in rows:
                ptq = next(r for r in rows["TF2 PTQ (coral-test-data)"] if r.threads == t)
                lines.append(f"{t} thread(s): edgetl int8 p50 {int8.p50_ms:.2f} ms vs TF2 PTQ reference {ptq.p50_ms:.2f} ms.")
        lines += ["", "Graphs (input tensor, then op counts):", ""]
        for name, path in pair.items():
            if name != "edgetl fp32":
                info = parse_model(path.read_bytes(), str(path))
                ops = ", ".join(f"{op} {count}" for op, count in info.op_counts.items())
                lines.append(f"- {name}: {info.inputs[0].describe()}; {ops}")
        keras = keras_latency(args.keras, runs=50)
        if keras is None:
            lines.append("\nKeras float `model(x)`: not run (TensorFlow not importable).")
        else:
            int8_best = min(r.p50_ms for r in rows["edgetl int8"])
            lines.append(f"\nKeras float `model(x)` ({keras['source']}): p50 {keras['p50_ms']:.2f} ms over {keras['runs']} calls; "
                         f"edgetl int8 best p50 {int8_best:.2f} ms ({keras['p50_ms'] / int8_best:.1f}x faster).")
    else:
        lines.append("Not run: needs `--fp32` and `--int8` (an edgetl-exported MobileNetV2 α1.0@224 pair).")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
