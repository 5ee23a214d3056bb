"""The Edge TPU rule set (edgetl.edgetpu): Coral's requirements on known graphs, one verdict for inspect and export."""

from __future__ import annotations

import pytest

pytest.importorskip("ai_edge_litert")

from device_models import build_colour_model, build_edgetpu_model  # noqa: E402

from edgetl import edgetpu  # noqa: E402
from edgetl.modelfile import parse_model  # noqa: E402

INT8_OPS = {"QUANTIZE": 2, "CONV_2D": 3, "MEAN": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}


def facts(**changes) -> edgetpu.GraphFacts:
    values = dict(op_counts=INT8_OPS, wide_ops={}, wide_types=(), wide_io=(), dynamic=(), high_rank=0, subgraphs=1)
    values.update(changes)
    return edgetpu.GraphFacts(**values)


def test_a_full_integer_static_graph_of_listed_ops_is_compatible():
    check = edgetpu.check(facts())
    assert check.compatible and not check.issues and not check.refused and not check.cpu_ops
    assert check.summary().startswith("compatible")


def test_float_and_int16_compute_and_dynamic_shapes_are_refused():
    for types in (("FLOAT32",), ("INT16",)):
        check = edgetpu.check(facts(wide_ops={"CONV_2D": 3, "QUANTIZE": 1}, wide_types=types, wide_io=("image",)))
        assert not check.compatible and len(check.refused) == 1
        assert f"3 ops compute in {types[0].lower()}" in check.refused[0] and "refused" in check.summary()
    dynamic = edgetpu.check(facts(dynamic=("image", "probabilities", "a", "b")))
    assert dynamic.refused == ("dynamic shapes on image, probabilities, a and 1 more; export with a fixed batch size of 1",)


def test_unlisted_ops_fall_back_to_the_cpu_without_refusal():
    check = edgetpu.check(facts(op_counts={**INT8_OPS, "HARD_SWISH": 18, "DEQUANTIZE": 1}))
    assert not check.compatible and not check.refused and check.cpu_ops == {"DEQUANTIZE": 1, "HARD_SWISH": 18}
    assert "partly on the CPU" in check.summary()
    # Float I/O only: the QUANTIZE/DEQUANTIZE at the ends run on the CPU; the rest can map.
    ends = edgetpu.check(facts(op_counts={**INT8_OPS, "DEQUANTIZE": 1}, wide_ops={"QUANTIZE": 1, "DEQUANTIZE": 1},
                               wide_types=("FLOAT32",), wide_io=("image", "probabilities")))
    assert not ends.compatible and not ends.refused and not ends.cpu_ops and "input/output" in ends.issues[0]
    assert "2 subgraphs" in edgetpu.check(facts(subgraphs=2)).summary()
    assert "3 non-trivial dimensions" in edgetpu.check(facts(high_rank=4)).summary()


def test_lstm_follows_corals_list():
    """Coral's table lists unidirectional LSTM, which Keras converts to UNIDIRECTIONAL_SEQUENCE_LSTM (module docstring)."""
    assert {"LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM"} <= edgetpu.SUPPORTED_OPS
    assert "BIDIRECTIONAL_SEQUENCE_LSTM" not in edgetpu.SUPPORTED_OPS
    assert edgetpu.check(facts(op_counts={**INT8_OPS, "UNIDIRECTIONAL_SEQUENCE_LSTM": 1})).compatible


def test_parse_model_carries_the_verdict_and_compiled_files_are_compatible():
    assert parse_model(build_colour_model("uint8"), "u8.tflite").edgetpu.compatible
    floating = parse_model(build_colour_model("float32"), "f32.tflite").edgetpu
    assert not floating.compatible and floating.refused
    compiled = parse_model(build_edgetpu_model(), "m_edgetpu.tflite").edgetpu
    assert compiled.compatible and compiled.compiled and compiled.summary().startswith("compiled")


def test_one_rule_set_and_one_name():
    """The export's check is inspect's (export.edgetpu delegates to parse_model) and no other op list exists."""
    from pathlib import Path

    from edgetl.export import edgetpu as export_edgetpu

    data = build_colour_model("int8")
    assert export_edgetpu.check_edgetpu_rules(data) == parse_model(data).edgetpu
    package = Path(edgetpu.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "edgetpu.py" or path.parent != package:
            assert '"RESIZE_NEAREST_NEIGHBOR"' not in text, f"{path}: a second copy of the Edge TPU op list"
        for old in ("edgetpu_friendly", "edgetpu_compilable", "edgetpu_ready"):
            assert old not in text, f"{path} still says {old}"
