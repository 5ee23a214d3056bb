"""The bad-input catalogue (docs/errors.md): every entry gives one clear line, a non-zero exit and no traceback.

Test ids match the entry names in docs/errors.md. Commands run in process with
CliRunner (fast) unless the entry needs a real process: a native crash or hang
(run in the sandbox's child, and here in a subprocess too, so a regression
fails one test instead of killing the run), real stdout encoding, a file-size
limit or a signal. No TensorFlow here: the Keras-side entries (damaged and
unsafe model.keras, a full disk during export) are in test_errors_catalogue_tf.py.
"""

from __future__ import annotations

import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("ai_edge_litert")

from device_models import (  # noqa: E402
    _pack_mutated,
    build_colour_model,
    build_crashing_model,
    build_edgetpu_model,
    build_hanging_model,
    build_huge_input_model,
    colour_metadata,
    write_colour_model,
)

from edgetl.cli import main  # noqa: E402
from edgetl.model_metadata import embed_edgetl_metadata  # noqa: E402
from tests.conftest import REPO, make_image_folder  # noqa: E402

FAST = ["--runs", "1", "--warmup", "0", "--min-seconds", "0", "--warmup-seconds", "0", "--threads", "1", "--no-progress"]
LATIN1 = "caf\udce9"  # the file-system bytes b'caf\xe9': not valid UTF-8


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def cli(*args, env=None, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """`python -m edgetl ARGS` in a real process (bytes in, so undecodable names survive)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    argv = [sys.executable, "-m", "edgetl", *[a if isinstance(a, bytes) else os.fsencode(str(a)) for a in args]]
    return subprocess.run(argv, capture_output=True, env=environment, timeout=timeout, cwd=str(REPO), **kwargs)


def assert_clean_error(result, *fragments, code=1) -> str:
    """One 'Error: ...' line on stderr holding every fragment, exit ``code``, no traceback; returns the line."""
    if isinstance(result, subprocess.CompletedProcess):
        exit_code, stderr = result.returncode, result.stderr.decode("utf-8", "replace")
        everything = stderr + result.stdout.decode("utf-8", "replace")
    else:
        exit_code, stderr, everything = result.exit_code, result.stderr, result.output
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert exit_code == code, (exit_code, everything[-3000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), everything[-3000:]
    assert "Traceback" not in everything and "Error: unexpected" not in lines[0], everything[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_usage_error(result, *fragments) -> str:
    """click's own refusal of an argument (exit 2): its usage line, then one 'Error: ...' line, no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def unreadable(path: Path, monkeypatch) -> Path:
    """Makes ``path`` unreadable: chmod 000, or (as root, whom permissions do not stop) a refusing open()."""
    if os.geteuid() != 0:
        path.chmod(0)
        return path
    import builtins

    real_open = builtins.open
    target = os.fsencode(os.path.abspath(path))

    def refusing_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.fsencode(os.path.abspath(file)) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    return path


@pytest.fixture
def model(tmp_path) -> Path:
    return write_colour_model(tmp_path / "model" / "colour.tflite", "float32")


@pytest.fixture
def good_image(tmp_path) -> Path:
    path = tmp_path / "good.png"
    Image.new("RGB", (20, 20), (200, 30, 30)).save(path)
    return path


# === image folders: edgetl train DATA / --val, edgetl eval MODEL DATA ===

def _layout(root: Path, kind: str) -> Path:
    if kind == "missing":
        return root / "nowhere"
    data = root / "data"
    data.mkdir()
    if kind == "loose-images":
        Image.new("RGB", (8, 8)).save(data / "a.png")
    elif kind == "one-class":
        make_image_folder(data, 3, size=8, classes={"only": (1, 2, 3)})
    elif kind == "unbalanced-too-few":
        make_image_folder(data, 1, size=8, classes={"rare": (1, 2, 3)})
        make_image_folder(data, 40, size=8, classes={"common": (200, 0, 0)})
    elif kind == "non-utf8-class":
        make_image_folder(data, 3, size=8, classes={"ok": (1, 2, 3)})
        make_image_folder(data, 3, size=8, classes={LATIN1: (200, 0, 0)})
    return data


@pytest.mark.parametrize("kind, fragments", [
    ("missing", ["does not exist", "<class_name>/<image>"]),
    ("empty", ["No class folders found"]),
    ("loose-images", ["move them into one sub-folder per class"]),
    ("one-class", ["Only one class folder ('only')", "at least two"]),
    ("unbalanced-too-few", ["'rare' has 1 (need at least 2 per class)"]),
    ("non-utf8-class", ["caf\\xe9", "not valid UTF-8", "Rename the folder"]),
])
def test_folder_layout(tmp_path, kind, fragments):
    data = _layout(tmp_path, kind)
    # --weights none: nothing to download; the layout fails before TensorFlow is even imported.
    assert_clean_error(run("train", data, "--weights", "none", "--out", tmp_path / "run"), *fragments)
    assert not (tmp_path / "run").exists()


def test_folder_is_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    assert_usage_error(run("train", tmp_path / "file.txt", "--out", tmp_path / "run"), "is a file")


def test_folder_unreadable(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "data", 2, size=8)
    real_iterdir = Path.iterdir

    def refusing_iterdir(self):
        if self == data:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refusing_iterdir)
    assert_clean_error(run("train", data, "--weights", "none", "--out", tmp_path / "run"), "permission denied")


