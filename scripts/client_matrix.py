"""Client matrix: do edgetl's exported files work where its users take them?

For every exported variant of a run (its ``manifest.json``) and every client:

* **loads**: the client opens the file (MediaPipe/Task Library: the
  ImageClassifier is created; runtimes: ``edgetl predict`` exits 0);
* **top-1 = edgetl predict**: the client's best class on each image is the one
  ``edgetl predict`` gives (ai-edge-litert, in this process's environment), or
  one tied with it at the same top score;
* **names right**: the client's name for that class is the training folder's
  name (the manifest's labels), read from the file itself.

Clients, each in its own virtualenv under ``--venvs`` (reused while its
requirements do not change; nothing is cached outside it except pip's own
download cache):

* ``mediapipe``: MediaPipe Tasks ``ImageClassifier`` (Python, mediapipe 1.2.x);
* ``task-library``: the TFLite Task Library ``ImageClassifier`` (tflite-support
  0.4.4; the same C++ as its Android AAR; needs libusb-1.0 at import);
* ``tflite-runtime``: ``edgetl predict --runtime tflite-runtime`` with
  tflite-runtime 2.14, numpy < 2 and edgetl's base dependencies but **no**
  ai-edge-litert (32-bit Raspberry Pi OS, Coral images);
* ``litert`` and ``tensorflow``: ``edgetl predict`` with ai-edge-litert and with
  TensorFlow's own interpreter, in the Python running this script.

Images are resized to the model's input once (``edgetl.images.load_image``) and
given to every client at that size, so the clients' own resize (bilinear, not
Pillow's) is an identity and every client sees the same pixels.

  python scripts/client_matrix.py runs/quickstart/run --images runs/quickstart/data --out docs/clients.md

Needs Python >= 3.11 (or tomli), to read edgetl's base dependencies, and
access to PyPI for the first run of each client.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENVS = Path(tempfile.gettempdir()) / "edgetl-client-venvs"

# Each probe runs as ``python -c PROBE JOB`` (JOB: JSON {"models": {variant: path}, "images": {variant: [png]},
# "runtime"}) and prints {"version", "models": {variant: {"top": [[index, name], ...]} or {"error": text}}}.
_PROBE_HEAD = r'''
import json, sys
job = json.loads(sys.argv[1])
out = {"version": "", "models": {}}
for variant, model in job["models"].items():
    try:
        out["models"][variant] = {"top": classify(model, job["images"][variant])}
    except Exception as e:
        out["models"][variant] = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
'''

MEDIAPIPE_PROBE = r'''
import mediapipe as mp
from mediapipe.tasks import python as tasks
from mediapipe.tasks.python import vision

def classify(model, images):
    options = vision.ImageClassifierOptions(base_options=tasks.BaseOptions(model_asset_path=model), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        best = [classifier.classify(mp.Image.create_from_file(i)).classifications[0].categories[0] for i in images]
    return [[b.index, b.category_name] for b in best]

VERSION = mp.__version__
'''

TASK_LIBRARY_PROBE = r'''
from importlib.metadata import version
from tflite_support.task import core, processor, vision

def classify(model, images):
    options = vision.ImageClassifierOptions(base_options=core.BaseOptions(file_name=model),
                                            classification_options=processor.ClassificationOptions(max_results=1))
    classifier = vision.ImageClassifier.create_from_options(options)
    best = [classifier.classify(vision.TensorImage.create_from_file(i)).classifications[0].categories[0] for i in images]
    return [[b.index, b.category_name] for b in best]

VERSION = version("tflite-support")
'''

# edgetl predict (the function behind the command) with one runtime, for every model in one process.
EDGETL_PROBE = r'''
import json, sys
from edgetl.predict import predict
from edgetl.runtime.interpreter import find_runtime

def classify(model, images):
    result = predict(model, images, top_k=1, runtime=json.loads(sys.argv[1])["runtime"])
    return [[p.indices[0], p.labels[0]] for p in result.predictions]

runtime = find_runtime(json.loads(sys.argv[1])["runtime"])
VERSION = f"{runtime.package} {runtime.version}"
'''


@dataclasses.dataclass(frozen=True)
class Client:
    """One way a user runs a ``.tflite`` classifier.

    Attributes:
      key: command-line name.
      title: what the matrix calls it.
      requirements: pip requirements of its virtualenv (None: the Python running this script).
      probe: Python code defining ``classify(model, images) -> [[index, name], ...]`` and ``VERSION``.
      runtime: ``runtime`` of ``edgetl predict`` (the edgetl probe).
      edgetl: install edgetl (without its dependencies) into the virtualenv.
      forbidden: modules that must not be importable in the virtualenv.
      imports: modules that must import there (else the client is skipped: it does not work on this machine).
      env: extra environment variables of the probe.
    """

    key: str
    title: str
    requirements: Optional[Tuple[str, ...]]
    probe: str = ""
    runtime: str = ""
    edgetl: bool = False
    forbidden: Tuple[str, ...] = ()
    imports: Tuple[str, ...] = ()
    env: Tuple[Tuple[str, str], ...] = ()


def base_dependencies() -> List[str]:
    """edgetl's base dependencies from pyproject.toml, less ai-edge-litert (a runtime client brings its own)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [d for d in project["dependencies"] if not d.replace("_", "-").startswith("ai-edge-litert")]


