"""TFLite export: the five default variants and int16x8, edgetl metadata, manifest, verification, Edge TPU path, bad input.

The full variant matrix runs once (module fixture) on a small trained MobileNetV2
alpha 0.35 at 32 px; the other tests read what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.tf

from click.testing import CliRunner  # noqa: E402

from edgetl import cli  # noqa: E402
from edgetl.config import ExportConfig, ModelConfig, QATConfig, dump_yaml  # noqa: E402
from edgetl.errors import ConfigError, ExportError, RunDirError  # noqa: E402
from edgetl.export import edgetpu  # noqa: E402
from edgetl.export.variants import VARIANTS, parse_variants  # noqa: E402
from edgetl.images import load_image  # noqa: E402
from edgetl.model_metadata import labels_text, read_edgetl_metadata  # noqa: E402
from edgetl.run_dir import DatasetRecord, RunPaths  # noqa: E402
from tests.conftest import make_image_folder  # noqa: E402

SIZE = 32
ALL = ("fp32", "fp16", "dynamic", "int8", "qat-int8")


def make_run(root: Path, backbone: str = "mobilenet_v2", alpha=0.35, size: int = SIZE, classes=None,
             per_class: int = 6, train: bool = True) -> RunPaths:
    """A run directory like `edgetl train` writes: model.keras, dataset.json, labels.txt, config.yaml.

    Training unfreezes everything with BatchNorm momentum 0, so the moving statistics are
    those of the data and the randomly initialised network separates the colour classes.
    """
    from edgetl.model.head import build_classifier
    from edgetl.model.keras import keras

    data = make_image_folder(root / "image data", per_class=per_class, size=40, classes=classes)
    names = sorted(p.name for p in data.iterdir())
    train_items, val_items = [], []
    for label, name in enumerate(names):
        files = sorted((data / name).iterdir())
        cut = max(1, len(files) * 2 // 3)
        train_items += [(str(f), label) for f in files[:cut]]
        val_items += [(str(f), label) for f in files[cut:]]
    config = ModelConfig(backbone, alpha=alpha, size=size, weights="none")
    keras.utils.set_random_seed(0)
    model = build_classifier(config, len(names))
    if train:
        x = np.stack([load_image(p, size) for p, _ in train_items]).astype(np.float32)
        y = np.array([label for _, label in train_items])
        model.trainable = True
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.0
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=12, batch_size=len(x), verbose=0)
        model(x, training=True)
    paths = RunPaths.of(root / "run")
    paths.root.mkdir(parents=True, exist_ok=True)
    model.save(paths.model)
    record = DatasetRecord(tuple(names), size, tuple(train_items), tuple(val_items))
    paths.dataset.write_text(json.dumps(record.to_dict()))
    paths.labels.write_text(labels_text(names))
    paths.config.write_text(dump_yaml({"model": config}))
    return paths


FAKE_COMPILER = '''#!{python}
"""Stand-in for edgetpu_compiler: same CLI, output layout and summary format; drops TFLite metadata."""
import sys, pathlib
import flatbuffers
from ai_edge_litert import schema_py_generated as schema
args = sys.argv[1:]
out = pathlib.Path(args[args.index("-o") + 1]); source = pathlib.Path(args[-1])
model = schema.ModelT.InitFromPackedBuf(bytearray(source.read_bytes()), 0)
model.metadata = []
builder = flatbuffers.Builder(1024)
builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
stem = source.stem + "_edgetpu"
(out / (stem + ".tflite")).write_bytes(bytes(builder.Output()))
(out / (stem + ".log")).write_text("Operator Count Status\\nCONV_2D 35 Mapped to Edge TPU\\n")
print("Edge TPU Compiler version 16.0.384591198")
print("Model compiled successfully in 321 ms.")
print("Number of Edge TPU subgraphs: 1")
print("Total number of operations: 66")
print()
print("Operator                       Count      Status")
print()
print("ADD                            10         Mapped to Edge TPU")
print("CONV_2D                        35         Mapped to Edge TPU")
print("DEPTHWISE_CONV_2D              17         Mapped to Edge TPU")
print("QUANTIZE                       2          Mapped to Edge TPU")
print("MEAN                           1          Operation is otherwise supported, but not mapped due to some unspecified limitation")
print("FULLY_CONNECTED                1          More than one subgraph is not supported")
'''


def install_fake_compiler(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edgetpu_compiler"
    path.write_text(FAKE_COMPILER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One run, QAT for 2 steps, then all five variants exported with --edgetpu (fake compiler on PATH).

    The converter's own bytes of each variant are kept too (``result.raw``), to compare with the files written.
    """
    from edgetl.export import tflite
    from edgetl.quant.qat import quantize_aware_finetune

    root = tmp_path_factory.mktemp("export run")
    paths = make_run(root)
    quantize_aware_finetune(paths.root, QATConfig(epochs=1, steps_per_epoch=2, batch_size=6, augment=False), progress=False)
    compiler_dir = install_fake_compiler(root / "bin").parent
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{compiler_dir}{os.pathsep}{old_path}"
    raw = {}
    convert = tflite.convert_variants

    def keep_raw(*args, on_done, **kwargs):
        def done(name, data, seconds):
            raw[name] = data
            on_done(name, data, seconds)

        return convert(*args, on_done=done, **kwargs)

    tflite.convert_variants = keep_raw
    try:
        result = tflite.export_run(paths.root, ExportConfig(variants=ALL, edgetpu=True, calibration_images=12), progress=False)
    finally:
        os.environ["PATH"] = old_path
        tflite.convert_variants = convert
    result.raw = raw
    return paths, result


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def test_every_variant_is_written_and_loads_with_the_right_contract(exported):
    paths, result = exported
    assert [v.variant for v in result.variants] == list(ALL)
    for variant in result.variants:
        interpreter = _interpreter(variant.path)
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        expected = "uint8" if VARIANTS[variant.variant].integer_io else "float32"
        assert np.dtype(inp["dtype"]).name == expected == np.dtype(out["dtype"]).name
        assert list(inp["shape"]) == [1, SIZE, SIZE, 3] and list(inp["shape_signature"]) == [1, SIZE, SIZE, 3]
        assert list(out["shape"]) == [1, 3]
        assert variant.accuracy is not None and 0.0 <= variant.accuracy <= 1.0
    # MobileNet's x / 127.5 - 1 is the uint8 input's own quantization: the input is the pixel value itself.
    for name in ("int8", "qat-int8"):
        spec = result.get(name).input
        assert spec.scale == pytest.approx(1 / 127.5) and spec.zero_point == 127
    sizes = {v.variant: v.size_bytes for v in result.variants}
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.45 * sizes["fp32"]