def test_folder_val_classes_differ(tmp_path):
    data = make_image_folder(tmp_path / "train", 3, size=8)
    val = make_image_folder(tmp_path / "val", 2, size=8, classes={"red": (200, 0, 0), "purple": (100, 0, 100)})
    assert_clean_error(run("train", data, "--val", val, "--weights", "none", "--out", tmp_path / "run"),
                       "differ from the training classes", "missing ['blue', 'green']", "unexpected ['purple']")


def test_folder_layout_fails_before_tensorflow_loads(tmp_path):
    (tmp_path / "empty").mkdir()
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'):
                    raise ImportError('TensorFlow import attempted: ' + name)
        sys.meta_path.insert(0, Block())
        from edgetl.cli import main
        main(['train', {str(tmp_path / 'empty')!r}, '--weights', 'none', '--out', {str(tmp_path / 'run')!r}])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=str(REPO),
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert_clean_error(done, "No class folders found")


def test_images_folder_without_images(tmp_path, model):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("x")
    assert_clean_error(run("bench", model, "--images", tmp_path / "photos", *FAST), "No images found in", ".jpg")


def test_folder_every_image_unusable(tmp_path, model):
    data = tmp_path / "data"
    for name in ("red", "green"):
        (data / name).mkdir(parents=True)
        (data / name / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert_clean_error(run("eval", model, data), "None of the 2 images", "could be decoded")


# === image files: skipped and listed inside folders; an error when named on the command line ===

def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (no pixel data): enough for the size check."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _bad_image(folder: Path, kind: str, monkeypatch) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "source.jpg"
    Image.new("RGB", (64, 64), (10, 200, 10)).save(good, quality=95)
    data = good.read_bytes()
    good.unlink()
    if kind == "corrupt":
        path = folder / "corrupt.jpg"
        path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg body" * 4)
    elif kind == "truncated":
        path = folder / "truncated.jpg"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero-byte":
        path = folder / "zero.png"
        path.write_bytes(b"")
    elif kind == "huge":
        path = folder / "huge.png"
        path.write_bytes(_png_header(100_000, 100_000))
    elif kind == "not-an-image":
        path = folder / "notes.png"
        path.write_text("just some text, saved with an image extension\n")
    elif kind == "fifo":
        path = folder / "pipe.jpg"
        os.mkfifo(path)
    elif kind == "broken-symlink":
        path = folder / "gone.jpg"
        os.symlink(folder / "deleted.jpg", path)
    elif kind == "unreadable":
        path = folder / "secret.jpg"
        path.write_bytes(data)
        unreadable(path, monkeypatch)
    else:
        raise ValueError(kind)
    return path


BAD_IMAGES = {
    "corrupt": "corrupt", "truncated": "truncated or corrupt", "zero-byte": "empty file (0 bytes)",
    "huge": "too large (over", "not-an-image": "not an image Pillow can read",
    "fifo": "not a regular file", "broken-symlink": "missing (deleted, or a broken symlink)",
    "unreadable": "permission denied",
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_image_file_named_on_the_command_line(tmp_path, model, kind, monkeypatch):
    image = _bad_image(tmp_path / "images", kind, monkeypatch)
    if kind in ("fifo", "broken-symlink"):  # not files at all: refused before any decoding
        assert_clean_error(run("predict", model, image), "does not exist or is not a file")
        assert_clean_error(run("bench", model, "--images", image, *FAST),
                           "not a regular file" if kind == "fifo" else "does not exist")
    else:
        assert_clean_error(run("predict", model, image), image.name, BAD_IMAGES[kind])
        assert_clean_error(run("bench", model, "--images", image, *FAST), image.name, BAD_IMAGES[kind])


def test_image_files_in_a_folder_are_skipped_and_listed(tmp_path, model, monkeypatch):
    """Training scans and eval skip every bad file with its reason and go on (exit 0)."""
    from edgetl.data.folder import scan_folder

    data = make_image_folder(tmp_path / "data", 3, size=16)
    for kind in BAD_IMAGES:
        _bad_image(data / "red", kind, monkeypatch)
    os.symlink(data / "red", data / "red" / "loop")
    folder = scan_folder(str(data))
    reasons = {Path(s.path).name: s.reason for s in folder.skipped}
    assert folder.counts() == {"blue": 3, "green": 3, "red": 3}
    for kind, reason in BAD_IMAGES.items():
        assert any(reason in text for text in reasons.values()), (kind, reasons)
    assert any("symlink loop" in text for text in reasons.values())
    result = run("eval", model, data)
    assert result.exit_code == 0, result.output
    assert f"skipped {len(BAD_IMAGES) + 1} files" in result.output


@pytest.mark.parametrize("name, make", [
    ("cmyk.jpg", lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p)),
    ("deep16.png", lambda p: Image.fromarray(np.full((16, 16), 60000, np.uint16)).save(p)),
    ("animated.gif", lambda p: Image.new("P", (16, 16), 1).save(p, save_all=True, append_images=[Image.new("P", (16, 16), 2)])),
    ("alpha.png", lambda p: Image.new("RGBA", (16, 16), (255, 0, 0, 10)).save(p)),
    ("grey.png", lambda p: Image.new("L", (16, 16), 99).save(p)),
])
def test_image_modes_that_are_accepted(tmp_path, model, name, make):
    """Not errors: every mode is converted to RGB as training did (the catalogue lists them for completeness)."""
    make(tmp_path / name)
    result = run("predict", model, tmp_path / name)
    assert result.exit_code == 0, result.output


def test_image_non_utf8_file_names(tmp_path, model):
    """Undecodable names are opened by their bytes and printed as escapes; never a crash on stdout."""
    data = make_image_folder(tmp_path / "data", 2, size=8)
    Image.new("RGB", (8, 8), (220, 40, 40)).save(os.fsencode(data / "red" / f"{LATIN1}.png"), "PNG")
    (data / "green" / f"{LATIN1}-broken.png").write_bytes(b"not a png")
    done = cli("eval", model, data)
    stdout = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "7 images, 3 classes" in stdout and "top-1 accuracy: 1.0000" in stdout, stdout
    assert "-broken.png" in stdout and "not an image" in stdout
    done = cli("predict", model, os.fsencode(data / "red" / f"{LATIN1}.png"))
    assert done.returncode == 0 and b"red" in done.stdout, done.stderr.decode()[-2000:]
    result = cli("predict", model, os.fsencode(tmp_path / f"{LATIN1}-missing.png"))
    assert_clean_error(result, "does not exist")


# === model files: edgetl inspect / predict / eval / bench MODEL ===

def _damaged_indices() -> bytes:
    def edit(model):
        model.subgraphs[0].operators[0].inputs = [0, 99]

    return _pack_mutated(build_colour_model(), edit)


def _card_of_another_export() -> bytes:
    return embed_edgetl_metadata(build_colour_model("float32"), colour_metadata("float32", size=224))


MODEL_FILES = {
    # name: (bytes or None for special files, fragments)
    "empty": (b"", ["empty (0 bytes)"]),
    "too-short": (b"\x1c\x00\x00\x00TFL3", ["too short"]),
    "random-bytes": (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), ["not a TFLite model", "TFL3"]),
    "truncated": (build_colour_model()[:400], ["truncated or damaged"]),
    "damaged-flatbuffer": (_damaged_indices(), ["truncated or damaged"]),
    "huge-tensor": (build_huge_input_model(), ["111.8 GiB", "damaged"]),
}


