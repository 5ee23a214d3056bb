"""The decoded store: every image of a run decoded once, at the model's input size, into the run directory.

Training reads images many times: the stage-1 feature pass, every fine-tuning
epoch, QAT, the export's calibration and verification, the validation-split
evaluation. Decoding them each time costs CPU; holding them decoded in memory
costs RAM that grows with the folder (50 k images at 224 px are 7.5 GB). The
store decodes each file once, in parallel, into a flat file of uint8 rows that
every stage reads by row number, in any order, with memory that does not grow
with the number of images.

Layout of ``RUN/store/<size>px-<filter>-d<decode version>/``:

* ``pixels.<generation>.u8``: rows of ``size * size * 3`` uint8 (H, W, RGB, C
  order), row ``r`` at byte ``r * row_bytes``. Raw rows, not ``.npy``: rows are
  appended. The generation changes only when a compaction rewrites the file.
* ``index.json``: the settings, the committed row count, and per image file
  (absolute path) its ``size``, ``mtime_ns``, content ``digest`` (BLAKE2b of
  the bytes) and either its ``row`` and the row's ``crc`` (zlib CRC-32), or
  the ``reason`` it cannot be decoded.

Decisions, and why:

* **Raw rows + JSON index, not TFRecord.** Every reader needs random access by
  row (shuffling indices, a class-balanced calibration sample, the validation
  rows); TFRecord is sequential, and it needs TensorFlow, which the device-side
  evaluation must not import. The rows are uncompressed so a read is one
  ``pread``: scripts/bench_data_store.py measures the cost.
* **pread, not mmap.** Pages of a memory map that a process touched count in
  its RSS; reading rows with ``os.pread`` leaves them in the kernel's page cache,
  which is shared and reclaimable, so the trainer's RSS stays flat.
* **Processes decode large batches, threads small ones; workers write their
  own rows.** Pillow releases the GIL in its decoders, but opening a file, EXIF
  handling and the numpy conversion hold it, so a pool of ``spawn``ed processes
  decodes faster once there are enough files to pay for starting it (about 3 s
  for two workers importing numpy and Pillow): from ``PROCESS_POOL_MIN`` files
  on (spawn, not fork: the parent may hold TensorFlow's threads); threads below.
  Each task is a chunk of files with the rows it owns, reserved by the parent
  in order; the worker decodes, writes its rows with ``pwrite`` and sends back
  only digests and CRCs. Sending each 150 KB row back pickled, one future per
  image, held the 10 k-image build to 28 % of a plain decode loop
  (docs/benchmarks.md). A chunk's slots of files that are unchanged or cannot
  be decoded stay unwritten: unreferenced rows like those of edited files,
  removed by the compaction below.
* **Append-only rows, atomically committed index.** A new or edited file gets a
  new row at the end; rows are never rewritten, so a concurrent reader never
  sees a half-written row it was told about. The index is the commit record,
  written with ``edgetl._atomic`` after the rows it names are written: a kill
  or a full disk mid-build leaves the previous index and an uncommitted tail,
  which the next build truncates, and decoding resumes where it stopped. The
  rows are not fsync'ed: a kill leaves them in the page cache, and a row that a
  power cut loses reads back short or with a wrong CRC and is decoded again
  like any damaged row (below). Fsyncing every 2 000 rows held the decode
  workers idle while 300 MB went to disk: 1 130–1 820 img/s against 2 180–2 270
  without, on a 10 k-image build (docs/benchmarks.md).
  Unreferenced rows (edited or removed files) are dropped by a compaction that
  writes the next generation's file, commits the index naming it, then deletes
  the old one, once they are a quarter of it.
* **A CRC-32 per row, checked on every read.** A damaged row is never handed
  out: it is decoded again from its file (when the file is unchanged) and
  repaired, or the read fails with one clear line. A damaged index or a short
  file is noticed when the store is opened and rebuilt, with one line saying so.
* **Identity by size, mtime and content digest.** A file whose size and mtime
  match its entry is trusted without reading it; one that differs is hashed,
  and decoded again only if its bytes changed (a copy without ``-p`` or a fresh
  checkout costs a hash, not a decode or a retraining).

No TensorFlow here: the device-side ``evaluate`` reads the store too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgetl._atomic import atomic_path, write_json
from edgetl.errors import DISK_FULL_ERRNOS, StoreError
from edgetl.run_dir import RunPaths
from edgetl.images import (DECODE_VERSION, RESIZE_FILTER, ImageReadError, decode_image_bytes, file_digest_bytes,
                           read_image_bytes)

logger = logging.getLogger(__name__)

FORMAT = 1
INDEX_FILE = "index.json"
# The index is committed this often while a build runs, so a kill loses at most ~10 s of decoding. Not
# more often: the index of 50 k images is ~9 MB of JSON (0.3 s to write, measured), so committing every
# 2 000 rows meant 25 commits and, by that figure, ~4 s taken from the decode workers of a 36 s build.
COMMIT_ROWS = 20000
COMMIT_SECONDS = 10.0
# Compaction once unreferenced rows are this share of the file.
GARBAGE_SHARE = 0.25
# From this many files to decode on, a process pool (see the module docstring).
PROCESS_POOL_MIN = 4096
# Files per task sent to a decode worker (fewer for small builds, so every worker gets some).
CHUNK_FILES = 16

PathLike = Union[str, os.PathLike]


def store_name(size: int) -> str:
    """The folder name of the store for ``size``: its decode settings, so other settings never share rows."""
    return f"{size}px-{RESIZE_FILTER}-d{DECODE_VERSION}"


def store_folder(run_dir: PathLike, size: int) -> Path:
    """``RUN/store/<settings>``: where the run's decoded store of ``size`` px lives."""
    return RunPaths.of(run_dir).store / store_name(size)


