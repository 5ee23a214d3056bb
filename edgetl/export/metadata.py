"""The metadata every exported file carries: edgetl's metadata and the standard TFLite metadata, the labels zip last.

One repack of the converter's flatbuffer adds two metadata entries:
``edgetl.metadata`` (edgetl's JSON, everything the device side needs) and
``TFLITE_METADATA`` (what MediaPipe Tasks and the TFLite Task Library read:
image input, NormalizationOptions, labels as a ``TENSOR_AXIS_LABELS`` file).
Then ``labels.txt`` goes into a zip appended after the flatbuffer. Any later
step that re-serialises the file (``carry_metadata`` after the Edge TPU
compiler) appends the zip again: it must always come last.

About 1 KB per file: the metadata flatbuffer is a few hundred bytes and the
repack writes each distinct vector once (``model_metadata._sharing_builder``), so
the file does not grow the ~100 KB a rebuild by mediapipe's or tflite-support's
writer adds. Outputs are bit-identical: no tensor, op or buffer changes.
"""

from __future__ import annotations

from typing import Optional

from edgetl.model_metadata import METADATA_NAME, EdgetlMetadata, embed_entries, find_edgetl_entry, read_metadata
from edgetl.tflite_metadata import (LABELS_FILE, METADATA_BUFFER_NAME, MIN_PARSER_VERSION, AssociatedFile,
                                    TensorMetadata, TFLiteMetadata, append_associated_files, build_metadata,
                                    read_associated_files)

# Names of the input and output in the standard metadata (MediaPipe names its classification head after the output).
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def _input_range(metadata: EdgetlMetadata):
    """(min, max) per channel of the values the input tensor holds for pixels 0..255."""
    dtype = metadata.input.dtype
    if dtype == "uint8":
        return (0.0,) * 3, (255.0,) * 3
    if dtype == "int8":
        return (-128.0,) * 3, (127.0,) * 3
    low = tuple(round((0.0 - m) / s, 6) for m, s in zip(metadata.mean, metadata.std))
    high = tuple(round((255.0 - m) / s, 6) for m, s in zip(metadata.mean, metadata.std))
    return low, high


def classifier_metadata(metadata: EdgetlMetadata) -> TFLiteMetadata:
    """The standard TFLite metadata of an edgetl image classifier, from its edgetl metadata.

    The input's NormalizationOptions are edgetl's mean/std: what a client
    computes from [0, 255] pixels for a float input (0 and 1: edgetl's float
    files normalise inside the graph), and for an int8 file with the
    normalisation folded into its input quantization, the values that,
    quantized with the input's scale and zero point, give back the raw pixel
    (as Google's quantized MobileNets state 127.5/127.5): MediaPipe and the
    Task Library feed uint8 inputs raw pixels.

    Args:
      metadata: edgetl's metadata, embedded next to it.

    Returns:
      The metadata (one input, one output with ``labels.txt``).
    """
    height, width = (int(metadata.input.shape[1]), int(metadata.input.shape[2])) if len(metadata.input.shape) == 4 else (0, 0)
    low, high = _input_range(metadata)
    alpha = f" alpha {metadata.alpha:g}" if metadata.alpha is not None else ""
    image = TensorMetadata(
        name=INPUT_NAME, description="RGB image; (pixel - mean) / std, pixels in [0, 255].", content="ImageProperties",
        color_space="RGB", image_size=(width, height) if width else None,
        mean=tuple(float(m) for m in metadata.mean), std=tuple(float(s) for s in metadata.std),
        process_units=("NormalizationOptions",), stats_min=low, stats_max=high,
    )
    scores = TensorMetadata(
        name=OUTPUT_NAME, description=f"Probabilities of the {len(metadata.labels)} labels respectively.",
        content="FeatureProperties", stats_min=(0.0,), stats_max=(1.0,),
        associated_files=(AssociatedFile(LABELS_FILE, "TENSOR_AXIS_LABELS", "Class names, one per output."),),
    )
    return TFLiteMetadata(
        name=f"{metadata.backbone or 'edgetl'}{alpha} image classifier",
        description=f"{metadata.variant or 'edgetl'} file exported by edgetl {metadata.edgetl_version or ''}".rstrip() + ".",
        min_parser_version=MIN_PARSER_VERSION, inputs=(image,), outputs=(scores,),
    )


def embed_metadata(data: bytes, metadata: EdgetlMetadata, info=None) -> bytes:
    """Converter output -> the file edgetl writes: edgetl metadata + standard metadata entries, ``labels.txt`` zip last.

    Input and output tensors the converter left unnamed get the metadata's
    names (MediaPipe misbehaves without them).

    Args:
      data: the converter's ``.tflite`` bytes (one image input, one output).
      metadata: edgetl's metadata entry.
      info: ``parse_model(data)`` when the caller has it already.

    Returns:
      The new file's bytes.

    Raises:
      ConfigError: a label holds a line break.
      MissingDependencyError: no schema object API (export side: ai-edge-litert or TensorFlow).
    """
    from edgetl.labels import labels_text
    from edgetl.modelfile import parse_model

    labels = labels_text(metadata.labels).encode("utf-8")
    info = info if info is not None else parse_model(data, "exported model")
    names = {info.inputs[0].index: INPUT_NAME, info.outputs[0].index: OUTPUT_NAME}
    entries = {METADATA_NAME: metadata.to_json().encode("utf-8"),
               METADATA_BUFFER_NAME: build_metadata(classifier_metadata(metadata))}
    return append_associated_files(embed_entries(data, entries, default_names=names), {LABELS_FILE: labels})


def carry_metadata(source: bytes, target: bytes, metadata: Optional[EdgetlMetadata] = None) -> bytes:
    """Puts ``source``'s metadata back into ``target`` (a file another tool re-serialised, e.g. the Edge TPU compiler).

    Entries ``target`` lost (edgetl's metadata, the standard TFLite metadata)
    are copied from ``source`` (``metadata`` replaces edgetl's when given;
    edgetl's entry is written under its current name), and the zip of
    associated files is appended again when ``target`` lacks it.

    Returns:
      ``target`` with the metadata; ``target`` itself when nothing was lost.
    """
    entries = read_metadata(source)
    wanted = {name: value for name, value in entries.items() if name == METADATA_BUFFER_NAME}
    own = find_edgetl_entry(entries)
    if own is not None:
        wanted[METADATA_NAME] = own
    if metadata is not None:
        wanted[METADATA_NAME] = metadata.to_json().encode("utf-8")
    present = read_metadata(target)
    missing = {name: value for name, value in wanted.items() if present.get(name) != value}
    result = embed_entries(target, missing) if missing else target
    files = read_associated_files(source)
    if files and not read_associated_files(result):
        result = append_associated_files(result, files)
    return result


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "carry_metadata", "classifier_metadata", "embed_metadata"]
