"""CI-sized fuzz run of scripts/fuzz.py: 100 mutated .tflite files through the CLI, 200 mutated images through the loader.

The nightly-sized run (1,000+ cases each) is `python scripts/fuzz.py`; its
result is in docs/benchmarks.md. Both assert the same: the CLI's parent
process never dies, never hangs, and every failure is one clean line.
"""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("ai_edge_litert")

from tests.conftest import REPO  # noqa: E402


def load_fuzz():
    spec = importlib.util.spec_from_file_location("edgetl_fuzz", REPO / "scripts" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzz_models_and_images():
    fuzz = load_fuzz()
    summary = fuzz.run_fuzz(cases=100, image_cases=200, seed=20240601)
    findings = "\n".join(f"{f['kind']}: {f['what']} -> {f['detail']}" for f in summary["findings"])
    assert summary["parent_crashes"] == 0, findings
    assert summary["hangs"] == 0, findings
    assert summary["unclean"] == 0, findings
    # The regression seeds prove both guards are live: a SIGSEGV and a never-ending inference, each caught.
    assert summary["child_crashes_caught"] >= 1 and summary["child_hangs_caught"] >= 1, summary
    assert sum(summary["model_outcomes"].values()) == 100 and sum(summary["image_outcomes"].values()) == 200
    assert summary["model_outcomes"].get("ok", 0) > 0 and summary["image_outcomes"].get("ok", 0) > 0  # not all rejected


def test_mutations_are_deterministic():
    fuzz = load_fuzz()
    seeds, regressions = fuzz.model_seeds(use_shared=False), fuzz.regression_models()
    assert fuzz.model_case(7, 1, seeds, regressions) == fuzz.model_case(7, 1, seeds, regressions)
    images = fuzz.image_seeds()
    assert fuzz.image_case(3, 1, images) == fuzz.image_case(3, 1, images)