def test_fp32_file_matches_the_keras_model(exported):
    from edgetl.export.tflite import _verification_images
    from edgetl.model.head import load_model

    paths, result = exported
    model = load_model(paths.model)
    images, _ = _verification_images(paths.load_dataset(), SIZE, 100)
    interpreter = _interpreter(result.get("fp32").path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    agree = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        expected = model(image[None].astype(np.float32), training=False).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
        agree.append(int(np.argmax(got)) == int(np.argmax(expected)))
        if not agree[-1]:  # only a near-tie may flip with another CPU's float kernels
            top2 = np.sort(expected[0])[-2:]
            assert top2[1] - top2[0] < 2e-4, (got, expected)
    assert result.get("fp32").agreement == pytest.approx(np.mean(agree))


def test_manifest_labels_and_sidecars(exported):
    paths, result = exported
    export_dir = paths.export
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert (export_dir / "labels.txt").read_text() == "blue\ngreen\nred\n"
    assert manifest["labels"] == ["blue", "green", "red"] and manifest["backbone"] == "mobilenet_v2"
    assert [m["variant"] for m in manifest["models"]] == list(ALL)
    for entry in manifest["models"]:
        file = export_dir / entry["name"]
        assert entry["size_bytes"] == file.stat().st_size
        assert entry["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert json.loads(file.with_suffix(".json").read_text())["variant"] == entry["variant"]
    assert manifest["keras_float_accuracy"] == result.keras_float_accuracy
    leftovers = [p.name for p in export_dir.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers


def test_edgetl_metadata_round_trips_without_tensorflow(exported):
    """The device-side reader, in a fresh interpreter where importing TensorFlow raises."""
    paths, result = exported
    files = {v.variant: v.path for v in result.variants}
    code = textwrap.dedent(f"""
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        from edgetl.model_metadata import read_edgetl_metadata
        out = {{}}
        for variant, path in {files!r}.items():
            card = read_edgetl_metadata(open(path, 'rb').read())
            out[variant] = [list(card.labels), card.input.dtype, list(card.input.shape), card.input.scale,
                            card.input.zero_point, card.backbone, card.alpha, card.variant, card.edgetl_version,
                            list(card.mean), list(card.std), card.preprocessing]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cards = json.loads(done.stdout)
    from edgetl import __version__

    for variant in ALL:
        labels, dtype, shape, scale, zero_point, backbone, alpha, name, version, mean, std, preprocessing = cards[variant]
        spec = result.get(variant).input
        assert labels == ["blue", "green", "red"] and shape == [1, SIZE, SIZE, 3]
        assert (dtype, scale, zero_point) == (spec.dtype, pytest.approx(spec.scale), spec.zero_point)
        assert (backbone, alpha, name, version) == ("mobilenet_v2", 0.35, variant, __version__)
        assert "[0, 255]" in preprocessing
        if VARIANTS[variant].integer_io:  # (pixel - 127) / 127.5 quantized with (1/127.5, 127) is the pixel
            assert mean == [127.0] * 3 and std == [127.5] * 3 and "folded into the input quantization" in preprocessing
        else:
            assert mean == [0.0, 0.0, 0.0] and std == [1.0, 1.0, 1.0]


def test_int8_files_fold_the_input_normalisation_and_take_raw_pixels(exported, tmp_path):
    """No full-resolution normalisation op; the device feeds raw pixels (uint8) or pixels - 128 (int8 I/O)."""
    from edgetl.export.tflite import _verification_images, export_run, predict_tflite
    from edgetl.modelfile import parse_model
    from edgetl.runtime.tensors import input_transform

    paths, result = exported
    images, _ = _verification_images(paths.load_dataset(), SIZE, 100)
    for name in ("int8", "qat-int8"):
        info = parse_model(Path(result.get(name).path).read_bytes(), name)
        # MobileNetV2's 17 depthwise convolutions, and no 18th applying x / 127.5 - 1.
        assert info.op_counts["DEPTHWISE_CONV_2D"] == 17 and info.op_counts["QUANTIZE"] == 2
        transform = input_transform(info.inputs[0], info.edgetl_metadata)
        assert transform.raw and "raw pixels" in transform.describe()
        np.testing.assert_array_equal(transform(images[:2]), images[:2])
    from edgetl.export.tflite import convert_variants
    from edgetl.model.head import load_model
    from edgetl.quant.rewrite import prepare_for_quantization

    folds = {}
    unfolded = convert_variants(prepare_for_quantization(load_model(paths.model))[0], ["int8"], SIZE, images,
                                fold_input=False, folds=folds)["int8"]
    assert not folds and parse_model(unfolded).op_counts["DEPTHWISE_CONV_2D"] == 18

    int8_io = export_run(paths.root, ExportConfig(variants=("int8",), io_type="int8", calibration_images=12,
                                                  out_dir=str(tmp_path / "int8 io")), progress=False).get("int8")
    assert (int8_io.input.dtype, int8_io.input.zero_point) == ("int8", -1)
    assert int8_io.input.scale == pytest.approx(1 / 127.5)
    card = read_edgetl_metadata(Path(int8_io.path).read_bytes())
    assert card.mean == (127.0,) * 3 and "minus 128" in card.preprocessing
    transform = input_transform(parse_model(Path(int8_io.path).read_bytes()).inputs[0], card)
    np.testing.assert_array_equal(transform(images[:2]), images[:2].astype(np.int16) - 128)
    # Same calibration, only the I/O type differs: the same predictions.
    np.testing.assert_array_equal(predict_tflite(int8_io.path, images), predict_tflite(result.get("int8").path, images))


def test_metadata_embedding_shares_repeated_vectors_with_bit_identical_outputs(exported):
    """embed_edgetl_metadata writes each distinct vector once (per-channel zero points): smaller, same numbers."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    _, result = exported
    pixels = np.random.default_rng(0).integers(0, 256, (4, 1, SIZE, SIZE, 3))
    for variant in result.variants:
        shared = Path(variant.path).read_bytes()
        model = schema.ModelT.InitFromPackedBuf(bytearray(shared), 0)
        builder = flatbuffers.Builder(len(shared))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        plain = bytes(builder.Output())
        if VARIANTS[variant.variant].integer_io:
            assert len(shared) < 0.9 * len(plain), (variant.variant, len(shared), len(plain))
        outputs = []
        for data in (shared, plain):
            interpreter = Interpreter(model_content=data)
            interpreter.allocate_tensors()
            (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
            results = []
            for image in pixels:
                value = image if inp["dtype"] != np.int8 else image - 128
                interpreter.set_tensor(inp["index"], value.astype(inp["dtype"]))
                interpreter.invoke()
                results.append(interpreter.get_tensor(out["index"]).copy())
            outputs.append(np.stack(results))
        np.testing.assert_array_equal(outputs[0], outputs[1])
        # Tensor data starts on 16 bytes, as the converter writes it.
        root = schema.Model.GetRootAs(shared, 0)
        for index in range(root.BuffersLength()):
            buffer = root.Buffers(index)
            if buffer.DataLength() >= 16:
                start = buffer._tab.Vector(buffer._tab.Offset(4))
                assert start % 16 == 0, (variant.variant, index, start)


def test_standard_metadata_in_every_file_with_bit_identical_outputs(exported):
    """TFLITE_METADATA + labels.txt zip in each variant: outputs equal the converter's, ~1 KB, int8 ratio kept."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetl.model_metadata import embed_edgetl_metadata
    from edgetl.modelfile import parse_model
    from edgetl.tflite_metadata import read_associated_files

    paths, result = exported
    pixels = np.random.default_rng(1).integers(0, 256, (4, 1, SIZE, SIZE, 3))
    sizes = {}
    for variant in result.variants:
        written = Path(variant.path).read_bytes()
        info = parse_model(written)
        standard = info.tflite_metadata
        assert info.warnings == () and standard.labels == ("blue", "green", "red")
        assert read_associated_files(written) == {"labels.txt": b"blue\ngreen\nred\n"}
        (image,), (scores,) = standard.inputs, standard.outputs
        assert (image.content, image.color_space, image.image_size) == ("ImageProperties", "RGB", (SIZE, SIZE))
        assert (image.mean, image.std) == (info.edgetl_metadata.mean, info.edgetl_metadata.std)
        assert scores.associated_files[0].type == "TENSOR_AXIS_LABELS" and scores.name == "probabilities"
        assert all(t.name for t in info.inputs + info.outputs)
        outputs = []
        for data in (result.raw[variant.variant], written):
            interpreter = Interpreter(model_content=data)
            interpreter.allocate_tensors()
            (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
            for image_pixels in pixels:
                interpreter.set_tensor(inp["index"], image_pixels.astype(inp["dtype"]))
                interpreter.invoke()
                outputs.append(interpreter.get_tensor(out["index"]).copy())
        np.testing.assert_array_equal(np.stack(outputs[:4]), np.stack(outputs[4:]))
        card_only = len(embed_edgetl_metadata(result.raw[variant.variant], info.edgetl_metadata))
        sizes[variant.variant] = (card_only, len(written))
        assert 0 < len(written) - card_only < 1100, (variant.variant, len(written) - card_only)
    for integer in ("int8", "qat-int8"):
        before = sizes[integer][0] / sizes["fp32"][0]
        after = sizes[integer][1] / sizes["fp32"][1]
        assert after - before < 0.001, (integer, before, after)


def test_every_variant_loads_in_tflite_runtime_2_14_by_default(exported):
    """The converter's min_runtime_version of every file is <= 2.14 (dynamic: per-tensor dense weights, FC v9)."""
    from edgetl.export.min_runtime import parse_version

    paths, result = exported
    manifest = json.loads((paths.export / "manifest.json").read_text())
    assert manifest["min_runtime_target"] == "2.14"
    for variant, entry in zip(result.variants, manifest["models"]):
        assert variant.min_runtime_version and parse_version(variant.min_runtime_version) <= (2, 14, 0)
        assert entry["min_runtime_version"] == variant.min_runtime_version and entry["runtime_warning"] == ""
    assert result.get("dynamic").min_runtime_version == "2.4.0"
    assert not any("runtime" in warning for warning in result.warnings)


def test_min_runtime_newer_and_older_targets(exported, tmp_path):
    from edgetl.export.tflite import export_run

    paths, _ = exported
    newer = export_run(paths.root, ExportConfig(variants=("dynamic",), verify=False, min_runtime="2.17",
                                                out_dir=str(tmp_path / "newer")), progress=False).get("dynamic")
    assert newer.min_runtime_version == "2.17.0" and newer.runtime_warning == ""  # per-channel dense weights
    older = export_run(paths.root, ExportConfig(variants=("fp16",), verify=False, min_runtime="1.10",
                                                out_dir=str(tmp_path / "older")), progress=False)
    line = older.get("fp16").runtime_warning
    assert line in older.warnings and "\n" not in line
    assert line.startswith("fp16: needs TFLite runtime >= 1.15.0") and "--min-runtime target 1.10" in line
    with pytest.raises(ConfigError, match="`min_runtime` must be a TFLite runtime version like 2.14"):
        ExportConfig(min_runtime="latest")


def test_edgetpu_check_and_compile_with_metadata_re_embedded(exported):
    from edgetl.modelfile import inspect_model

    paths, result = exported
    for variant in result.variants:
        # One rule set: the export's verdict is inspect's, on every file.
        verdict = inspect_model(variant.path).edgetpu
        assert variant.edgetpu_check == verdict.to_dict()
        if VARIANTS[variant.variant].edgetpu_compatible:
            assert verdict.compatible, variant.edgetpu_check
            compiled = variant.edgetpu
            assert compiled["tpu_ops"] == 64 and compiled["cpu_ops"] == 2 and compiled["subgraphs"] == 1
            edgetpu_file = Path(compiled["path"])
            assert edgetpu_file.name == Path(variant.path).stem + "_edgetpu.tflite"
            card = read_edgetl_metadata(edgetpu_file.read_bytes())  # the fake compiler dropped it; edgetl put it back
            assert card is not None and card.variant == f"{variant.variant}-edgetpu"
            # ... and the standard metadata with its zip, which a repack drops
            from edgetl.modelfile import parse_model

            standard = parse_model(edgetpu_file.read_bytes()).tflite_metadata
            assert standard is not None and standard.labels == ("blue", "green", "red")
            assert Path(compiled["log_path"]).is_file()
        else:
            assert variant.edgetpu is None and not verdict.compatible and verdict.refused, verdict
    fp32 = edgetpu.check_edgetpu_rules(Path(result.get("fp32").path).read_bytes())
    assert not fp32.compatible and "compute in float32" in fp32.summary() and "refused" in fp32.summary()


def _client_matrix():
    import importlib.util

    spec = importlib.util.spec_from_file_location("client_matrix", Path(__file__).resolve().parents[1] / "scripts" / "client_matrix.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def matrix_inputs(exported, tmp_path_factory):
    """The exported files, one training image per class resized to the input, and edgetl predict's top-1 on them."""
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    module = _client_matrix()
    paths, _ = exported
    manifest = json.loads((paths.export / "manifest.json").read_text())
    models = [(m["variant"], paths.export / m["name"]) for m in manifest["models"]]
    sources = module.find_images([paths.root.parent / "image data"], per_class=1)
    images = module.resized_images(manifest, sources, tmp_path_factory.mktemp("matrix images"))
    return module, models, images, module.reference_top1(models, images), manifest["labels"]


@pytest.mark.venv
@pytest.mark.parametrize("client", ["mediapipe", "task-library", "tflite-runtime", "litert", "tensorflow"])
def test_client_matrix(matrix_inputs, client):
    """scripts/client_matrix.py, one client per test: loads, top-1 = edgetl predict, names right, for every variant.

    Each client has its own virtualenv under /tmp/edgetl-client-venvs (reused while its requirements hold);
    a client pip cannot install here, or that cannot import (the Task Library without libusb), is skipped.
    """
    module, models, images, reference, labels = matrix_inputs
    result = module.run_client(module.clients()[client], models, images, reference, labels, module.DEFAULT_VENVS,
                               log=lambda line: None)
    if result.skipped:
        pytest.skip(f"{client}: {result.skipped}")
    failing = {variant: cell.text() for variant, cell in result.cells.items() if not cell.passed}
    assert not failing and len(result.cells) == len(ALL), failing


def test_compiler_absent_is_one_line_with_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert edgetpu.find_compiler() is None
    with pytest.raises(ExportError) as error:
        edgetpu.compile_edgetpu(str(tmp_path / "m.tflite"))
    message = str(error.value)
    assert "\n" not in message and "not on PATH" in message and "coral.ai" in message


def test_parse_compiler_output_counts_tpu_and_cpu_ops():
    output = "\n".join([
        "Edge TPU Compiler version 16.0.384591198",
        "Number of Edge TPU subgraphs: 1",
        "Operator                       Count      Status",
        "",
        "CONV_2D                        35         Mapped to Edge TPU",
        "HARD_SWISH                     12         Operation not supported",
    ])
    rows, subgraphs, version = edgetpu.parse_compiler_output(output)
    assert rows == (("CONV_2D", 35, "Mapped to Edge TPU"), ("HARD_SWISH", 12, "Operation not supported"))
    assert subgraphs == 1 and version.endswith("384591198")


def test_int16x8_is_exported_verified_evaluated_and_benchmarked_like_the_others(exported, tmp_path):
    """The variant added by one row of the table: 16-bit activations, 8-bit weights, float I/O."""
    from edgetl.bench import BenchConfig, benchmark
    from edgetl.evaluate import EvalConfig, evaluate_split
    from edgetl.export.tflite import export_run
    from edgetl.modelfile import inspect_model

    paths, _ = exported
    result = export_run(paths.root, ExportConfig(variants=("int16x8",), calibration_images=12,
                                                 out_dir=str(tmp_path / "out")), progress=False)
    variant = result.get("int16x8")
    assert Path(variant.path).name == "mobilenet_v2_0.35_32_int16x8.tflite"
    assert variant.input.dtype == "float32" and variant.output.dtype == "float32"
    assert variant.accuracy is not None and variant.agreement is not None  # verified on the validation images
    info = inspect_model(variant.path)
    assert info.tensor_types.get("INT16", 0) > 10 and info.tensor_types.get("INT8", 0) > 10  # activations, weights
    assert info.edgetl_metadata.variant == "int16x8" and info.edgetl_metadata.labels == ("blue", "green", "red")
    assert not info.edgetpu.compatible and info.edgetpu.refused and "int16" in info.edgetpu.summary()
    assert variant.edgetpu_check == info.edgetpu.to_dict() and variant.edgetpu is None  # nothing to compile
    record = paths.load_dataset()
    val_paths, val_labels = record.paths_labels("val")
    evaluated = evaluate_split(variant.path, val_paths, val_labels, record.class_names, EvalConfig(top_k=2))
    assert evaluated.images == len(val_paths) and evaluated.top1 == pytest.approx(variant.accuracy)
    bench = benchmark([variant.path], BenchConfig(threads=(1,), runs=3, min_seconds=0.0, warmup_runs=1,
                                                  warmup_seconds=0.0))
    assert bench[0].runs >= 3 and bench[0].p50_ms > 0


def test_float_exports_never_import_tfmot(exported, tmp_path):
    """fp32/fp16/dynamic share the graph rewrite and the input fold, which need tf_keras but not tfmot.

    (Unverified, to keep it short: the import of tfmot is what is checked; verification is tested above.)
    """
    paths, _ = exported
    code = textwrap.dedent(f"""
        import sys
        from edgetl.config import ExportConfig
        from edgetl.export.tflite import export_run
        result = export_run({str(paths.root)!r}, ExportConfig(variants=("fp32", "fp16", "dynamic"), verify=False,
                            out_dir={str(tmp_path / "out")!r}), progress=False)
        assert [v.variant for v in result.variants] == ["fp32", "fp16", "dynamic"], result.variants
        assert "tensorflow_model_optimization" not in sys.modules, "tfmot imported"
        print("no tfmot")
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0 and "no tfmot" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]


def test_export_converts_the_qat_model_it_is_given_instead_of_reloading_the_file(exported, tmp_path):
    """``edgetl run`` hands the QAT model it just trained to the export (``export_run(qat_model=...)``).

    The model given here decides class 1 whatever the image (its head's kernel zeroed, its bias
    favouring class 1): the file written must do the same, which the model in ``qat/model.h5`` does not.
    """
    from edgetl.export.tflite import export_run, predict_tflite
    from edgetl.quant.qat import load_qat_model

    paths, _ = exported
    model = load_qat_model(paths.qat_model)
    # The last layer with a kernel is the head's Dense, inside its tfmot wrapper (which replaces the
    # inner layer's ``kernel`` attribute by the fake-quantized tensor: its variables are set by name).
    head = next(layer for layer in reversed(model.layers)
                if any(w.name.split("/")[-1].startswith("kernel") for w in layer.weights))
    weights = {w.name.split("/")[-1].split(":")[0]: w for w in head.weights}
    weights["kernel"].assign(np.zeros(weights["kernel"].shape, np.float32))
    bias = np.zeros(weights["bias"].shape, np.float32)
    bias[1] = 8.0
    weights["bias"].assign(bias)
    result = export_run(paths.root, ExportConfig(variants=("qat-int8",), verify=False, out_dir=str(tmp_path / "given")),
                        progress=False, qat_model=model)
    images = np.random.RandomState(0).randint(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8)
    assert set(predict_tflite(result.get("qat-int8").path, images).tolist()) == {1}
    reloaded = export_run(paths.root, ExportConfig(variants=("qat-int8",), verify=False, out_dir=str(tmp_path / "file")),
                          progress=False)
    assert reloaded.get("qat-int8").sha256 != result.get("qat-int8").sha256


def test_accuracy_drop_warning_flags_only_drops_above_the_allowed_points():
    """The flagging rule on known numbers (a pure function: no CPU's kernels involved)."""
    from edgetl.export.tflite import accuracy_drop_warning

    collapsed = accuracy_drop_warning("int8", 2 / 6, 1.0, 2.0, 6, 3)
    assert collapsed.startswith("int8: TFLite accuracy 33.3% is 66.7 pts below the Keras float model (100.0%) on 6 "
                                "validation images (allowed: 2.0 pts).")
    assert "collapsed to chance level" in collapsed and "--calibration-images" in collapsed
    assert accuracy_drop_warning("int8", 0.99, 1.0, 2.0, 100, 3) is None  # 1 pt
    assert accuracy_drop_warning("int8", 0.98, 1.0, 2.0, 100, 3) is None  # exactly the allowed drop
    assert accuracy_drop_warning("int8", 1.0, 0.9, 2.0, 100, 3) is None  # better than float
    qat = accuracy_drop_warning("qat-int8", 0.95, 1.0, 2.0, 100, 3)
    assert "5.0 pts below" in qat and "chance" not in qat and "Run `edgetl qat`" in qat
    assert accuracy_drop_warning("fp32", 0.5, 1.0, 0.0, 2, 2).endswith("The model collapsed to chance level.")
    assert "--calibration-images" in accuracy_drop_warning("int16x8", 0.9, 1.0, 2.0, 10, 3)


def test_export_flags_a_file_exactly_when_the_rule_says_so(exported, tmp_path):
    """Calibrating on flat grey images may wreck the int8 ranges (how much depends on the CPU's kernels): whatever
    accuracy the file reaches, the flag, the warning and the result's warnings follow the rule on those numbers.

    (Grey, not black: the input range is pinned to the pixel grid, but a flat image still gives every
    activation after it a near-empty range.)
    """
    from edgetl.export.tflite import accuracy_drop_warning, export_run

    paths, _ = exported
    grey = tmp_path / "grey" / "x"
    grey.mkdir(parents=True)
    from PIL import Image

    for index in range(3):
        Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(grey / f"{index}.png")
    config = ExportConfig(variants=("int8",), calibration_dir=str(grey.parent), out_dir=str(tmp_path / "out"))
    result = export_run(paths.root, config, progress=False)
    int8 = result.get("int8")
    expected = accuracy_drop_warning("int8", int8.accuracy, result.keras_float_accuracy, config.flag_drop,
                                     result.val_images, 3)
    assert int8.flagged == (expected is not None) and int8.warning == (expected or "")
    assert result.warnings == ([expected] if expected else [])
    assert int8.accuracy_drop_pts == round((result.keras_float_accuracy - int8.accuracy) * 100, 2)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["models"][0]["flagged"] == int8.flagged and manifest["flag_drop_pts"] == config.flag_drop


def test_interrupted_export_leaves_no_partial_file(exported, tmp_path, monkeypatch):
    from edgetl.export import tflite

    paths, _ = exported
    original = tflite.TracedModel.convert
    calls = []

    def interrupt_second(self, variant, *args, **kwargs):
        calls.append(variant.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, variant, *args, **kwargs)

    monkeypatch.setattr(tflite.TracedModel, "convert", interrupt_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        tflite.export_run(paths.root, ExportConfig(variants=("fp32", "dynamic"), out_dir=str(out), verify=False),
                          progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["labels.txt", "manifest.json", "mobilenet_v2_0.35_32_fp32.json",
                                                     "mobilenet_v2_0.35_32_fp32.tflite"]
    assert [m["variant"] for m in json.loads((out / "manifest.json").read_text())["models"]] == ["fp32"]

    # A crash while the bytes are being written leaves nothing under the final name either.
    monkeypatch.setattr(tflite.TracedModel, "convert", original)
    monkeypatch.setattr("edgetl._atomic.os.fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    out2 = tmp_path / "out2"
    with pytest.raises(KeyboardInterrupt):
        tflite.export_run(paths.root, ExportConfig(variants=("fp32",), out_dir=str(out2), verify=False), progress=False)
    assert not list(out2.glob("*.tflite")) and not [p for p in out2.iterdir() if p.name.startswith(".")]


def test_bad_input_errors(tmp_path):
    from edgetl.export.tflite import export_run

    with pytest.raises(RunDirError, match="no trained model"):
        (tmp_path / "empty").mkdir()
        export_run(tmp_path / "empty", ExportConfig(variants=("fp32",)))
    with pytest.raises(ConfigError, match="Unknown export variant 'int4'. Did you mean 'int8'"):
        parse_variants("fp32,int4")
    paths = make_run(tmp_path / "untrained", train=False, per_class=2)
    with pytest.raises(RunDirError, match="edgetl qat"):
        export_run(paths.root, ExportConfig(variants=("qat-int8",)))
    record = paths.load_dataset()
    paths.dataset.write_text(json.dumps(DatasetRecord(record.class_names, SIZE, (), record.val).to_dict()))
    with pytest.raises(ExportError, match=r"Integer export \(int8, qat-int8, int16x8\) needs calibration images.*"
                                          r"--calibration-dir.*--variants fp32,fp16,dynamic"):
        export_run(paths.root, ExportConfig(variants=("fp32", "int8")), progress=False)
    assert not list(paths.export.glob("*.tflite"))  # calibration is checked before anything is written


def test_cli_builds_configs_and_reports_bad_variants(monkeypatch, tmp_path):
    seen = {}

    class Result:
        def summary(self):
            return "summary line"

    def fake_export(run_dir, config, echo):
        seen["export"] = (run_dir, config)
        return Result()

    def fake_qat(run_dir, config, echo):
        seen["qat"] = (run_dir, config)
        return Result()

    monkeypatch.setattr("edgetl.export.tflite.export_run", fake_export)
    monkeypatch.setattr("edgetl.quant.qat.quantize_aware_finetune", fake_qat)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"x")
    runner = CliRunner()
    done = runner.invoke(cli.main, ["export", str(run), "--variants", "int8,qat_int8", "--io-type", "int8",
                                    "--calibration-images", "50", "--edgetpu", "--flag-drop", "1.5"])
    assert done.exit_code == 0, done.output
    assert seen["export"][1] == ExportConfig(variants=("int8", "qat-int8"), io_type="int8", calibration_images=50,
                                             edgetpu=True, flag_drop=1.5)
    # The old name still works, with a line saying what it is now; both at once is a usage error.
    done = runner.invoke(cli.main, ["export", str(run), "--max-drop", "3"])
    assert done.exit_code == 0 and seen["export"][1].flag_drop == 3.0 and "now --flag-drop" in done.output
    done = runner.invoke(cli.main, ["export", str(run), "--max-drop", "3", "--flag-drop", "1"])
    assert done.exit_code == 2 and "give only --flag-drop" in done.output
    help_text = runner.invoke(cli.main, ["export", "--help"]).output
    assert "int16x8" in help_text and "--flag-drop" in help_text
    assert not re.search(r"^\s*--max-drop", help_text, re.M)  # the old name is hidden (only named in --flag-drop's help)
    done = runner.invoke(cli.main, ["qat", str(run), "--epochs", "2", "--lr", "2e-5", "--no-augment"])
    assert done.exit_code == 0, done.output
    assert seen["qat"][1] == QATConfig(epochs=2, learning_rate=2e-5, augment=False)
    done = runner.invoke(cli.main, ["export", str(run), "--variants", "fp23"])
    assert done.exit_code == 1 and "Did you mean 'fp32'" in done.output
    done = runner.invoke(cli.main, ["export", str(tmp_path / "nothing")])
    assert done.exit_code == 1 and "does not exist" in done.output
    assert "Example" in runner.invoke(cli.main, ["export", "--help"]).output
    assert "Example" in runner.invoke(cli.main, ["qat", "--help"]).output
