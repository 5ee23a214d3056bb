"""Structural checks and interpreter-free parsing of .tflite files (edgetl.modelfile, `edgetl inspect`)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("ai_edge_litert")

from device_models import build_colour_model, build_edgetpu_model, write_colour_model  # noqa: E402

from edgetl.cli import main  # noqa: E402
from edgetl.errors import ModelFileError  # noqa: E402
from edgetl.modelfile import EDGETPU_CUSTOM_OP, inspect_model, parse_model, read_model  # noqa: E402

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"


def test_missing_file_names_the_path_and_lists_siblings(tmp_path):
    (tmp_path / "other.tflite").write_bytes(build_colour_model())
    with pytest.raises(ModelFileError, match=r"does not exist.*other\.tflite"):
        read_model(tmp_path / "model.tflite")


def test_folder_empty_short_and_foreign_files_are_rejected(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder"):
        read_model(tmp_path)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty \(0 bytes\)"):
        read_model(empty)
    short = tmp_path / "short.tflite"
    short.write_bytes(b"\x1c\x00\x00\x00TFL3")
    with pytest.raises(ModelFileError, match="too short"):
        read_model(short)
    jpeg = tmp_path / "photo.tflite"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        read_model(jpeg)


def test_truncated_model_fails_in_the_parser_not_in_native_code(coral_data):
    data = (coral_data / MOBILENET_V2).read_bytes()
    for cut in (len(data) // 2, len(data) - 100_000):
        with pytest.raises(ModelFileError, match="truncated or damaged"):
            parse_model(data[:cut], "cut.tflite")


def test_float_model_is_not_integer_and_not_edgetpu_compatible():
    info = parse_model(build_colour_model("float32"), "float.tflite")
    assert info.op_counts == {"MEAN": 1, "SOFTMAX": 1}
    assert info.inputs[0].dtype == "float32" and info.inputs[0].shape == (1, 8, 8, 3)
    assert not info.fully_integer
    assert not info.edgetpu_compatible and info.edgetpu.refused
    assert any("compute in float" in issue for issue in info.edgetpu.issues)
    assert info.edgetl_metadata is None


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_integer_model_is_fully_integer_and_ready(dtype):
    info = parse_model(build_colour_model(dtype), f"{dtype}.tflite")
    assert info.fully_integer
    assert info.edgetpu_compatible and info.edgetpu.issues == ()
    assert info.inputs[0].quantized and info.inputs[0].scale == pytest.approx((1 / 255,))
    assert info.outputs[0].describe() == f"{dtype}[1,3] q=(0.00390625, {-128 if dtype == 'int8' else 0})"


def test_dynamic_batch_is_an_edgetpu_issue():
    info = parse_model(build_colour_model("int8", dynamic_batch=True), "dyn.tflite")
    assert info.inputs[0].dynamic and info.inputs[0].shape_signature[0] == -1
    assert any("dynamic shapes" in issue for issue in info.edgetpu.issues)


def test_edgetpu_compiled_model_is_recognised():
    info = parse_model(build_edgetpu_model(), "m_edgetpu.tflite")
    assert info.edgetpu_compiled and info.edgetpu_compatible
    assert info.op_counts == {EDGETPU_CUSTOM_OP: 1}
    assert info.custom_ops == (EDGETPU_CUSTOM_OP,)


def test_embedded_edgetl_metadata_is_read_under_either_name(tmp_path):
    info = inspect_model(write_colour_model(tmp_path / "m.tflite", "int8"))
    assert info.edgetl_metadata is not None and info.edgetl_metadata.labels == ("red", "green", "blue")
    assert "edgetl.metadata" in info.metadata and "edgetl.model_card" not in info.metadata
    # Files exported before the rename carry the same JSON as 'edgetl.model_card'.
    from edgetl.model_metadata import embed_entries

    legacy = embed_entries(build_colour_model("int8"), {"edgetl.model_card": info.edgetl_metadata.to_json().encode()})
    old = parse_model(legacy, "old.tflite")
    assert old.edgetl_metadata == info.edgetl_metadata and "edgetl.metadata" not in old.metadata


def test_coral_mobilenet_v2_reports_uint8_io_and_fully_integer(coral_data):
    info = inspect_model(coral_data / MOBILENET_V2)
    assert [t.dtype for t in info.inputs + info.outputs] == ["uint8", "uint8"]
    assert info.inputs[0].shape == (1, 224, 224, 3)
    assert info.inputs[0].scale == pytest.approx((0.0078125,)) and info.inputs[0].zero_point == (128,)
    assert info.outputs[0].shape == (1, 1001)
    assert info.fully_integer
    assert info.op_counts["CONV_2D"] > 30 and info.op_counts["DEPTHWISE_CONV_2D"] > 10
    assert info.edgetpu_compatible and not info.edgetpu_compiled
    assert info.size_bytes == (coral_data / MOBILENET_V2).stat().st_size
    assert info.edgetl_metadata is None


def test_inspect_cli_table_and_json(coral_data):
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", str(coral_data / MOBILENET_V2)])
    assert result.exit_code == 0, result.output
    assert "uint8[1,224,224,3] q=(0.0078125, 128)" in result.output
    assert "fully integer: yes" in result.output
    assert "CONV_2D" in result.output and "Edge TPU: compatible" in result.output
    result = runner.invoke(main, ["inspect", str(coral_data / MOBILENET_V2), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["fully_integer"] is True
    assert data["inputs"][0]["dtype"] == "uint8" and data["outputs"][0]["dtype"] == "uint8"
    assert data["edgetl_metadata"] is None and data["edgetpu"]["compatible"] is True


def test_inspect_cli_shows_metadata_and_edgetpu_compiled(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", str(write_colour_model(tmp_path / "m.tflite", "float32"))])
    assert result.exit_code == 0, result.output
    assert "labels: red, green, blue" in result.output
    assert "fully integer: no" in result.output
    compiled = tmp_path / "m_edgetpu.tflite"
    compiled.write_bytes(build_edgetpu_model())
    result = runner.invoke(main, ["inspect", str(compiled)])
    assert result.exit_code == 0, result.output
    assert "compiled for the Edge TPU" in result.output


@pytest.mark.parametrize("content", [b"", b"not a model at all, just text", None])
def test_inspect_cli_bad_files_give_one_line_and_exit_1(tmp_path, content):
    path = tmp_path / "bad.tflite"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