@pytest.mark.parametrize("command", ["inspect", "predict", "eval", "bench"])
@pytest.mark.parametrize("kind", list(MODEL_FILES))
def test_model_file_damaged(tmp_path, good_image, tiny_folder, kind, command):
    data, fragments = MODEL_FILES[kind]
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(data)
    args = {"inspect": [], "predict": [good_image], "eval": [tiny_folder], "bench": FAST}[command]
    assert_clean_error(run(command, path, *args), *fragments)


@pytest.mark.parametrize("kind", ["missing", "folder", "fifo", "unreadable"])
def test_model_file_not_readable(tmp_path, good_image, kind, monkeypatch):
    path = tmp_path / "m.tflite"
    fragments = {"missing": ["does not exist", "other.tflite"], "folder": ["is a folder"],
                 "fifo": ["not a regular file"], "unreadable": ["permission denied"]}[kind]
    write_colour_model(tmp_path / "other.tflite")
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "unreadable":
        write_colour_model(path)
        unreadable(path, monkeypatch)
    for command, args in (("inspect", []), ("predict", [good_image]), ("bench", FAST)):
        assert_clean_error(run(command, path, *args), *fragments)


def test_model_file_crashes_the_runtime(tmp_path, good_image, tiny_folder):
    """A valid flatbuffer that kills LiteRT with SIGSEGV: the sandbox's child dies, edgetl says so."""
    path = tmp_path / "crash.tflite"
    path.write_bytes(build_crashing_model())
    assert run("inspect", path).exit_code == 0  # inspect never runs native code
    for args in (["predict", path, good_image], ["eval", path, tiny_folder], ["bench", path, *FAST]):
        assert_clean_error(cli(*args), "crash.tflite", "crashed the TFLite runtime", "SIGSEGV", "edgetl itself was not affected")
    done = cli("predict", path, good_image, env={"EDGETL_SANDBOX": "off"})
    assert done.returncode == -signal.SIGSEGV  # what the sandbox prevents


