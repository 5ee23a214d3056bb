"""Benchmark of the decoded store (issue 13): wall time and peak RSS against the number of images.

For a generated folder of N 224 px JPEGs in two or more classes it measures, each
in its own child process (peak RSS = the child's ``ru_maxrss`` from ``os.wait4``):

  a) decode + store build + stage-1 feature pass: ``ImageStore.update`` over every
     file, then ``edgetl.train.train`` with one head epoch and no fine-tuning (the
     store is current, so training decodes nothing): the feature pass is its
     ``stage_seconds['head']``;
  b) one fine-tuning epoch: ``train`` again on the same run directory with one
     fine-tuning epoch (stage 1 is resumed, not repeated);
  c) a plain Pillow decode loop (``edgetl.images.load_image``) over all cores, in
     a process pool and in a thread pool, discarding the pixels: the throughput
     the store's decode is compared with;
  d) reading every row once in shuffled batches of 32: from the store (``pread``
     per row, CRC checked) and from a TFRecord file of the same raw rows through
     ``tf.data`` (sequential, shuffled in a 1000-record buffer): the format choice.

The folders are generated once into ``--cache`` (smooth random colour fields with
noise, JPEG quality 90, about the size of a resized photo) and reused.

Usage:
  python scripts/bench_data_store.py --images 1000 --cache /tmp/edgetl-bench-data
  python scripts/bench_data_store.py --images 10000 --cache /data/bench --json docs/bench_store_10k.json

The model is the default recipe's backbone (MobileNetV2 alpha 0.35 at 224 px)
with random weights (--weights none: same arithmetic as ImageNet weights, no
download); pass --weights imagenet with Keras' weights cached to use those.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from edgetl.runtime.environment import cpu_model  # noqa: E402




def generate(root: Path, count: int, classes: int, size: int = 224) -> Path:
    """``root/n<count>/class_<k>/<i>.jpg``; reused when complete."""
    import numpy as np
    from PIL import Image

    folder = root / f"n{count}_c{classes}_{size}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    rng = np.random.default_rng(0)
    for index in range(count):
        label = index % classes
        target = folder / f"class_{label}" / f"{index:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, (8, 8, 3)) * 0.6 + np.array([label * 97 % 255, 128, 255 - label * 57 % 255]) * 0.4
        field = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)
        pixels = np.clip(field + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(target, quality=90)
    done.write_text(str(count))
    return folder


# --- children -------------------------------------------------------------------------------------

def _configs(data: Path, weights: str, fine_tune_epochs: int):
    from edgetl.config import DataConfig, ModelConfig, TrainConfig

    return (DataConfig(path=str(data), batch_size=32), ModelConfig("mobilenet_v2", alpha=0.35, size=224, weights=weights),
            TrainConfig(epochs=1, fine_tune_epochs=fine_tune_epochs, fine_tune_layers=30, early_stopping_patience=0))


def child_features(data: Path, run: Path, weights: str) -> dict:
    from edgetl.data.folder import scan_candidates
    from edgetl.data.store import ImageStore, store_folder

    started = time.perf_counter()
    paths = list(scan_candidates(str(data)).paths)
    store = ImageStore(store_folder(run, 224), 224)
    store.update(paths, progress=False)
    decode_seconds = time.perf_counter() - started
    store.close()
    from edgetl.train import train

    result = train(*_configs(data, weights, 0), out=str(run), echo=lambda line: None)
    return {"decode_store_seconds": decode_seconds, "decode_images_per_second": len(paths) / decode_seconds,
            "head_stage_seconds": result.stage_seconds.get("head"), "images": len(paths)}


def child_decode(data: Path, run: Path, pool: str) -> dict:
    """The store's build alone, with the pool it picks for this many files or the one ``pool`` forces."""
    from edgetl.data import store as store_lib
    from edgetl.data.folder import scan_candidates

    if pool != "auto":
        store_lib.PROCESS_POOL_MIN = 1 if pool == "processes" else 2**62
    paths = list(scan_candidates(str(data)).paths)
    # The store does not fsync its rows: without this, the previous build's 1.4 GB (per 10 k images) would
    # still be going to disk during this one's timing.
    os.sync()
    started = time.perf_counter()
    store = store_lib.ImageStore(store_lib.store_folder(run, 224), 224)
    store.update(paths, progress=False)
    seconds = time.perf_counter() - started
    store.close()
    shutil.rmtree(run / "store", ignore_errors=True)  # the next build starts from nothing too
    return {"decode_store_seconds": seconds, "decode_images_per_second": len(paths) / seconds, "pool": pool}