def clients() -> Dict[str, Client]:
    runtime_dependencies = tuple(base_dependencies())
    items = [
        Client("mediapipe", "MediaPipe Tasks ImageClassifier (Python)", ("mediapipe>=1.2,<1.3",), MEDIAPIPE_PROBE,
               imports=("mediapipe.tasks.python.vision",)),
        Client("task-library", "TFLite Task Library ImageClassifier", ("tflite-support==0.4.4", "numpy<2"),
               TASK_LIBRARY_PROBE, imports=("tflite_support.task.vision",)),
        Client("tflite-runtime", "tflite-runtime, no ai-edge-litert (edgetl predict)",
               ("tflite-runtime==2.14.0", "numpy<2") + runtime_dependencies, EDGETL_PROBE, "tflite-runtime", edgetl=True,
               forbidden=("ai_edge_litert", "tensorflow"), imports=("tflite_runtime.interpreter", "edgetl.predict")),
        Client("litert", "ai-edge-litert (edgetl predict)", None, EDGETL_PROBE, "litert"),
        # With TensorFlow imported, edgetl's sandbox checks each new file in a fresh Python, which imports
        # TensorFlow again (~10 s a file); LiteRT's runs above already ran every file in the sandbox.
        Client("tensorflow", "TensorFlow's interpreter (edgetl predict)", None, EDGETL_PROBE, "tensorflow",
               env=(("EDGETL_SANDBOX", "off"),)),
    ]
    return {client.key: client for client in items}


@dataclasses.dataclass
class Cell:
    """One client x variant result."""

    loads: bool = False
    top1_equal: int = 0
    names_right: int = 0
    images: int = 0
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.loads and self.images > 0 and self.top1_equal == self.names_right == self.images

    def text(self) -> str:
        if not self.loads:
            return f"✗ does not load: {self.error}"
        top = "✓" if self.top1_equal == self.images else f"✗ {self.top1_equal}/{self.images}"
        names = "✓" if self.names_right == self.images else f"✗ {self.names_right}/{self.images}"
        return f"loads ✓, top-1 {top}, names {names}"


@dataclasses.dataclass
class ClientResult:
    """A client's row: its version, setup time and one cell per variant, or why it was skipped."""

    client: Client
    version: str = ""
    setup_seconds: float = 0.0
    cells: Dict[str, Cell] = dataclasses.field(default_factory=dict)
    skipped: str = ""

    @property
    def passed(self) -> bool:
        return not self.skipped and all(cell.passed for cell in self.cells.values())


def _short(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("W0000", "I0000"))]
    return " ".join(lines)[-limit:]


def prepare_venv(client: Client, root: Path, log) -> Tuple[Optional[Path], float, str]:
    """The client's Python: (python path, seconds spent setting it up, '' or why it cannot be set up)."""
    if client.requirements is None:
        return Path(sys.executable), 0.0, ""
    started = time.perf_counter()
    key = hashlib.sha256(json.dumps([client.requirements, sys.version_info[:2]]).encode()).hexdigest()[:12]
    venv = root / f"{client.key}-{key}"
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    ready = venv / "edgetl-ready"
    if not ready.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            return None, time.perf_counter() - started, f"cannot create a virtualenv: {_short(made.stderr)}"
        log(f"{client.key}: pip install {' '.join(client.requirements)}")
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               *client.requirements], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            return None, time.perf_counter() - started, f"pip cannot install {' '.join(client.requirements)}: {_short(done.stderr)}"
        ready.write_text("\n".join(client.requirements) + "\n")
    if client.edgetl:
        with tempfile.TemporaryDirectory(prefix="edgetl-src-") as source:
            for name in ("pyproject.toml", "README.md"):
                shutil.copy(REPO / name, Path(source) / name)
            shutil.copytree(REPO / "edgetl", Path(source) / "edgetl", ignore=shutil.ignore_patterns("__pycache__"))
            done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                   "--no-deps", "--force-reinstall", source], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return None, time.perf_counter() - started, f"pip cannot install edgetl: {_short(done.stderr)}"
    for module in client.forbidden:
        found = subprocess.run([str(python), "-c", f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is not None)"])
        if found.returncode != 0:
            return None, time.perf_counter() - started, f"'{module}' is importable in the {client.key} virtualenv"
    for module in client.imports:
        imported = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True)
        if imported.returncode != 0:
            return None, time.perf_counter() - started, f"'import {module}' fails there: {_short(imported.stderr, 200)}"
    return python, time.perf_counter() - started, ""


