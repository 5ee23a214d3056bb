"""The standard TFLite metadata (edgetl.tflite_metadata): Google's files, the device side's use of it, damaged input.

No TensorFlow. Google's Coral files (../shared/assets) carry the reference
metadata; synthetic models get it from edgetl's writer.
"""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("ai_edge_litert")

from device_models import (  # noqa: E402
    build_colour_model,
    build_minus_one_one_model,
    colour_metadata,
    with_tflite_metadata,
)

from edgetl.cli import main  # noqa: E402
from edgetl.export.metadata import carry_metadata, classifier_metadata, embed_metadata  # noqa: E402
from edgetl.images import load_image  # noqa: E402
from edgetl.model_metadata import embed_entries, read_edgetl_metadata, read_metadata  # noqa: E402
from edgetl.modelfile import parse_model  # noqa: E402
from edgetl.tflite_metadata import (  # noqa: E402
    TFLiteMetadataError,
    associated_files,
    build_metadata,
    parse_metadata,
    read_associated_files,
)

CLASSIFIERS = ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite")
MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _interpreter_outputs(data: bytes, pixels: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for image in pixels:
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"]).copy())
    return np.stack(outputs)


# === Google's files ===

@pytest.mark.parametrize("name", CLASSIFIERS)
def test_googles_metadata_is_read_with_its_labels(coral_data, name):
    info = parse_model((coral_data / name).read_bytes(), name)
    standard = info.tflite_metadata
    assert info.warnings == ()
    assert standard.min_parser_version == "1.0.0"
    (image,), (scores,) = standard.inputs, standard.outputs
    assert (image.name, image.content, image.color_space) == ("image", "ImageProperties", "RGB")
    assert (image.mean, image.std, image.process_units) == ((127.5,), (127.5,), ("NormalizationOptions",))
    assert scores.name == "probability" and scores.associated_files[0].type == "TENSOR_AXIS_LABELS"
    labels = (coral_data / "imagenet_labels.txt").read_text().splitlines()
    assert standard.labels == tuple(labels) and len(labels) == 1001
    assert standard.labels_file == "imagenet_labels.txt" and standard.files == {"imagenet_labels.txt": 21686}


def test_writer_rebuilds_googles_metadata_field_for_field(coral_data):
    buffer = read_metadata((coral_data / MOBILENET_V2).read_bytes())["TFLITE_METADATA"]
    parsed = parse_metadata(buffer)
    rebuilt = build_metadata(parsed)
    assert parse_metadata(rebuilt) == parsed
    assert len(rebuilt) == len(buffer) == 696


def test_reader_raises_only_its_own_error_on_damaged_buffers(coral_data):
    """Every single-byte change and every truncation of a real buffer: parsed, or TFLiteMetadataError; nothing else."""
    buffer = read_metadata((coral_data / MOBILENET_V2).read_bytes())["TFLITE_METADATA"]
    outcomes = {"parsed": 0, "refused": 0}
    candidates = [buffer[:cut] for cut in range(len(buffer))]
    for position in range(len(buffer)):
        for value in (0x00, 0xFF, 0x7F, buffer[position] ^ 0x01):
            candidates.append(buffer[:position] + bytes([value]) + buffer[position + 1:])
    for candidate in candidates:
        try:
            parse_metadata(candidate)
            outcomes["parsed"] += 1
        except TFLiteMetadataError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 1000 and outcomes["parsed"] > 100, outcomes


def test_hostile_vector_lengths_are_refused_fast():
    """A vector that claims millions of entries is refused, not walked."""
    good = build_metadata(classifier_metadata(colour_metadata("float32")))
    parsed = parse_metadata(good)
    # The subgraph vector: the root table's 4th field points at it; give it 2**31 - 1 entries.
    root = struct.unpack_from("<I", good, 0)[0]
    vtable = root - struct.unpack_from("<i", good, root)[0]
    field = root + struct.unpack_from("<H", good, vtable + 4 + 2 * 3)[0]
    vector = field + struct.unpack_from("<I", good, field)[0]
    hostile = good[:vector] + struct.pack("<I", 2**31 - 1) + good[vector + 4:]
    with pytest.raises(TFLiteMetadataError, match="runs past the end"):
        parse_metadata(hostile)
    assert parsed.outputs[0].associated_files[0].name == "labels.txt"


def test_coral_mobilenet_v2_predicts_macaw_with_no_labels_flag(coral_data):
    result = run("predict", coral_data / MOBILENET_V2, coral_data / "parrot.jpg", "--json")
    assert result.exit_code == 0, result.output
    top = json.loads(result.output)["predictions"][0]["top"][0]
    assert top["label"] == "macaw" and top["score"] > 0.9


def test_rewriting_googles_metadata_keeps_outputs_bit_identical(coral_data):
    """edgetl's writer over a real model (repack, TFLITE_METADATA, zip): same outputs, same labels, no larger."""
    original = (coral_data / MOBILENET_V2).read_bytes()
    standard = parse_model(original).tflite_metadata
    labels = read_associated_files(original)
    rewritten = embed_entries(original, {"TFLITE_METADATA": build_metadata(standard)})
    assert read_associated_files(rewritten) == labels  # the repack appended the zip again
    assert parse_model(rewritten).tflite_metadata == standard
    pixels = np.stack([load_image(coral_data / name, 224) for name in ("parrot.jpg", "cat.bmp", "hot_dog.jpg")])
    np.testing.assert_array_equal(_interpreter_outputs(rewritten, pixels), _interpreter_outputs(original, pixels))
    assert len(rewritten) <= len(original)  # the repack shares repeated vectors: never larger


# === edgetl's own files ===

def test_embedded_metadata_of_an_edgetl_file(tmp_path):
    card = colour_metadata("int8", labels=("0 red", "1 green", "10 blue"))
    plain = build_colour_model("int8")
    data = embed_metadata(plain, card)
    info = parse_model(data)
    assert info.edgetl_metadata == card and info.warnings == ()
    standard = info.tflite_metadata
    assert standard.labels == card.labels and standard.files == {"labels.txt": len("0 red\n1 green\n10 blue\n")}
    (image,), (scores,) = standard.inputs, standard.outputs
    assert image.mean == card.mean and image.std == card.std and image.image_size == (8, 8)
    assert (image.name, scores.name) == ("image", "probabilities")
    # About 1 KB on top of edgetl's own entry; the model itself is untouched.
    from edgetl.model_metadata import embed_edgetl_metadata

    assert 0 < len(data) - len(embed_edgetl_metadata(plain, card)) < 1200
    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3))
    np.testing.assert_array_equal(_interpreter_outputs(data, pixels), _interpreter_outputs(plain, pixels))


