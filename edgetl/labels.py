"""Labels files: one class name per line, written so any name comes back unchanged, and Coral's ``INDEX LABEL`` form.

Class names are folder names, so they may hold anything a file name holds:
digits and spaces (``10 magenta``), commas, ``#``, leading or trailing spaces,
non-ASCII text in any Unicode normalisation form. ``labels.txt`` is the format
MediaPipe and the Task Library read from a model's zip (one label per line, in
output order), so it stays plain: each line, byte for byte, is one label. The
only names it cannot hold are those with a line break, which are refused.

Reading a labels file given with ``--labels`` has to recognise a second form,
Coral's ``INDEX LABEL`` lines (pycoral's ``read_label_file``: an index, spaces
or a colon, the label; indices may skip). A plain file of numbered names looks
the same, so the indexed reading is chosen only when the file cannot be a plain
list (see ``LabelsFile.resolve``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from edgetl.errors import ConfigError

PathLike = Union[str, os.PathLike]
# Coral's form: an index written without leading zeros, then spaces/tabs or a colon, then the label.
_INDEXED_LINE = re.compile(r"^(0|[1-9][0-9]*)[ \t:]+(\S.*)$")
# Characters that end a line for a labels reader: '\n' (and '\r' before it).
_LINE_BREAKS = ("\n", "\r")


def check_labels(labels: Sequence[str]) -> None:
    """Refuses class names that a one-per-line labels file cannot hold.

    Raises:
      ConfigError: a name is empty or holds a line break ('\\n' or '\\r').
    """
    for index, label in enumerate(labels):
        if not label:
            raise ConfigError(f"Class {index} has an empty name; labels.txt needs a name per class. Rename its folder.")
        if any(mark in label for mark in _LINE_BREAKS):
            raise ConfigError(
                f"Class name {label!r} holds a line break, which labels.txt (one label per line, the format MediaPipe "
                f"and the Task Library read) cannot hold. Rename the folder without it."
            )


def labels_text(labels: Sequence[str]) -> str:
    """``labels.txt`` content: each label on its own line, unchanged, in output order.

    Raises:
      ConfigError: a label is empty or holds a line break.
    """
    check_labels(labels)
    return "".join(f"{label}\n" for label in labels)


def labels_from_text(text: str) -> Tuple[str, ...]:
    """The labels of a plain labels file: one per line, kept whole (spaces included).

    Lines end at '\\n' (a '\\r' before it is dropped, for files saved on
    Windows); a UTF-8 byte order mark is dropped; empty lines at the end are
    not labels. Other Unicode line separators (U+2028, U+0085 ...) are part of
    a label, as for MediaPipe's reader.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return tuple(lines)


@dataclasses.dataclass(frozen=True)
class LabelsFile:
    """A labels file read both ways; ``resolve`` picks the reading.

    Attributes:
      path: the file.
      plain: one label per line (``labels_from_text``).
      indexed: the labels by index when every line is Coral's ``INDEX LABEL``
        with strictly increasing indices (gaps become ''), else None.
    """

    path: str
    plain: Tuple[str, ...]
    indexed: Optional[Tuple[str, ...]] = None

    def resolve(self, num_classes: Optional[int] = None, known: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
        """The labels, plain or indexed.

        The rule (the indexed reading needs every condition):

        1. Every line is ``INDEX LABEL``: an index without leading zeros,
           spaces/tabs or a colon, a non-empty label. Zero-padded numbers
           (``01 cat``) are names, not Coral indices.
        2. The indices strictly increase down the file, as in every Coral
           labels file. edgetl's own ``labels.txt`` lists folder names sorted
           as text, so ``0 red`` ... ``10 magenta`` come out 0, 1, 10, 2 ...
           and are read plain.
        3. The plain lines are not the model's own labels (``known``: the
           labels embedded in the model).
        4. When the model's number of outputs is known, the indexed reading
           has that many entries, or the plain one does not.

        What is left (indices exactly 0 .. n-1 in order, on a model without
        embedded labels) is Coral's form by convention; both readings then put
        every line at the same output, and only the leading ``INDEX`` differs.

        Args:
          num_classes: the model's number of outputs, when known.
          known: the labels the model itself carries, when any.

        Returns:
          The labels by output index.
        """
        if self.indexed is None:
            return self.plain
        if known is not None and tuple(known) == self.plain:
            return self.plain
        if num_classes is not None and len(self.indexed) != num_classes and len(self.plain) == num_classes:
            return self.plain
        return self.indexed


def parse_labels(path: PathLike) -> LabelsFile:
    """Reads a labels file (UTF-8) both ways, for ``LabelsFile.resolve``.

    Raises:
      ConfigError: the file is missing, not a regular file, unreadable, not UTF-8 or empty.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, or a FIFO that would block the read
        raise ConfigError(f"Labels file '{path}' is not a regular file; pass a text file with one label per line.")
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # '\r' stays: labels_from_text decides
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"Labels file '{path}' does not exist; pass a text file with one label per line.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Labels file '{path}' cannot be read ({e}); pass a UTF-8 text file with one label per line.") from None
    plain = labels_from_text(text)
    if not plain:
        raise ConfigError(f"Labels file '{path}' is empty; it needs one label per line, in the model's output order.")
    matches = [_INDEXED_LINE.match(line) for line in plain]
    indexed = None
    if len(plain) > 1 and all(matches):
        indices = [int(m.group(1)) for m in matches]
        if all(a < b for a, b in zip(indices, indices[1:])):
            by_index = {i: m.group(2).strip() for i, m in zip(indices, matches)}
            indexed = tuple(by_index.get(i, "") for i in range(indices[-1] + 1))
    return LabelsFile(str(path), plain, indexed)


def read_labels(path: PathLike, num_classes: Optional[int] = None, known: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """Reads a labels file: one label per line in output order, or Coral's 'INDEX LABEL' lines.

    Args:
      path: the labels file (UTF-8).
      num_classes: the model's number of outputs, when known (see ``LabelsFile.resolve``).
      known: the labels the model carries, when any.

    Returns:
      Labels indexed by output position (gaps in an indexed file become '').

    Raises:
      ConfigError: the file is missing, unreadable or empty.
    """
    return parse_labels(path).resolve(num_classes, known)


__all__ = ["LabelsFile", "check_labels", "labels_from_text", "labels_text", "parse_labels", "read_labels"]