def _run(argv: Sequence[str], cwd: Path, extra_env: Sequence[Tuple[str, str]] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(dict(extra_env))
    if Path(argv[0]) == Path(sys.executable):
        env["PYTHONPATH"] = str(REPO)  # this Python runs the repository's edgetl; a client's runs its own copy
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, cwd=str(cwd), env=env)


def probe(client: Client, python: Path, models: Dict[str, str], images: Dict[str, List[str]], cwd: Path) -> dict:
    """Runs ``client``'s probe on ``models``; a process that dies is run again per model to name the one that killed it."""
    code = client.probe + _PROBE_HEAD.replace('out = {"version": ""', 'out = {"version": VERSION')
    job = {"models": models, "images": images, "runtime": client.runtime}
    done = _run([python, "-c", code, json.dumps(job)], cwd, client.env)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    if len(models) == 1:
        variant = next(iter(models))
        return {"version": "", "models": {variant: {"error": _short(done.stderr) or f"exit {done.returncode}"}}}
    merged: dict = {"version": "", "models": {}}
    for variant, model in models.items():
        single = probe(client, python, {variant: model}, images, cwd)
        merged["version"] = merged["version"] or single["version"]
        merged["models"].update(single["models"])
    return merged


def reference_top1(models: Sequence[Tuple[str, Path]], images: Dict[str, List[Path]]) -> Dict[str, List[Tuple[int, ...]]]:
    """``edgetl predict`` with the default runtime, here: per variant and image, the classes tied at the top score."""
    from edgetl.predict import predict

    reference = {}
    for variant, model in models:
        result = predict(model, images[variant], top_k=10**6)
        reference[variant] = [tuple(i for i, score in zip(p.indices, p.scores) if score == p.scores[0])
                              for p in result.predictions]
    return reference


def run_client(client: Client, models: Sequence[Tuple[str, Path]], images: Dict[str, List[Path]],
               reference: Dict[str, List[Tuple[int, ...]]], labels: Sequence[str], venvs: Path,
               log=print) -> ClientResult:
    """Every model through one client; cells compare with ``reference`` (``reference_top1``)."""
    result = ClientResult(client)
    python, result.setup_seconds, result.skipped = prepare_venv(client, venvs, log)
    if python is None:
        return result
    with tempfile.TemporaryDirectory(prefix="edgetl-client-") as work:
        output = probe(client, python, {v: str(m) for v, m in models},
                       {v: [str(p) for p in files] for v, files in images.items()}, Path(work))
    result.version = output["version"]
    for variant, _ in models:
        entry, cell = output["models"][variant], Cell(images=len(images[variant]))
        if "error" in entry:
            cell.error = entry["error"]
        else:
            cell.loads = True
            for (index, name), expected in zip(entry["top"], reference[variant]):
                cell.top1_equal += int(index in expected)
                cell.names_right += int(0 <= index < len(labels) and name == labels[index])
        result.cells[variant] = cell
        log(f"{client.key} {variant}: {cell.text()}")
    return result


def resized_images(manifest: dict, sources: Sequence[Path], work: Path) -> Dict[str, List[Path]]:
    """The images as PNGs at each model's input size (the same pixels for every client)."""
    from edgetl.images import load_image
    from PIL import Image

    sizes = {}
    for model in manifest["models"]:
        shape = model["input"]["shape"]
        sizes[model["variant"]] = (int(shape[1]), int(shape[2]))
    written: Dict[Tuple[int, int], List[Path]] = {}
    for size in set(sizes.values()):
        folder = work / f"{size[0]}x{size[1]}"
        folder.mkdir(parents=True, exist_ok=True)
        written[size] = []
        for index, source in enumerate(sources):
            path = folder / f"{index:03d}_{source.stem}.png"
            Image.fromarray(load_image(source, size)).save(path)
            written[size].append(path)
    return {variant: written[size] for variant, size in sizes.items()}


