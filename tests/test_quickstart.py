"""`edgetl quickstart`: the README's main command, offline, end to end."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.tf, pytest.mark.slow]

from click.testing import CliRunner  # noqa: E402

from edgetl.cli import main  # noqa: E402
from edgetl.model_card import read_card  # noqa: E402


def test_quickstart_runs_every_stage_and_says_which_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty Keras cache: no ImageNet weights
    monkeypatch.delenv("EDGETL_WEIGHTS_DIR", raising=False)
    out = tmp_path / "qs"
    result = CliRunner().invoke(main, ["quickstart", "--out", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "RANDOM INIT" in result.output and "weights: random init" in result.output
    manifest = json.loads((out / "run" / "export" / "manifest.json").read_text())
    names = [entry["variant"] for entry in manifest["models"]]
    assert names == ["fp32", "fp16", "dynamic", "int8", "qat-int8"]
    # It ends in the run's report, every row measured on the exported files.
    report = json.loads((out / "run" / "report.json").read_text())
    assert report["model"]["weights"] == "random init" and "(random init)" in (out / "run" / "report.md").read_text()
    table = result.output[result.output.index("variant "):]
    for row, variant in zip(report["rows"], names):
        assert row["variant"] == variant and row["accuracy"] is not None and row["p50_ms"] > 0 and row["speedup"] > 0
        line = next(line for line in table.splitlines() if line.startswith(variant + " "))
        assert "%" in line and line.rstrip().endswith("x"), line
    assert report["recommended"] in names
    card = read_card((out / "run" / "export" / "mobilenet_v2_0.35_96_int8.tflite").read_bytes())
    assert card.labels == ("circle", "square", "triangle")