def decode_settings(size: int) -> Dict[str, object]:
    """What the pixels of a row depend on besides the file: the store's key."""
    return {"size": int(size), "filter": RESIZE_FILTER, "decode_version": DECODE_VERSION}


@dataclasses.dataclass
class Entry:
    """One image file in the index.

    Attributes:
      size: file size in bytes when it was stored.
      mtime_ns: modification time (ns) when it was stored.
      digest: BLAKE2b-128 of its bytes; None when it could not be read.
      row: its row in ``pixels.u8``; -1 when it cannot be decoded.
      crc: CRC-32 of the row.
      reason: why it cannot be decoded (``ImageReadError.reason``), else None.
    """

    size: int
    mtime_ns: int
    digest: Optional[str]
    row: int = -1
    crc: int = 0
    reason: Optional[str] = None

    def to_json(self) -> list:
        return [self.size, self.mtime_ns, self.digest, self.row, self.crc, self.reason]

    @classmethod
    def from_json(cls, values: list) -> "Entry":
        size, mtime_ns, digest, row, crc, reason = values
        return cls(int(size), int(mtime_ns), digest, int(row), int(crc), reason)


def _pread(fd: int, length: int, offset: int) -> bytes:
    return os.pread(fd, length, offset)


def _pwrite(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the store while it is built or compacted (another edgetl process waits)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; two builds of one run directory at once are then the user's to avoid
        yield
        return
    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


def _examine(path: str, size: int, old_digest: Optional[str]):
    """Reads a file, hashes it, and decodes it unless its bytes are those of ``old_digest``.

    Returns ``(digest, pixels, crc, reason)``; pixels is None when unchanged or undecodable.
    """
    try:
        data = read_image_bytes(path)
    except ImageReadError as e:
        return None, None, 0, e.reason
    digest = file_digest_bytes(data)
    if old_digest is not None and digest == old_digest:
        return digest, None, 0, None
    try:
        pixels = decode_image_bytes(data, size, path)
    except ImageReadError as e:
        return digest, None, 0, e.reason
    return digest, pixels, zlib.crc32(pixels), None


def _decode_chunk(pixels_file: str, size: int, first_row: int, items: Sequence[Tuple[str, Optional[str]]]):
    """Worker: decodes a chunk of files and writes their rows itself, from ``first_row`` on, in order.

    Only the small results travel back to the parent (a 224 px row is 150 KB; pickling
    it back cost more than its decode, see the module docstring). The chunk owns rows
    ``first_row .. first_row + len(items) - 1``; a file that is unchanged or cannot be
    decoded leaves its slot unwritten at the chunk's end.

    Args:
      pixels_file: the store's pixels file (opened here: a spawned worker has no fd of the parent's).
      size: square side of the rows in pixels.
      first_row: the chunk's first reserved row.
      items: ``(path, digest stored for it or None)`` per file.

    Returns:
      ``(results, error)``: per file handled, ``(digest, row or -1, crc, reason)``
      (row -1 and reason None: unchanged bytes); ``error`` is the ``OSError`` that
      stopped the chunk while writing (a full disk), the files after it not handled.
    """
    results: List[Tuple[Optional[str], int, int, Optional[str]]] = []
    row_bytes = size * size * 3
    row = first_row
    fd = os.open(pixels_file, os.O_WRONLY | getattr(os, "O_BINARY", 0))
    try:
        for path, old_digest in items:
            digest, pixels, crc, reason = _examine(path, size, old_digest)
            if pixels is None:
                results.append((digest, -1, 0, reason))
                continue
            try:
                _pwrite(fd, pixels, row * row_bytes)
            except OSError as e:
                return results, e
            results.append((digest, row, crc, None))
            row += 1
    finally:
        os.close(fd)
    return results, None


def _workers() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def _pool(count: int, workers: int) -> concurrent.futures.Executor:
    if count >= PROCESS_POOL_MIN and workers > 1:
        import multiprocessing

        return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers)


