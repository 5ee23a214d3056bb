"""Labels round-trip whatever the class names are; Coral's INDEX LABEL form is read only where it cannot be a plain list.

No TensorFlow: the chain folder -> embedded metadata -> labels.txt -> --labels ->
eval/predict output runs on a synthetic nearest-colour classifier (the export
side of the chain is in tests/test_export.py and tests/test_run.py).
"""

from __future__ import annotations

import json
import unicodedata

import pytest
from click.testing import CliRunner

pytest.importorskip("ai_edge_litert")

from device_models import build_nearest_colour_model  # noqa: E402

from edgetl.cli import main  # noqa: E402
from edgetl.errors import ConfigError  # noqa: E402
from edgetl.export.metadata import embed_metadata  # noqa: E402
from edgetl.labels import check_labels, labels_from_text, labels_text, parse_labels, read_labels  # noqa: E402
from edgetl.model_metadata import EdgetlMetadata, TensorSpec  # noqa: E402
from edgetl.modelfile import parse_model  # noqa: E402
from tests.conftest import make_image_folder  # noqa: E402

# The issue's example: numbered colours, sorted as folder names are (0, 1, 10, 2, ...).
RAINBOW = {"0 red": (230, 30, 30), "1 orange": (240, 140, 20), "2 yellow": (235, 225, 30), "3 lime": (150, 230, 40),
           "4 green": (30, 160, 40), "5 teal": (20, 150, 150), "6 cyan": (40, 230, 230), "7 blue": (30, 50, 220),
           "8 navy": (20, 20, 110), "9 purple": (120, 30, 170), "10 magenta": (230, 40, 220)}
# Every kind of name a folder can have that a labels file could mangle.
AWKWARD = {
    "12 apples": (230, 30, 30),                                # digits and a space: Coral-like
    "2": (240, 140, 20),                                       # only digits
    "a, b": (235, 225, 30),                                    # comma (the synonym separator of ImageNet labels)
    "#hash": (30, 160, 40),                                    # a comment character elsewhere
    " padded ": (20, 150, 150),                                # spaces at both ends
    unicodedata.normalize("NFC", "café"): (30, 50, 220),       # the same word in both normalisation forms
    unicodedata.normalize("NFD", "café"): (20, 20, 110),
    "東京 タワー": (120, 30, 170),                              # non-ASCII, wide characters
    "tab\there": (230, 40, 220),                               # a tab inside
    "sep\u2028arated": (150, 230, 40),                         # a Unicode line separator: one line for a labels file
}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _card(labels):
    return EdgetlMetadata(labels=tuple(labels), input=TensorSpec((1, 8, 8, 3), "float32"), output=TensorSpec((1, len(labels)), "float32"),
                     mean=(0.0,) * 3, std=(255.0,) * 3, backbone="nearest_colour", variant="fp32", edgetl_version="test")


@pytest.mark.parametrize("classes", [RAINBOW, AWKWARD], ids=["numbered", "awkward"])
def test_class_names_round_trip_through_the_file_labels_txt_and_back(tmp_path, classes):
    """folder -> embedded metadata -> labels.txt -> --labels -> eval/predict JSON: the same names, the same classes."""
    data = make_image_folder(tmp_path / "data", per_class=2, size=16, classes=classes)
    names = tuple(sorted(p.name for p in data.iterdir()))  # what edgetl train records as class names
    assert set(names) == set(classes)
    colours = [classes[name] for name in names]
    model = tmp_path / "model.tflite"
    model.write_bytes(embed_metadata(build_nearest_colour_model(colours), _card(names)))
    assert parse_model(model.read_bytes()).tflite_metadata.labels == names  # the zip's labels.txt, what MediaPipe reads
    sidecar = tmp_path / "labels.txt"
    sidecar.write_text(labels_text(names), encoding="utf-8")
    for extra in ([], ["--labels", sidecar]):
        result = run("eval", model, data, "--json", *extra)
        assert result.exit_code == 0, result.output
        evaluation = json.loads(result.output)
        assert evaluation["top1"] == 1.0, (extra, evaluation["per_class"])
        assert [(m["name"], m["label"]) for m in evaluation["per_class"]] == [(n, n) for n in names]
        for name in names:
            image = next((data / name).iterdir())
            top = json.loads(run("predict", model, image, "--json", *extra).output)["predictions"][0]["top"][0]
            assert top["label"] == name, (extra, name, top)