def test_model_file_hangs_the_runtime(tmp_path, good_image):
    path = tmp_path / "hang.tflite"
    path.write_bytes(build_hanging_model())
    start = time.monotonic()
    assert_clean_error(cli("bench", path, *FAST, env={"EDGETL_SANDBOX_TIMEOUT": "2"}),
                       "did not finish running one inference within 2 s", "EDGETL_SANDBOX_TIMEOUT")
    assert time.monotonic() - start < 30


def test_model_file_fails_in_the_runtime(tmp_path, good_image):
    """An op the runtime refuses when it runs: the runtime's own words, from the sandbox's child, as one line."""
    def edit(model):
        model.subgraphs[0].operators[1].inputs = [1]  # SOFTMAX of the int32 axes tensor

    path = tmp_path / "refused.tflite"
    path.write_bytes(_pack_mutated(build_colour_model(), edit))
    assert_clean_error(run("predict", path, good_image), "ai-edge-litert", "cannot run", "refused.tflite",
                       "SOFTMAX", "try another --runtime")


def test_model_edgetpu_compiled_without_the_delegate(tmp_path, good_image):
    path = tmp_path / "m_edgetpu.tflite"
    path.write_bytes(build_edgetpu_model())
    for args in (["predict", path, good_image], ["bench", path, *FAST]):
        assert_clean_error(run(*args), "compiled for the Edge TPU", "--delegate edgetpu")


