"""The standard TFLite Model Metadata (``TFLITE_METADATA``, identifier ``M001``) and its zip of associated files.

This is the metadata MediaPipe Tasks and the TFLite Task Library read: the
input's image properties and ``NormalizationOptions``, the output's labels as
an associated file of type ``TENSOR_AXIS_LABELS``. The flatbuffer is stored in
the model's buffer named ``TFLITE_METADATA``; the files it names (``labels.txt``)
live in a zip appended after the model's flatbuffer.

Schema: ``tensorflow_lite_support/metadata/metadata_schema.fbs`` in
github.com/tensorflow/tflite-support (metadata schema 1.5.0). Only fields of
version 1.0.0 are written, so ``min_parser_version`` is "1.0.0", as Google's
own writers set it. The vtable slots below are that schema's fields in
declaration order (0-based; a union field takes two slots, its type then its
value).

Written by hand with the ``flatbuffers`` package's ``Builder`` and read by a
bounds-checked table walker, because no maintained library fits: tflite-support
(the reference writer/reader) pins protobuf < 4, needs libusb at import and has
had no release since 2023; mediapipe 1.x ships a metadata writer whose native
module is missing from its wheels, and mediapipe 0.10.21's pulls ~1 GB (jax)
and numpy < 2; both rebuild the whole model flatbuffer. No generated code is
copied here. The zip is written and read with Python's ``zipfile``.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zipfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgetl.errors import ModelFileError

METADATA_BUFFER_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
# An associated file larger than this is not read (labels of 100,000 classes take ~2 MB).
MAX_ASSOCIATED_FILE_BYTES = 16 * 2**20
# Vectors longer than this mean a damaged or hostile buffer (a classifier has a handful of tensors and files);
# the bound keeps the walk linear in the buffer's size.
MAX_VECTOR_ITEMS = 256

# Enums of metadata_schema.fbs, value -> name.
CONTENT_PROPERTIES = {1: "FeatureProperties", 2: "ImageProperties", 3: "BoundingBoxProperties", 4: "AudioProperties"}
PROCESS_UNIT_OPTIONS = {1: "NormalizationOptions", 2: "ScoreCalibrationOptions", 3: "ScoreThresholdingOptions",
                        4: "BertTokenizerOptions", 5: "SentencePieceTokenizerOptions", 6: "RegexTokenizerOptions"}
COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
ASSOCIATED_FILE_TYPES = {0: "UNKNOWN", 1: "DESCRIPTIONS", 2: "TENSOR_AXIS_LABELS", 3: "TENSOR_VALUE_LABELS",
                         4: "TENSOR_AXIS_SCORE_CALIBRATION", 5: "VOCABULARY", 6: "SCANN_INDEX_FILE"}


def _codes(names: Mapping[int, str]) -> Dict[str, int]:
    return {name: value for value, name in names.items()}


# vtable slots, one class per table of metadata_schema.fbs.
class _ModelMetadata:
    NAME, DESCRIPTION, VERSION, SUBGRAPH_METADATA, AUTHOR, LICENSE, ASSOCIATED_FILES, MIN_PARSER_VERSION = range(8)
    FIELDS = 8


class _SubGraphMetadata:
    NAME, DESCRIPTION, INPUT_TENSOR_METADATA, OUTPUT_TENSOR_METADATA, ASSOCIATED_FILES = range(5)
    INPUT_PROCESS_UNITS, OUTPUT_PROCESS_UNITS = 5, 6
    FIELDS = 7


class _TensorMetadata:
    NAME, DESCRIPTION, DIMENSION_NAMES, CONTENT, PROCESS_UNITS, STATS, ASSOCIATED_FILES = range(7)
    FIELDS = 7


class _Content:
    CONTENT_PROPERTIES_TYPE, CONTENT_PROPERTIES, RANGE = range(3)
    FIELDS = 3


class _ImageProperties:
    COLOR_SPACE, DEFAULT_SIZE = range(2)
    FIELDS = 2


class _ImageSize:
    WIDTH, HEIGHT = range(2)
    FIELDS = 2


class _ProcessUnit:
    OPTIONS_TYPE, OPTIONS = range(2)
    FIELDS = 2


class _NormalizationOptions:
    MEAN, STD = range(2)
    FIELDS = 2


class _Stats:
    MAX, MIN = range(2)
    FIELDS = 2


class _AssociatedFile:
    NAME, DESCRIPTION, TYPE, LOCALE = range(4)
    FIELDS = 4


class TFLiteMetadataError(ModelFileError):
    """The ``TFLITE_METADATA`` buffer or the appended zip of associated files cannot be read."""


@dataclasses.dataclass(frozen=True)
class AssociatedFile:
    """A file the metadata refers to, stored in the zip appended to the model.

    Attributes:
      name: file name inside the zip (e.g. 'labels.txt').
      type: AssociatedFileType name ('TENSOR_AXIS_LABELS', ...).
      description: what the file holds.
      locale: language of the file's text ('' = unspecified).
    """

    name: str
    type: str = "UNKNOWN"
    description: str = ""
    locale: str = ""


@dataclasses.dataclass(frozen=True)
class TensorMetadata:
    """The metadata of one input or output tensor.

    Attributes:
      name: the tensor's name in the metadata (MediaPipe names a
        classification head after the output's).
      description: free text.
      content: content properties type: 'ImageProperties',
        'FeatureProperties', 'BoundingBoxProperties', 'AudioProperties' or ''.
      color_space: 'RGB', 'GRAYSCALE' or 'UNKNOWN' (ImageProperties only).
      image_size: (width, height) of ImageProperties' default_size, or None.
      mean: NormalizationOptions mean, one value or one per channel: clients
        feed ``(pixel - mean) / std`` to float inputs (pixels in [0, 255]).
      std: NormalizationOptions std.
      process_units: option type of each process unit, in order.
      stats_min: Stats min: the smallest value(s) the tensor holds.
      stats_max: Stats max.
      associated_files: files attached to this tensor (labels...).
    """

    name: str = ""
    description: str = ""
    content: str = ""
    color_space: str = ""
    image_size: Optional[Tuple[int, int]] = None
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()
    process_units: Tuple[str, ...] = ()
    stats_min: Tuple[float, ...] = ()
    stats_max: Tuple[float, ...] = ()
    associated_files: Tuple[AssociatedFile, ...] = ()

    @property
    def normalization(self) -> bool:
        """True when the tensor declares NormalizationOptions."""
        return "NormalizationOptions" in self.process_units

    def channel_normalization(self, channels: int = 3) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
        """(mean, std) with one value per channel, or None when absent or unusable.

        Usable as the Task Library takes them: mean and std of one value (all
        channels) or one per channel, finite, std not zero.
        """
        if not self.normalization or len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
            return None
        values = self.mean + self.std
        if any(not np.isfinite(v) for v in values) or any(s == 0 for s in self.std):
            return None
        expand = (lambda v: tuple(v) * channels if len(v) == 1 else tuple(v))
        return expand(self.mean), expand(self.std)

    def file_of_type(self, file_type: str) -> Optional[AssociatedFile]:
        """The first associated file of ``file_type``, preferring one without a locale (the default language)."""
        files = [f for f in self.associated_files if f.type == file_type]
        return next((f for f in files if not f.locale), files[0] if files else None)


@dataclasses.dataclass(frozen=True)
class TFLiteMetadata:
    """The standard metadata of a model (its first subgraph), plus what the appended zip holds.

    Attributes:
      name: model name.
      description: model description.
      version: model version.
      author: model author.
      license: model license.
      min_parser_version: the oldest metadata parser that understands every field.
      inputs: one per input tensor, in input order.
      outputs: one per output tensor, in output order.
      associated_files: files attached to the model or the subgraph.
      files: name -> size in bytes of each file in the appended zip.
      labels: the lines of the first output's TENSOR_AXIS_LABELS file, read
        from the zip (empty when there is none).
      labels_file: that file's name ('' when none).
    """

    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    min_parser_version: str = ""
    inputs: Tuple[TensorMetadata, ...] = ()
    outputs: Tuple[TensorMetadata, ...] = ()
    associated_files: Tuple[AssociatedFile, ...] = ()
    files: Dict[str, int] = dataclasses.field(default_factory=dict)
    labels: Tuple[str, ...] = ()
    labels_file: str = ""

    def all_files(self) -> Tuple[AssociatedFile, ...]:
        """Every associated file the metadata names: model and subgraph level, then per tensor."""
        tensors = self.inputs + self.outputs
        return self.associated_files + tuple(f for t in tensors for f in t.associated_files)


# ============================================================================
# Writing
# ============================================================================


def build_metadata(metadata: TFLiteMetadata) -> bytes:
    """Serialises ``metadata`` (one subgraph) into a ``TFLITE_METADATA`` flatbuffer.

    ``files``, ``labels`` and ``labels_file`` are not part of the flatbuffer
    (see ``append_associated_files``).

    Returns:
      The flatbuffer, file identifier ``M001``.

    Example:
      >>> buffer = build_metadata(TFLiteMetadata(name="flowers", inputs=(...,), outputs=(...,)))
    """
    import flatbuffers

    builder = flatbuffers.Builder(1024)

    def string(text: str) -> Optional[int]:
        return builder.CreateString(text) if text else None

    def floats(values: Sequence[float]) -> Optional[int]:
        return builder.CreateNumpyVector(np.asarray(values, np.float32)) if len(values) else None

    def offsets(items: List[int]) -> Optional[int]:
        if not items:
            return None
        builder.StartVector(4, len(items), 4)
        for item in reversed(items):
            builder.PrependUOffsetTRelative(item)
        return builder.EndVector()

    def table(fields: int, slots: Sequence[Tuple[int, str, Optional[int]]]) -> int:
        builder.StartObject(fields)
        for slot, kind, value in slots:
            if value is None:
                continue
            if kind == "offset":
                builder.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "int8":
                builder.PrependInt8Slot(slot, value, 0)
            elif kind == "uint8":
                builder.PrependUint8Slot(slot, value, 0)
            else:
                builder.PrependUint32Slot(slot, value, 0)
        return builder.EndObject()

    def files(items: Sequence[AssociatedFile]) -> Optional[int]:
        types = _codes(ASSOCIATED_FILE_TYPES)
        built = []
        for item in items:
            name, description, locale = string(item.name), string(item.description), string(item.locale)
            built.append(table(_AssociatedFile.FIELDS, [
                (_AssociatedFile.NAME, "offset", name), (_AssociatedFile.DESCRIPTION, "offset", description),
                (_AssociatedFile.TYPE, "int8", types.get(item.type, 0)), (_AssociatedFile.LOCALE, "offset", locale)]))
        return offsets(built)

    def content(tensor: TensorMetadata) -> Optional[int]:
        if not tensor.content:
            return None
        kinds = _codes(CONTENT_PROPERTIES)
        if tensor.content == "ImageProperties":
            size = None
            if tensor.image_size is not None:
                size = table(_ImageSize.FIELDS, [(_ImageSize.WIDTH, "uint32", int(tensor.image_size[0])),
                                                 (_ImageSize.HEIGHT, "uint32", int(tensor.image_size[1]))])
            color = _codes(COLOR_SPACES).get(tensor.color_space or "UNKNOWN", 0)
            properties = table(_ImageProperties.FIELDS, [(_ImageProperties.COLOR_SPACE, "int8", color),
                                                         (_ImageProperties.DEFAULT_SIZE, "offset", size)])
        else:  # FeatureProperties (and the others edgetl never writes) carry no fields
            properties = table(0, [])
        return table(_Content.FIELDS, [(_Content.CONTENT_PROPERTIES_TYPE, "uint8", kinds[tensor.content]),
                                       (_Content.CONTENT_PROPERTIES, "offset", properties)])

    def process_units(tensor: TensorMetadata) -> Optional[int]:
        if not tensor.normalization:
            return None
        mean, std = floats(tensor.mean), floats(tensor.std)
        options = table(_NormalizationOptions.FIELDS, [(_NormalizationOptions.MEAN, "offset", mean),
                                                       (_NormalizationOptions.STD, "offset", std)])
        unit = table(_ProcessUnit.FIELDS, [(_ProcessUnit.OPTIONS_TYPE, "uint8", _codes(PROCESS_UNIT_OPTIONS)["NormalizationOptions"]),
                                           (_ProcessUnit.OPTIONS, "offset", options)])
        return offsets([unit])

    def tensor_table(tensor: TensorMetadata) -> int:
        name, description = string(tensor.name), string(tensor.description)
        built_content, units = content(tensor), process_units(tensor)
        stats = None
        if tensor.stats_min or tensor.stats_max:
            high, low = floats(tensor.stats_max), floats(tensor.stats_min)
            stats = table(_Stats.FIELDS, [(_Stats.MAX, "offset", high), (_Stats.MIN, "offset", low)])
        attached = files(tensor.associated_files)
        return table(_TensorMetadata.FIELDS, [
            (_TensorMetadata.NAME, "offset", name), (_TensorMetadata.DESCRIPTION, "offset", description),
            (_TensorMetadata.CONTENT, "offset", built_content), (_TensorMetadata.PROCESS_UNITS, "offset", units),
            (_TensorMetadata.STATS, "offset", stats), (_TensorMetadata.ASSOCIATED_FILES, "offset", attached)])

    inputs = offsets([tensor_table(t) for t in metadata.inputs])
    outputs = offsets([tensor_table(t) for t in metadata.outputs])
    subgraph = table(_SubGraphMetadata.FIELDS, [(_SubGraphMetadata.INPUT_TENSOR_METADATA, "offset", inputs),
                                                (_SubGraphMetadata.OUTPUT_TENSOR_METADATA, "offset", outputs)])
    subgraphs = offsets([subgraph])
    fields = [string(metadata.name), string(metadata.description), string(metadata.version), string(metadata.author),
              string(metadata.license), files(metadata.associated_files),
              string(metadata.min_parser_version or MIN_PARSER_VERSION)]
    root = table(_ModelMetadata.FIELDS, [
        (_ModelMetadata.NAME, "offset", fields[0]), (_ModelMetadata.DESCRIPTION, "offset", fields[1]),
        (_ModelMetadata.VERSION, "offset", fields[2]), (_ModelMetadata.SUBGRAPH_METADATA, "offset", subgraphs),
        (_ModelMetadata.AUTHOR, "offset", fields[3]), (_ModelMetadata.LICENSE, "offset", fields[4]),
        (_ModelMetadata.ASSOCIATED_FILES, "offset", fields[5]), (_ModelMetadata.MIN_PARSER_VERSION, "offset", fields[6])])
    builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def append_associated_files(model: bytes, files: Mapping[str, bytes]) -> bytes:
    """``model`` followed by a zip holding ``files`` (stored, not compressed), as Google's metadata writer lays it out.

    The zip's offsets count from the start of the model file, so readers that
    expect a plain zip and readers that handle prepended data both find the
    files. Entries get a fixed date, so the same files give the same bytes.

    Args:
      model: the model flatbuffer, without a zip.
      files: name -> content.

    Returns:
      The model bytes with the zip appended (``model`` unchanged when ``files`` is empty).
    """
    if not files:
        return bytes(model)
    out = io.BytesIO()
    out.write(model)
    # Mode 'a' on bytes that are not a zip appends one after them, offsets counted from byte 0. MediaPipe and
    # the Task Library read files in place, so they are stored, not deflated.
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return out.getvalue()


# ============================================================================
# Reading
# ============================================================================


class _Table:
    """A flatbuffer table at ``position`` in ``buffer``; every offset is checked against the buffer's end."""

    def __init__(self, buffer: bytes, position: int):
        self.buffer = buffer
        self.position = self._check(position, 4, "table")
        vtable = position - self._unpack("<i", position)
        self.vtable = self._check(vtable, 4, "vtable")
        self.vtable_size = self._unpack("<H", vtable)
        self._check(vtable, self.vtable_size, "vtable")
        self.object_size = self._unpack("<H", vtable + 2)
        self._check(position, self.object_size, "table")

    def _check(self, position: int, size: int, what: str) -> int:
        if position < 0 or size < 0 or position + size > len(self.buffer):
            raise TFLiteMetadataError(f"a {what} at byte {position} runs past the end of the {len(self.buffer)}-byte buffer")
        return position

    def _unpack(self, fmt: str, position: int):
        self._check(position, struct.calcsize(fmt), "value")
        return struct.unpack_from(fmt, self.buffer, position)[0]

    def _field(self, slot: int) -> Optional[int]:
        entry = 4 + 2 * slot
        if entry + 2 > self.vtable_size:
            return None
        offset = self._unpack("<H", self.vtable + entry)
        return self.position + offset if offset else None

    def _target(self, slot: int) -> Optional[int]:
        field = self._field(slot)
        return None if field is None else field + self._unpack("<I", field)

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        field = self._field(slot)
        return default if field is None else self._unpack(fmt, field)

    def string(self, slot: int) -> str:
        target = self._target(slot)
        if target is None:
            return ""
        length = self._unpack("<I", target)
        raw = self.buffer[self._check(target + 4, length, "string"):target + 4 + length]
        return bytes(raw).decode("utf-8", "replace")

    def table(self, slot: int) -> Optional["_Table"]:
        target = self._target(slot)
        return None if target is None else _Table(self.buffer, target)

    def _vector(self, slot: int, item_size: int, what: str) -> Tuple[int, int]:
        target = self._target(slot)
        if target is None:
            return 0, 0
        count = self._unpack("<I", target)
        self._check(target + 4, count * item_size, f"vector of {count} {what}")
        return target + 4, count

    def tables(self, slot: int, what: str) -> List["_Table"]:
        start, count = self._vector(slot, 4, what)
        if count > MAX_VECTOR_ITEMS:
            raise TFLiteMetadataError(f"it lists {count} {what} (more than {MAX_VECTOR_ITEMS})")
        positions = [start + 4 * i for i in range(count)]
        return [_Table(self.buffer, p + self._unpack("<I", p)) for p in positions]

    def floats(self, slot: int) -> Tuple[float, ...]:
        start, count = self._vector(slot, 4, "floats")
        if count > MAX_VECTOR_ITEMS:
            raise TFLiteMetadataError(f"it has a vector of {count} floats (more than {MAX_VECTOR_ITEMS})")
        return tuple(float(v) for v in struct.unpack_from(f"<{count}f", self.buffer, start)) if count else ()


