"""Quantization-aware training on every registry backbone: graph rewrites, range calibration, save/load, int8 export."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")
pytestmark = pytest.mark.tf

from edgetl import _internals  # noqa: E402
from edgetl.config import ModelConfig, QATConfig  # noqa: E402
from edgetl.quant import fold, qat, rewrite, scheme  # noqa: E402
from edgetl.errors import ExportError, RunDirError  # noqa: E402
from edgetl.images import load_image  # noqa: E402
from edgetl.model import head, registry  # noqa: E402
from edgetl.model.keras import keras, tf  # noqa: E402
from edgetl.quant.layers import HardSwish  # noqa: E402
from edgetl.run_dir import DatasetRecord  # noqa: E402
from tests.conftest import make_image_folder  # noqa: E402
from tests.test_export import make_run  # noqa: E402

import tensorflow_model_optimization as tfmot  # noqa: E402

SIZE = 32
# Converting a QAT model takes 8-35 s per backbone here; all 13 take ~4.5 min, over the default
# run's budget. This subset covers every rewrite: input Rescaling+Normalization (EfficientNet,
# V2: folded into the input quantization for B0, kept as an op for V2's per-channel mean/std),
# squeeze-excite Multiply (EfficientNet, V2, MobileNetV3), hard-swish/hard-sigmoid (MobileNetV3
# Small), Rescaling-only inputs (V1, V3 minimalistic); MobileNetV2 is converted in test_export.py.
# The other backbones are converted too with --run-slow (what CI runs).
CONVERT = {"efficientnet_b0", "efficientnet_v2_b0", "mobilenet_v3_small", "mobilenet_v3_large_minimalistic",
           "mobilenet_v1"}
TWO_COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """Two colour classes: a 4-image train split, a 2-image val split and the decoded pixels."""
    root = make_image_folder(tmp_path_factory.mktemp("qat images"), per_class=3, size=40, classes=TWO_COLOURS)
    names = sorted(TWO_COLOURS)
    files = sorted(root.rglob("*.png"))
    items = [(str(f), names.index(f.parent.name)) for f in files]
    record = DatasetRecord(tuple(names), SIZE, tuple(items[:2] + items[3:5]), (items[2], items[5]))
    pixels = np.stack([load_image(f, SIZE) for f in files])
    return record, pixels


def _wrapped(qat_model):
    quantized = (tfmot.quantization.keras.QuantizeWrapper, keras.layers.InputLayer)
    return [layer.name for layer in qat_model.layers if not isinstance(layer, quantized)
            and type(layer).__name__ != "QuantizeLayer"]


def _backbone_cases():
    for name in registry.list_backbones():
        if name in CONVERT:
            yield pytest.param(name, True, id=name)
        else:
            yield pytest.param(name, False, id=name)
            yield pytest.param(name, True, id=f"{name}-int8", marks=pytest.mark.slow)


@pytest.mark.parametrize("name, convert", _backbone_cases())
def test_qat_builds_trains_one_step_and_exports_int8(name, convert, colours, request):
    if not convert and request.config.getoption("--run-slow"):
        pytest.skip(f"the slow case '{name}-int8' runs the same steps and converts the QAT model")
    record, pixels = colours
    keras.utils.set_random_seed(1)
    model = head.build_classifier(ModelConfig(name, size=SIZE, weights="none"), 2)
    config = QATConfig(epochs=1, steps_per_epoch=1, batch_size=4, calibration_batches=1, learning_rate=1e-3,
                       augment=False)
    result = qat.quantize_aware_finetune(model, config, dataset=record, progress=False)
    qat_model = result.model

    assert not _wrapped(qat_model), "every layer must be quantized"
    assert result.steps == 1 and np.isfinite(result.history["loss"][0])
    assert result.val_images == 2 and 0.0 <= result.qat_accuracy <= 1.0 and result.calibrated_ranges > 10
    notes = " ".join(result.rewrites)
    assert "input normalisation" in notes
    family = registry.get(name).family
    if family in ("efficientnet", "efficientnet_v2") or name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        assert "Multiply has no tfmot registry entry" in notes
    if name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        assert "HardSwish" in notes and "HardSigmoid" in notes
    # The step trained the model; the folded input normalisation stayed frozen.
    norm = next(layer for layer in qat_model.layers if layer.name.endswith(fold.INPUT_NORM_LAYER))
    classifier = next(layer for layer in qat_model.layers if layer.name.endswith(head.CLASSIFIER_LAYER))
    assert not np.allclose(classifier.layer.kernel.numpy(), model.get_layer(head.CLASSIFIER_LAYER).kernel.numpy())
    scale, offset = rewrite.measure_affine(model.input, _preprocess_end(model))
    assert not norm.trainable_weights
    input_fold = fold.InputFold.of(scale, offset)
    if family == "efficientnet_v2":
        assert input_fold is None  # ImageNet's per-channel mean/std stays a depthwise op
    else:  # the same map for every channel: QAT trains on the uint8 grid the int8 file reads
        # EfficientNet's Normalization is the identity without ImageNet weights, leaving x / 255.
        assert input_fold == (fold.InputFold(1 / 255, 0) if family == "efficientnet" else fold.InputFold(1 / 127.5, 127))
        scale, offset = np.full(3, input_fold.scale), np.full(3, -input_fold.scale * input_fold.zero_point)
    np.testing.assert_allclose(norm.layer.depthwise_kernel.numpy().ravel(), scale, rtol=1e-6)
    np.testing.assert_allclose(norm.layer.bias.numpy(), offset, rtol=1e-6, atol=1e-7)

    if convert:
        from edgetl.export.tflite import convert_variants
        from ai_edge_litert.interpreter import Interpreter

        folds = {}
        data = convert_variants(None, ["qat-int8"], SIZE, pixels, qat_model=qat_model, folds=folds)["qat-int8"]
        interpreter = Interpreter(model_content=data)
        interpreter.allocate_tensors()
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, SIZE, SIZE, 3]
        assert folds.get("qat-int8") == input_fold
        expected = (1.0, 0) if input_fold is None else (input_fold.scale, input_fold.zero_point)
        assert inp["quantization"][0] == pytest.approx(expected[0]) and inp["quantization"][1] == expected[1]
        assert out["dtype"] == np.uint8 and list(out["shape"]) == [1, 2]
        interpreter.set_tensor(inp["index"], pixels[:1])
        interpreter.invoke()
        scale_out, zero_out = out["quantization"]
        probabilities = (interpreter.get_tensor(out["index"]).astype(np.float32) - zero_out) * scale_out
        assert probabilities.sum() == pytest.approx(1.0, abs=0.02)
        # The registry's Edge TPU column is the rule set's verdict on the backbone's int8 file.
        from edgetl.modelfile import parse_model

        verdict = parse_model(data, f"{name} qat-int8").edgetpu
        assert verdict.compatible == registry.get(name).edgetpu_compatible, verdict.summary()


def test_edgetl_scheme_works_through_tfmots_public_quantize_apply():
    """edgetl's layers are quantized by handing EdgetlQuantizeScheme to tfmot's own quantize_apply."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = keras.layers.Multiply(name="excite")([x, gate])
    x = HardSwish(name="swish")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    registry_ = scheme.EdgetlQuantizeRegistry()
    assert registry_.supports(model.get_layer("excite")) and registry_.supports(model.get_layer("swish"))
    assert isinstance(registry_.get_quantize_config(model.get_layer("excite")), scheme.OutputQuantizeConfig)
    with scheme.qat_scope():
        annotated = tfmot.quantization.keras.quantize_annotate_model(model)
        quantized = tfmot.quantization.keras.quantize_apply(annotated, scheme=scheme.EdgetlQuantizeScheme())
    assert not _wrapped(quantized)
    configs = {layer.layer.name: type(layer.quantize_config).__name__ for layer in quantized.layers
               if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)}
    assert configs["excite"] == configs["swish"] == "OutputQuantizeConfig"
    with pytest.raises(RuntimeError, match="not supported"):  # tfmot's own registry alone stops at them
        with scheme.qat_scope():
            tfmot.quantization.keras.quantize_apply(tfmot.quantization.keras.quantize_annotate_model(model))


