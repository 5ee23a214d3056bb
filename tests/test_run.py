"""`edgetl run`: every stage end to end, the report's files and values, skipping finished stages, bad plans."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import unicodedata

import pytest
from click.testing import CliRunner

from conftest import CLASS_COLOURS, REPO, make_image_folder
from edgetl.cli import main
from edgetl.export.variants import DEFAULT_VARIANTS as VARIANTS
from edgetl.report import VariantRow, recommend

# Names a labels file could mangle: Coral-like "INDEX LABEL" (sorted as text: 2, 0, 1), spaces at the ends, a comma,
# '#', non-ASCII in NFD (as macOS writes folder names).
AWKWARD = {" 2 blue ": CLASS_COLOURS["blue"], "0 red": CLASS_COLOURS["red"],
           unicodedata.normalize("NFD", "1 grün, #2"): CLASS_COLOURS["green"]}
# Small and fast: random weights at 32 px, one QAT epoch, a handful of timed runs at one thread count.
FAST = ["--weights", "none", "--size", "32", "--epochs", "3", "--fine-tune-epochs", "1", "--qat-epochs", "1",
        "--calibration-images", "16", "--bench-threads", "1", "--bench-seconds", "0", "--bench-runs", "5", "--no-progress"]


def _row(variant, accuracy, p50, size, noise=0.0, reliable=True, vs_float=None):
    return VariantRow(variant=variant, file=f"{variant}.tflite", size_bytes=size, accuracy=accuracy, delta_pts=None,
                      p50_ms=p50, p90_ms=p50, threads=1, speedup=None, agreement=None, flagged=False, sha256="",
                      noise=noise, latency_reliable=reliable, vs_float=vs_float)


def test_recommend_picks_fastest_or_smallest_within_the_drop():
    rows = [_row("fp32", 0.90, 5.0, 9_000_000), _row("fp16", 0.90, 5.1, 4_500_000),
            _row("int8", 0.89, 3.0, 2_700_000), _row("qat-int8", 0.895, 3.2, 2_600_000)]
    assert recommend(rows, 0.90, max_drop=1.0, prefer="latency")[0] == "int8"
    assert recommend(rows, 0.90, max_drop=1.0, prefer="size")[0] == "qat-int8"
    # 0.9 pts lost is not within 0.5: the fastest of the rest wins.
    assert recommend(rows, 0.90, max_drop=0.5, prefer="latency")[0] == "qat-int8"
    # fp32 (5.0 ms) and fp16 (5.1 ms) are 2 % apart, within the 5 % tie margin: the smaller file wins.
    variant, reason = recommend(rows, 0.90, max_drop=0.0, prefer="latency")
    assert variant == "fp16" and "tie on speed" in reason
    variant, reason = recommend(rows, 0.95, max_drop=1.0)
    assert variant in ("fp32", "fp16") and "most accurate" in reason
    assert recommend([_row("int8", None, None, 1)], 0.9)[0] is None


def test_recommend_takes_the_more_accurate_of_two_files_of_about_the_same_size():
    """PTQ int8 and qat-int8 differ by a few KB; between them the one whose quantization lost less is shipped."""
    rows = [_row("fp32", 0.92, 4.0, 1_600_000, noise=0.01), _row("int8", 0.92, 2.00, 600_000, noise=0.01),
            _row("qat-int8", 0.90, 2.02, 590_000, noise=0.01)]
    variant, reason = recommend(rows, 0.92, max_drop=3.0)
    assert variant == "int8" and "int8, qat-int8 are within 5% in size; int8 is the most accurate" in reason
    assert recommend(rows, 0.92, max_drop=3.0, prefer="size")[0] == "int8"
    rows[2] = _row("qat-int8", 0.93, 2.02, 590_000, noise=0.01)
    assert recommend(rows, 0.92, max_drop=3.0)[0] == "qat-int8"
    # A file half the size is smaller, not "about the same size", whatever its accuracy.
    halves = [_row("fp16", 0.92, 2.0, 1_200_000, noise=0.01), _row("int8", 0.91, 2.0, 600_000, noise=0.01)]
    assert recommend(halves, 0.92, max_drop=3.0)[0] == "int8"


def test_qat_against_ptq_is_mcnemar_on_the_images_both_classified():
    from statsmodels.stats.contingency_tables import mcnemar

    from edgetl.report import _qat_against_ptq

    labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    ptq = [0, 1, 2, 0, 1, 2, 0, 1, 0, 1]  # 8 right
    qat = [0, 1, 2, 0, 1, 0, 1, 1, 2, -1]  # 6 right, one image not classified (-1): left out of the pairs
    rows = [_row("int8", 0.8, 2.0, 600_000), _row("qat-int8", 0.6, 2.0, 590_000)]
    result = _qat_against_ptq(rows, {"int8": ptq, "qat-int8": qat}, labels)
    assert result["images"] == 9 and (result["lost"], result["gained"]) == (2, 1)
    assert result["p_value"] == pytest.approx(mcnemar([[6, 2], [1, 0]], exact=True).pvalue)
    assert (result["qat_accuracy"], result["ptq_accuracy"]) == (0.6, 0.8)
    assert _qat_against_ptq(rows, {"int8": ptq}, labels) is None  # no QAT file evaluated


def test_recommend_never_ranks_on_noise():
    """A faster p50 inside the measurement noise, or from a noisy benchmark, is no reason to pick a file."""
    rows = [_row("int8", 0.90, 2.34, 600_000, noise=0.30), _row("qat-int8", 0.90, 5.14, 590_000, reliable=False),
            _row("fp32", 0.90, 4.0, 1_600_000, noise=0.02)]
    variant, reason = recommend(rows, 0.90, max_drop=1.0)
    assert variant == "qat-int8" and "stayed noisy" in reason
    quiet = [_row("int8", 0.90, 2.34, 600_000, noise=0.02), _row("qat-int8", 0.90, 2.40, 590_000, noise=0.01),
             _row("fp32", 0.90, 4.0, 1_600_000, noise=0.02)]
    assert recommend(quiet, 0.90)[0] == "qat-int8"  # 2.6 % apart: a tie, the smaller file
    clear = [_row("int8", 0.90, 2.0, 600_000, noise=0.02), _row("qat-int8", 0.90, 2.6, 590_000, noise=0.02)]
    assert recommend(clear, 0.90)[0] == "int8"  # 30 % faster than the noise allows for: ranked
    # A noisy benchmark widens the tie by its own spread, not without bound: measured on a busy host (hymenoptera),
    # int16x8 at 200 ms and dynamic at 9.5 ms are slower than fp16's 6.2 ms whatever their 16-27 % noise.
    busy = [_row("fp32", 0.9216, 6.248, 1_600_000, noise=0.09), _row("fp16", 0.9216, 6.242, 840_000, noise=0.19, reliable=False),
            _row("dynamic", 0.915, 9.527, 510_000, noise=0.27, reliable=False),
            _row("int16x8", 0.9216, 200.2, 500_000, noise=0.16, reliable=False),
            _row("int8", 0.915, 7.528, 530_000, noise=0.21, reliable=False)]
    variant, reason = recommend(busy, 0.9216)
    assert variant == "int8" and "fp32, fp16, int8 are a tie" in reason, reason


def test_recommend_admits_a_drop_that_is_not_measurable():
    """-1.96 pts that is 3 images (McNemar p = 0.25) is not a measurable loss; a significant one is."""
    not_measurable = {"images": 153, "delta_pts": -1.96, "lost": 3, "gained": 0, "p_value": 0.25}
    measurable = {"images": 153, "delta_pts": -7.19, "lost": 11, "gained": 0, "p_value": 0.001}
    rows = [_row("fp32", 0.92, 4.0, 1_600_000, noise=0.01, vs_float={**not_measurable, "lost": 0, "delta_pts": 0, "p_value": 1}),
            _row("int8", 0.9019, 2.0, 600_000, noise=0.01, vs_float=not_measurable)]
    variant, reason = recommend(rows, 0.92, max_drop=1.0)
    assert variant == "int8" and "not measurably worse" in reason
    rows[1] = _row("int8", 0.8481, 2.0, 600_000, noise=0.01, vs_float=measurable)
    assert recommend(rows, 0.92, max_drop=1.0)[0] == "fp32"


@pytest.mark.parametrize("recipe, expected", [
    ("export:\n  variants: [fp32, fp16]\n  edgetpu: true\n", "no 8-bit integer variant"),
    ("export:\n  out_dir: elsewhere\n", "export.out_dir"),
    ("train:\n  epochs: 0\n  fine_tune_epochs: 0\n", "nothing would be trained"),
    ("report:\n  prefer: fastest\n", "`prefer`='fastest' is not valid"),
    ("report:\n  max_dorp: 1\n", "Did you mean 'max_drop'"),
    ("report:\n  threads: [0]\n", "`threads` must be a list of integers >= 1"),
    ("model:\n  backbone: mobilenet_v9\n", "mobilenet_v"),
])
def test_impossible_plans_fail_in_one_line_before_tensorflow_loads(tmp_path, recipe, expected):
    data = make_image_folder(tmp_path / "data", per_class=3, size=24)
    (tmp_path / "recipe.yaml").write_text(recipe)
    # -X importtime lists every module imported: TensorFlow must not be among them.
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgetl", "run", str(data), "--recipe", "recipe.yaml",
                             "--out", "out"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1, result.stdout + "\n".join(errors)
    assert len(errors) == 1 and errors[0].startswith("Error: ") and expected in errors[0], errors
    assert " tensorflow" not in result.stderr.replace("tensorflow_model", ""), "TensorFlow was imported"
    assert not (tmp_path / "out").exists()


def test_unusable_folder_fails_before_tensorflow_loads(tmp_path):
    (tmp_path / "data" / "only_class").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgetl", "run", "data", "--out", "out"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1 and len(errors) == 1 and errors[0].startswith("Error: "), errors
    assert " tensorflow" not in result.stderr


def test_edgetpu_recipe_without_variants_gets_the_default_integer_ones(tmp_path):
    # The plan is checked after the defaults are filled in: edgetpu alone is a valid recipe.
    (tmp_path / "data" / "only_class").mkdir(parents=True)
    (tmp_path / "recipe.yaml").write_text("export:\n  edgetpu: true\n")
    result = subprocess.run([sys.executable, "-m", "edgetl", "run", "data", "--recipe", "recipe.yaml", "--out", "out"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and "Only one class folder" in result.stderr, result.stderr
    assert "note: Edge TPU: only the 8-bit integer variants are compiled" in result.stdout


@pytest.mark.tf
def test_run_end_to_end_then_skips_finished_stages(tmp_path):
    pytest.importorskip("tensorflow")
    data = make_image_folder(tmp_path / "data", per_class=8, size=40, classes=AWKWARD)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(data), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    _class_names_round_trip(out, data, sorted(AWKWARD))

    report = json.loads((out / "report.json").read_text())
    assert [row["variant"] for row in report["rows"]] == list(VARIANTS)
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    for row, model in zip(report["rows"], manifest["models"]):
        # every value measured, none left blank
        for key in ("accuracy", "delta_pts", "p50_ms", "p90_ms", "threads", "speedup", "size_bytes"):
            assert row[key] is not None, (row["variant"], key)
        assert row["size_bytes"] == (out / "export" / row["file"]).stat().st_size
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        # The eval stage runs each file on the whole validation split, independently of the export's own check.
        assert row["accuracy"] == pytest.approx(model["accuracy"])
        assert row["delta_pts"] == pytest.approx((row["accuracy"] - report["float_accuracy"]) * 100, abs=0.01)
        # How sure: the Wilson interval around the accuracy, McNemar's test against the float model on the same images.
        low, high = row["accuracy_ci"]
        assert low <= row["accuracy"] <= high and row["images"] == 6
        paired = row["vs_float"]
        assert paired["images"] == 6 and 0 < paired["p_value"] <= 1 and paired["summary"].startswith(f"{paired['delta_pts']:+.2f} pts")
        assert row["delta_pts"] == pytest.approx(paired["delta_pts"], abs=0.01)
        # The files of one thread count were benchmarked interleaved, in rounds.
        assert row["noise"] is not None
    assert all(s["rounds"] == 5 for s in report["sweep"])
    assert report["float_accuracy_ci"][0] <= report["float_accuracy"] <= report["float_accuracy_ci"][1]
    assert any("validation split is too small" in note for note in report["notes"])  # 6 images
    # --orientation auto (the default): the report says what the training stage decided from the data.
    assert any(note.startswith("training augmentation: orientation '") for note in report["notes"])
    assert report["rows"][0]["speedup"] == pytest.approx(1.0)
    assert report["recommended"] in VARIANTS and report["val_images"] == 6
    assert report["versions"]["tensorflow"] and "tflite runtime" in report["versions"]
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["variant"] for r in rows] == list(VARIANTS) and sum(r["recommended"] == "True" for r in rows) == 1
    markdown = (out / "report.md").read_text()
    assert f"**Recommended: {report['recommended']}**" in markdown and "| qat-int8 " in markdown
    assert "| 95% CI |" in markdown and "McNemar" in markdown
    # QAT earns its place or the report says it did not: qat-int8 against int8 on the same images.
    qat_vs_ptq = report["qat_vs_ptq"]
    qat_row, ptq_row = (next(r for r in report["rows"] if r["variant"] == v) for v in ("qat-int8", "int8"))
    assert qat_vs_ptq["images"] == 6 and qat_vs_ptq["qat_accuracy"] == qat_row["accuracy"]
    assert qat_vs_ptq["delta_pts"] == pytest.approx((qat_row["accuracy"] - ptq_row["accuracy"]) * 100, abs=0.01)
    assert "QAT against post-training quantization:" in markdown and "QAT against post-training" in result.output
    for plot in ("accuracy_latency.png", f"confusion_matrix_{report['recommended']}.png", "training_curves.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
        assert f"plots/{plot}" in markdown
    assert "Recommended:" in result.output and "report.md" in result.output

    # Same command again: nothing is redone, the report is rebuilt from the files on disk.
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "export").glob("*.tflite")}
    started = time.perf_counter()
    again = runner.invoke(main, ["run", str(data), "--out", str(out), *FAST])
    assert again.exit_code == 0, again.output
    for stage in ("train", "qat", "export", "eval", "bench"):
        assert f"[{'tune train qat export eval bench'.split().index(stage) + 1}/7] {stage}: skipped" in again.output
    assert "[1/7] tune: off" in again.output
    assert time.perf_counter() - started < 15
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "export").glob("*.tflite")}

    # A damaged stage output is redone, and only that stage; a new rule only re-reports.
    (out / "bench" / "bench.json").write_text("{ truncated")
    third = runner.invoke(main, ["run", str(data), "--out", str(out), *FAST, "--prefer", "size", "--max-drop", "100"])
    assert third.exit_code == 0, third.output
    assert "[5/7] eval: skipped" in third.output and "[6/7] bench: skipped" not in third.output
    report = json.loads((out / "report.json").read_text())
    smallest = min(report["rows"], key=lambda r: r["size_bytes"])
    assert report["recommended"] == smallest["variant"] and report["rule"] == {"max_drop": 100.0, "prefer": "size"}

    # Other training settings on a finished run: refused before anything runs, with the way out.
    changed = runner.invoke(main, ["run", str(data), "--out", str(out), *FAST[:-1], "--epochs", "4"])
    assert changed.exit_code == 1
    assert "--fresh" in changed.output and "Traceback" not in changed.output


def _class_names_round_trip(out, data, names):
    """folder -> embedded metadata -> labels.txt -> --labels -> report JSON and eval JSON: the same names."""
    assert json.loads((out / "report.json").read_text())["data"]["class_names"] == names
    assert (out / "export" / "labels.txt").read_text(encoding="utf-8") == "".join(f"{n}\n" for n in names)
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["labels"] == names
    for model in manifest["models"]:
        assert model["min_runtime_version"] and not model["runtime_warning"]  # all load in tflite-runtime 2.14
        evaluation = json.loads((out / "eval" / f"{model['variant']}.json").read_text())
        assert [(m["name"], m["label"]) for m in evaluation["per_class"]] == [(n, n) for n in names]
    fp32 = out / "export" / manifest["models"][0]["name"]
    with_labels = CliRunner().invoke(main, ["eval", str(fp32), str(data), "--labels", str(out / "export" / "labels.txt"),
                                            "--json"])
    assert with_labels.exit_code == 0, with_labels.output
    assert [(m["name"], m["label"]) for m in json.loads(with_labels.stdout)["per_class"]] == [(n, n) for n in names]
    report = json.loads((out / "report.json").read_text())
    assert [row["min_runtime"] for row in report["rows"]] == [m["min_runtime_version"] for m in manifest["models"]]
    assert "min_runtime" in (out / "report.csv").read_text().splitlines()[0]


def test_variant_lists_come_from_the_table():
    """`run` exports the table's defaults; `export` documents every variant; int16x8 is opt-in."""
    from edgetl.export.variants import VARIANTS as TABLE, float_variant_names

    assert VARIANTS == tuple(name for name, variant in TABLE.items() if variant.default) and "int16x8" not in VARIANTS
    assert float_variant_names() == [name for name in VARIANTS if not TABLE[name].needs_qat]
    runner = CliRunner()
    run_help = runner.invoke(main, ["run", "--help"]).output
    assert ",".join(VARIANTS) in run_help.replace("\n", "").replace(" ", "")
    export_help = runner.invoke(main, ["export", "--help"]).output.replace("\n", " ")
    assert all(name in export_help for name in TABLE)


def test_train_no_progress_reaches_the_stage(monkeypatch, tmp_path):
    pytest.importorskip("tensorflow")
    seen = {}

    class Result:
        def summary(self):
            return "trained"

    def fake_train(data, model, train, out, fresh, echo, progress):
        seen["progress"] = progress
        return Result()

    monkeypatch.setattr("edgetl.train.train", fake_train)
    data = make_image_folder(tmp_path / "data", per_class=3, size=24)
    done = CliRunner().invoke(main, ["train", str(data), "--weights", "none", "--out", str(tmp_path / "o"), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert seen["progress"] is False and "trained" in done.output


@pytest.mark.tf
def test_backbones_details_counts_parameters_and_macs():
    pytest.importorskip("tensorflow")
    result = CliRunner().invoke(main, ["backbones", "mobilenet_v2", "--details", "--alpha", "1.0", "--size", "224"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("mobilenet_v2"))
    # MobileNetV2 1.0 @ 224 without its top: 2.26 M parameters, 299.5 M MACs (the paper's 300 M with its classifier).
    assert " 2.26 " in row and " 299.5 " in row, row
