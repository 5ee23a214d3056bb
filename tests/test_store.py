"""The decoded store: decode once, reuse, notice changes, survive damage and a full disk (no TensorFlow)."""

from __future__ import annotations

import errno
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image_folder
from edgetl.data import store as store_lib
from edgetl.data.store import ImageStore, store_folder
from edgetl.errors import StoreError
from edgetl.images import load_image

SIZE = 24


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data", per_class=4, size=40)


def _paths(folder: Path):
    return sorted(str(p) for p in folder.rglob("*.png"))


def _count_decodes(monkeypatch):
    calls = []
    original = store_lib.decode_image_bytes

    def counting(data, size, path="<bytes>"):
        calls.append(path)
        return original(data, size, path)

    monkeypatch.setattr(store_lib, "decode_image_bytes", counting)
    return calls


def test_rows_equal_load_image_and_nothing_is_decoded_twice(folder, tmp_path, monkeypatch):
    calls = _count_decodes(monkeypatch)
    paths = _paths(folder)
    store = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE)
    assert store.update(paths, progress=False) == [None] * len(paths)
    assert len(calls) == len(paths)
    pixels = store.read(store.rows(paths[::-1]))
    assert pixels.shape == (len(paths), SIZE, SIZE, 3) and pixels.dtype == np.uint8
    for path, image in zip(paths[::-1], pixels):
        np.testing.assert_array_equal(image, load_image(path, SIZE))
    # A second object (another stage, another process) reuses every row.
    again = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE)
    again.update(paths, progress=False)
    assert len(calls) == len(paths)
    np.testing.assert_array_equal(again.read(again.rows(paths)), store.read(store.rows(paths)))


def test_touched_file_is_hashed_not_decoded_and_edited_file_is_decoded(folder, tmp_path, monkeypatch):
    paths = _paths(folder)
    store = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE)
    store.update(paths, progress=False)
    calls = _count_decodes(monkeypatch)
    os.utime(paths[0], ns=(1, 1))  # a copy without -p: new mtime, same bytes
    store.update(paths, progress=False)
    assert calls == []
    from PIL import Image

    Image.new("RGB", (40, 40), (1, 2, 3)).save(paths[1])
    store.update(paths, progress=False)
    assert calls == [paths[1]]
    np.testing.assert_array_equal(store.load(paths[1]), np.full((SIZE, SIZE, 3), (1, 2, 3), np.uint8))


def test_unreadable_files_get_their_reason_and_pruning_compacts(folder, tmp_path):
    paths = _paths(folder)
    (folder / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    store = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE)
    reasons = store.update(paths + [str(folder / "red" / "broken.png")], progress=False)
    assert reasons[:-1] == [None] * len(paths) and "not an image" in reasons[-1]
    kept = paths[: len(paths) // 2]
    store.update(kept, progress=False, prune=True)
    assert store.committed_rows == len(kept) and store.generation == 1
    assert [p.name for p in store.folder.glob("pixels.*.u8")] == ["pixels.1.u8"]
    for path in kept:
        np.testing.assert_array_equal(store.load(path), load_image(path, SIZE))


def test_damaged_row_is_decoded_again_and_repaired(folder, tmp_path):
    paths = _paths(folder)
    lines = []
    store = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE, echo=lines.append)
    store.update(paths, progress=False)
    row = int(store.rows([paths[3]])[0])
    with open(store.pixels_file, "r+b") as handle:
        handle.seek(row * store.row_bytes + 5)
        handle.write(b"\x00\xff\x00")
    np.testing.assert_array_equal(store.read([row])[0], load_image(paths[3], SIZE))
    assert len(lines) == 1 and "damaged (checksum mismatch)" in lines[0] and "repaired" in lines[0]
    np.testing.assert_array_equal(store.read([row])[0], load_image(paths[3], SIZE))
    assert len(lines) == 1  # repaired on disk: no second line


def test_damaged_row_of_a_changed_file_is_an_error_never_a_wrong_batch(folder, tmp_path):
    paths = _paths(folder)
    store = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE, echo=lambda line: None)
    store.update(paths, progress=False)
    row = int(store.rows([paths[0]])[0])
    with open(store.pixels_file, "r+b") as handle:
        handle.seek(row * store.row_bytes)
        handle.write(b"\x01\x02\x03")
    Path(paths[0]).write_bytes(Path(paths[1]).read_bytes())
    with pytest.raises(StoreError, match="is damaged .* changed or is gone .* Run the same command again"):
        store.read([row])