def test_input_fold_of_per_tensor_maps_only():
    mobilenet = fold.InputFold.of(np.full(3, np.float32(1 / 127.5)), np.full(3, -1.0))
    assert mobilenet == fold.InputFold(1 / 127.5, 127)  # float32 noise snapped; 127.5 rounds down like TFLite
    assert mobilenet.range == pytest.approx((-127 / 127.5, 128 / 127.5))
    np.testing.assert_allclose(mobilenet.normalise(np.array([0, 127, 255])), [-127 / 127.5, 0.0, 128 / 127.5])
    assert fold.InputFold.of(np.full(3, 1 / 255), np.zeros(3)) == fold.InputFold(1 / 255, 0)
    assert fold.InputFold.of(np.full(3, 1 / 127.5), np.full(3, -1.0), exact=True) is None
    assert fold.InputFold.of(np.array([0.017, 0.0175, 0.0174]), np.array([-2.1, -2.0, -1.8])) is None
    assert fold.InputFold.of(np.full(3, 1 / 255), np.full(3, 1.0)) is None  # 0.0 is not a pixel value
    assert fold.InputFold.of(np.full(3, -1 / 255), np.zeros(3)) is None

    model = head.build_classifier(ModelConfig("mobilenet_v1", alpha=0.25, size=SIZE, weights="none"), 2)
    rewritten, _ = rewrite.prepare_for_quantization(model)
    found, tail = fold.input_fold(rewritten)
    assert found == mobilenet and tail.input_shape == (None, SIZE, SIZE, 3)
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3)).astype(np.float32)
    # The float model's exact x / 127.5 - 1 differs from the grid by half a level: close, not equal.
    np.testing.assert_allclose(tail(mobilenet.normalise(images)).numpy(), model(images).numpy(), atol=0.05)
    assert fold.input_fold(rewritten, exact=True) is None  # what a QAT model saved before the grid gets


