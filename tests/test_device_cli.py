"""`edgetl bench / eval / predict` end to end with CliRunner: Coral models and TF-free synthetic models."""

from __future__ import annotations

import csv
import ctypes.util
import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("ai_edge_litert")

from device_models import build_edgetpu_model, write_colour_model  # noqa: E402

from edgetl.bench import BenchConfig, benchmark  # noqa: E402
from edgetl.cli import main  # noqa: E402
from edgetl.errors import ConfigError  # noqa: E402

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"
# Short runs: statistics stay meaningful, the suite stays fast.
FAST = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0"]
# Confident images: exact top-1 (assets README). Others: top-5 membership.
TOP1 = {"parrot.jpg": "macaw", "hot_dog.jpg": "hotdog, hot dog, red hot", "cat.bmp": "Egyptian cat",
        "grace_hopper.bmp": "military uniform"}
TOP5 = {"bird.bmp": "chickadee", "dragonfly.bmp": "dragonfly, darning needle, devil's darning needle, sewing needle, "
        "snake feeder, snake doctor, mosquito hawk, skeeter hawk", "sunflower.bmp": "daisy"}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# === predict ===

def test_predict_coral_mobilenet_v2_gives_the_right_labels(coral_data):
    images = list(TOP1) + list(TOP5)
    result = run("predict", coral_data / MOBILENET_V2, *[coral_data / i for i in images],
                 "--labels", coral_data / "imagenet_labels.txt", "--json")
    assert result.exit_code == 0, result.output
    predictions = {p["image"].rsplit("/", 1)[-1]: p["top"] for p in json.loads(result.output)["predictions"]}
    for image, label in TOP1.items():
        assert predictions[image][0]["label"] == label, (image, predictions[image][:3])
        assert predictions[image][0]["score"] > 0.5
    for image, label in TOP5.items():
        assert label in [entry["label"] for entry in predictions[image]], (image, predictions[image])
    for top in predictions.values():
        scores = [entry["score"] for entry in top]
        assert len(top) == 5 and scores == sorted(scores, reverse=True)


