"""Writes edgetl/bundled/trashnet: the small TrashNet subset `edgetl quickstart` trains on.

A deterministic sample of the upstream split (train from train, val from val), each image downsized
(bicubic) so its short side is --side pixels and saved as baseline JPEG. The MIT licence and the
dataset's attribution are copied beside it.

Example:
  python scripts/make_quickstart_data.py --source ../shared/assets/trashnet --train 100 --val 25 --side 160
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "edgetl" / "bundled" / "trashnet"

README = """# TrashNet subset for `edgetl quickstart`

Real photos of single pieces of waste on a white board, six classes: cardboard, glass, metal, paper,
plastic, trash. A sorter that tells them apart on a Raspberry Pi is what `edgetl quickstart` builds.

Origin: "TrashNet", Gary Thung and Mindy Yang, Stanford CS229 2016 (github.com/garythung/trashnet),
MIT licence (`LICENSE` here: "Copyright (c) 2017 Gary Thung"). Please cite that repository when you
report figures on it.

This subset: {train} training images per class from the upstream training split and {val} validation
images per class from the upstream validation split (fewer where a class has fewer), drawn with seed
{seed}, downsized so the short side is {side} px and saved as JPEG quality {quality}. Made by
`scripts/make_quickstart_data.py` from the 341x256 copy described in the edgetl repository.

| class | train | val |
|---|---:|---:|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "assets" / "trashnet")
    parser.add_argument("--train", type=int, default=100, help="training images per class")
    parser.add_argument("--val", type=int, default=25, help="validation images per class")
    parser.add_argument("--side", type=int, default=160, help="short side in pixels")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    counts = {}
    for split, per_class in (("train", args.train), ("val", args.val)):
        for class_dir in sorted(p for p in (args.source / split).iterdir() if p.is_dir()):
            files = sorted(class_dir.glob("*.jpg"))
            rng.shuffle(files)
            target = args.out / split / class_dir.name
            target.mkdir(parents=True)
            for path in sorted(files[:per_class]):
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    scale = args.side / min(image.size)
                    size = (round(image.size[0] * scale), round(image.size[1] * scale))
                    image.resize(size, Image.BICUBIC).save(target / path.name, quality=args.quality, optimize=True)
            counts.setdefault(class_dir.name, {})[split] = min(per_class, len(files))
    shutil.copy(args.source / "LICENSE", args.out / "LICENSE")
    rows = "\n".join(f"| {name} | {c['train']} | {c['val']} |" for name, c in counts.items())
    (args.out / "README.md").write_text(README.format(train=args.train, val=args.val, seed=args.seed, side=args.side,
                                                      quality=args.quality, rows=rows))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {sum(c['train'] + c['val'] for c in counts.values())} images, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