def find_images(paths: Sequence[Path], per_class: int) -> List[Path]:
    """Image files given directly, or up to ``per_class`` from each sub-folder of a folder given."""
    from edgetl.images import IMAGE_EXTENSIONS

    found: List[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
            continue
        folders = sorted(p for p in path.iterdir() if p.is_dir()) or [path]
        for folder in folders:
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            found.extend(files[:per_class])
    return found


def to_markdown(results: Sequence[ClientResult], variants: Sequence[str], about: Dict[str, str],
                notes: Sequence[str] = ()) -> str:
    lines = ["# Client matrix: edgetl's files in the clients mobile and IoT developers use", "",
             f"Produced by `{about['command']}` on {about['date']} ({about['cpu']}, Python {about['python']}). "
             f"Model: {about['model']}; {about['images']} images per file, given to every client already resized to "
             f"the model's input. Each cell: the client **loads** the file, its **top-1** class on every image equals "
             f"`edgetl predict`'s, and its class **names** are the training folders' names, read from the file.", "",
             "| client | version | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for result in results:
        if result.skipped:
            lines.append(f"| {result.client.title} | – | skipped: {result.skipped} |" + " |" * (len(variants) - 1))
            continue
        cells = [result.cells[v].text() if v in result.cells else "–" for v in variants]
        lines.append(f"| {result.client.title} | {result.version} | " + " | ".join(cells) + " |")
    lines += ["", "Virtualenv setup time of each client on this run (0 s: reused from an earlier run, or the running "
              "Python):", ""]
    lines += [f"- {r.client.title}: {r.setup_seconds:.0f} s" for r in results]
    for note in notes:
        lines += ["", note]
    lines += ["", "A row passes when every cell reads `loads ✓, top-1 ✓, names ✓`. Runtime clients run `edgetl predict` "
              "with that runtime alone; MediaPipe and the Task Library read the file's standard TFLite metadata "
              "(NormalizationOptions, labels.txt in the appended zip) and nothing of edgetl.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="A run directory (its export/manifest.json) or an export folder.")
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="Image files, or a class folder tree.")
    parser.add_argument("--per-class", type=int, default=2, help="Images taken from each class folder of --images.")
    parser.add_argument("--clients", default=",".join(clients()), help="Comma-separated clients to run.")
    parser.add_argument("--venvs", type=Path, default=DEFAULT_VENVS, help="Where the clients' virtualenvs live.")
    parser.add_argument("--out", type=Path, default=None, help="Write the Markdown matrix here (e.g. docs/clients.md).")
    parser.add_argument("--json", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument("--note", action="append", default=[], help="A paragraph for the Markdown (repeatable), "
                                                                    "e.g. the command that made the run.")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from edgetl.run_dir import RunPaths

    export = RunPaths.of(args.run).export if RunPaths.of(args.run).manifest.is_file() else args.run
    manifest = json.loads((export / RunPaths.MANIFEST).read_text(encoding="utf-8"))
    labels = manifest["labels"]
    models = [(m["variant"], export / m["name"]) for m in manifest["models"]]
    variants = [variant for variant, _ in models]
    sources = find_images(args.images, args.per_class)
    if not sources:
        parser.error(f"no images found in {[str(p) for p in args.images]}")
    chosen = [clients()[key.strip()] for key in args.clients.split(",") if key.strip()]
    results: List[ClientResult] = []
    with tempfile.TemporaryDirectory(prefix="edgetl-matrix-") as work:
        images = resized_images(manifest, sources, Path(work))
        reference = reference_top1(models, images)
        for client in chosen:
            results.append(run_client(client, models, images, reference, labels, args.venvs, log=print))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    given = [a for a in (argv if argv is not None else sys.argv[1:])]
    shown = [a for i, a in enumerate(given) if a != "--note" and (i == 0 or given[i - 1] != "--note")]
    about = {"command": "python scripts/client_matrix.py " + " ".join(shown),
             "date": datetime.date.today().isoformat(), "cpu": cpu, "python": platform.python_version(),
             "model": f"{manifest.get('backbone')} alpha {manifest.get('alpha')} @ {manifest.get('input_size')} px, "
                      f"{len(labels)} classes", "images": str(len(sources))}
    if args.out:
        args.out.write_text(to_markdown(results, variants, about, args.note), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps([{"client": r.client.key, "version": r.version, "skipped": r.skipped,
                                          "setup_seconds": round(r.setup_seconds, 1), "passed": r.passed,
                                          "cells": {v: dataclasses.asdict(c) for v, c in r.cells.items()}}
                                         for r in results], indent=2), encoding="utf-8")
    for result in results:
        state = f"skipped ({result.skipped})" if result.skipped else ("passed" if result.passed else "FAILED")
        print(f"{result.client.title}: {state}")
    return 0 if all(r.passed or r.skipped for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