def _preprocess_end(model):
    """The last layer of the model's leading preprocessing chain (Rescaling/Normalization)."""
    last = None
    for layer in model.layers[1:]:
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            last = layer
        else:
            break
    return last._inbound_nodes[0]


def test_rewrite_is_exact_and_folds_an_imagenet_style_input_chain():
    """Rescaling -> Normalization -> tf.math.multiply (EfficientNet's ImageNet stem) becomes one layer."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229 ** 2, 0.224 ** 2, 0.225 ** 2])(x)
    x = tf.math.multiply(x, tf.reshape([1.1, 0.9, 1.05], [1, 1, 1, 3]))
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = keras.layers.Conv2D(8, 3, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    rewritten, notes = rewrite.prepare_for_quantization(model)
    assert [type(layer).__name__ for layer in rewritten.layers[:3]] == ["InputLayer", "DepthwiseConv2D", "ZeroPadding2D"]
    assert "rescaling" in notes[0] and "tf.math.multiply" in notes[0]
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(rewritten(images).numpy(), model(images).numpy(), atol=1e-5)
    qat_model, _ = scheme.quantize(model)
    assert not _wrapped(qat_model)

    v3 = head.build_classifier(ModelConfig("mobilenet_v3_small", size=SIZE, weights="none"), 3)
    rewritten, _ = rewrite.prepare_for_quantization(v3)
    assert not any(type(layer).__name__ == "TFOpLambda" for layer in rewritten.layers)
    np.testing.assert_allclose(rewritten(images).numpy(), v3(images).numpy(), atol=1e-6)


def test_nested_backbone_is_inlined_and_quantized():
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3))
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, -1.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    nested = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match="inside another"):
        tfmot.quantization.keras.quantize_model(nested)
    flat, notes = rewrite.prepare_for_quantization(nested)
    assert head.is_flat(flat) and any("inlined nested model" in note for note in notes)
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(flat(images).numpy(), nested(images).numpy(), atol=1e-6)
    qat_model, _ = scheme.quantize(nested)
    assert not _wrapped(qat_model)


def test_calibrated_ranges_match_the_float_activations():
    """Ranges come from the data (logits beyond +-6 included), not tfmot's initial [-6, 6]."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, -1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classifier")(x))
    dense = model.get_layer("classifier")
    dense.set_weights([w * 40.0 for w in dense.get_weights()])
    images = np.random.default_rng(0).uniform(0, 255, (16, SIZE, SIZE, 3)).astype(np.float32)
    conv = keras.Model(inputs, model.get_layer("conv").output)(images).numpy()
    pooled = keras.Model(inputs, model.get_layer("pool").output)(images).numpy()
    logits = pooled @ dense.kernel.numpy() + dense.bias.numpy()
    assert max(abs(logits.min()), logits.max()) > 6.0

    qat_model, _ = scheme.quantize(model)
    count = qat.calibrate_ranges(qat_model, [images[:8], images[8:]])
    pairs = _internals.moving_average_range_variables(qat_model)
    assert count == len(pairs) >= 3
    assert all(lo.numpy() <= 0.0 < hi.numpy() for lo, hi in pairs)
    post = qat_model.get_layer("quant_conv")._quantize_activations[0]._post_activation_vars
    batch_max = np.mean([conv[:8].max(), conv[8:].max()])  # the mean over batches, as the EMA would settle
    assert post["max_var"].numpy() == pytest.approx(batch_max, rel=0.03)
    pre = qat_model.get_layer("quant_classifier")._quantize_activations[0]._pre_activation_vars
    for var, reduce in ((pre["max_var"], np.max), (pre["min_var"], np.min)):
        expected = np.mean([reduce(logits[:8]), reduce(logits[8:])])
        assert var.numpy() == pytest.approx(expected, rel=0.05), "dropout must be off while calibrating"
    quantize_layer = next(layer for layer in qat_model.layers if type(layer).__name__ == "QuantizeLayer")
    assert quantize_layer.quantizer_vars["max_var"].numpy() == 255.0