@pytest.mark.skipif(ctypes.util.find_library("edgetpu") is not None, reason="a Coral runtime is installed here")
def test_model_edgetpu_delegate_missing(tmp_path, good_image):
    path = tmp_path / "m_edgetpu.tflite"
    path.write_bytes(build_edgetpu_model())
    assert_clean_error(run("bench", path, "--delegate", "edgetpu", *FAST), "Could not load the Edge TPU delegate", "libedgetpu")


@pytest.mark.parametrize("kind, fragments", [
    ("metadata-of-another-export", ["224x224", "8x8", "metadata belongs to another export"]),
    ("huge-input-side", ["10000x10000", "1 to 8192 pixels"]),
    ("not-an-image-input", ["not an image batch"]),
    ("one-channel", ["1-channel", "RGB"]),
])
def test_model_input_does_not_fit_images(tmp_path, good_image, kind, fragments):
    if kind == "metadata-of-another-export":
        data = _card_of_another_export()
    elif kind == "huge-input-side":
        def edit(model):
            model.subgraphs[0].tensors[0].shape = [1, 10_000, 10_000, 3]
            model.subgraphs[0].tensors[0].type = 3  # uint8: 300 MB, under the tensor limit

        data = _pack_mutated(build_colour_model("uint8"), edit)
    elif kind == "not-an-image-input":
        def edit(model):  # softmax over a [1, 3] input: a valid model, but not of images
            graph = model.subgraphs[0]
            graph.tensors[0].shape = [1, 3]
            graph.operators = graph.operators[1:]
            graph.operators[0].inputs = [0]

        data = _pack_mutated(build_colour_model(), edit)
    else:
        data = build_colour_model(channels=1)
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(data)
    assert_clean_error(run("predict", path, good_image), *fragments)
    assert_clean_error(run("bench", path, "--images", good_image, *FAST), *fragments)


# === labels and options of the device commands ===