def child_fine_tune(data: Path, run: Path, weights: str) -> dict:
    from edgetl.train import train

    result = train(*_configs(data, weights, 1), out=str(run), echo=lambda line: None)
    return {"fine_tune_epoch_seconds": result.stage_seconds.get("fine_tune"), "resumed": result.resumed}


def child_read_store(run: Path) -> dict:
    import numpy as np

    from edgetl.data.store import ImageStore, store_folder

    store = ImageStore(store_folder(run, 224), 224)
    rows = np.random.default_rng(0).permutation(store.committed_rows)
    started = time.perf_counter()
    for start in range(0, len(rows), 32):
        store.read(rows[start:start + 32])
    seconds = time.perf_counter() - started
    return {"store_read_images_per_second": len(rows) / seconds}


def child_read_tfrecord(run: Path) -> dict:
    import numpy as np

    from edgetl.data.store import ImageStore, store_folder
    from edgetl.model.keras import tf

    store = ImageStore(store_folder(run, 224), 224)
    record = run / "rows.tfrecord"
    with tf.io.TFRecordWriter(str(record)) as writer:
        for row in range(store.committed_rows):
            writer.write(store.read([row])[0].tobytes())
    dataset = (tf.data.TFRecordDataset(str(record)).shuffle(1000, seed=0).batch(32)
               .map(lambda x: tf.reshape(tf.io.decode_raw(x, tf.uint8), (-1, 224, 224, 3))).prefetch(2))
    started = time.perf_counter()
    count = sum(int(batch.shape[0]) for batch in dataset)
    seconds = time.perf_counter() - started
    record.unlink()
    return {"tfrecord_read_images_per_second": count / seconds}


def _decode_one(path: str) -> int:
    from edgetl.images import load_image

    return int(load_image(path, 224)[0, 0, 0])


def child_plain(data: Path, kind: str) -> dict:
    paths = sorted(str(p) for p in data.rglob("*.jpg"))
    workers = os.cpu_count() or 1
    pool_class = concurrent.futures.ProcessPoolExecutor if kind == "processes" else concurrent.futures.ThreadPoolExecutor
    with pool_class(max_workers=workers) as pool:
        list(pool.map(_decode_one, paths[:workers]))  # warm-up: workers started, modules imported, not timed
        started = time.perf_counter()
        list(pool.map(_decode_one, paths, chunksize=16 if kind == "processes" else 1))
        seconds = time.perf_counter() - started
    return {f"plain_{kind}_seconds": seconds, f"plain_{kind}_images_per_second": len(paths) / seconds}


def run_child(args) -> None:
    data, run = Path(args.data), Path(args.run) if args.run else None
    if args.child == "features":
        result = child_features(data, run, args.weights)
    elif args.child == "fine_tune":
        result = child_fine_tune(data, run, args.weights)
    elif args.child.startswith("decode_"):
        result = child_decode(data, run, args.child.split("_", 1)[1])
    elif args.child == "read_store":
        result = child_read_store(run)
    elif args.child == "read_tfrecord":
        result = child_read_tfrecord(run)
    else:
        result = child_plain(data, args.child.split("_", 1)[1])
    print("RESULT " + json.dumps(result))


# --- parent ---------------------------------------------------------------------------------------

