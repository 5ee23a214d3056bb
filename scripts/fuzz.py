"""Fuzzes the edgetl CLI with mutated .tflite files and the image loader with mutated images.

Every case runs in a long-lived driver process that calls the CLI's ``main`` in
process, exactly as ``edgetl`` runs it, so the driver is the CLI's parent
process: if edgetl let a native crash or a hang through, the driver dies or
stops answering. The harness (this process) gives each case a deadline,
counts driver deaths (parent crashes) and missed deadlines (hangs), restarts
the driver and goes on with the next case.

Model cases mutate valid models (generated colour classifiers, plus the Coral
test models when ../shared/assets is present): bit flips, byte overwrites,
truncation, splices from another model, chunk insertion/deletion, and
structure-aware edits (tensor shapes, types, op inputs/outputs, op codes,
buffer sizes, quantization, op options) that keep the flatbuffer well formed
and so reach the TFLite runtime, and edits confined to the standard TFLite
metadata (the ``TFLITE_METADATA`` buffer, or the zip of associated files after
the flatbuffer) that leave the model itself intact. Each case runs one of inspect / predict /
bench / eval. Two regression seeds always run: a model that crashes LiteRT
(SIGSEGV) and one whose inference never ends.

Image cases mutate PNG / JPEG / GIF / BMP / WebP files of every mode edgetl
reads (including 16-bit, CMYK, palette and animated) and call
``edgetl.images.load_image``.

Usage:
  python scripts/fuzz.py --cases 1000 --image-cases 1000 --seed 1 --json /tmp/fuzz.json
  python scripts/fuzz.py --cases 100 --image-cases 200     # what tests/test_fuzz.py runs

Exit status 1 when a parent crash, a hang or an unclean failure (a traceback,
an 'unexpected' error, an exception other than ImageReadError) happened.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED_CORAL = Path(os.environ.get("EDGETL_SHARED_ASSETS", REPO.parent / "shared" / "assets")) / "coral-test-data"
CORAL_SEEDS = ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v2_1.0_224_quant.tflite")
COMMANDS = ("inspect", "predict", "bench", "eval")
BENCH_FAST = ["--runs", "1", "--warmup", "0", "--min-seconds", "0", "--warmup-seconds", "0", "--max-seconds", "5",
              "--threads", "1", "--no-progress"]
# A probe that hangs is killed after this many seconds (the regression seed hangs on purpose).
SANDBOX_TIMEOUT = 3.0
# The harness's own deadline per case: well past the probe's, so only an unguarded hang trips it.
CASE_TIMEOUT = 60.0
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_INTS = (0, 1, -1, 2, 3, 255, 256, 65535, 1_000_000, 2**31 - 1, -(2**31))


# === seeds ===

def model_seeds(use_shared: bool = True) -> Dict[str, bytes]:
    """Valid models to mutate: generated colour classifiers, and the small Coral models when present."""
    sys.path.insert(0, str(REPO / "tests"))
    from device_models import build_colour_model, colour_metadata

    from edgetl.export.metadata import embed_metadata

    seeds = {}
    for dtype in ("float32", "int8", "uint8"):
        # As edgetl exports them: its own metadata, the standard metadata and the labels.txt zip.
        seeds[f"colour_{dtype}"] = embed_metadata(build_colour_model(dtype), colour_metadata(dtype))
    seeds["colour_uint8_dynamic"] = build_colour_model("uint8", dynamic_batch=True)
    if use_shared:
        for name in CORAL_SEEDS:
            path = SHARED_CORAL / name
            if path.is_file():
                seeds[name] = path.read_bytes()
    return seeds


def regression_models() -> Dict[str, bytes]:
    """Known-bad models every run includes: a runtime crasher and a never-ending inference."""
    sys.path.insert(0, str(REPO / "tests"))
    from device_models import build_crashing_model, build_hanging_model

    return {"regression_crash": build_crashing_model(), "regression_hang": build_hanging_model()}


def image_seeds() -> Dict[str, bytes]:
    """Small valid images of every format and mode the loader handles."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB")
    seeds: Dict[str, bytes] = {}

    def save(name: str, image, fmt: str, **options) -> None:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        seeds[name] = buffer.getvalue()

    save("rgb.png", rgb, "PNG")
    save("rgba.png", rgb.convert("RGBA"), "PNG")
    save("palette.png", rgb.convert("P"), "PNG")
    save("grey.png", rgb.convert("L"), "PNG")
    save("deep16.png", Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)), "PNG")
    save("rgb.jpg", rgb, "JPEG", quality=90)
    save("progressive.jpg", rgb, "JPEG", quality=80, progressive=True)
    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    save("rgb.bmp", rgb, "BMP")
    save("lossy.webp", rgb, "WEBP", quality=80)
    save("lossless.webp", rgb, "WEBP", lossless=True)
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P"), rgb.rotate(180).convert("P")]
    save("animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:])
    return seeds


# === mutations ===

def mutate_bytes(rng: random.Random, data: bytes, others: List[bytes]) -> Tuple[bytes, str]:
    """One byte-level mutation: flips, overwrites, truncation, splice, chunk insert/delete."""
    buffer = bytearray(data)
    kind = rng.choice(("flip", "overwrite", "truncate", "splice", "insert", "delete"))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            index = rng.randrange(len(buffer))
            buffer[index] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        for _ in range(rng.randint(1, 4)):
            buffer[rng.randrange(len(buffer))] = rng.choice(INTERESTING + (rng.randrange(256),))
    elif kind == "truncate":
        buffer = buffer[:rng.randrange(0, len(buffer))]
    elif kind == "splice":
        other = rng.choice(others)
        start, source, length = rng.randrange(len(buffer)), rng.randrange(len(other)), rng.randint(1, 512)
        buffer[start:start + length] = other[source:source + length]
    elif kind == "insert":
        start = rng.randrange(len(buffer))
        buffer[start:start] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        start = rng.randrange(len(buffer))
        del buffer[start:start + rng.randint(1, 64)]
    return bytes(buffer), kind


def _structural_edit(rng: random.Random, model) -> str:
    from ai_edge_litert import schema_py_generated as schema

    graph = rng.choice(model.subgraphs)
    tensors, operators = graph.tensors or [], graph.operators or []
    kind = rng.choice(("shape", "op_input", "op_output", "graph_io", "type", "tensor_buffer", "opcode_index",
                       "op_code", "buffer_data", "quantization", "options"))
    pick = lambda: rng.choice(INTERESTING_INTS + (rng.randrange(max(len(tensors), 1)),))  # noqa: E731
    if kind == "shape" and tensors:
        tensor = rng.choice(tensors)
        shape = list(tensor.shape) if tensor.shape is not None else []
        if shape and rng.random() < 0.8:
            shape[rng.randrange(len(shape))] = rng.choice(INTERESTING_INTS)
        else:
            shape = [rng.choice((1, 2, 3, 8)) for _ in range(rng.randint(0, 5))]
        tensor.shape = shape
    elif kind == "op_input" and operators:
        op = rng.choice(operators)
        inputs = list(op.inputs) if op.inputs is not None else []
        if inputs and rng.random() < 0.7:
            inputs[rng.randrange(len(inputs))] = pick()
        elif inputs:
            inputs.pop(rng.randrange(len(inputs)))
        else:
            inputs = [pick()]
        op.inputs = inputs
    elif kind == "op_output" and operators:
        op = rng.choice(operators)
        op.outputs = [pick() for _ in range(rng.randint(0, 2))]
    elif kind == "graph_io":
        if rng.random() < 0.5:
            graph.inputs = [pick() for _ in range(rng.randint(0, 2))]
        else:
            graph.outputs = [pick() for _ in range(rng.randint(0, 2))]
    elif kind == "type" and tensors:
        rng.choice(tensors).type = rng.randrange(0, 20)
    elif kind == "tensor_buffer" and tensors:
        rng.choice(tensors).buffer = rng.choice(INTERESTING_INTS[:9] + (rng.randrange(len(model.buffers or [1])),))
    elif kind == "opcode_index" and operators:
        rng.choice(operators).opcodeIndex = rng.choice((0, 1, 2, 7, 255, 65535, rng.randrange(len(model.operatorCodes))))
    elif kind == "op_code" and model.operatorCodes:
        code = rng.choice(model.operatorCodes)
        value = rng.randrange(0, 160)
        code.builtinCode, code.deprecatedBuiltinCode = value, min(value, 127)
        if rng.random() < 0.3:
            code.version = rng.choice((0, 1, 2, 3, 99))
    elif kind == "buffer_data":
        filled = [b for b in (model.buffers or []) if b.data is not None and len(b.data)]
        if filled:
            buffer = rng.choice(filled)
            buffer.data = buffer.data[:rng.randrange(len(buffer.data))]
    elif kind == "quantization" and tensors:
        tensor = rng.choice(tensors)
        params = tensor.quantization or schema.QuantizationParametersT()
        params.scale = [rng.choice((0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf")))] * rng.randint(0, 3)
        params.zeroPoint = [rng.choice(INTERESTING_INTS)] * rng.randint(0, 3)
        params.quantizedDimension = rng.choice((0, 1, 3, 7, 100))
        tensor.quantization = params
    elif kind == "options" and operators:
        op = rng.choice(operators)
        options = op.builtinOptions
        if options is not None:
            for name, value in vars(options).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if rng.random() < 0.5:
                    setattr(options, name, rng.choice((0, 1, -1, 2, 127, 3.5)) if isinstance(value, float)
                            else rng.choice((0, 1, -1, 2, 7, 127)))
        else:
            op.builtinOptionsType = rng.randrange(0, 120)
    return kind


def mutate_structure(rng: random.Random, data: bytes) -> Optional[Tuple[bytes, str]]:
    """1-3 structure-aware edits; None when the edited model cannot be serialised (the caller draws again)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    kinds = [_structural_edit(rng, model) for _ in range(rng.randint(1, 3))]
    try:
        builder = flatbuffers.Builder(len(data) + 1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    except Exception:  # noqa: BLE001 - a value out of its field's range
        return None
    return bytes(builder.Output()), "struct:" + "+".join(kinds)


def mutate_metadata(rng: random.Random, data: bytes) -> Optional[Tuple[bytes, str]]:
    """Byte edits inside the standard metadata only: its flatbuffer (found by its M001 identifier) or the appended zip.

    None when ``data`` has neither.
    """
    regions = []
    identifier = data.find(b"M001")
    if identifier >= 4:
        regions.append(("metadata", identifier - 4, min(len(data), identifier + 800)))
    zip_start = data.find(b"PK\x03\x04")
    if zip_start > 0:
        regions.append(("zip", zip_start, len(data)))
    if not regions:
        return None
    name, start, end = rng.choice(regions)
    buffer = bytearray(data)
    kind = rng.choice(("flip", "overwrite", "truncate"))
    if kind == "truncate":
        cut = rng.randrange(start, end)
        return bytes(buffer[:cut]), f"{name}:truncate@{cut}"
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(start, end)
        buffer[position] = buffer[position] ^ (1 << rng.randrange(8)) if kind == "flip" else rng.choice(INTERESTING)
    return bytes(buffer), f"{name}:{kind}"


def fix_png_header(data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    """Rewrites a PNG's IHDR width/height (with a valid CRC) to reach the size checks past the CRC check."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 33:
        return data, "png-dims(skip)"
    width, height = (rng.choice((0, 1, 2, 4096, 20_000, 65_535, 2**31 - 1)) for _ in range(2))
    chunk = data[12:16] + struct.pack(">II", width, height) + data[24:29]
    return data[:16] + chunk[4:] + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + data[33:], f"png-dims {width}x{height}"


# === cases ===

def model_case(index: int, seed: int, seeds: Dict[str, bytes], regressions: Dict[str, bytes]) -> Tuple[bytes, str]:
    """Bytes and description of model case ``index`` (deterministic in ``seed`` and ``index``)."""
    names = list(regressions)
    if index < len(names):
        return regressions[names[index]], names[index]
    rng = random.Random(seed * 1_000_003 + index)
    others = list(seeds.values())
    while True:
        name = rng.choice(list(seeds))
        draw = rng.random()
        if draw < 0.2:
            edited = mutate_metadata(rng, seeds[name])
            if edited is not None:
                return edited[0], f"{name} {edited[1]}"
            continue
        if draw < 0.6:
            data, kind = mutate_bytes(rng, seeds[name], others)
            return data, f"{name} bytes:{kind}"
        mutated = mutate_structure(rng, seeds[name])
        if mutated is not None:
            return mutated[0], f"{name} {mutated[1]}"


def image_case(index: int, seed: int, seeds: Dict[str, bytes]) -> Tuple[bytes, str, str]:
    """Bytes, file suffix and description of image case ``index``."""
    rng = random.Random(seed * 2_000_003 + index)
    name = rng.choice(list(seeds))
    data = seeds[name]
    if name.endswith(".png") and rng.random() < 0.15:
        data, kind = fix_png_header(data, rng)
    else:
        data, kind = mutate_bytes(rng, data, list(seeds.values()))
    return data, Path(name).suffix, f"{name} {kind}"


# === the driver (child) ===

def driver_main() -> None:
    """Reads cases as JSON lines on stdin, runs each in this process, answers one JSON line per case."""
    answer = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # native code writes to fds 1/2; only the answers reach the harness
    os.dup2(quiet, 2)
    from click.testing import CliRunner

    from edgetl.cli import main
    from edgetl.images import ImageReadError, load_image

    runner = CliRunner()
    for line in sys.stdin:
        case = json.loads(line)
        start = time.monotonic()
        if case["kind"] == "cli":
            result = runner.invoke(main, case["args"])
            escaped = result.exception if not isinstance(result.exception, SystemExit) else None
            errors = [row for row in result.stderr.splitlines() if row.startswith("Error:")]
            outcome = {"exit": result.exit_code, "errors": errors, "stderr_lines": len(result.stderr.splitlines()),
                       "traceback": "Traceback" in result.output or escaped is not None,
                       "exception": repr(escaped)[:300] if escaped is not None else None}
        else:
            try:
                pixels = load_image(case["path"], 32)
                outcome = {"exit": 0, "shape": list(pixels.shape)}
            except ImageReadError as e:
                outcome = {"exit": 1, "errors": [e.reason]}
            except BaseException as e:  # noqa: BLE001 - anything else is a finding
                outcome = {"exit": 1, "exception": f"{type(e).__name__}: {e}"[:300], "errors": []}
        outcome.update(id=case["id"], seconds=round(time.monotonic() - start, 4))
        answer.write(json.dumps(outcome) + "\n")


# === the harness ===

class Driver:
    """A driver process and the case it is running."""

    def __init__(self, env: Dict[str, str]):
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--driver"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, cwd=str(REPO))
        self.pending = b""

    def run(self, case: Dict[str, Any], timeout: float) -> Tuple[str, Optional[Dict[str, Any]]]:
        """('ok', answer), ('hang', None) or ('died', {'signal': ...})."""
        try:
            self.process.stdin.write((json.dumps(case) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return "died", {"signal": self._wait_signal()}
        deadline = time.monotonic() + timeout
        out = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                return "hang", None
            ready, _, _ = select.select([out], [], [], remaining)
            if ready:
                chunk = os.read(out, 65536)
                if not chunk:
                    return "died", {"signal": self._wait_signal()}
                self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return "ok", json.loads(line)

    def _wait_signal(self) -> str:
        code = self.process.wait(timeout=30)
        return signal.Signals(-code).name if code < 0 else f"exit {code}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def _classify_cli(answer: Dict[str, Any]) -> str:
    if answer.get("traceback"):
        return "unclean"
    if answer["exit"] == 0:
        return "ok"
    errors = answer.get("errors") or []
    if len(errors) != 1 or errors[0].startswith("Error: unexpected"):
        return "unclean"
    if "crashed the TFLite runtime" in errors[0]:
        return "child_crash_caught"
    if "did not finish" in errors[0]:
        return "child_hang_caught"
    return "clean_error"


def run_fuzz(cases: int = 100, image_cases: int = 200, seed: int = 0, use_shared: bool = True,
             case_timeout: float = CASE_TIMEOUT, log: Callable[[str], None] = lambda line: None) -> Dict[str, Any]:
    """Runs the model and image cases; returns counts and the findings.

    Returns:
      A dictionary: cases, image_cases, parent_crashes, hangs, unclean, outcome
      counts per kind, findings (description of each crash/hang/unclean case),
      seconds, seeds used.
    """
    seeds = model_seeds(use_shared)
    regressions = regression_models()
    pictures = image_seeds()
    work = Path(tempfile.mkdtemp(prefix="edgetl-fuzz-"))
    env = dict(os.environ)
    env.update(EDGETL_CACHE_DIR=str(work / "cache"), EDGETL_SANDBOX_TIMEOUT=str(SANDBOX_TIMEOUT),
               PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from device_models import write_colour_model

    folder = work / "images"
    for name, colour in (("red", (220, 40, 40)), ("green", (40, 200, 60)), ("blue", (40, 60, 220))):
        (folder / name).mkdir(parents=True)
        for number in range(2):
            Image.new("RGB", (8, 8), colour).save(folder / name / f"{number}.png")
    image = folder / "red" / "0.png"
    write_colour_model(work / "reference.tflite")  # an unmutated model, so eval/predict paths stay reachable
    counts: Dict[str, collections.Counter] = {"model": collections.Counter(), "image": collections.Counter()}
    findings: List[Dict[str, Any]] = []
    start = time.monotonic()
    driver = Driver(env)
    total = cases + image_cases
    try:
        plan = [("model", i) for i in range(cases)] + [("image", i) for i in range(image_cases)]
        for number, (family, index) in enumerate(plan):
            if family == "model":
                data, description = model_case(index, seed, seeds, regressions)
                path = work / "case.tflite"
                path.write_bytes(data)
                command = COMMANDS[(index + 1) % len(COMMANDS)]  # the regression seeds run predict and bench
                args = {"inspect": ["inspect", str(path)], "predict": ["predict", str(path), str(image)],
                        "bench": ["bench", str(path), *BENCH_FAST], "eval": ["eval", str(path), str(folder), "--no-progress"]}[command]
                case = {"id": number, "kind": "cli", "args": args}
                description = f"{command} {description}"
            else:
                data, suffix, description = image_case(index, seed, pictures)
                path = work / f"case{suffix}"
                path.write_bytes(data)
                case = {"id": number, "kind": "image", "path": str(path)}
            status, answer = driver.run(case, case_timeout)
            if status == "hang":
                kind = "hang"
            elif status == "died":
                kind = "parent_crash"
            elif family == "model":
                kind = _classify_cli(answer)
            else:
                kind = "unclean" if answer.get("exception") else ("ok" if answer["exit"] == 0 else "clean_error")
            counts[family][kind] += 1
            if kind in ("hang", "parent_crash", "unclean"):
                keep = work / "findings" / f"{number:05d}_{kind}{path.suffix}"
                keep.parent.mkdir(exist_ok=True)
                shutil.copy(path, keep)
                findings.append({"case": number, "family": family, "kind": kind, "what": description,
                                 "detail": answer, "file": str(keep)})
                log(f"case {number}: {kind}: {description} {answer}")
                if status != "ok":
                    driver = Driver(env)
            if (number + 1) % 100 == 0:
                log(f"{number + 1}/{total} cases, {time.monotonic() - start:.0f} s")
            path.unlink()
    finally:
        driver.close()
    model_counts, image_counts = counts["model"], counts["image"]
    summary = {
        "cases": cases, "image_cases": image_cases, "seed": seed,
        "parent_crashes": model_counts["parent_crash"] + image_counts["parent_crash"],
        "hangs": model_counts["hang"] + image_counts["hang"],
        "unclean": model_counts["unclean"] + image_counts["unclean"],
        "child_crashes_caught": model_counts["child_crash_caught"],
        "child_hangs_caught": model_counts["child_hang_caught"],
        "model_outcomes": dict(model_counts), "image_outcomes": dict(image_counts),
        "model_seeds": list(seeds) + list(regressions), "image_seeds": list(pictures),
        "findings": findings, "seconds": round(time.monotonic() - start, 1),
        "work_dir": str(work),
    }
    if not findings:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="mutated .tflite cases (2 regression seeds included)")
    parser.add_argument("--image-cases", type=int, default=1000, help="mutated image cases")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-shared", action="store_true", help="only generated seed models, not ../shared Coral models")
    parser.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT, help="seconds before a case counts as a hang")
    parser.add_argument("--json", default=None, help="also write the summary here")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver:
        driver_main()
        return 0
    summary = run_fuzz(args.cases, args.image_cases, args.seed, use_shared=not args.no_shared, case_timeout=args.case_timeout,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    shown = {k: v for k, v in summary.items() if k not in ("findings",)}
    print(json.dumps(shown, indent=2))
    for finding in summary["findings"]:
        print(f"FINDING case {finding['case']} {finding['kind']}: {finding['what']} -> {finding['detail']} ({finding['file']})")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if summary["parent_crashes"] or summary["hangs"] or summary["unclean"] else 0


if __name__ == "__main__":
    sys.exit(main())