def parse_metadata(buffer: bytes) -> TFLiteMetadata:
    """Parses a ``TFLITE_METADATA`` flatbuffer (only the first subgraph's metadata is read).

    Args:
      buffer: the buffer's bytes.

    Returns:
      The TFLiteMetadata (``files`` and ``labels`` empty: they live in the zip).

    Raises:
      TFLiteMetadataError: no ``M001`` identifier, or an offset or vector
        outside the buffer (a damaged or foreign buffer).
    """
    buffer = bytes(buffer)
    if len(buffer) < 8 or buffer[4:8] != FILE_IDENTIFIER:
        raise TFLiteMetadataError(f"it has no '{FILE_IDENTIFIER.decode()}' file identifier (found {buffer[4:8]!r})")
    root = _Table(buffer, struct.unpack_from("<I", buffer, 0)[0])

    def associated(table: _Table, slot: int) -> Tuple[AssociatedFile, ...]:
        files = []
        for item in table.tables(slot, "associated files"):
            files.append(AssociatedFile(
                name=item.string(_AssociatedFile.NAME), description=item.string(_AssociatedFile.DESCRIPTION),
                type=ASSOCIATED_FILE_TYPES.get(item.scalar(_AssociatedFile.TYPE, "<b"), "UNKNOWN"),
                locale=item.string(_AssociatedFile.LOCALE)))
        return tuple(files)

    def tensor(table: _Table) -> TensorMetadata:
        content_type, color, size = "", "", None
        content = table.table(_TensorMetadata.CONTENT)
        if content is not None:
            code = content.scalar(_Content.CONTENT_PROPERTIES_TYPE, "<B")
            content_type = CONTENT_PROPERTIES.get(code, f"unknown ({code})" if code else "")
            properties = content.table(_Content.CONTENT_PROPERTIES)
            if content_type == "ImageProperties" and properties is not None:
                color = COLOR_SPACES.get(properties.scalar(_ImageProperties.COLOR_SPACE, "<b"), "UNKNOWN")
                default_size = properties.table(_ImageProperties.DEFAULT_SIZE)
                if default_size is not None:
                    size = (default_size.scalar(_ImageSize.WIDTH, "<I"), default_size.scalar(_ImageSize.HEIGHT, "<I"))
        units, mean, std = [], (), ()
        for unit in table.tables(_TensorMetadata.PROCESS_UNITS, "process units"):
            code = unit.scalar(_ProcessUnit.OPTIONS_TYPE, "<B")
            kind = PROCESS_UNIT_OPTIONS.get(code, f"unknown ({code})")
            units.append(kind)
            options = unit.table(_ProcessUnit.OPTIONS)
            if kind == "NormalizationOptions" and options is not None and not mean:
                mean, std = options.floats(_NormalizationOptions.MEAN), options.floats(_NormalizationOptions.STD)
        stats = table.table(_TensorMetadata.STATS)
        return TensorMetadata(
            name=table.string(_TensorMetadata.NAME), description=table.string(_TensorMetadata.DESCRIPTION),
            content=content_type, color_space=color, image_size=size, mean=mean, std=std, process_units=tuple(units),
            stats_min=stats.floats(_Stats.MIN) if stats is not None else (),
            stats_max=stats.floats(_Stats.MAX) if stats is not None else (),
            associated_files=associated(table, _TensorMetadata.ASSOCIATED_FILES))

    subgraphs = root.tables(_ModelMetadata.SUBGRAPH_METADATA, "subgraphs")
    inputs: Tuple[TensorMetadata, ...] = ()
    outputs: Tuple[TensorMetadata, ...] = ()
    files = associated(root, _ModelMetadata.ASSOCIATED_FILES)
    if subgraphs:
        graph = subgraphs[0]
        inputs = tuple(tensor(t) for t in graph.tables(_SubGraphMetadata.INPUT_TENSOR_METADATA, "input tensors"))
        outputs = tuple(tensor(t) for t in graph.tables(_SubGraphMetadata.OUTPUT_TENSOR_METADATA, "output tensors"))
        files += associated(graph, _SubGraphMetadata.ASSOCIATED_FILES)
    return TFLiteMetadata(
        name=root.string(_ModelMetadata.NAME), description=root.string(_ModelMetadata.DESCRIPTION),
        version=root.string(_ModelMetadata.VERSION), author=root.string(_ModelMetadata.AUTHOR),
        license=root.string(_ModelMetadata.LICENSE), min_parser_version=root.string(_ModelMetadata.MIN_PARSER_VERSION),
        inputs=inputs, outputs=outputs, associated_files=files)