def test_unnamed_io_tensors_get_the_metadata_names():
    from device_models import _pack_mutated

    def unname(model):
        model.subgraphs[0].tensors[0].name = ""
        model.subgraphs[0].tensors[3].name = ""

    data = embed_metadata(_pack_mutated(build_colour_model("float32"), unname), colour_metadata("float32"))
    info = parse_model(data)
    assert (info.inputs[0].name, info.outputs[0].name) == ("image", "probabilities")


def test_carry_metadata_restores_entries_and_zip_after_a_rewrite():
    """What edgetl does after the Edge TPU compiler: lost entries and the zip come back, the zip last."""
    card = colour_metadata("uint8")
    source = embed_metadata(build_colour_model("uint8"), card)
    stripped = build_colour_model("uint8")  # as a tool that drops metadata would write it
    restored = carry_metadata(source, stripped, dataclasses.replace(card, variant="int8-edgetpu"))
    info = parse_model(restored)
    assert info.edgetl_metadata.variant == "int8-edgetpu" and info.tflite_metadata.labels == card.labels
    assert carry_metadata(source, source) == source  # nothing lost: unchanged


# === the device side: precedence flags > card > standard metadata > defaults ===

def test_float_file_with_standard_normalisation_evaluates_right_without_flags(tmp_path, tiny_folder):
    """A file whose metadata says 127.5/127.5 and that really expects [-1, 1]: right with no flags, chance without it."""
    labels = ("red", "green", "blue")
    model = tmp_path / "minus_one_one.tflite"
    model.write_bytes(with_tflite_metadata(build_minus_one_one_model(), labels, mean=127.5, std=127.5))
    result = run("eval", model, tiny_folder, "--json")
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.output)
    assert evaluation["top1"] == 1.0 and "from TFLite metadata" in evaluation["preprocessing"]
    assert {m["name"]: m["label"] for m in evaluation["per_class"]} == {"blue": "blue", "green": "green", "red": "red"}
    # Flags win over the metadata: fed [0, 255] the file scores at chance, as it did before edgetl read the metadata.
    flagged = json.loads(run("eval", model, tiny_folder, "--mean", "0", "--std", "1", "--json").output)
    assert flagged["top1"] == pytest.approx(1 / 3) and "from options" in flagged["preprocessing"]
    no_metadata = tmp_path / "no_metadata.tflite"
    no_metadata.write_bytes(build_minus_one_one_model())
    plain = json.loads(run("eval", no_metadata, tiny_folder, "--labels", _labels_file(tmp_path, labels), "--json").output)
    assert plain["top1"] == pytest.approx(1 / 3)