def test_run_dir_qat_saves_reloads_and_reports(tmp_path):
    paths = make_run(tmp_path, backbone="mobilenet_v1", alpha=0.25, per_class=3)
    result = qat.quantize_aware_finetune(paths.root, QATConfig(epochs=1, steps_per_epoch=1, batch_size=4), progress=False)
    saved = paths.qat_model
    assert result.model_path == str(saved) and saved.is_file()
    report = json.loads(paths.qat_result.read_text())
    assert report["float_accuracy"] == result.float_accuracy and report["config"]["epochs"] == 1
    assert result.backbone == "mobilenet_v1"
    reloaded = qat.load_qat_model(saved)
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(reloaded(images).numpy(), result.model(images).numpy(), atol=1e-6)
    summary = result.summary()
    assert "float" in summary and "QAT" in summary and "edgetl export" in summary
    assert not [p for p in paths.qat.iterdir() if p.name.startswith(".")]


def test_unquantizable_models_and_missing_inputs_are_clear_errors(tmp_path, colours):
    record, _ = colours
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="my_lambda")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ExportError, match="my_lambda"):
        scheme.quantize(model)

    class Block(keras.Model):
        def call(self, x):
            return x * 2.0

    sub_inputs = keras.Input((SIZE, SIZE, 3))
    subclassed = keras.Model(sub_inputs, Block(name="block")(sub_inputs))
    with pytest.raises(ExportError, match="'block' is a subclassed Keras model"):
        rewrite.prepare_for_quantization(subclassed)

    with pytest.raises(RunDirError, match="no trained model"):
        (tmp_path / "empty").mkdir()
        qat.quantize_aware_finetune(tmp_path / "empty")
    empty = DatasetRecord(record.class_names, SIZE, (), record.val)
    tiny = head.build_classifier(ModelConfig("mobilenet_v1", alpha=0.25, size=SIZE, weights="none"), 2)
    with pytest.raises(ExportError, match="QAT needs training images"):
        qat.quantize_aware_finetune(tiny, dataset=empty)
    with pytest.raises(ExportError, match="`dataset` is required"):
        qat.quantize_aware_finetune(tiny)