def test_labels_file_problems(tmp_path, model, good_image, tiny_folder):
    assert_clean_error(run("predict", model, good_image, "--labels", tmp_path / "none.txt"), "Labels file", "does not exist")
    two = tmp_path / "two.txt"
    two.write_text("a\nb\n")
    assert_clean_error(run("predict", model, good_image, "--labels", two), "2 labels", "outputs 3 classes")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\nthé\nbière\n".encode("latin-1"))
    assert_clean_error(run("predict", model, good_image, "--labels", latin), "cannot be read", "UTF-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert_clean_error(run("predict", model, good_image, "--labels", empty), "is empty")
    no_card = write_colour_model(tmp_path / "plain.tflite", metadata=False)
    assert_clean_error(run("eval", no_card, tiny_folder), "no labels", "--labels")


@pytest.mark.parametrize("args, fragments", [
    (["--delegate", "gpu"], ["Unknown delegate 'gpu'"]),
    (["--delegate", "/nonexistent/libdelegate.so"], ["libdelegate.so"]),
    (["--delegate-option", "novalue"], ["is not KEY=VALUE"]),
    (["--threads", "0"], ["`threads` must be >= 1"]),
    (["--mean", "a,b,c"], ["`--mean` must be a number"]),
    (["--std", "0"], ["must not be 0"]),
])
def test_device_options(model, good_image, args, fragments):
    assert_clean_error(run("predict", model, good_image, *args), *fragments)


@pytest.mark.skipif(__import__("importlib").util.find_spec("tflite_runtime") is not None, reason="tflite_runtime is installed")
def test_runtime_not_installed(model, good_image):
    assert_clean_error(run("predict", model, good_image, "--runtime", "tflite-runtime"),
                       "needs the 'tflite-runtime' package", "pip install")


def test_schema_package_missing(model):
    """The `tflite` schema package blocked at import: one line naming the package (a real process, no cached import)."""
    code = textwrap.dedent(f"""
        import sys

        class BlockTflite:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'tflite':
                    raise ImportError('No module named ' + repr(name))

        sys.meta_path.insert(0, BlockTflite())
        from edgetl.cli import main
        main(['inspect', {str(model)!r}])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=120)
    assert_clean_error(done, "needs the 'tflite' package", "pip install tflite")


@pytest.mark.parametrize("args, fragments", [
    (["--host", "-oProxyCommand=sh"], ["SSH target '-oProxyCommand=sh' is not valid"]),
    (["--host", "pi@pi", "--ssh-option", "-oProxyCommand"], ["SSH option '-oProxyCommand' is not KEY=VALUE"]),
    (["--host", "pi@pi", "--ssh-port", "70000"], ["`--ssh-port` must be in [1, 65535]"]),
    (["--host", "pi@pi", "--remote-edgetl", "'unclosed"], ["cannot be split into words"]),
])
def test_ssh_options(model, args, fragments):
    assert_clean_error(run("bench", model, *args, *FAST), *fragments)


@pytest.mark.parametrize("variable, value, fragment", [
    ("EDGETL_SANDBOX", "sometimes", "EDGETL_SANDBOX='sometimes' is not valid"),
    ("EDGETL_SANDBOX_TIMEOUT", "soon", "EDGETL_SANDBOX_TIMEOUT='soon' is not valid"),
])
def test_sandbox_settings(tmp_path, good_image, variable, value, fragment):
    fresh = write_colour_model(tmp_path / "fresh.tflite", "uint8", labels=("a", "b", "c"))  # not in any cache
    assert_clean_error(run("predict", fresh, good_image, env={variable: value}), fragment)


# === recipes: edgetl train --recipe ===

@pytest.mark.parametrize("content, fragments", [
    (None, ["does not exist"]),
    ("model:\n  backbone: [mobilenet_v2\n", ["is not valid YAML at line"]),
    ("- a\n- b\n", ["must hold a mapping", "list"]),
    ("modle:\n  alpha: 0.35\n", ["Unknown section `modle`", "Did you mean 'model'"]),
    ("model:\n  alph: 0.35\n", ["Unknown key `model.alph`", "Did you mean 'alpha'"]),
    ("model:\n  alpha: wide\n", ["`model.alpha` must be"]),
    ("data:\n  val_fraction: 1.5\n", ["`val_fraction`=1.5 is out of range"]),
    ("!!python/object/apply:os.system ['echo pwned']\n", ["not valid YAML"]),
    (b"model:\n  backbone: caf\xe9\n", ["is not UTF-8 text", "save it as UTF-8"]),
    ("folder", ["is not a regular file"]),
    ("fifo", ["is not a regular file"]),
], ids=["missing", "malformed", "not-a-mapping", "unknown-section", "unknown-key", "wrong-type", "out-of-range",
        "python-tag", "not-utf8", "folder", "fifo"])
def test_recipe(tmp_path, tiny_folder, content, fragments):
    recipe = tmp_path / "recipe.yaml"
    if content == "folder":
        recipe.mkdir()
    elif content == "fifo":
        os.mkfifo(recipe)
    elif isinstance(content, bytes):
        recipe.write_bytes(content)
    elif content is not None:
        recipe.write_text(content)
    # A folder is refused by click itself (usage error, exit 2); everything else by edgetl (exit 1).
    result = run("train", tiny_folder, "--recipe", recipe, "--weights", "none", "--out", tmp_path / "run")
    if content == "folder":
        assert_usage_error(result, "is a directory")
    else:
        assert_clean_error(result, *fragments)
    assert not (tmp_path / "run").exists()


# === run directories: edgetl qat / export RUN_DIR (before TensorFlow loads) ===

@pytest.mark.parametrize("command", ["qat", "export"])
def test_run_dir_without_a_model(tmp_path, command):
    assert_clean_error(run(command, tmp_path / "nowhere"), "does not exist", "Train first")
    (tmp_path / "half").mkdir()
    assert_clean_error(run(command, tmp_path / "half"), "has no trained model")


# === outputs: -o FILE, a full disk ===

def test_output_file_too_large_for_the_disk(tmp_path, model):
    """RLIMIT_FSIZE makes the kernel refuse the write (EFBIG), as a full disk refuses it with ENOSPC."""
    import resource

    out = tmp_path / "bench.json"
    out.write_text("previous result\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    done = cli("bench", model, *FAST, "--json", "-o", out, preexec_fn=limit)
    assert_clean_error(done, "file too large", str(out.parent), "files edgetl finished before are intact")
    assert out.read_text() == "previous result\n"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "model"]  # no temp file left behind


def test_output_is_a_folder(tmp_path, model):
    assert_usage_error(run("bench", model, *FAST, "-o", tmp_path), "is a directory")


def test_output_no_space_left(tmp_path, model, monkeypatch):
    """ENOSPC while writing -o (simulated at the write call): one line, the old file intact."""
    import errno

    from edgetl import _atomic

    out = tmp_path / "result.txt"
    out.write_text("previous\n")

    def full_disk(final, data):
        with _atomic.atomic_path(final) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(data[:10])
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(_atomic, "write_bytes", full_disk)
    result = run("bench", model, *FAST, "-o", out)
    assert_clean_error(result, "no space left on device", "run the same command again")
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# === SSH hosts: edgetl bench --host ===

def _closing_server():
    """A TCP server on 127.0.0.1 that accepts each connection and closes it at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, stop


def test_ssh_host_drops_the_connection_at_once(model):
    if not shutil_which("ssh"):
        pytest.skip("no ssh client")
    server, stop = _closing_server()
    try:
        port = server.getsockname()[1]
        result = run("bench", model, "--host", "pi@127.0.0.1", "--ssh-port", port, "--ssh-timeout", "5", *FAST)
    finally:
        stop.set()
        server.close()
    assert_clean_error(result, "Cannot reach 'pi@127.0.0.1' over SSH", "the connection dropped", "run the same command again")


def test_ssh_host_drops_the_connection_mid_benchmark(tmp_path, model, monkeypatch):
    """Fake ssh/scp on PATH: the device answers, takes the files, then the link dies during the benchmark."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import subprocess, sys
        script = sys.argv[sys.argv.index('--') + 2]
        if ' bench ' in script:
            sys.stderr.write('client_loop: send disconnect: Broken pipe\\n')
            sys.exit(255)
        sys.exit(subprocess.run(['sh', '-c', script]).returncode)  # this machine plays the device
    """))
    (bin_dir / "scp").write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import shutil, sys
        args = sys.argv[sys.argv.index('--') + 1:]
        folder = args[-1].split(':', 1)[1]
        for name in args[:-1]:
            shutil.copy(name, folder)
    """))
    for tool in ("ssh", "scp"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = run("bench", model, "--host", "pi@raspberrypi", "--remote-edgetl", f"{sys.executable} -m edgetl", *FAST)
    assert_clean_error(result, "'pi@raspberrypi'", "the connection dropped", "Broken pipe", "run the same command again")


def shutil_which(name: str):
    import shutil

    return shutil.which(name)


# === interrupts ===

def test_sigint_during_bench_is_one_line_and_exit_130(model):
    process = subprocess.Popen([sys.executable, "-m", "edgetl", "bench", str(model), "--runs", "100000000",
                                "--min-seconds", "60", "--max-seconds", "60", "--threads", "1", "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO),
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        time.sleep(3)  # past start-up, inside the timed loop
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_clean_error(done, "interrupted", code=130)
