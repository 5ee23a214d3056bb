"""Bytes the standard TFLite metadata adds to each exported file, and the int8 size ratio with and without it.

For every file of an export folder (its ``manifest.json``): the file as written
(edgetl's metadata entry + ``TFLITE_METADATA`` + the ``labels.txt`` zip) against the same
file with only edgetl's entry, as edgetl wrote it before the standard metadata
(the model repacked the same way, so the difference is the metadata alone).
Needs the schema's object API (ai-edge-litert or TensorFlow).

  python scripts/metadata_cost.py runs/quickstart/run/export
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def edgetl_only(data: bytes) -> bytes:
    """``data`` without the standard metadata: no TFLITE_METADATA entry or buffer, no appended zip."""
    import flatbuffers

    from edgetl import tflite_schema
    from edgetl.model_metadata import TFLITE_IDENTIFIER, _sharing_builder

    schema = tflite_schema.object_api()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    names = [(m.name.decode() if isinstance(m.name, bytes) else m.name) for m in model.metadata]
    [entry] = [m for m, name in zip(model.metadata, names) if name == "TFLITE_METADATA"]
    model.metadata = [m for m, name in zip(model.metadata, names) if name != "TFLITE_METADATA"]
    if entry.buffer != len(model.buffers) - 1:
        raise SystemExit("TFLITE_METADATA is not the last buffer: not a file edgetl wrote")
    model.buffers.pop()
    builder = _sharing_builder(flatbuffers)(len(data))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="An export folder (with manifest.json).")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    manifest = json.loads((args.export / "manifest.json").read_text(encoding="utf-8"))
    sizes = {}
    print(f"{'variant':9} {'with metadata':>14} {'edgetl only':>11} {'cost B':>7}")
    for model in manifest["models"]:
        data = (args.export / model["name"]).read_bytes()
        before = len(edgetl_only(data))
        sizes[model["variant"]] = (before, len(data))
        print(f"{model['variant']:9} {len(data):>14,} {before:>10,} {len(data) - before:>7,}")
    if "fp32" in sizes:
        for variant in ("int8", "qat-int8"):
            if variant in sizes:
                before = sizes[variant][0] / sizes["fp32"][0]
                after = sizes[variant][1] / sizes["fp32"][1]
                print(f"{variant} / fp32: {after:.4f} with the metadata, {before:.4f} edgetl entry only ({after - before:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