def _tiny_qat(record, **overrides):
    keras.utils.set_random_seed(3)
    model = head.build_classifier(ModelConfig("mobilenet_v1", size=SIZE, alpha=0.25, weights="none"), 2)
    settings = dict(epochs=1, steps_per_epoch=2, batch_size=2, calibration_batches=1, learning_rate=1e-2, seed=5)
    settings.update(overrides)
    return model, qat.quantize_aware_finetune(model, QATConfig(**settings), dataset=record, progress=False)


def test_same_seed_gives_the_same_qat_model_and_determinism_is_restored(tmp_path):

    # Batches of 10 augmented images: enough parallel work that, without op determinism,
    # two runs here usually end with different weights.
    root = make_image_folder(tmp_path, per_class=12, size=40, classes=TWO_COLOURS)
    names = sorted(TWO_COLOURS)
    items = [(str(f), names.index(f.parent.name)) for f in sorted(root.rglob("*.png"))]
    record = DatasetRecord(tuple(names), SIZE, tuple(items[:10] + items[12:22]), tuple(items[10:12] + items[22:]))
    assert not _internals.op_determinism_enabled()
    _, first = _tiny_qat(record, batch_size=10)
    _, second = _tiny_qat(record, batch_size=10)
    assert not _internals.op_determinism_enabled(), "QAT must leave the process as it found it"
    weights = [(a, b) for a, b in zip(first.model.get_weights(), second.model.get_weights())]
    assert len(weights) > 50
    assert all(np.array_equal(a, b) for a, b in weights), "augmented QAT with one seed must be bit-reproducible"
    assert first.history == second.history


def test_distillation_loss_mixes_the_float_models_probabilities_with_the_labels():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    student = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    p, t = student(x).numpy(), teacher(x).numpy()
    hard = -np.log(p[np.arange(8), y])
    soft = (t * np.log(t / p)).sum(axis=1)
    trainer = qat._Distiller(student, teacher, weight=0.25)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = trainer.train_step((tf.constant(x), tf.constant(y)))
    assert float(logs["loss"]) == pytest.approx(float(np.mean(0.25 * soft + 0.75 * hard)), rel=1e-4)
    assert float(logs["accuracy"]) == pytest.approx(float(np.mean(p.argmax(1) == y)))


def test_qat_with_distillation_trains_the_quantized_model(colours):
    record, _ = colours
    model, result = _tiny_qat(record, distillation=1.0, deterministic=False)
    assert result.steps == 2 and np.isfinite(result.history["loss"][0])
    classifier = next(layer for layer in result.model.layers if layer.name.endswith(head.CLASSIFIER_LAYER))
    assert not np.allclose(classifier.layer.kernel.numpy(), model.get_layer(head.CLASSIFIER_LAYER).kernel.numpy())


def test_qat_augments_as_the_runs_training_did(tmp_path):
    from edgetl.config import AugmentConfig, dump_yaml
    from edgetl.run_dir import RunPaths

    paths = RunPaths.of(tmp_path)
    lines = []
    # No record (a model passed in, or an older run directory): photos taken as upright.
    assert qat._training_augmentation(None, lines.append) == AugmentConfig(orientation="upright")
    assert qat._training_augmentation(paths, lines.append) == AugmentConfig(orientation="upright")
    # The run's own augmentation, with the orientation its training stage decided in place of 'auto'.
    paths.config.write_text(dump_yaml({"data": {"augment": {"zoom": 0.2, "orientation": "auto"}}}))
    paths.train_result.write_text(json.dumps({"orientation": "any"}))
    assert qat._training_augmentation(paths, lines.append) == AugmentConfig(zoom=0.2, orientation="any")
    # A typed orientation is kept; augmentation that the run switched off is still QAT's own switch (qat.augment).
    paths.config.write_text(dump_yaml({"data": {"augment": {"enabled": False, "orientation": "upright"}}}))
    assert qat._training_augmentation(paths, lines.append) == AugmentConfig(orientation="upright")
    # A damaged record: one note, and the defaults.
    paths.config.write_text("data: {augment: {zoom: lots}}\n")
    assert qat._training_augmentation(paths, lines.append).zoom == AugmentConfig().zoom
    assert len(lines) == 1 and "cannot be read" in lines[0] and str(paths.config) in lines[0]