def _labels_file(tmp_path, labels):
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"{label}\n" for label in labels))
    return path


def test_edgetl_metadata_wins_over_standard_metadata_and_flags_win_over_both(tmp_path, tiny_folder):
    card = colour_metadata("float32")  # mean 0, std 255: the colour model takes [0, 1]
    data = with_tflite_metadata(embed_entries(build_colour_model("float32"), {"edgetl.model_card": card.to_json().encode()}),
                                ("r", "g", "b"), mean=127.5, std=127.5)
    model = tmp_path / "both.tflite"
    model.write_bytes(data)
    info = parse_model(data)
    assert read_edgetl_metadata(data) == card and info.tflite_metadata.labels == ("r", "g", "b")
    result = json.loads(run("eval", model, tiny_folder, "--json").output)
    assert result["top1"] == 1.0 and "from edgetl metadata" in result["preprocessing"]
    inspected = run("inspect", model).output
    assert "labels from the edgetl metadata: red, green, blue" in inspected and "from edgetl metadata" in inspected
    flagged = json.loads(run("predict", model, next((tiny_folder / "red").iterdir()), "--labels",
                             _labels_file(tmp_path, ("R", "G", "B")), "--json").output)
    assert flagged["predictions"][0]["top"][0]["label"] == "R"


def test_inspect_shows_both_blocks_and_the_minimum_runtime(tmp_path, coral_data):
    model = tmp_path / "m.tflite"
    model.write_bytes(embed_metadata(build_colour_model("uint8"), colour_metadata("uint8")))
    result = run("inspect", model)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "TFLite metadata: 'test_colour_mean image classifier', parser >= 1.0.0" in text
    assert "input 'image': ImageProperties RGB, NormalizationOptions mean 0 std 255" in text
    assert "output 'probabilities': FeatureProperties" in text and "TENSOR_AXIS_LABELS labels.txt (3 labels: red" in text
    assert "edgetl metadata: test_colour_mean" in text and "appended zip: labels.txt (15 B)" in text
    assert "min runtime: not recorded" in text  # a hand-built flatbuffer has no converter entry
    coral = run("inspect", coral_data / MOBILENET_V2).output
    assert "min runtime: TFLite 1.5.0" in coral and "edgetl metadata: none" in coral
    assert "labels from the TFLite metadata, imagenet_labels.txt: background, 'tench, Tinca tinca'" in coral
    assert "fed raw pixels, as MediaPipe does" in coral
    data = json.loads(run("inspect", model, "--json").output)
    assert data["tflite_metadata"]["labels"] == ["red", "green", "blue"] and data["edgetl_metadata"]["variant"] == "int8"


# === damaged metadata in a third-party file: a warning, the defaults, never a traceback ===