def parse_labels_text(folder, text):
    path = folder / "labels.txt"
    path.write_bytes(text.encode("utf-8"))
    return parse_labels(path)


def test_the_issue_example_reads_labels_txt_plain_even_without_the_model(tmp_path):
    """Sorted as text, 0 red .. 10 magenta list 0, 1, 10, 2: not Coral's increasing indices."""
    names = sorted(RAINBOW)
    assert labels_from_text(labels_text(names)) == tuple(names)
    assert parse_labels_text(tmp_path, labels_text(names)).resolve() == tuple(names)


@pytest.mark.parametrize("text, num_classes, known, expected", [
    # Coral's form: increasing indices, gaps allowed, spaces or a colon
    ("0  background\n1  cat\n3 dog\n", None, None, ("background", "cat", "", "dog")),
    ("0:background\n1: cat\n", 2, None, ("background", "cat")),
    # numbered names, not Coral: indices not increasing, zero-padded, or the model has another count
    ("0 red\n1 orange\n10 magenta\n2 yellow\n", 4, None, ("0 red", "1 orange", "10 magenta", "2 yellow")),
    ("00 red\n01 green\n", 2, None, ("00 red", "01 green")),
    ("2024 summer\n2025 winter\n", 2, None, ("2024 summer", "2025 winter")),
    ("1 apple\n2 banana\n", 2, None, ("1 apple", "2 banana")),
    # the ambiguous case: the model's own labels decide; without them, Coral's convention (same outputs either way)
    ("0 red\n1 green\n", 2, ("0 red", "1 green"), ("0 red", "1 green")),
    ("0 red\n1 green\n", 2, None, ("red", "green")),
    # plain files: kept whole, blank lines inside kept, CRLF and a BOM dropped, trailing blank lines dropped
    ("red\ngreen\n\n", None, None, ("red", "green")),
    ("\ufeff red \r\n\r\ngreen\r\n", None, None, (" red ", "", "green")),
    ("a, b\n#c\n", None, None, ("a, b", "#c")),
])
def test_labels_file_forms(tmp_path, text, num_classes, known, expected):
    assert parse_labels_text(tmp_path, text).resolve(num_classes, known) == expected


def test_read_labels_keeps_its_signature(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0  background\n1  cat\n3 dog\n")
    assert read_labels(path) == ("background", "cat", "", "dog")


@pytest.mark.parametrize("name", ["two\nlines", "carriage\rreturn", ""])
def test_names_a_labels_file_cannot_hold_are_refused(name):
    with pytest.raises(ConfigError) as error:
        check_labels(["ok", name])
    message = str(error.value)
    assert "\n" not in message and ("line break" in message or "empty name" in message)


def test_confusion_matrix_plot_shows_any_class_name(tmp_path):
    """'$' would start TeX math in matplotlib, and bad TeX ('$\\bad$') used to end the report with a traceback."""
    pytest.importorskip("matplotlib")
    from edgetl.plots import _literal, plot_confusion_matrix

    names = ["$\\bad$", "$5 bill", " 10 magenta "]
    path = plot_confusion_matrix([[1, 0, 0], [0, 1, 0], [0, 0, 1]], names, tmp_path / "cm.png")
    assert path.stat().st_size > 1000
    assert _literal("$5 $x$") == "\\$5 \\$x\\$" and _literal(" 10 magenta ") == " 10 magenta "