def test_predict_table_output(coral_data):
    result = run("predict", coral_data / MOBILENET_V2, coral_data / "parrot.jpg", "--labels",
                 coral_data / "imagenet_labels.txt", "-k", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("parrot.jpg") and "macaw" in lines[1] and len(lines) == 3


def test_predict_uses_the_embedded_metadata(tmp_path):
    model = write_colour_model(tmp_path / "m.tflite", "int8")
    image = tmp_path / "green.png"
    Image.new("RGB", (30, 20), (30, 200, 40)).save(image)
    result = run("predict", model, image, "--json")
    assert result.exit_code == 0, result.output
    top = json.loads(result.output)["predictions"][0]["top"]
    assert top[0]["label"] == "green" and top[0]["score"] > 0.9
    assert "pixel - 0) / 255 from edgetl metadata" in json.loads(result.output)["preprocessing"]


def test_predict_without_labels_prints_indices(coral_data):
    result = run("predict", coral_data / MOBILENET_V2, coral_data / "parrot.jpg", "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["predictions"][0]["top"][0]["index"] == 89


def test_predict_bad_inputs_give_one_line(tmp_path, coral_data):
    model = write_colour_model(tmp_path / "m.tflite", "float32")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert_one_line_error(run("predict", model, text), "notes.jpg", "not an image")
    assert_one_line_error(run("predict", model, tmp_path / "missing.png"), "missing.png", "does not exist")
    grey = write_colour_model(tmp_path / "grey.tflite", "float32", metadata=False, channels=1)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert_one_line_error(run("predict", grey, image), "1-channel", "RGB")
    wrong_labels = tmp_path / "labels.txt"
    wrong_labels.write_text("a\nb\n")
    assert_one_line_error(run("predict", coral_data / MOBILENET_V2, image, "--labels", wrong_labels), "2 labels", "1001")


def test_labels_file_with_indices(tmp_path):
    from edgetl.predict import read_labels

    path = tmp_path / "labels.txt"
    path.write_text("0  background\n1  cat\n3 dog\n")
    assert read_labels(path) == ("background", "cat", "", "dog")
    path.write_text("red\ngreen\n\n")
    assert read_labels(path) == ("red", "green")


# === bench ===

def check_statistics(row):
    assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["min_ms"] <= row["mean_ms"] <= row["max_ms"]
    assert row["std_ms"] >= 0 and row["runs"] >= 5 and row["warmup_runs"] >= 1
    assert len(row["times_us"]) == row["runs"]
    assert row["mean_ms"] == pytest.approx(np.mean(row["times_us"]) / 1e3, rel=0.01, abs=0.002)
    assert row["throughput"] == pytest.approx(row["batch"] * 1e3 / row["mean_ms"], rel=0.01)
    assert row["init_ms"] > 0 and row["first_ms"] > 0 and row["check_ms"] >= 0
    assert row["wall_seconds"] * 1e3 >= sum(row["times_us"]) / 1e3
    assert row["peak_rss_mb"] > 10
    assert row["runtime"]["package"] == "ai-edge-litert" and row["runtime"]["version"]
    assert row["environment"]["cores"] >= 1 and row["environment"]["python"]


def test_bench_coral_gives_sane_statistics(coral_data):
    model = coral_data / MOBILENET_V2
    result = run("bench", model, "--threads", "1", *FAST, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    assert len(rows) == 1
    row = rows[0]
    check_statistics(row)
    assert row["model_size_bytes"] == model.stat().st_size and row["threads"] == 1
    assert row["delegate"] == "xnnpack" and row["inputs"] == "random"
    assert row["input"].startswith("uint8[1,224,224,3]")
    # MobileNetV2 at 224 px: milliseconds on any CPU, far from both 0 and seconds
    assert 0.2 < row["p50_ms"] < 2000


def test_bench_sweeps_threads_delegates_and_models(tmp_path):
    models = [write_colour_model(tmp_path / "float.tflite", "float32"), write_colour_model(tmp_path / "int8.tflite", "int8")]
    result = run("bench", *models, "--threads", "1,2", "--delegate", "cpu,xnnpack", *FAST, "--json", "--no-times")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    combos = [(r["model"].rsplit("/", 1)[-1], r["delegate"], r["threads"]) for r in rows]
    assert combos == [(m, d, t) for m in ("float.tflite", "int8.tflite") for d in ("cpu", "xnnpack") for t in (1, 2)]
    assert all(r["times_us"] == [] for r in rows)
    assert [r["runtime"]["xnnpack"] for r in rows[:4]] == [False, False, True, True]


def test_bench_table_and_csv(tmp_path):
    model = write_colour_model(tmp_path / "m.tflite", "int8")
    table = run("bench", model, "--threads", "1", *FAST)
    assert table.exit_code == 0, table.output
    header, rule, row = table.output.splitlines()[:3]
    assert header.split()[:4] == ["model", "delegate", "thr", "MB"] and set(rule) <= {"-", " "}
    assert row.split()[:3] == ["m.tflite", "xnnpack", "1"]
    assert "ai-edge-litert" in table.output
    out = tmp_path / "bench.csv"
    result = run("bench", model, "--threads", "1", *FAST, "--csv", "-o", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 1 and rows[0]["delegate"] == "xnnpack" and float(rows[0]["p99_ms"]) >= float(rows[0]["p50_ms"])
    assert rows[0]["runtime"] == "ai-edge-litert"


def test_bench_with_real_images(tiny_folder, tmp_path):
    model = write_colour_model(tmp_path / "m.tflite", "float32")
    result = run("bench", model, "--images", tiny_folder, *FAST, "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["results"][0]["inputs"] == "images:18"


def test_bench_runs_at_least_min_seconds(tmp_path):
    model = write_colour_model(tmp_path / "m.tflite", "float32")
    [row] = benchmark([str(model)], BenchConfig(threads=(1,), runs=1, min_seconds=0.2, warmup_seconds=0))
    assert row.wall_seconds >= 0.2 and row.runs > 1


def test_bench_interleaves_models_in_rounds(tmp_path):
    """--rounds 4: both models measured in every round, each round's median kept, noise measured."""
    models = [write_colour_model(tmp_path / "float.tflite", "float32"), write_colour_model(tmp_path / "int8.tflite", "int8")]
    result = run("bench", *models, "--threads", "1,2", "--rounds", "4", "--runs", "8", "--min-seconds", "0",
                 "--warmup-seconds", "0", "--json", "--no-times")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    assert [(r["model"].rsplit("/", 1)[-1], r["threads"]) for r in rows] == [
        ("float.tflite", 1), ("float.tflite", 2), ("int8.tflite", 1), ("int8.tflite", 2)]
    for row in rows:
        assert row["rounds"] == 4 and len(row["round_p50_ms"]) == 4 and row["runs"] >= 8
        assert row["noise"] >= 0 and 1 <= row["attempts"] <= 3 and isinstance(row["reliable"], bool)
        assert min(row["round_p50_ms"]) <= row["p50_ms"] <= max(row["round_p50_ms"]) + 1e-6
    table = run("bench", *models, "--threads", "1", "--rounds", "3", "--runs", "6", "--min-seconds", "0")
    assert table.exit_code == 0 and "noise %" in table.output.splitlines()[0]


def test_noise_detection_and_retries(tmp_path):
    """Round medians that move by more than max_noise, or a long tail, make a measurement noisy."""
    from edgetl.bench import _noise, _noisiness, _Session, measure_interleaved
    from edgetl.runtime.interpreter import load_interpreter

    config = BenchConfig(rounds=3, max_noise=0.1, max_tail=1.5)
    quiet = [[1000, 1010, 990], [1005, 995, 1000], [998, 1002, 1001]]
    assert _noise(quiet) < 0.02 and _noisiness(quiet, config) <= 1.0
    drifting = [[1000] * 3, [1300] * 3, [1000] * 3]
    assert abs(_noise(drifting) - 0.3) < 1e-9 and _noisiness(drifting, config) > 1.0
    tail = [[1000] * 8 + [3000] * 2] * 3
    assert _noise(tail) == 0.0 and _noisiness(tail, config) > 1.0
    model = write_colour_model(tmp_path / "m.tflite", "float32")
    strict = BenchConfig(rounds=2, runs=4, min_seconds=0, warmup_seconds=0, max_noise=1e-12, retries=2)
    [result] = measure_interleaved([_Session(load_interpreter(model, threads=1), strict, 0.0, "local", str(model))], strict)
    # Nothing is quieter than 1e-12: every retry is used and the row is marked, not dropped.
    assert result.attempts == 3 and result.reliable is False and result.runs >= 4


def test_bench_config_validation():
    with pytest.raises(ConfigError, match="runs"):
        BenchConfig(runs=0)
    with pytest.raises(ConfigError, match="max_seconds"):
        BenchConfig(min_seconds=5, max_seconds=1)
    with pytest.raises(ConfigError, match="threads"):
        BenchConfig(threads=(0,))
    with pytest.raises(ConfigError, match="rounds"):
        BenchConfig(rounds=0)
    assert BenchConfig(threads=(1, 1, 2)).thread_counts() == (1, 2)


def test_bench_bad_inputs_give_one_line(tmp_path, coral_data):
    missing = tmp_path / "missing.tflite"
    assert_one_line_error(run("bench", missing, *FAST), "does not exist")
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    assert_one_line_error(run("bench", empty, *FAST), "empty (0 bytes)")
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes((coral_data / MOBILENET_V2).read_bytes()[:1_000_000])
    assert_one_line_error(run("bench", truncated, *FAST), "truncated or damaged")
    foreign = tmp_path / "parrot.tflite"
    shutil.copy(coral_data / "parrot.jpg", foreign)
    assert_one_line_error(run("bench", foreign, *FAST), "not a TFLite model", "TFL3")
    compiled = tmp_path / "m_edgetpu.tflite"
    compiled.write_bytes(build_edgetpu_model())
    assert_one_line_error(run("bench", compiled, *FAST), "compiled for the Edge TPU", "--delegate edgetpu")
    good = write_colour_model(tmp_path / "m.tflite")
    if ctypes.util.find_library("edgetpu") is None:  # a machine with a Coral runtime would load it
        assert_one_line_error(run("bench", good, "--delegate", "cpu,edgetpu", *FAST), "Edge TPU delegate", "ai-edge-litert")
    assert_one_line_error(run("bench", good, "--delegate", tmp_path / "libnope.so", *FAST), "libnope.so")
    assert_one_line_error(run("bench", good, "--delegate", "gpu", *FAST), "Unknown delegate 'gpu'")
    result = run("bench", good, "--threads", "one", *FAST)
    assert result.exit_code == 2 and "comma-separated integers" in result.output


# === eval ===

@pytest.mark.parametrize("dtype, dynamic", [("float32", False), ("int8", True), ("uint8", False)])
def test_eval_on_a_folder_with_metadata(tiny_folder, tmp_path, dtype, dynamic):
    model = write_colour_model(tmp_path / "m.tflite", dtype, dynamic_batch=dynamic)
    result = run("eval", model, tiny_folder, "--json", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["images"] == 18 and data["top1"] == 1.0 and data["topk"] == 1.0 and data["k"] == 3
    assert data["columns"] == ["blue", "green", "red"]
    assert data["confusion"] == [[6, 0, 0], [0, 6, 0], [0, 0, 6]]
    assert [c["recall"] for c in data["per_class"]] == [1.0, 1.0, 1.0]


def test_eval_counts_mistakes_and_skips_corrupt_images(tiny_folder, tmp_path):
    # Swapped labels: the model calls red images 'green' and green ones 'red'.
    model = write_colour_model(tmp_path / "m.tflite", "float32", labels=("green", "red", "blue"))
    (tiny_folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run("eval", model, tiny_folder)
    assert result.exit_code == 0, result.output
    assert "top-1 accuracy: 0.3333" in result.output
    assert "broken.png" in result.output and "skipped 1 files" in result.output
    data = json.loads(run("eval", model, tiny_folder, "--json").output)
    assert data["confusion"] == [[6, 0, 0], [0, 0, 6], [0, 6, 0]]
    assert data["per_class"][1]["precision"] == 0.0


def test_eval_coral_model_on_a_subset_of_imagenet(coral_data, tmp_path):
    data = tmp_path / "imagenet subset"
    for folder, image in (("macaw", "parrot.jpg"), ("military uniform", "grace_hopper.bmp"), ("chickadee", "bird.bmp")):
        (data / folder).mkdir(parents=True)
        shutil.copy(coral_data / image, data / folder / image)
    result = run("eval", coral_data / MOBILENET_V2, data, "--labels", coral_data / "imagenet_labels.txt", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["images"] == 3 and out["top1"] == 1.0
    assert out["columns"] == ["chickadee", "macaw", "military uniform", "(other)"]
    assert [c["index"] for c in out["per_class"]] == [20, 89, 653]


def test_eval_errors(tiny_folder, tmp_path, coral_data):
    model = write_colour_model(tmp_path / "m.tflite", "float32", labels=("red", "green", "bleu"))
    assert_one_line_error(run("eval", model, tiny_folder), "'blue'", "Did you mean 'bleu'")
    no_card = write_colour_model(tmp_path / "plain.tflite", "float32", metadata=False)
    assert_one_line_error(run("eval", no_card, tiny_folder), "no labels", "--labels")
    assert_one_line_error(run("eval", model, tmp_path / "nowhere"), "does not exist")


def test_help_texts_teach_with_examples():
    for command in ("bench", "eval", "predict", "inspect"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command
