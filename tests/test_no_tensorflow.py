"""The device side never imports TensorFlow: import boundary, commands with TF blocked, and a venv without TF."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert")

from device_models import write_colour_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEVICE_MODULES = ("edgetl", "edgetl.cli", "edgetl.bench", "edgetl.evaluate", "edgetl.predict", "edgetl.remote",
                  "edgetl.modelfile", "edgetl.model_metadata", "edgetl.edgetpu", "edgetl.metrics", "edgetl.runtime",
                  "edgetl.runtime.interpreter", "edgetl.runtime.backend", "edgetl.runtime.sandbox",
                  "edgetl.runtime.tensors", "edgetl.runtime.environment", "edgetl.images", "edgetl.data.folder",
                  "edgetl.export", "edgetl.export.variants", "edgetl.export.edgetpu", "edgetl.model.registry",
                  "edgetl.quant", "edgetl.quant.fold", "edgetl._internals")
FAST = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0", "--threads", "1"]
TF_MODULES = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization")


def python(code: str, executable: str = sys.executable, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def test_importing_the_device_modules_does_not_import_tensorflow():
    code = f"""
import importlib, sys
for name in {DEVICE_MODULES!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {TF_MODULES!r})
assert not loaded, loaded
print('ok')
"""
    done = python(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_device_commands_run_with_tensorflow_blocked(tmp_path, tiny_folder):
    """Any attempt to import TensorFlow raises, so a lazy import hidden in a code path fails the command."""
    model = write_colour_model(tmp_path / "m.tflite", "int8")
    image = next((tiny_folder / "red").iterdir())
    commands = [
        ["inspect", str(model)],
        ["predict", str(model), str(image)],
        ["bench", str(model), *FAST],
        ["eval", str(model), str(tiny_folder)],
    ]
    code = textwrap.dedent(f"""
        import sys

        class BlockTensorFlow:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {TF_MODULES!r}:
                    raise ImportError('TensorFlow import attempted: ' + name)

        sys.meta_path.insert(0, BlockTensorFlow())
        from edgetl.cli import main
        for args in {commands!r}:
            try:
                main(args, standalone_mode=False)
            except SystemExit as e:
                if e.code:
                    raise
        print('commands ok')
    """)
    done = python(code)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "commands ok" in done.stdout
    assert "red" in done.stdout and "top-1 accuracy: 1.0000" in done.stdout


@pytest.fixture(scope="module")
def venv_without_tensorflow(tmp_path_factory):
    """A fresh virtualenv with `pip install edgetl` (no extras), built from a copy of the sources."""
    root = tmp_path_factory.mktemp("no_tf_venv")
    source = root / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    if (REPO / "README.md").exists():
        shutil.copy(REPO / "README.md", source)
    shutil.copytree(REPO / "edgetl", source / "edgetl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtualenv: {made.stderr.strip()[-300:]}")
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    installed = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=900,
    )
    if installed.returncode != 0:
        pytest.skip(f"pip cannot install edgetl here (offline?): {installed.stderr.strip()[-500:]}")
    return bin_dir


@pytest.mark.venv
def test_device_commands_in_a_virtualenv_without_tensorflow(venv_without_tensorflow, tmp_path, tiny_folder):
    bin_dir = venv_without_tensorflow
    venv_python = str(bin_dir / "python")
    check = python(f"import importlib.util; print([m for m in {TF_MODULES!r} if importlib.util.find_spec(m)])",
                   executable=venv_python, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.strip() == "[]", check.stdout + check.stderr
    assert "site-packages" in python("import edgetl; print(edgetl.__file__)", venv_python, cwd=tmp_path).stdout

    def run(*args):
        done = subprocess.run([str(bin_dir / "edgetl"), *map(str, args)], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    colour = write_colour_model(tmp_path / "colour.tflite", "int8")
    assert "top-1 accuracy: 1.0000" in run("eval", colour, tiny_folder)
    coral = Path(os.environ.get("EDGETL_SHARED_ASSETS", REPO.parent / "shared" / "assets")) / "coral-test-data"
    if (coral / "mobilenet_v2_1.0_224_quant.tflite").exists():
        model = coral / "mobilenet_v2_1.0_224_quant.tflite"
        top = json.loads(run("predict", model, coral / "parrot.jpg", "--labels", coral / "imagenet_labels.txt", "--json"))
        assert top["predictions"][0]["top"][0]["label"] == "macaw"
    else:  # a user's clone without ../shared: the synthetic model covers the same code paths
        model = colour
        top = json.loads(run("predict", model, next((tiny_folder / "blue").iterdir()), "--json"))
        assert top["predictions"][0]["top"][0]["label"] == "blue"
    assert "fully integer: yes" in run("inspect", model)
    [row] = json.loads(run("bench", model, *FAST, "--json"))["results"]
    assert row["runtime"]["package"] == "ai-edge-litert" and 0 < row["p50_ms"] <= row["p99_ms"]
    imports = python(f"import edgetl.cli, edgetl.bench, edgetl.evaluate, edgetl.remote, sys; "
                     f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TF_MODULES!r}))",
                     executable=venv_python, cwd=tmp_path)
    assert imports.returncode == 0 and imports.stdout.strip() == "[]", imports.stderr


@pytest.mark.venv
def test_inspect_with_numpy_and_the_schema_package_only(tmp_path):
    """No runtime, no Pillow: edgetl inspect needs numpy, click and the flatbuffer schema (`tflite`) alone."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    shutil.copytree(REPO / "edgetl", source / "edgetl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtualenv: {made.stderr.strip()[-300:]}")
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = subprocess.run(pip + ["numpy", "click", "flatbuffers", "tflite"], capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        pytest.skip(f"pip cannot install numpy/click/flatbuffers/tflite here (offline?): {installed.stderr.strip()[-500:]}")
    subprocess.run(pip + ["--no-deps", str(source)], check=True, capture_output=True, timeout=300)
    model = write_colour_model(tmp_path / "colour.tflite", "int8")
    done = subprocess.run([str(bin_dir / "edgetl"), "inspect", str(model)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fully integer: yes" in done.stdout and "labels: red, green, blue" in done.stdout
    missing = python("import importlib.util as u; print([m for m in ('PIL', 'ai_edge_litert', 'tflite_runtime', 'tensorflow') "
                     "if u.find_spec(m)])", executable=str(bin_dir / "python"), cwd=tmp_path)
    assert missing.stdout.strip() == "[]", missing.stdout + missing.stderr