def _zip(data: bytes) -> Optional[zipfile.ZipFile]:
    """The zip appended to ``data``, or None when there is none.

    Raises:
      TFLiteMetadataError: an end-of-zip record is there but the zip is damaged.
    """
    stream = io.BytesIO(data)
    if not zipfile.is_zipfile(stream):
        return None
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as e:
        raise TFLiteMetadataError(f"the zip of associated files after the model is damaged ({e})") from None


def associated_files(data: bytes) -> Dict[str, int]:
    """Name -> size of each file in the zip appended to a model ({} when it has none).

    Raises:
      TFLiteMetadataError: the zip is damaged.
    """
    archive = _zip(data)
    return {} if archive is None else {info.filename: int(info.file_size) for info in archive.infolist()}


def read_associated_files(data: bytes, names: Optional[Sequence[str]] = None,
                          limit: int = MAX_ASSOCIATED_FILE_BYTES) -> Dict[str, bytes]:
    """The files of the zip appended to a model (all, or those in ``names`` that it holds).

    Raises:
      TFLiteMetadataError: the zip is damaged (bad central directory, a file
        whose CRC does not match, a compression zipfile cannot read) or a
        file is larger than ``limit``.
    """
    archive = _zip(data)
    return {} if archive is None else _read_members(archive, names, limit)


