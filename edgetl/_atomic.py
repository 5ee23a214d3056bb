"""Atomic file writes: a temp file in the same folder, fsync, then rename.

An interrupted edgetl never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(final: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temp path beside ``final``; renames it over ``final`` on success.

    For libraries that insist on writing to a path themselves (Keras, matplotlib).
    ``suffix`` keeps the extension those libraries look at (e.g. ``.keras``).

    Example:
      >>> with atomic_path("run/model.keras", suffix=".keras") as tmp:
      ...     model.save(tmp)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # Some writers refuse to overwrite or pick the format from the name: hand them a path
    # that does not exist yet but keeps the extension.
    os.unlink(tmp)
    tmp = tmp.with_name(tmp.name[: -len(".tmp")]) if suffix else tmp
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(tmp)
        if isinstance(error, OSError) and not error.filename:
            error.filename = str(final)  # a failed write() names no file; say which artifact it was
        raise


def write_bytes(final: PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``final`` atomically and returns the path."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return Path(final)


def write_text(final: PathLike, text: str) -> Path:
    """Writes UTF-8 ``text`` to ``final`` atomically and returns the path.

    Undecodable bytes of file names (lone surrogates) are written as ``\\xNN``,
    as Python prints them on stderr, instead of failing the write.
    """
    return write_bytes(final, text.encode("utf-8", "backslashreplace"))


def write_json(final: PathLike, obj: object) -> Path:
    """Writes ``obj`` as indented JSON to ``final`` atomically."""
    return write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
