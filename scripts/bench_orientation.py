"""The orientation test of `--orientation auto` (edgetl.orientation) on a real folder, over several seeds.

Decodes the folder into a store under --work, computes the frozen backbone's pooled features of the
training images as they are and turned by 90 degrees (``ROTATE_90``) and of the validation images, then runs
``choose_orientation`` (the heads of the training stage's test, default stage-1 settings) once per seed and
prints both heads' best validation accuracy and the decision of each seed, with the CPU.

With --orientation-is-the-label the folders are first rewritten into a set where the orientation is the
class: every other image (sorted by path, over all classes) goes to class `up` as it is, the rest to class
`sideways`, turned by 90 degrees, a set whose photos have an up that matters by construction.

Example:
  .venv/bin/python scripts/bench_orientation.py ../shared/assets/trashnet/train --val ../shared/assets/trashnet/val \\
      --weights-dir ../shared/assets/keras/models --work /tmp/orientation-trashnet --seeds 42 43 44
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def turned_as_label(folder: Path, out: Path) -> Path:
    """Every other image of ``folder`` into out/up as it is, the others into out/sideways turned by 90 degrees."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for index, path in enumerate(files):
        label = "up" if index % 2 == 0 else "sideways"
        (out / label).mkdir(parents=True, exist_ok=True)
        image = Image.open(path).convert("RGB")
        if label == "sideways":
            image = image.transpose(Image.Transpose.ROTATE_90)
        image.save(out / label / f"{path.parent.name}_{path.stem}.jpg", quality=92)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--val", required=True)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--weights-dir", required=True)
    parser.add_argument("--work", required=True, help="folder for the decoded store")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--orientation-is-the-label", action="store_true",
                        help="measure on a set built from DATA whose classes are `up` and `sideways` (see above)")
    args = parser.parse_args()
    if args.orientation_is_the_label:
        args.data, args.val = (str(turned_as_label(Path(folder), Path(args.work) / "orientation-is-the-label" / split))
                               for folder, split in ((args.data, "train"), (args.val, "val")))

    import numpy as np

    from edgetl import train as train_lib
    from edgetl.config import DataConfig, ModelConfig, TrainConfig
    from edgetl.data.pipeline import store_dataset
    from edgetl.data.store import ImageStore, store_folder
    from edgetl.model import head as head_lib
    from edgetl.model.keras import keras
    from edgetl.orientation import ROTATE_90, choose_orientation, probe_rows
    from edgetl.runtime.environment import cpu_model

    data = DataConfig(path=args.data, val_path=args.val)
    model = ModelConfig("mobilenet_v2", alpha=args.alpha, size=args.size, weights="imagenet", weights_dir=args.weights_dir)
    config = TrainConfig()
    store = ImageStore(store_folder(args.work, args.size), args.size)
    splits, _ = train_lib.load_data(data, store, progress=False)
    train_rows, val_rows = store.rows(splits.train.paths), store.rows(splits.val.paths)
    labels, val_labels = np.asarray(splits.train.labels), np.asarray(splits.val.labels)
    keras.utils.set_random_seed(config.seed)
    classifier = head_lib.build_classifier(model, len(splits.class_names))
    extractor = head_lib.feature_extractor(classifier)
    started = time.perf_counter()
    sample = probe_rows(len(train_rows), data.seed)
    batch = data.batch_size

    def features(rows, row_labels, view=0):
        return train_lib._predict_batches(extractor, store_dataset(store, rows, row_labels, batch, view=view),
                                          -(-len(rows) // batch), "features", False)

    upright = features(np.asarray(train_rows)[sample], labels[sample])
    turned = features(np.asarray(train_rows)[sample], labels[sample], ROTATE_90)
    val = features(val_rows, val_labels)
    feature_seconds = time.perf_counter() - started
    head = head_lib.head_model(classifier)
    rows = []
    for seed in args.seeds:
        choice = choose_orientation(head, upright, turned, labels[sample], val, val_labels, config.epochs,
                                    config.learning_rate, batch, seed, config.early_stopping_patience)
        rows.append({"seed": seed, "upright": choice.upright_accuracy, "turned": choice.turned_accuracy,
                     "decision": choice.orientation})
        print(f"seed {seed}: upright {choice.upright_accuracy:.2%}  with turned copies {choice.turned_accuracy:.2%}"
              f"  -> {choice.orientation}")
    summary = {"data": args.data, "cpu": cpu_model(), "train_images": len(sample), "val_images": len(val_rows),
               "feature_seconds": round(feature_seconds, 1), "seeds": rows,
               "mean_upright": statistics.mean(r["upright"] for r in rows),
               "mean_turned": statistics.mean(r["turned"] for r in rows)}
    print(f"{args.data}: mean upright {summary['mean_upright']:.2%}, with turned copies {summary['mean_turned']:.2%} "
          f"({len(sample)} train / {len(val_rows)} val images; features {feature_seconds:.0f} s; {summary['cpu']})")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
