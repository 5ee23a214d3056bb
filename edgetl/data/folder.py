"""Scan root/<class>/<image> into an ImageFolder; validate layout and images (no TensorFlow)."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from edgetl.errors import DatasetError
from edgetl.images import IMAGE_EXTENSIONS, ImageReadError, open_rgb


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file that was not used, and why.

    Attributes:
      path: the file.
      reason: short reason, e.g. 'truncated or corrupt'.
    """

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The usable images of a folder, with integer labels.

    Attributes:
      root: the scanned folder.
      paths: image files, sorted within each class.
      labels: class index of each path.
      class_names: sorted class folder names; index = label.
      skipped: files that were ignored, with the reason.
    """

    root: str
    paths: Tuple[str, ...]
    labels: Tuple[int, ...]
    class_names: Tuple[str, ...]
    skipped: Tuple[SkippedFile, ...] = ()

    def counts(self) -> Dict[str, int]:
        """Number of usable images per class name."""
        counter = collections.Counter(self.labels)
        return {name: counter.get(index, 0) for index, name in enumerate(self.class_names)}

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """Human-readable summary: classes, counts and skipped files."""
        lines = [f"{self.root}: {len(self.paths)} images in {len(self.class_names)} classes"]
        for name, count in self.counts().items():
            lines.append(f"  {name}: {count}")
        if self.skipped:
            reasons = collections.Counter(s.reason for s in self.skipped)
            lines.append(f"  skipped {len(self.skipped)} files: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()))
            for item in self.skipped[:10]:
                lines.append(f"    {item.path}: {item.reason}")
            if len(self.skipped) > 10:
                lines.append(f"    ... and {len(self.skipped) - 10} more (see dataset.json)")
        return "\n".join(lines)


def _walk_files(class_dir: Path, skipped: List[SkippedFile]) -> List[Path]:
    """All files below ``class_dir``, following symlinks but never a loop."""
    found: List[Path] = []
    seen_dirs = set()

    def on_error(error: OSError) -> None:
        skipped.append(SkippedFile(str(error.filename), f"unreadable folder ({error.strerror})"))

    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True, onerror=on_error):
        try:
            key = os.stat(dirpath)
            key = (key.st_dev, key.st_ino)
        except OSError:
            continue
        if key in seen_dirs:
            skipped.append(SkippedFile(dirpath, "symlink loop (folder already visited)"))
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in sorted(filenames) if not name.startswith("."))
    return found


def _check_image(path: str) -> Optional[str]:
    try:
        open_rgb(path, draft_size=64)
    except ImageReadError as e:
        return e.reason
    return None


def scan_folder(
    root: str,
    class_names: Optional[Sequence[str]] = None,
    verify: bool = True,
    min_images_per_class: int = 2,
    progress: bool = False,
) -> ImageFolder:
    """Scans ``root/<class>/**/<image>`` and decodes every image once to validate it.

    Corrupt, truncated, empty and non-image files are skipped and listed, not fatal.
    Training does not call this: it scans with ``scan_candidates`` and lets the
    decoded store (``edgetl.data.store``) decode and validate each image once.

    Args:
      root: folder with one sub-folder per class.
      class_names: expected classes (e.g. a validation folder must use the
        training classes); None takes the sorted sub-folder names.
      verify: decode every image to catch corrupt files (recommended).
      min_images_per_class: fewer usable images in any class is an error.
      progress: show a progress bar while decoding.

    Returns:
      The ImageFolder.

    Raises:
      DatasetError: missing/empty folder, fewer than two classes, a class
        with too few usable images, a class folder name that is not UTF-8,
        or classes that differ from ``class_names``.

    Example:
      >>> folder = scan_folder("data/flowers")
      >>> print(folder.summary())
    """
    candidates = scan_candidates(root, class_names)
    reasons: List[Optional[str]] = [None] * len(candidates)
    if verify and len(candidates):
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            iterator = pool.map(_check_image, candidates.paths)
            if progress:
                from tqdm import tqdm

                iterator = tqdm(iterator, total=len(candidates), desc="checking images", unit="img", leave=False, disable=None)
            reasons = list(iterator)
    return keep_usable(candidates, reasons, min_images_per_class)


def scan_candidates(root: str, class_names: Optional[Sequence[str]] = None) -> ImageFolder:
    """The layout checks of ``scan_folder`` and every file with an image extension, none decoded.

    Returns:
      An ImageFolder of candidate files; ``skipped`` lists files without an
      image extension and unreadable folders.

    Raises:
      DatasetError: as ``scan_folder`` for the layout (not for image counts).
    """
    base = Path(root)
    if not base.exists():
        raise DatasetError(f"Image folder '{root}' does not exist. Pass a folder laid out as {root}/<class_name>/<image>.jpg.")
    if not base.is_dir():
        raise DatasetError(f"'{root}' is a file, not a folder. Pass a folder laid out as <folder>/<class_name>/<image>.jpg.")
    try:
        entries = sorted(p for p in base.iterdir() if not p.name.startswith("."))
    except PermissionError:
        raise DatasetError(f"Image folder '{root}' cannot be read (permission denied); check its permissions.") from None
    class_dirs = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not class_dirs:
        hint = f" It holds {len(loose)} images directly: move them into one sub-folder per class." if loose else ""
        raise DatasetError(
            f"No class folders found in '{root}'. Expected {root}/<class_name>/<image>.jpg with one sub-folder per class.{hint}"
        )
    names = tuple(p.name for p in class_dirs)
    for name in names:
        if not _is_utf8(name):
            raise DatasetError(
                f"Class folder '{_printable(name)}' in '{_printable(root)}' has a name that is not valid UTF-8; class "
                f"names become the model's labels, which are text. Rename the folder (e.g. convmv -f latin1 -t utf8)."
            )
    if class_names is not None:
        missing = sorted(set(class_names) - set(names))
        extra = sorted(set(names) - set(class_names))
        if missing or extra:
            raise DatasetError(
                f"Classes in '{root}' differ from the training classes: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}. Use the same class folder names in both."
            )
        names = tuple(class_names)
        class_dirs = [base / n for n in names]
    elif len(names) < 2:
        raise DatasetError(
            f"Only one class folder ('{names[0]}') found in '{root}'; a classifier needs at least two. "
            f"Add a folder per class under '{root}'."
        )

    skipped: List[SkippedFile] = []
    paths: List[str] = []
    labels: List[int] = []
    for label, class_dir in enumerate(class_dirs):
        for path in _walk_files(class_dir, skipped):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(_display(path))
                labels.append(label)
            else:
                skipped.append(SkippedFile(_display(path), f"not an image extension ({path.suffix or 'none'})"))
    return ImageFolder(str(root), tuple(paths), tuple(labels), names, tuple(skipped))


def keep_usable(candidates: ImageFolder, reasons: Sequence[Optional[str]], min_images_per_class: int = 2) -> ImageFolder:
    """``candidates`` without the files whose reason is not None (listed as skipped), with the count checks.

    Args:
      candidates: from ``scan_candidates``.
      reasons: per candidate, None when usable, else why not.
      min_images_per_class: fewer usable images in any class is an error.

    Raises:
      DatasetError: no usable image, or a class with too few.
    """
    root = candidates.root
    skipped = list(candidates.skipped)
    paths, labels = [], []
    for path, label, reason in zip(candidates.paths, candidates.labels, reasons):
        if reason is None:
            paths.append(path)
            labels.append(label)
        else:
            skipped.append(SkippedFile(path, reason))
    folder = ImageFolder(str(root), tuple(paths), tuple(labels), candidates.class_names, tuple(skipped))
    if not paths:
        raise DatasetError(
            f"No usable images found under '{root}' ({len(skipped)} files skipped). "
            f"Expected {root}/<class_name>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}."
        )
    too_few = {n: c for n, c in folder.counts().items() if c < min_images_per_class}
    if too_few:
        detail = ", ".join(f"'{n}' has {c}" for n, c in too_few.items())
        raise DatasetError(
            f"Too few usable images in '{root}': {detail} (need at least {min_images_per_class} per class). "
            f"Add images to those class folders or remove them."
        )
    return folder


def check_layout(root: str, val_path: Optional[str] = None, min_images_per_class: int = 2) -> None:
    """The layout checks of ``scan_folder`` without decoding any image: milliseconds, before TensorFlow loads.

    Raises:
      DatasetError: what ``scan_folder`` raises for the layout (missing or
        empty folder, one class, too few image files, mismatched validation
        classes, non-UTF-8 class names).
    """
    folder = scan_folder(root, verify=False, min_images_per_class=min_images_per_class)
    if val_path:
        scan_folder(val_path, class_names=folder.class_names, verify=False, min_images_per_class=1)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes survive in names as lone surrogates
        return False
    return True


def _printable(name: str) -> str:
    """``name`` with undecodable bytes shown as \\xNN, for messages."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _display(path: Path) -> str:
    # File names that are not valid UTF-8 survive as surrogate escapes; keep the real bytes
    # for opening but make sure printing them never raises.
    return os.fsdecode(os.fsencode(path))