def _third_party(tmp_path, kind: str):
    """A float file with standard metadata (labels, 127.5/127.5) damaged in one way."""
    good = with_tflite_metadata(build_minus_one_one_model(), ("red", "green", "blue"), mean=127.5, std=127.5)
    if kind == "good":
        data = good
    elif kind == "garbage-buffer":
        data = embed_entries(good, {"TFLITE_METADATA": bytes(range(200))})
    elif kind == "bad-offsets":
        buffer = read_metadata(good)["TFLITE_METADATA"]
        data = embed_entries(good, {"TFLITE_METADATA": struct.pack("<I", 10**6) + buffer[4:]})
    elif kind == "zip-truncated":
        data = good[:-10]
    elif kind == "zip-garbled-directory":
        directory = good.rfind(b"PK\x01\x02")
        data = good[:directory] + b"XX" + good[directory + 2:]
    elif kind == "zip-garbled-labels":
        start = good.rfind(b"red\ngreen")
        data = good[:start] + b"rad" + good[start + 3:]
    elif kind == "zero-std":
        data = with_tflite_metadata(build_minus_one_one_model(), ("red", "green", "blue"), mean=127.5, std=0.0)
    else:
        raise ValueError(kind)
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(data)
    return path


DAMAGED = {
    "garbage-buffer": "cannot be parsed: it has no 'M001' file identifier",
    "bad-offsets": "cannot be parsed: a table at byte 1000000 runs past the end",
    "zip-truncated": "names labels.txt but it has no zip of associated files after the flatbuffer",
    "zip-garbled-directory": "the zip of associated files after the model is damaged",
    "zip-garbled-labels": "Bad CRC-32 for file 'labels.txt'",
    "zero-std": "NormalizationOptions of input 0 in its TFLite metadata (mean [127.5], std [0.0]) are unusable",
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_standard_metadata_is_a_warning_and_the_defaults(tmp_path, tiny_folder, kind):
    model = _third_party(tmp_path, kind)
    image = next((tiny_folder / "red").iterdir())
    result = CliRunner().invoke(main, ["predict", str(model), str(image), "--json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("Warning: ") and DAMAGED[kind] in warnings[0], result.stderr
    assert "Traceback" not in result.output
    top = json.loads(result.stdout)["predictions"][0]["top"][0]
    if kind.startswith("zip") or kind == "garbage-buffer" or kind == "bad-offsets":
        assert top["label"] == ""  # no labels: the defaults
    inspected = run("inspect", model)
    assert inspected.exit_code == 0 and f"warning: '{model}'" in inspected.output
    # eval needs labels: one clear line when the damage took them, else it runs
    evaluation = CliRunner().invoke(main, ["eval", str(model), str(tiny_folder)])
    if kind in ("zero-std",):
        assert evaluation.exit_code == 0, evaluation.output
    else:
        errors = [line for line in evaluation.stderr.splitlines() if line.startswith("Error: ")]
        assert evaluation.exit_code == 1 and len(errors) == 1 and "carries no labels" in errors[0], evaluation.output


def test_labels_of_the_wrong_length_in_the_metadata_are_one_clear_line(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(with_tflite_metadata(build_minus_one_one_model(), ("red", "green"), mean=127.5, std=127.5))
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 0, 0)).save(image)
    result = CliRunner().invoke(main, ["predict", str(model), str(image)])
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "The TFLite metadata, labels.txt has 2 labels" in errors[0] and "--labels" in errors[0]


def test_associated_files_of_a_file_without_a_zip_are_empty():
    plain = build_colour_model()
    assert associated_files(plain) == {} and read_associated_files(plain) == {}


def test_replacing_an_entry_leaves_no_orphan_buffer():
    card = colour_metadata("uint8")
    once = embed_metadata(build_colour_model("uint8"), card)
    twice = carry_metadata(once, once, dataclasses.replace(card, variant="int8-edgetpu"))
    assert read_edgetl_metadata(twice).variant == "int8-edgetpu" and parse_model(twice).tflite_metadata.labels == card.labels
    assert abs(len(twice) - len(once)) < 64  # the card's buffer was rewritten, not a second one added
