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
    names = {entry["variant"] for entry in manifest["models"]}
    assert names == {"fp32", "fp16", "dynamic", "int8", "qat-int8"}
    table = result.output[result.output.index("variant    size KB"):]
    for variant in ("fp32", "fp16", "dynamic", "int8", "qat-int8"):
        row = next(line for line in table.splitlines() if line.startswith(variant + " "))
        assert "%" in row and "x" in row.split()[-1], row  # measured accuracy and speed-up filled in
    card = read_card((out / "run" / "export" / "mobilenet_v2_0.35_96_int8.tflite").read_bytes())
    assert card.labels == ("circle", "square", "triangle")
