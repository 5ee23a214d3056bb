"""Runtime discovery, delegates, tensor conversion and host fingerprint (edgetl.runtime)."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from device_models import build_colour_model, build_edgetpu_model, colour_metadata, write_colour_model  # noqa: E402

from edgetl.errors import ConfigError, DelegateError, MissingDependencyError, ModelFileError  # noqa: E402
from edgetl.modelfile import parse_model  # noqa: E402
from edgetl.runtime import environment  # noqa: E402
from edgetl.runtime.interpreter import (  # noqa: E402
    RUNTIME_CHOICES,
    DelegateSpec,
    delegate_specs,
    find_runtime,
    load_interpreter,
    parse_options,
)
from edgetl.runtime.tensors import dequantize, input_transform, parse_channel_values, quantize, to_scores  # noqa: E402


def test_auto_runtime_prefers_ai_edge_litert():
    runtime = find_runtime("auto")
    assert runtime.name == "litert" and runtime.package == "ai-edge-litert"
    assert runtime.version[0].isdigit()


def test_cli_runtime_names_match_the_runtime_module():
    from edgetl import cli

    assert cli._RUNTIME_NAMES == RUNTIME_CHOICES


def test_unknown_runtime_suggests_a_name():
    with pytest.raises(ConfigError, match="Did you mean 'litert'"):
        find_runtime("litrt")


@pytest.mark.skipif(importlib.util.find_spec("tflite_runtime") is not None, reason="tflite_runtime is installed here")
def test_forcing_a_missing_runtime_names_the_package():
    with pytest.raises(MissingDependencyError, match="tflite-runtime"):
        find_runtime("tflite-runtime")


@pytest.mark.parametrize("text, kind, label, library", [
    ("cpu", "cpu", "cpu", ""),
    ("XNNPACK", "xnnpack", "xnnpack", ""),
    ("edgetpu", "edgetpu", "edgetpu", None),
    ("edgetpu:usb", "edgetpu", "edgetpu:usb", None),
    ("edgetpu:pci:1", "edgetpu", "edgetpu:pci:1", None),
    ("/opt/lib/libfoo_delegate.so", "external", "libfoo_delegate.so", "/opt/lib/libfoo_delegate.so"),
    ("external:libbar.so.2", "external", "libbar.so.2", "libbar.so.2"),
    ("/usr/lib/aarch64-linux-gnu/libedgetpu.so.1", "edgetpu", "edgetpu", "/usr/lib/aarch64-linux-gnu/libedgetpu.so.1"),
])
def test_delegate_parsing(text, kind, label, library):
    spec = DelegateSpec.parse(text)
    assert (spec.kind, spec.label) == (kind, label)
    if library is not None:
        assert spec.library_name == library
    else:
        assert "edgetpu" in spec.library_name


def test_delegate_errors_and_options():
    with pytest.raises(ConfigError, match="Did you mean 'xnnpack'"):
        DelegateSpec.parse("xnnpak")
    with pytest.raises(ConfigError, match="not valid"):
        DelegateSpec.parse("edgetpu:firewire")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_options(["device"])
    spec = DelegateSpec.parse("edgetpu:usb:0", parse_options(["performance=max"]))
    assert spec.load_options == {"performance": "max", "device": "usb:0"}
    assert DelegateSpec.parse("cpu", parse_options(["a=b"])).load_options == {}
    assert [s.label for s in delegate_specs(["cpu,xnnpack", "cpu"])] == ["cpu", "xnnpack"]


def test_load_interpreter_records_runtime_and_xnnpack_switch(tmp_path):
    path = write_colour_model(tmp_path / "m.tflite", "float32")
    on = load_interpreter(path, "xnnpack", threads=2)
    off = load_interpreter(path, "cpu", threads=1)
    assert on.runtime.xnnpack and not off.runtime.xnnpack
    assert (on.runtime.threads, off.runtime.threads) == (2, 1)
    assert on.runtime.package == "ai-edge-litert" and on.init_seconds >= 0
    x = np.zeros((1, 8, 8, 3), np.float32)
    x[..., 1] = 1.0
    assert int(np.argmax(on.run(x))) == 1 == int(np.argmax(off.run(x)))


def test_load_interpreter_keeps_the_runtimes_info_lines_off_stderr(tmp_path):
    # The runtime logs 'INFO: Created TensorFlow Lite XNNPACK delegate' once per process: use a fresh one.
    path = write_colour_model(tmp_path / "m.tflite")
    code = f"from edgetl.runtime import load_interpreter; print(load_interpreter({str(path)!r}, 'xnnpack').runtime.delegate)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "xnnpack"
    assert "INFO:" not in done.stderr


def test_edgetpu_compiled_model_without_delegate_is_refused_before_loading(tmp_path):
    path = tmp_path / "m_edgetpu.tflite"
    path.write_bytes(build_edgetpu_model())
    with pytest.raises(DelegateError, match="compiled for the Edge TPU.*--delegate edgetpu"):
        load_interpreter(path, "xnnpack")


def test_missing_edgetpu_library_error_carries_versions(tmp_path):
    path = tmp_path / "m_edgetpu.tflite"
    path.write_bytes(build_edgetpu_model())
    spec = DelegateSpec("edgetpu", library=str(tmp_path / "libedgetpu.so.1"), device="usb")
    with pytest.raises(DelegateError) as info:
        load_interpreter(path, spec)
    message = str(info.value)
    assert "libedgetpu.so.1" in message and "device 'usb'" in message
    assert f"ai-edge-litert {find_runtime().version}" in message and platform.python_version() in message


def test_missing_external_delegate_library(tmp_path):
    with pytest.raises(DelegateError, match="Could not load the delegate library"):
        load_interpreter(build_colour_model(), str(tmp_path / "libmissing_delegate.so"), name="m.tflite")


def test_input_transform_float_with_metadata_and_overrides():
    info = parse_model(build_colour_model("float32"))
    card = colour_metadata("float32")
    transform = input_transform(info.inputs[0], card)
    pixels = np.full((8, 8, 3), 255, np.uint8)
    assert transform.source == "edgetl-metadata"
    np.testing.assert_allclose(transform(pixels), np.ones((1, 8, 8, 3)))
    no_card = input_transform(info.inputs[0], None)
    np.testing.assert_allclose(no_card(pixels), np.full((1, 8, 8, 3), 255.0))
    minus_one_one = input_transform(info.inputs[0], None, mean=(127.5,) * 3, std=(127.5,) * 3)
    assert minus_one_one.source == "options"
    np.testing.assert_allclose(minus_one_one(np.zeros((8, 8, 3), np.uint8)), -np.ones((1, 8, 8, 3)))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_input_transform_quantizes_with_the_models_parameters(dtype):
    info = parse_model(build_colour_model(dtype))
    pixels = np.arange(0, 256, dtype=np.uint8)[:64].reshape(8, 8, 1).repeat(3, axis=2)
    with_card = input_transform(info.inputs[0], colour_metadata(dtype))(pixels)
    raw = input_transform(info.inputs[0], None)(pixels)
    assert with_card.dtype == np.dtype(dtype) == raw.dtype
    offset = -128 if dtype == "int8" else 0
    # scale 1/255 and this zero point map pixel p to p + offset, with the card or as raw pixels
    np.testing.assert_array_equal(with_card[0].astype(int), pixels.astype(int) + offset)
    np.testing.assert_array_equal(raw[0].astype(int), pixels.astype(int) + offset)


def test_quantize_clips_and_dequantize_inverts():
    values = quantize(np.array([-10.0, 0.0, 0.5, 10.0]), 1 / 128, 0, "int8")
    assert values.tolist() == [-128, 0, 64, 127]
    info = parse_model(build_colour_model("int8"))
    output = info.outputs[0]
    np.testing.assert_allclose(dequantize(np.array([[-128, 0, 127]], np.int8), output), [[0.0, 0.5, 255 / 256]])
    logits_card = colour_metadata("float32", output_kind="logits")
    scores = to_scores(np.array([[0.0, 1.0, 2.0]], np.float32), parse_model(build_colour_model()).outputs[0], logits_card)
    assert scores.sum() == pytest.approx(1.0) and np.argmax(scores) == 2


def test_wrong_channel_count_is_a_clear_error():
    info = parse_model(build_colour_model("float32", channels=1), "grey.tflite")
    with pytest.raises(ModelFileError, match="1-channel images.*RGB"):
        input_transform(info.inputs[0], None, model_name="grey.tflite")


def test_parse_channel_values():
    assert parse_channel_values("127.5", "mean") == (127.5, 127.5, 127.5)
    assert parse_channel_values("1,2, 3", "mean") == (1.0, 2.0, 3.0)
    assert parse_channel_values(None, "std") is None
    with pytest.raises(ConfigError, match="must not be 0"):
        parse_channel_values("0", "std")
    with pytest.raises(ConfigError, match="1 or 3 values"):
        parse_channel_values("1,2", "mean")
    with pytest.raises(ConfigError, match="must be a number"):
        parse_channel_values("abc", "mean")


def test_host_fingerprint_describes_this_machine():
    info = environment.host_fingerprint()
    assert info["cores"] >= 1 and 1 <= info["usable_cores"] <= info["cores"]
    assert info["python"].endswith(platform.python_version())
    assert info["cpu"] and info["os"].startswith(platform.system())
    assert isinstance(info["board"], str)
    peak = environment.peak_rss_mb()
    assert peak is None or peak > 10


def test_arm_core_names_come_from_cpuinfo(monkeypatch):
    text = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n"
    monkeypatch.setattr(environment, "_read_text", lambda path: text if path == "/proc/cpuinfo" else "")
    assert environment.cpu_model() == "ARM Cortex-A72"


def test_auto_falls_back_in_order(monkeypatch):
    from edgetl.runtime import backend, interpreter

    tried = []

    def fake_import(name):
        tried.append(name)
        if name != "tensorflow":
            raise ImportError(f"No module named {name}")
        return interpreter.Runtime(name, name, "0", None, None, None)

    monkeypatch.setattr(backend, "_import_runtime", fake_import)
    assert interpreter.find_runtime.__wrapped__("auto").name == "tensorflow"
    assert tried == ["litert", "tflite-runtime", "tensorflow"]
    monkeypatch.setattr(backend, "_import_runtime", lambda name: (_ for _ in ()).throw(ImportError(name)))
    with pytest.raises(MissingDependencyError, match="No TFLite runtime is installed"):
        interpreter.find_runtime.__wrapped__("auto")


def test_tflite_runtime_package_layout_is_supported(tmp_path, monkeypatch):
    """A stand-in `tflite_runtime` with the 2.14 package layout, backed by the LiteRT kernels."""
    package = tmp_path / "tflite_runtime"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '2.14.0'\n")
    (package / "interpreter.py").write_text("from ai_edge_litert.interpreter import Interpreter, OpResolverType, load_delegate\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    find_runtime.cache_clear()
    try:
        runtime = find_runtime("tflite-runtime")
        assert (runtime.name, runtime.package, runtime.version) == ("tflite-runtime", "tflite-runtime", "2.14.0")
        loaded = load_interpreter(build_colour_model("uint8"), "cpu", threads=1, runtime="tflite-runtime", name="m.tflite")
        assert loaded.runtime.describe() == "tflite-runtime 2.14.0, cpu, 1 thread"
        x = np.zeros((1, 8, 8, 3), np.uint8)
        x[..., 2] = 250
        assert int(np.argmax(loaded.run(x))) == 2
    finally:
        find_runtime.cache_clear()


@pytest.mark.tf
def test_forced_tensorflow_runtime(tmp_path):
    pytest.importorskip("tensorflow")
    path = write_colour_model(tmp_path / "m.tflite", "int8")
    code = (f"from edgetl.runtime import load_interpreter; "
            f"print(load_interpreter({str(path)!r}, 'cpu', 1, runtime='tensorflow').runtime.describe())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("tensorflow 2.") and done.stdout.strip().endswith("cpu, 1 thread")
    assert "deprecated" not in done.stderr
