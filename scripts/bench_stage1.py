"""Stage-1 time: head on cached backbone features vs a naive fit through the frozen backbone.

Both train the same head for the same epochs on the same images; the cached
path runs the backbone once per image, the naive one every epoch. Both times
are measured in this one run, and the ratio is what to compare across machines.

Usage:
  python scripts/bench_stage1.py [--data ../shared/assets/hymenoptera_data] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "assets" / "hymenoptera_data"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "assets" / "keras" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with train/ and val/ sub-folders")
    parser.add_argument("--weights-dir", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant; the fastest counts (shared machines are noisy)")
    args = parser.parse_args()

    from edgetl.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
    from edgetl.train import train

    data = DataConfig(path=os.path.join(args.data, "train"), val_path=os.path.join(args.data, "val"),
                      augment=AugmentConfig(enabled=False))
    weights = "imagenet" if Path(args.weights_dir).is_dir() else "none"
    model = ModelConfig("mobilenet_v2", alpha=args.alpha, size=args.size, weights=weights,
                        weights_dir=args.weights_dir if weights == "imagenet" else None)
    timings, accuracy, totals = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for cached in (True, False):
                config = TrainConfig(epochs=args.epochs, fine_tune_epochs=0, cache_features=cached, early_stopping_patience=0)
                started = time.perf_counter()
                result = train(data, model, config, out=f"{tmp}/{cached}_{repeat}", echo=lambda line: None)
                totals[cached] = min(totals.get(cached, float("inf")), time.perf_counter() - started)
                timings[cached] = min(timings.get(cached, float("inf")), result.stage_seconds["head"])
                accuracy[cached] = result.val_accuracy
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"mobilenet_v2 alpha={args.alpha} @{args.size}, weights={weights}, {args.epochs} epochs, "
          f"best of {args.repeats} runs each, interleaved")
    for cached, name in ((True, "cached features"), (False, "frozen backbone")):
        print(f"{name:16}: stage 1 {timings[cached]:7.2f} s, whole train() {totals[cached]:7.2f} s "
              f"(scan, decode, build, stage 1, save)  val acc {accuracy[cached]:.4f}")
    print(f"stage-1 speed-up: {timings[False] / timings[True]:.1f}x; whole-command speed-up: {totals[False] / totals[True]:.1f}x")


if __name__ == "__main__":
    main()
