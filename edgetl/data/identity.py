"""The identity of a run's data: class list, every image file's content digest and the decode settings (no TF).

A stage that depends on the images (training, and through its token every
stage after it) keys its settings with this identity, so a run notices an
added class, an added, removed or edited image, or a renamed class folder, and
redoes what depends on them instead of reporting a stale model. Computing it
decodes nothing: a file whose size and mtime match the decoded store's entry
takes its digest from there, any other file is hashed.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from edgetl.data.folder import ImageFolder, scan_candidates
from edgetl.data.store import INDEX_FILE, ImageStore, decode_settings, store_folder
from edgetl.images import ImageReadError, file_digest_bytes, read_image_bytes
from edgetl.run_dir import RunPaths


@dataclasses.dataclass(frozen=True)
class DataIdentity:
    """What a run's images were, as far as training is concerned.

    Attributes:
      key: hex sha256 over everything below: equal keys, equal data.
      class_names: the classes, in label order.
      files: absolute path -> (class name, BLAKE2b digest of the bytes, or None when unreadable),
        for every candidate image file of the training (and validation) folder.
      decode: the decode settings (``edgetl.data.store.decode_settings``).
    """

    key: str
    class_names: Tuple[str, ...]
    files: Dict[str, Tuple[str, Optional[str]]]
    decode: Dict[str, object]

    def to_dict(self) -> dict:
        return {"key": self.key, "class_names": list(self.class_names), "decode": self.decode,
                "files": {path: list(value) for path, value in self.files.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "DataIdentity":
        return cls(str(data["key"]), tuple(data["class_names"]),
                   {path: (str(value[0]), value[1]) for path, value in data["files"].items()}, dict(data["decode"]))


def data_identity(folders: Sequence[ImageFolder], digest_of: Callable[[str], Optional[str]], size: int) -> DataIdentity:
    """The identity of the candidate files of ``folders`` (training folder first) at ``size`` px.

    Args:
      folders: ``scan_candidates`` of the training folder and, if any, the validation folder.
      digest_of: content digest of a path (None when unreadable).
      size: the model's input side.
    """
    class_names = tuple(folders[0].class_names)
    files: Dict[str, Tuple[str, Optional[str]]] = {}
    for folder in folders:
        for path, label in zip(folder.paths, folder.labels):
            files[os.path.abspath(path)] = (folder.class_names[label], digest_of(path))
    decode = decode_settings(size)
    text = json.dumps([decode, list(class_names), sorted((p, c, d or "") for p, (c, d) in files.items())],
                      ensure_ascii=True, separators=(",", ":"))
    return DataIdentity(hashlib.sha256(text.encode("ascii")).hexdigest(), class_names, files, decode)


def _digest_from_file(path: str) -> Optional[str]:
    try:
        return file_digest_bytes(read_image_bytes(path))
    except ImageReadError:
        return None


def store_digests(store: Optional[ImageStore]) -> Callable[[str], Optional[str]]:
    """``digest_of`` that trusts the store's entry of an unchanged file and hashes any other."""

    def digest_of(path: str) -> Optional[str]:
        if store is not None:
            absolute = os.path.abspath(path)
            entry = store.entries.get(absolute)
            if entry is not None and entry.digest is not None:
                try:
                    info = os.stat(absolute)
                except OSError:
                    return None
                if entry.size == info.st_size and entry.mtime_ns == info.st_mtime_ns:
                    return entry.digest
        return _digest_from_file(path)

    return digest_of


def current_identity(path: str, val_path: Optional[str], run_dir: str, size: int) -> DataIdentity:
    """The identity of the folder(s) as they are now, decoding nothing (see the module docstring).

    Raises:
      DatasetError: the folder layout is unusable (as ``scan_candidates``).
    """
    train = scan_candidates(path)
    folders = [train] + ([scan_candidates(val_path, class_names=train.class_names)] if val_path else [])
    folder = store_folder(run_dir, size)
    store = ImageStore(folder, size, echo=lambda line: None) if (folder / INDEX_FILE).is_file() else None
    try:
        return data_identity(folders, store_digests(store), size)
    finally:
        if store is not None:
            store.close()


def recorded_identity(run_dir) -> Optional[DataIdentity]:
    """The data identity a run recorded in its dataset.json, or None (none yet, older edgetl, damaged).

    Args:
      run_dir: the run directory (a path or an ``edgetl.run_dir.RunPaths``).
    """
    dataset = run_dir.dataset if hasattr(run_dir, "dataset") else RunPaths.of(run_dir).dataset
    try:
        return DataIdentity.from_dict(json.loads(Path(dataset).read_text(encoding="utf-8"))["identity"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def describe_changes(old: Optional[DataIdentity], new: DataIdentity) -> str:
    """One line naming what changed from ``old`` to ``new`` (classes added, removed or renamed; images
    added, removed or edited; decode settings), e.g. ``class 'blue' added (6 images); 1 image edited``."""
    if old is None:
        return "the run recorded no identity of its data (made by an older edgetl)"
    if old.key == new.key:
        return "nothing changed"
    parts: List[str] = []
    if old.decode != new.decode:
        changed = [f"{k} {old.decode.get(k)} -> {new.decode.get(k)}" for k in new.decode if old.decode.get(k) != new.decode.get(k)]
        parts.append("decode settings changed (" + ", ".join(changed) + ")")
    old_classes, new_classes = set(old.class_names), set(new.class_names)
    digests = {"old": collections.defaultdict(set), "new": collections.defaultdict(set)}
    for side, identity in (("old", old), ("new", new)):
        for _, (class_name, digest) in identity.files.items():
            digests[side][class_name].add(digest)
    renamed: Dict[str, str] = {}
    for gone in sorted(old_classes - new_classes):
        for added in sorted(new_classes - old_classes - set(renamed.values())):
            if digests["old"][gone] and digests["old"][gone] == digests["new"][added]:
                renamed[gone] = added
                break
    parts.extend(f"class '{a}' renamed to '{b}'" for a, b in renamed.items())
    for name in sorted(new_classes - old_classes - set(renamed.values())):
        count = sum(1 for c, _ in new.files.values() if c == name)
        parts.append(f"class '{name}' added ({_count(count, 'image')})")
    for name in sorted(old_classes - new_classes - set(renamed)):
        parts.append(f"class '{name}' removed")
    moved = set(renamed) | set(renamed.values()) | (old_classes ^ new_classes)
    added = [p for p, (c, _) in new.files.items() if p not in old.files and c not in moved]
    removed = [p for p, (c, _) in old.files.items() if p not in new.files and c not in moved]
    edited = [p for p, (_, d) in new.files.items() if p in old.files and old.files[p][1] != d]
    relabelled = [p for p, (c, _) in new.files.items() if p in old.files and old.files[p][0] != c and c not in moved]
    for items, verb in ((added, "added"), (removed, "removed"), (edited, "edited"), (relabelled, "moved to another class")):
        if items:
            example = os.path.basename(items[0])
            parts.append(f"{_count(len(items), 'image')} {verb} (e.g. '{example}')")
    if not parts and old.class_names != new.class_names:
        parts.append("class order changed")
    return "; ".join(parts) or "the image files changed"