def _read_members(archive: zipfile.ZipFile, names: Optional[Sequence[str]], limit: int) -> Dict[str, bytes]:
    files = {}
    try:
        for info in archive.infolist():
            if names is not None and info.filename not in names:
                continue
            if info.file_size > limit:
                raise TFLiteMetadataError(f"'{info.filename}' in the appended zip is {info.file_size:,} bytes, more "
                                          f"than {limit:,}")
            with archive.open(info) as handle:
                content = handle.read(limit + 1)
            if len(content) > limit:
                raise TFLiteMetadataError(f"'{info.filename}' in the appended zip is larger than {limit:,} bytes")
            files[info.filename] = content
    except TFLiteMetadataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError, struct.error) as e:
        # RuntimeError: an encrypted entry; NotImplementedError: an unsupported compression method.
        raise TFLiteMetadataError(f"the zip of associated files after the model is damaged ({e})") from None
    return files


def read_tflite_metadata(data: bytes, buffer: Optional[bytes], name: str = "model"
                         ) -> Tuple[Optional[TFLiteMetadata], Tuple[str, ...]]:
    """The standard metadata of a model with its labels, and warnings instead of errors.

    A third-party file's metadata is a hint: when it is damaged, the device
    falls back to ``--labels``/``--mean``/``--std`` and the defaults, and says so.

    Args:
      data: the whole model file (the zip follows the flatbuffer).
      buffer: the ``TFLITE_METADATA`` buffer, or None when the model has none.
      name: the file name used in warnings.

    Returns:
      (metadata or None, warnings): the metadata with ``files``, ``labels``
      and ``labels_file`` filled in from the zip; one line per problem.
    """
    if buffer is None:
        return None, ()
    try:
        metadata = parse_metadata(buffer)
    except TFLiteMetadataError as e:
        return None, (f"'{name}': its TFLite metadata (buffer {METADATA_BUFFER_NAME}, {len(buffer)} bytes) cannot be "
                      f"parsed: {e}. It is ignored; labels and normalisation come from --labels/--mean/--std or the "
                      f"defaults.",)
    warnings: List[str] = []
    for index, tensor in enumerate(metadata.inputs):
        if tensor.normalization and tensor.channel_normalization() is None:
            warnings.append(f"'{name}': the NormalizationOptions of input {index} in its TFLite metadata (mean "
                            f"{list(tensor.mean)}, std {list(tensor.std)}) are unusable (expected 1 or 3 finite values "
                            f"each, std not 0); they are ignored. Pass --mean/--std.")
    labels_file = metadata.outputs[0].file_of_type("TENSOR_AXIS_LABELS") if metadata.outputs else None
    named = [f.name for f in metadata.all_files()]
    if not named:
        return metadata, tuple(warnings)
    try:
        archive = _zip(data)
        files = {} if archive is None else {info.filename: int(info.file_size) for info in archive.infolist()}
        wanted = [labels_file.name] if labels_file is not None and labels_file.name in files else []
        contents = _read_members(archive, wanted, MAX_ASSOCIATED_FILE_BYTES) if wanted else {}
    except TFLiteMetadataError as e:
        return metadata, tuple(warnings) + (f"'{name}': {e}; the files its TFLite metadata names ({', '.join(named)}) "
                                            f"cannot be used. Pass --labels FILE, or re-copy the model.",)
    metadata = dataclasses.replace(metadata, files=files)
    missing = [n for n in named if n not in files]
    if missing:
        where = "the zip appended to it lacks them" if files else "it has no zip of associated files after the flatbuffer"
        warnings.append(f"'{name}': its TFLite metadata names {', '.join(missing)} but {where} (a truncated copy?). "
                        f"Pass --labels FILE, or re-copy the model.")
    if labels_file is not None and labels_file.name in contents:
        try:
            text = contents[labels_file.name].decode("utf-8")
        except UnicodeDecodeError as e:
            warnings.append(f"'{name}': '{labels_file.name}' in its appended zip is not UTF-8 text ({e}); its labels are "
                            f"not used. Pass --labels FILE.")
        else:
            from edgetl.labels import labels_from_text

            metadata = dataclasses.replace(metadata, labels=labels_from_text(text), labels_file=labels_file.name)
    return metadata, tuple(warnings)


__all__ = ["AssociatedFile", "LABELS_FILE", "METADATA_BUFFER_NAME", "MIN_PARSER_VERSION", "TFLiteMetadata",
           "TFLiteMetadataError", "TensorMetadata", "append_associated_files", "associated_files", "build_metadata",
           "parse_metadata", "read_associated_files", "read_tflite_metadata"]