def measure(argv) -> dict:
    """Runs this script as a child with ``argv``; returns its RESULT plus wall seconds and peak RSS (MiB)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, __file__, *argv], stdout=out, stderr=err, text=True, env=env)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over every child).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"child {argv} failed:\n{stderr[-3000:]}")
    result = next(json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT "))
    return {**result, "wall_seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def decode_only(args, data: Path, run: Path, results: dict) -> None:
    plain = {}
    for kind in ("processes", "threads"):
        name = f"plain_{kind}"
        results[name] = measure(["--child", name, "--data", str(data)])
        plain[kind] = results[name][f"{name}_images_per_second"]
    best = max(plain.values())
    print(f"\n{args.images} images on {results['cpu']} ({results['cores']} cores):")
    print(f"  plain Pillow loop: processes {plain['processes']:.0f} img/s, threads {plain['threads']:.0f} img/s")
    for pool in ("auto", "threads", "processes"):
        name = f"decode_{pool}"
        results[name] = measure(["--child", name, "--data", str(data), "--run", str(run)])
        rate = results[name]["decode_images_per_second"]
        results[name]["vs_best_plain_loop"] = rate / best
        print(f"  store build, pool {pool}: {rate:.0f} img/s = {rate / best:.0%} of the faster plain loop "
              f"(peak RSS {results[name]['peak_rss_mib']:.0f} MiB)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "edgetl-bench-data"),
                        help="folder where generated image folders are kept and reused")
    parser.add_argument("--weights", default="none", help="'none' (default) or 'imagenet'")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--decode-only", action="store_true",
                        help="measure only the store's build (its own pool choice, threads, processes) against the "
                             "plain loops: no training (minutes instead of an hour at 50 k images)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    started = time.perf_counter()
    data = generate(Path(args.cache), args.images, args.classes)
    print(f"data: {data} ({args.images} images, generated or reused in {time.perf_counter() - started:.1f} s)")
    run = Path(tempfile.mkdtemp(prefix="edgetl-bench-run-"))
    try:
        results = {"images": args.images, "classes": args.classes, "cpu": cpu_model(), "cores": os.cpu_count(),
                   "python": platform.python_version(), "command": " ".join([Path(sys.executable).name, *sys.argv])}
        if args.decode_only:
            decode_only(args, data, run, results)
            return
        for name, argv in (("plain_processes", ["--child", "plain_processes", "--data", str(data)]),
                           ("plain_threads", ["--child", "plain_threads", "--data", str(data)]),
                           ("features", ["--child", "features", "--data", str(data), "--run", str(run), "--weights", args.weights]),
                           ("fine_tune", ["--child", "fine_tune", "--data", str(data), "--run", str(run), "--weights", args.weights]),
                           ("read_store", ["--child", "read_store", "--data", str(data), "--run", str(run)]),
                           ("read_tfrecord", ["--child", "read_tfrecord", "--data", str(data), "--run", str(run)])):
            results[name] = measure(argv)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
        store_rate = results["features"]["decode_images_per_second"]
        plain_rate = max(results["plain_processes"]["plain_processes_images_per_second"],
                         results["plain_threads"]["plain_threads_images_per_second"])
        results["store_decode_vs_best_plain_loop"] = store_rate / plain_rate
        store_bytes = sum(p.stat().st_size for p in (run / "store").rglob("pixels.*.u8"))
        results["store_mib"] = store_bytes / 2**20
        print(f"\n{args.images} images on {results['cpu']} ({results['cores']} cores):")
        print(f"  a) decode + store + stage-1 features: {results['features']['wall_seconds']:.1f} s wall "
              f"(decode {results['features']['decode_store_seconds']:.1f} s = {store_rate:.0f} img/s, head stage "
              f"{results['features']['head_stage_seconds']:.1f} s), peak RSS {results['features']['peak_rss_mib']:.0f} MiB")
        print(f"  b) one fine-tuning epoch: {results['fine_tune']['wall_seconds']:.1f} s wall (epoch "
              f"{results['fine_tune']['fine_tune_epoch_seconds']:.1f} s), peak RSS {results['fine_tune']['peak_rss_mib']:.0f} MiB")
        print(f"  c) plain Pillow loop: processes {results['plain_processes']['plain_processes_images_per_second']:.0f} img/s, "
              f"threads {results['plain_threads']['plain_threads_images_per_second']:.0f} img/s; store decode = "
              f"{results['store_decode_vs_best_plain_loop']:.0%} of the faster one")
        print(f"  d) reading every row once, shuffled batches of 32: store {results['read_store']['store_read_images_per_second']:.0f} "
              f"img/s (peak RSS {results['read_store']['peak_rss_mib']:.0f} MiB), TFRecord via tf.data "
              f"{results['read_tfrecord']['tfrecord_read_images_per_second']:.0f} img/s (peak RSS "
              f"{results['read_tfrecord']['peak_rss_mib']:.0f} MiB)")
        print(f"  store: {results['store_mib']:.0f} MiB on disk")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