class ImageStore:
    """A run's decoded images: build with ``update``, read rows with ``read``.

    Thread-safe for reading (tf.data maps call ``read`` from several threads).

    Args:
      folder: the store folder (see ``store_folder``); created when missing.
      size: square side of the rows in pixels.
      echo: receives one line when the store is damaged and rebuilt or repaired.

    Example:
      >>> store = ImageStore(store_folder("runs/flowers", 224), 224)
      >>> reasons = store.update(paths)            # decodes what is new or changed
      >>> batch = store.read(store.rows(paths[:32]))  # (32, 224, 224, 3) uint8
    """

    def __init__(self, folder: PathLike, size: int, echo: Callable[[str], None] = logger.warning):
        self.folder = Path(folder)
        self.size = int(size)
        self.row_bytes = self.size * self.size * 3
        self.echo = echo
        self.entries: Dict[str, Entry] = {}
        self.committed_rows = 0
        self.generation = 0
        self._fd: Optional[int] = None
        self._crc = np.zeros(0, np.uint32)
        self._path_of_row: Dict[int, str] = {}
        self._repair_lock = threading.Lock()
        self._said: set = set()
        self.rows_read = 0  # rows handed out by ``read`` in this process (benchmarks, multi-worker test)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._load(repair=False)

    # -- index -------------------------------------------------------------------------------------
    @property
    def pixels_file(self) -> Path:
        return self.folder / f"pixels.{self.generation}.u8"

    @property
    def index_file(self) -> Path:
        return self.folder / INDEX_FILE

    def _settings(self) -> Dict[str, object]:
        return {"format": FORMAT, **decode_settings(self.size), "row_bytes": self.row_bytes}

    def _say(self, line: str) -> None:
        if line not in self._said:  # opening, then updating, must not repeat a line
            self._said.add(line)
            self.echo(line)

    def _load(self, repair: bool) -> None:
        """Reads the index and checks it against the pixels file.

        A damaged index or a short file loses the rows it cannot vouch for (they
        are decoded again by ``update``). Only with ``repair`` (under the build
        lock) are files changed: a damaged store reset, an uncommitted tail
        truncated, a stale generation deleted; a reader never writes.
        """
        entries: Dict[str, Entry] = {}
        rows = 0
        problem = ""
        self.generation = 0
        if self.index_file.is_file():
            try:
                data = json.loads(self.index_file.read_text(encoding="utf-8"))
                if {k: data.get(k) for k in self._settings()} != self._settings():
                    problem = "its settings are not those of this edgetl"
                else:
                    rows = int(data["rows"])
                    self.generation = int(data["generation"])
                    entries = {path: Entry.from_json(values) for path, values in data["entries"].items()}
            except (OSError, ValueError, KeyError, TypeError) as e:
                problem = f"unreadable index ({type(e).__name__})"
        have = self.pixels_file.stat().st_size if self.pixels_file.is_file() else 0
        if not problem and have < rows * self.row_bytes:
            lost = [path for path, entry in entries.items() if entry.row >= have // self.row_bytes]
            self._say(f"decoded store '{self.folder}' is shorter than its index ({have} of {rows * self.row_bytes} "
                      f"bytes): the {len(lost)} image(s) it lost are decoded again")
            for path in lost:
                del entries[path]
            rows = have // self.row_bytes
        if problem:
            self._say(f"decoded store '{self.folder}' is damaged ({problem}); rebuilding it")
            entries, rows = {}, 0
            if repair:
                with contextlib.suppress(FileNotFoundError):
                    os.truncate(self.pixels_file, 0)
                self.index_file.unlink(missing_ok=True)
        elif repair and have > rows * self.row_bytes:
            os.truncate(self.pixels_file, rows * self.row_bytes)  # an uncommitted tail of an interrupted build
        if repair:
            for stale in self.folder.glob("pixels.*.u8"):
                if stale != self.pixels_file:  # left by a compaction that stopped before deleting it
                    stale.unlink(missing_ok=True)
        self.entries, self.committed_rows = entries, rows
        self._reindex()

    def _reindex(self) -> None:
        self._crc = np.zeros(self.committed_rows, np.uint32)
        self._path_of_row = {}
        for path, entry in self.entries.items():
            if entry.row >= 0:
                self._crc[entry.row] = entry.crc
                self._path_of_row[entry.row] = path
        self._reopen()

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.pixels_file.is_file():
            self._fd = os.open(self.pixels_file, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def _commit(self, rows: int) -> None:
        # No fsync of the rows (see the module docstring): a row a power cut loses fails its CRC and is decoded again.
        self.committed_rows = rows
        write_json(self.index_file, {**self._settings(), "rows": rows, "generation": self.generation,
                                     "entries": {path: entry.to_json() for path, entry in self.entries.items()}})

    def close(self) -> None:
        """Closes the pixels file (reads reopen nothing; build a new ImageStore to read again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:  # not contextlib: at interpreter exit the module's globals may already be None
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- building ----------------------------------------------------------------------------------
    def update(self, paths: Sequence[str], progress: bool = True, desc: str = "decoding images",
               prune: bool = False) -> List[Optional[str]]:
        """Makes every file of ``paths`` current in the store: new and changed files are decoded, once.

        Args:
          paths: image files (absolute or relative; stored by absolute path).
          progress: a tqdm bar while decoding.
          desc: the bar's label.
          prune: forget every entry not in ``paths`` (the run's whole file list),
            and compact the file when unreferenced rows are a quarter of it.

        Returns:
          Per path, None when it has a row, else the reason it cannot be decoded.

        Raises:
          StoreError: the disk is full (or a quota or size limit is hit) before or
            while writing; rows stored so far are kept for the next attempt.
        """
        absolute = [os.path.abspath(p) for p in paths]
        with _locked(self.folder):
            self._load(repair=True)  # another process may have added rows since this object was made
            todo: List[Tuple[str, os.stat_result, Optional[Entry]]] = []
            unique = list(dict.fromkeys(absolute))
            for path in unique:
                info = _stat(path)
                entry = self.entries.get(path)
                if (info is not None and entry is not None and entry.digest is not None
                        and entry.size == info.st_size and entry.mtime_ns == info.st_mtime_ns):
                    continue  # unchanged; an unreadable file (no digest) is looked at again: chmod keeps mtime
                todo.append((path, info, entry))
            gone: Dict[str, str] = {}
            if todo:
                self._check_space(len(todo))
                gone = self._build(todo, progress, desc)
            if prune:
                keep = set(unique)
                dropped = [path for path in self.entries if path not in keep]
                for path in dropped:
                    del self.entries[path]
                if dropped:
                    self._commit(self.committed_rows)
                self._maybe_compact()
            self._reindex()
        return [self.entries[p].reason if p in self.entries else gone.get(p, "missing (deleted, or a broken symlink)")
                for p in absolute]

    def _check_space(self, count: int) -> None:
        need = count * self.row_bytes
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise StoreError(
                f"The decoded store needs up to {need / 1e9:.2f} GB in '{self.folder}' for {count} images at "
                f"{self.size} px, but only {free / 1e9:.2f} GB are free there. Free some space, or choose a run "
                f"directory (--out) on a larger disk."
            )

    def _build(self, todo, progress: bool, desc: str) -> Dict[str, str]:
        """Decodes ``todo`` in a pool, in chunks whose workers write their own rows; returns the reasons of
        files that vanished.

        Chunk ``k`` reserves as many rows as it has files, right after chunk ``k - 1``'s; its results
        are taken in order, and the index is committed up to the last row of the last chunk taken, so
        a commit never names a row a running worker has not written.
        """
        gone: Dict[str, str] = {}
        os.close(os.open(self.pixels_file, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644))
        rows = self.committed_rows  # the end of what the taken chunks wrote
        reserved = rows
        last_commit = time.monotonic()
        pending_rows = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=desc, unit="img", leave=False, disable=None)
        workers = _workers()
        chunk = max(1, min(CHUNK_FILES, -(-len(todo) // (4 * workers))))
        chunks = iter([todo[i:i + chunk] for i in range(0, len(todo), chunk)])
        pool = _pool(len(todo), workers)
        try:
            window: collections.deque = collections.deque()

            def submit() -> bool:
                nonlocal reserved
                part = next(chunks, None)
                if part is None:
                    return False
                items = [(path, old.digest if old else None) for path, _, old in part]
                window.append((part, pool.submit(_decode_chunk, str(self.pixels_file), self.size, reserved, items)))
                reserved += len(part)
                return True

            # A bounded window of chunks, wide enough that the workers stay busy while the index is written.
            while len(window) < 8 * workers and submit():
                pass
            while window:
                part, future = window.popleft()
                submit()
                results, error = future.result()
                for (path, info, old), (digest, row, crc, reason) in zip(part, results):
                    info = _stat(path) if info is None else info
                    if info is None:
                        self.entries.pop(path, None)  # gone: nothing to remember
                        gone[path] = reason or "missing (deleted, or a broken symlink)"
                    elif row < 0 and reason is None and old is not None:
                        old.size, old.mtime_ns = info.st_size, info.st_mtime_ns  # touched, same bytes
                    elif row < 0:
                        self.entries[path] = Entry(info.st_size, info.st_mtime_ns, digest, -1, 0, reason)
                    else:
                        self.entries[path] = Entry(info.st_size, info.st_mtime_ns, digest, row, crc, None)
                        rows = row + 1
                        pending_rows += 1
                    if bar is not None:
                        bar.update(1)
                if error is not None:
                    with contextlib.suppress(OSError):  # keep what was written, if the index still fits
                        self._commit(rows)
                    self._disk_error(error, len(todo), bar)
                if pending_rows >= COMMIT_ROWS or time.monotonic() - last_commit > COMMIT_SECONDS:
                    self._commit_or_fail(rows, len(todo), bar)
                    pending_rows, last_commit = 0, time.monotonic()
            self._commit_or_fail(rows, len(todo), bar)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
        return gone

    def _commit_or_fail(self, rows: int, total: int, bar) -> None:
        try:
            self._commit(rows)
        except OSError as e:
            self._disk_error(e, total, bar)

    def _disk_error(self, error: OSError, total: int, bar) -> None:
        reason = DISK_FULL_ERRNOS.get(error.errno)
        if reason is None:
            raise error
        done = max(self.committed_rows, 0)
        raise StoreError(
            f"{reason.capitalize()} while writing the decoded store '{self.pixels_file}' ({total} images to decode; "
            f"the {done} rows committed before are kept). Free some space, or choose a run directory (--out) on "
            f"a larger disk, then run the same command again: decoding continues where it stopped."
        ) from None

    def _maybe_compact(self) -> None:
        used = sorted(entry.row for entry in self.entries.values() if entry.row >= 0)
        garbage = self.committed_rows - len(used)
        if garbage <= 0 or garbage < GARBAGE_SHARE * self.committed_rows:
            return
        old_file = self.pixels_file
        new_file = self.folder / f"pixels.{self.generation + 1}.u8"
        source = os.open(old_file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            with atomic_path(new_file) as tmp, open(tmp, "wb") as out:
                for old in used:
                    out.write(_pread(source, self.row_bytes, old * self.row_bytes))
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                return  # compaction only saves space; the store is valid without it
            raise
        finally:
            os.close(source)
        new_row = {old: new for new, old in enumerate(used)}
        for entry in self.entries.values():
            if entry.row >= 0:
                entry.row = new_row[entry.row]
        self.generation += 1
        self._commit(len(used))  # the index now names the new file; only then is the old one deleted
        old_file.unlink(missing_ok=True)

    # -- reading -----------------------------------------------------------------------------------
    def digest(self, path: str) -> Optional[str]:
        """The content digest stored for ``path`` (None when unknown or unreadable)."""
        entry = self.entries.get(os.path.abspath(path))
        return entry.digest if entry else None

    def has(self, path: str) -> bool:
        """Whether ``path`` has a row that is current (its size and mtime match the entry)."""
        path = os.path.abspath(path)
        entry = self.entries.get(path)
        info = _stat(path)
        return bool(entry and entry.row >= 0 and info and entry.size == info.st_size and entry.mtime_ns == info.st_mtime_ns)

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Row numbers of ``paths`` (int64), each of which must have a row (``update`` first).

        Raises:
          StoreError: a path has no row (not stored, or undecodable).
        """
        out = np.empty(len(paths), np.int64)
        for i, path in enumerate(paths):
            entry = self.entries.get(os.path.abspath(path))
            if entry is None or entry.row < 0:
                raise StoreError(f"'{path}' has no row in the decoded store '{self.folder}'"
                                 f"{' (' + entry.reason + ')' if entry and entry.reason else ''}; "
                                 f"run the same command again to update the store.")
            out[i] = entry.row
        return out

    def read(self, rows: Sequence[int]) -> np.ndarray:
        """The pixels of ``rows``: ``(len(rows), size, size, 3)`` uint8, each row's CRC-32 checked.

        Raises:
          StoreError: a row is damaged and cannot be decoded again from an unchanged file.
        """
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), self.size, self.size, 3), np.uint8)
        if self._fd is None and len(rows):
            raise StoreError(f"The decoded store '{self.folder}' has no pixels file; run the same command again to rebuild it.")
        for i, row in enumerate(rows):
            row = int(row)
            if not 0 <= row < self.committed_rows:
                raise StoreError(f"Row {row} is not in the decoded store '{self.folder}' ({self.committed_rows} rows).")
            data = _pread(self._fd, self.row_bytes, row * self.row_bytes)
            if len(data) != self.row_bytes or zlib.crc32(data) != int(self._crc[row]):
                data = self._repair(row)
            out[i] = np.frombuffer(data, np.uint8).reshape(self.size, self.size, 3)
        self.rows_read += len(rows)
        return out

    def usable(self, paths: Sequence[str], labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, List[str]]:
        """Rows and labels of the ``paths`` that have a row, and the paths that have none (undecodable now).

        Returns:
          ``(rows int64, labels int32, missing paths)``.
        """
        rows, kept, missing = [], [], []
        for path, label in zip(paths, labels):
            entry = self.entries.get(os.path.abspath(path))
            if entry is None or entry.row < 0:
                missing.append(path)
            else:
                rows.append(entry.row)
                kept.append(label)
        return np.asarray(rows, np.int64), np.asarray(kept, np.int32), missing

    def load(self, path: str) -> np.ndarray:
        """One image's pixels ``(size, size, 3)`` uint8 by its path (``update`` first)."""
        return self.read(self.rows([path]))[0]

    def _repair(self, row: int) -> bytes:
        """Decodes a damaged row's file again and writes the row back; fails when the file changed."""
        path = self._path_of_row.get(row)
        entry = self.entries.get(path) if path else None
        with self._repair_lock:
            pixels = None
            if entry is not None:
                try:
                    data = read_image_bytes(path)
                    if file_digest_bytes(data) == entry.digest:
                        pixels = decode_image_bytes(data, self.size, path)
                except ImageReadError:
                    pixels = None
            if pixels is None or zlib.crc32(pixels) != entry.crc:
                raise StoreError(
                    f"Row {row} of the decoded store '{self.pixels_file}' is damaged (checksum mismatch) and its "
                    f"image '{path}' changed or is gone since it was stored. Run the same command again: the store "
                    f"is updated from the files as they are now."
                )
            with contextlib.suppress(OSError):  # a read-only run directory: the right pixels are returned anyway
                fd = os.open(self.pixels_file, os.O_WRONLY | getattr(os, "O_BINARY", 0))
                try:
                    _pwrite(fd, pixels, row * self.row_bytes)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.echo(f"decoded store '{self.folder}': row {row} ({path}) was damaged (checksum mismatch); "
                      f"decoded the image again and repaired the row")
            return pixels.tobytes()


def open_run_store(run_dir: Optional[PathLike], size: int, paths: Sequence[str], progress: bool = True,
                   echo: Callable[[str], None] = logger.warning, desc: str = "decoding images") -> ImageStore:
    """The run's store of ``size`` px, brought up to date for ``paths`` (decoding only what is new or changed).

    Used by the stages after training (QAT, export, evaluation), also from another
    process: when the files are those training stored, nothing is decoded. With
    ``run_dir`` None (a model and a split given in Python), the store lives in a
    temporary folder deleted when the process exits.
    """
    if run_dir is None:
        import atexit
        import tempfile

        folder = tempfile.mkdtemp(prefix="edgetl-store-")
        atexit.register(shutil.rmtree, folder, True)
        store = ImageStore(folder, size, echo=echo)
    else:
        try:
            store = ImageStore(store_folder(run_dir, size), size, echo=echo)
        except OSError as e:  # a read-only run directory: decode into a temporary store instead
            echo(f"cannot write the decoded store in '{run_dir}' ({e.strerror or e}); using a temporary one")
            return open_run_store(None, size, paths, progress, echo, desc)
    if not all(store.has(p) for p in paths):
        store.update(paths, progress=progress, desc=desc)
    return store