def test_truncated_pixels_file_and_damaged_index_are_rebuilt_with_one_line(folder, tmp_path):
    paths = _paths(folder)
    where = store_folder(tmp_path / "run", SIZE)
    ImageStore(where, SIZE).update(paths, progress=False)
    pixels_file = where / "pixels.0.u8"
    os.truncate(pixels_file, pixels_file.stat().st_size - 10)
    lines = []
    store = ImageStore(where, SIZE, echo=lines.append)
    assert len(lines) == 1 and "shorter than its index" in lines[0] and "1 image(s)" in lines[0]
    store.update(paths, progress=False)
    for path in paths:
        np.testing.assert_array_equal(store.load(path), load_image(path, SIZE))

    (where / "index.json").write_text('{"format": 1, "rows": ')
    lines.clear()
    store = ImageStore(where, SIZE, echo=lines.append)
    assert lines == [f"decoded store '{where}' is damaged (unreadable index (JSONDecodeError)); rebuilding it"]
    assert store.committed_rows == 0
    store.update(paths, progress=False)
    for path in paths:
        np.testing.assert_array_equal(store.load(path), load_image(path, SIZE))


def test_full_disk_mid_build_keeps_committed_rows_and_the_next_run_finishes(folder, tmp_path, monkeypatch):
    paths = _paths(folder)
    where = store_folder(tmp_path / "run", SIZE)
    writes = {"n": 0}
    real_pwrite = store_lib._pwrite

    def filling_pwrite(fd, data, offset):
        writes["n"] += 1
        if writes["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_pwrite(fd, data, offset)

    monkeypatch.setattr(store_lib, "_pwrite", filling_pwrite)
    with pytest.raises(StoreError) as failure:
        ImageStore(where, SIZE).update(paths, progress=False)
    message = str(failure.value)
    assert "\n" not in message and message.startswith("No space left on device while writing the decoded store")
    # Workers write their own rows, so which 5 writes succeeded depends on the threads' order; what
    # must hold is that the index commits exactly the unbroken run of rows before the failure.
    kept = re.search(r"the (\d+) rows committed before are kept", message)
    assert kept and "run the same command again" in message
    committed = int(kept.group(1))
    assert committed <= 5 and json.loads((where / "index.json").read_text())["rows"] == committed
    monkeypatch.setattr(store_lib, "_pwrite", real_pwrite)
    calls = _count_decodes(monkeypatch)
    store = ImageStore(where, SIZE)
    store.update(paths, progress=False)
    assert len(calls) == len(paths) - committed  # decoding continued where it stopped
    for path in paths:
        np.testing.assert_array_equal(store.load(path), load_image(path, SIZE))


def test_too_little_free_space_fails_before_decoding(folder, tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store_lib.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(StoreError, match=r"needs up to 0\.00 GB .* for 12 images at 24 px, but only 0\.00 GB are free"):
        ImageStore(store_folder(tmp_path / "run", SIZE), SIZE).update(_paths(folder), progress=False)


def test_concurrent_reads_from_threads(folder, tmp_path):
    paths = _paths(folder)
    store = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE)
    store.update(paths, progress=False)
    expected = store.read(store.rows(paths))
    errors = []

    def reader():
        try:
            for _ in range(20):
                np.testing.assert_array_equal(store.read(store.rows(paths)), expected)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_large_builds_decode_in_processes(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(store_lib, "PROCESS_POOL_MIN", 1)  # the pool large folders get, on a small one
    paths = _paths(folder)
    store = ImageStore(store_folder(tmp_path / "run", SIZE), SIZE)
    assert store.update(paths + [str(folder / "missing.png")], progress=False)[-1].startswith("missing")
    for path in paths:
        np.testing.assert_array_equal(store.load(path), load_image(path, SIZE))


@pytest.mark.parametrize("process_pool", [False, True], ids=["threads", "processes"])
def test_chunks_with_undecodable_and_unchanged_files_leave_only_unreferenced_slots(folder, tmp_path, monkeypatch,
                                                                                    process_pool):
    # Workers write the rows of their chunk themselves; a file that cannot be decoded (or is unchanged)
    # leaves its reserved slot unwritten. No path may ever point at such a slot, in this process or the next.
    monkeypatch.setattr(store_lib, "CHUNK_FILES", 3)
    if process_pool:
        monkeypatch.setattr(store_lib, "PROCESS_POOL_MIN", 1)
    paths = _paths(folder)
    broken = folder / paths[0].split("/")[-2] / "broken.png"
    broken.write_bytes(b"not an image at all")
    ordered = paths[:4] + [str(broken)] + paths[4:]
    where = store_folder(tmp_path / "run", SIZE)
    reasons = ImageStore(where, SIZE).update(ordered, progress=False)
    assert [r is None for r in reasons] == [p != str(broken) for p in ordered]
    os.utime(paths[7], ns=(0, 12345))  # touched, same bytes: hashed in a chunk, not decoded or given a row
    store = ImageStore(where, SIZE)
    assert store.update(ordered, progress=False) == reasons
    used = [store.rows([p])[0] for p in paths]
    assert len(set(used)) == len(paths) and max(used) < store.committed_rows
    reopened = ImageStore(where, SIZE)
    for path in paths:
        np.testing.assert_array_equal(reopened.load(path), load_image(path, SIZE))
