"""`edgetl quickstart`: the README's main command, offline, on the shipped photos and weights.

It runs the real command in a fresh process, as a new user would: an empty HOME (no Keras cache), no
EDGETL_WEIGHTS_DIR, and EDGETL_WEIGHTS_URL pointing at a closed port so any download attempt would fail.
It asserts the accuracy floor of the issue (>= 80 % on the six TrashNet classes, chance 17 %), the five
variants in the report and quiet logs; its wall time is measured by scripts/bench_quickstart.py, not here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.tf, pytest.mark.slow]

from edgetl.bundled import quickstart_dataset  # noqa: E402
from edgetl.export.variants import DEFAULT_VARIANTS  # noqa: E402
from edgetl.model_metadata import read_edgetl_metadata  # noqa: E402

TRASHNET = ("cardboard", "glass", "metal", "paper", "plastic", "trash")
VARIANTS = list(DEFAULT_VARIANTS)  # fp32, fp16, dynamic, int8, qat-int8


def test_shipped_subset_is_small_and_keeps_its_licence():
    root = quickstart_dataset()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 6e6
    assert "MIT" in (root / "LICENSE").read_text() and "TrashNet" in (root / "README.md").read_text()
    for split in ("train", "val"):
        assert tuple(sorted(p.name for p in (root / split).iterdir())) == TRASHNET


def test_quickstart_learns_the_shipped_photos_offline_and_quietly(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "EDGETL_WEIGHTS_URL": "http://127.0.0.1:9/"}
    env.pop("EDGETL_WEIGHTS_DIR", None)
    env.pop("EDGETL_TF_LOGS", None)
    out = tmp_path / "qs"
    done = subprocess.run([sys.executable, "-m", "edgetl", "quickstart", "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Nothing reaches the user's terminal on stderr: no TensorFlow C++/absl lines (E0000 ...), no Python
    # warnings from the converter (with --no-progress there are no progress bars either).
    assert not done.stderr.strip(), done.stderr[-3000:]
    assert "TrashNet subset shipped with edgetl" in done.stdout

    report = json.loads((out / "report.json").read_text())
    assert "0.35_224_no_top.h5" in report["model"]["weights"], report["model"]  # ImageNet, not random init
    assert report["float_accuracy"] >= 0.80, report["float_accuracy"]
    assert [row["variant"] for row in report["rows"]] == VARIANTS
    for row in report["rows"]:
        assert row["accuracy"] is not None and row["p50_ms"] > 0 and row["images"] == report["val_images"]
        low, high = row["accuracy_ci"]
        assert low <= row["accuracy"] <= high
    assert report["recommended"] in VARIANTS
    # The float files keep the float model's accuracy; every file names the six classes.
    assert report["rows"][0]["accuracy"] >= 0.80
    for row in report["rows"]:
        card = read_edgetl_metadata((out / "export" / row["file"]).read_bytes())
        assert card.labels == TRASHNET
    # The recommended row carries a star ("| qat-int8 * |" when latency puts it first).
    assert re.search(r"^\| qat-int8( \*)? \|", (out / "report.md").read_text(), re.MULTILINE)
