"""Top-1/top-k accuracy, per-class metrics and confusion matrix of a ``.tflite`` on an image folder (no TF)."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgetl.data.folder import SkippedFile, scan_folder
from edgetl.errors import ConfigError, DatasetError, suggest
from edgetl.images import ImageReadError
from edgetl.labels import parse_labels
from edgetl.metrics import confusion_matrix, recall_precision, top_k_accuracy
from edgetl.predict import Classifier
from edgetl.runtime.interpreter import DelegateSpec, RuntimeInfo
from edgetl.runtime.tensors import Triple

OTHER = "(other)"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How ``evaluate`` runs a model over a folder.

    Attributes:
      top_k: k of the top-k accuracy (capped at the number of classes).
      batch_size: images per invoke when the model's batch is dynamic;
        otherwise images are run in the model's fixed batch.
      delegate: '--delegate' value: cpu, xnnpack, edgetpu[:usb|:pci] or a library path.
      delegate_options: options for an Edge TPU / external delegate.
      threads: interpreter threads (None = the runtime's default).
      runtime: 'auto', 'litert', 'tflite-runtime' or 'tensorflow'.
      labels_file: labels file overriding the edgetl metadata's labels.
      mean: per-channel mean override (third-party float models).
      std: per-channel std override.
      decode_workers: threads decoding images ahead of inference (0 = one per core, at most 8).
      progress: show a progress bar.
    """

    top_k: int = 5
    batch_size: int = 32
    delegate: str = "xnnpack"
    delegate_options: Tuple[Tuple[str, str], ...] = ()
    threads: Optional[int] = None
    runtime: str = "auto"
    labels_file: Optional[str] = None
    mean: Optional[Triple] = None
    std: Optional[Triple] = None
    decode_workers: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.top_k < 1:
            raise ConfigError(f"`top_k` must be >= 1, got {self.top_k}.")
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"`batch_size` must be in [1, 4096], got {self.batch_size}.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"`threads` must be >= 1, got {self.threads}.")
        if self.decode_workers < 0:
            raise ConfigError(f"`decode_workers` must be >= 0, got {self.decode_workers}.")


@dataclasses.dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class folder.

    Attributes:
      name: the class folder name.
      label: the model label it maps to.
      index: the model output index of that label.
      images: evaluated images of this class.
      correct: images whose top-1 is this class (recall numerator).
      recall: correct / images (the per-class accuracy).
      precision: correct / images predicted as this class (None if never predicted).
    """

    name: str
    label: str
    index: int
    images: int
    correct: int
    recall: float
    precision: Optional[float]


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on an image folder.

    Attributes:
      model: the model file.
      data: the image folder.
      images: images evaluated.
      top1: top-1 accuracy.
      topk: top-k accuracy.
      k: the k of ``topk``.
      per_class: metrics per class folder, in folder order.
      confusion: counts [true class][predicted column].
      columns: confusion matrix column names: the class folders, then
        '(other)' when the model has labels outside the folder's classes.
      skipped: files not evaluated, with the reason.
      preprocessing: how pixels were turned into input tensors.
      runtime: runtime, delegate and threads used.
      seconds: wall time (decode + inference).
      predictions: per image, in the order evaluated (the folder's sorted
        files, or the ``paths`` given to ``evaluate_split``), the predicted
        confusion-matrix column (a class index; ``len(per_class)`` for
        '(other)'); -1 for an image that was skipped. Paired comparisons of two
        files on the same images (McNemar's test in the run report) use it.
      warnings: problems with the file's standard metadata that were set aside.
    """

    model: str
    data: str
    images: int
    top1: float
    topk: float
    k: int
    per_class: Tuple[ClassMetrics, ...]
    confusion: Tuple[Tuple[int, ...], ...]
    columns: Tuple[str, ...]
    skipped: Tuple[SkippedFile, ...]
    preprocessing: str
    runtime: RuntimeInfo
    seconds: float
    predictions: Tuple[int, ...] = ()
    warnings: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dictionary."""
        data = dataclasses.asdict(self)
        data["runtime"] = self.runtime.to_dict()
        data["images_per_second"] = round(self.images / self.seconds, 2) if self.seconds else None
        return data

    def format(self, max_matrix: int = 20) -> str:
        """Summary, per-class table and (for up to ``max_matrix`` classes) the confusion matrix."""
        from edgetl._table import format_table

        rate = f", {self.images / self.seconds:.1f} images/s" if self.seconds else ""
        lines = [
            f"{self.model} on {self.data}: {self.images} images, {len(self.per_class)} classes ({self.runtime.describe()}{rate})",
            f"  preprocessing: {self.preprocessing}",
            f"  top-1 accuracy: {self.top1:.4f}",
            f"  top-{self.k} accuracy: {self.topk:.4f}",
            "",
        ]
        rows = [[m.name, m.label if m.label != m.name else "", m.images, m.correct, round(m.recall, 4),
                 None if m.precision is None else round(m.precision, 4)] for m in self.per_class]
        lines += format_table(["class", "label", "images", "correct", "recall", "precision"], rows).splitlines()
        if len(self.columns) <= max_matrix:
            lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
            matrix_rows = [[name] + list(row) for name, row in zip([m.name for m in self.per_class], self.confusion)]
            lines += format_table(["true \\ predicted"] + list(self.columns), matrix_rows).splitlines()
        else:
            lines.append(f"(confusion matrix of {len(self.columns)} columns left out; see --json)")
        from edgetl.stats import split_size_note

        note = split_size_note(self.images, {m.name: m.images for m in self.per_class})
        if note:
            lines.append(f"note: {note}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} files: " + "; ".join(f"{s.path}: {s.reason}" for s in self.skipped[:5])
                         + (" ..." if len(self.skipped) > 5 else ""))
        return "\n".join(lines)


def _class_folders(root: str) -> List[str]:
    try:
        return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _match_label(name: str, labels: Sequence[str]) -> Optional[int]:
    """Index of the label a class folder stands for: exact, then loosely, then a comma-separated synonym.

    Loosely: the same text after Unicode NFC normalisation (a folder copied
    from macOS is NFD), ignoring case, '_' for ' ' and spaces at the ends.
    """
    if name in labels:
        return labels.index(name)
    loose = _loose(name)
    for index, label in enumerate(labels):
        if _loose(label) == loose:
            return index
    for index, label in enumerate(labels):
        if loose in (_loose(part) for part in label.split(",")):
            return index
    return None


def _loose(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold().replace("_", " ").strip()


def _batches(paths: Sequence[str], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(paths), size):
        yield range(start, min(start + size, len(paths)))


def _decoded(classifier: Classifier, paths: Sequence[str], batch: int, workers: int,
             load: Optional[Callable[[str], np.ndarray]] = None) -> Iterator[Tuple[List[int], np.ndarray, List[SkippedFile]]]:
    """Decodes batches of images in a thread pool, a bounded number of batches ahead of inference."""
    load = load or classifier.load

    def decode(indices: Sequence[int]):
        kept, arrays, skipped = [], [], []
        for index in indices:
            try:
                arrays.append(load(paths[index]))
                kept.append(index)
            except ImageReadError as e:
                skipped.append(SkippedFile(paths[index], e.reason))
        pixels = np.stack(arrays) if arrays else np.zeros((0,) + classifier.transform.size + (3,), np.uint8)
        return kept, pixels, skipped

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: Deque[concurrent.futures.Future] = collections.deque()
        for indices in _batches(paths, batch):
            pending.append(pool.submit(decode, indices))
            if len(pending) > workers + 1:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def evaluate(model: str, data: str, config: EvalConfig = EvalConfig()) -> EvalResult:
    """Accuracy of a ``.tflite`` classifier on ``data/<class>/<image>``, decoding as training did.

    Class folders are matched to the model's labels by name (the edgetl metadata's labels,
    or ``config.labels_file``); a folder may hold a subset of the model's
    classes. Images that cannot be decoded are skipped and listed.

    Args:
      model: the ``.tflite`` file.
      data: image folder with one sub-folder per class.
      config: options.

    Returns:
      The EvalResult.

    Raises:
      DatasetError: bad folder layout, or a class folder matching no label.
      ConfigError: the model has no labels and no ``labels_file`` was given.
      ModelFileError, DelegateError: see ``Classifier``.

    Example:
      >>> result = evaluate("runs/flowers/export/model_int8.tflite", "data/flowers_test")
      >>> print(result.format())
    """
    start = time.perf_counter()
    labels = parse_labels(config.labels_file) if config.labels_file else None
    delegate = DelegateSpec.parse(config.delegate, config.delegate_options)
    classifier = Classifier(model, delegate, config.threads, config.runtime, labels, config.mean, config.std)
    if not any(classifier.labels):
        raise ConfigError(
            f"'{model}' carries no labels (no edgetl metadata, no labels in its TFLite metadata), so class folders "
            f"cannot be matched to outputs; "
            f"pass --labels FILE with one label per output."
        )
    folder_names = _class_folders(data)
    if not folder_names:
        scan_folder(data)  # raises the folder layout error in the shared words
    mapping: Dict[str, int] = {}
    for name in folder_names:
        index = _match_label(name, classifier.labels)
        if index is None:
            raise DatasetError(
                f"Class folder '{name}' in '{data}' matches none of the model's {len(classifier.labels)} labels."
                f"{suggest(name, [label for label in classifier.labels if label])} "
                f"Rename the folder to a label of the model (see `edgetl inspect {model}`) or pass --labels."
            )
        if index in mapping.values():
            other = next(n for n, i in mapping.items() if i == index)
            raise DatasetError(
                f"Class folders '{other}' and '{name}' in '{data}' both match the label '{classifier.labels[index]}'; "
                f"merge them or rename one."
            )
        mapping[name] = index
    folder = scan_folder(data, class_names=folder_names, verify=False, min_images_per_class=1)
    return _evaluate_items(classifier, model, str(data), folder.paths, folder.labels, folder.class_names,
                           [mapping[name] for name in folder.class_names], list(folder.skipped), config, start)


def evaluate_split(model: str, paths: Sequence[str], labels: Sequence[int], class_names: Sequence[str],
                   config: EvalConfig = EvalConfig(), name: str = "validation split", store=None) -> EvalResult:
    """Accuracy of a ``.tflite`` on a list of images, e.g. the validation split a run recorded.

    ``class_names[labels[i]]`` is the true class of ``paths[i]``; class names
    are matched to the model's labels as ``evaluate`` matches folder names.

    Args:
      model: the ``.tflite`` file.
      paths: image files.
      labels: index into ``class_names`` of each image.
      class_names: the classes, e.g. a run's ``dataset.json`` class names.
      config: options (``labels_file`` overrides the edgetl metadata's labels).
      name: what the images are, shown as the result's ``data``.
      store: a run's decoded store (``edgetl.data.store.ImageStore``): images
        it holds at the model's input size are read from it, not decoded again
        (same pixels: the store decodes with ``images.load_image``).

    Raises:
      DatasetError: no images, or a class name matching no label of the model.

    Example:
      >>> record = RunPaths.of("runs/flowers").load_dataset()
      >>> paths, labels = record.paths_labels("val")
      >>> evaluate_split("runs/flowers/export/model_int8.tflite", paths, labels, record.class_names)
    """
    start = time.perf_counter()
    if not len(paths):
        raise DatasetError(f"No images to evaluate '{model}' on ({name} is empty).")
    labels_override = parse_labels(config.labels_file) if config.labels_file else None
    delegate = DelegateSpec.parse(config.delegate, config.delegate_options)
    classifier = Classifier(model, delegate, config.threads, config.runtime, labels_override, config.mean, config.std)
    class_index = []
    for class_name in class_names:
        index = _match_label(class_name, classifier.labels)
        if index is None:
            raise DatasetError(f"Class '{class_name}' matches none of the labels of '{model}'; "
                               f"was it exported from another run?{suggest(class_name, [l for l in classifier.labels if l])}")
        class_index.append(index)
    load = None
    if store is not None and classifier.transform.size == (store.size, store.size):
        def load(path: str) -> np.ndarray:
            entry = store.entries.get(os.path.abspath(path))
            return store.load(path) if entry is not None and entry.row >= 0 else classifier.load(path)
    return _evaluate_items(classifier, model, name, list(paths), list(labels), list(class_names), class_index, [],
                           config, start, load)


def _evaluate_items(classifier: Classifier, model: str, data: str, paths: Sequence[str], labels: Sequence[int],
                    class_names: Sequence[str], class_index: Sequence[int], skipped: List[SkippedFile],
                    config: EvalConfig, start: float, load: Optional[Callable[[str], np.ndarray]] = None) -> EvalResult:
    """The shared loop: decode ahead in threads, run in batches; top-1/top-k and the confusion matrix by ``edgetl.metrics``."""
    column_of = {label_index: column for column, label_index in enumerate(class_index)}
    has_other = len(set(class_index)) < classifier.num_classes
    columns = tuple(class_names) + ((OTHER,) if has_other else ())
    k = min(config.top_k, classifier.num_classes)
    targets: List[int] = []  # the model output index of each evaluated image's class
    ranked: List[Sequence[int]] = []  # its top-k output indices, best first
    rows: List[int] = []  # its class (confusion matrix row)
    predicted: List[int] = []  # the confusion matrix column of its top-1
    predictions = np.full(len(paths), -1, dtype=np.int64)
    batch = config.batch_size if classifier.max_batch is None else max(classifier.max_batch, 1)
    workers = config.decode_workers or min(8, os.cpu_count() or 1)
    batches = _decoded(classifier, paths, batch, workers, load)
    if config.progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(paths) // batch), desc="evaluating", unit="batch", leave=False)
    for kept, pixels, bad in batches:
        skipped.extend(bad)
        if not kept:
            continue
        scores = classifier.scores(pixels)
        for row, index in zip(classifier.top_k(scores, k), kept):
            indices = row[0]
            true_class = labels[index]
            targets.append(class_index[true_class])
            ranked.append(list(indices))
            rows.append(true_class)
            predicted.append(column_of.get(indices[0], len(columns) - 1))
            predictions[index] = predicted[-1]
    evaluated = len(rows)
    if evaluated == 0:
        raise DatasetError(f"None of the {len(paths)} images of '{data}' could be decoded; see the skipped files.")
    confusion = confusion_matrix(rows, predicted, (len(class_names), len(columns)))
    per_class = []
    for row, (name, (images, correct, recall, precision)) in enumerate(zip(class_names, recall_precision(confusion))):
        per_class.append(ClassMetrics(name=name, label=classifier.labels[class_index[row]], index=class_index[row],
                                      images=images, correct=correct, recall=recall or 0.0, precision=precision))
    return EvalResult(
        model=str(model), data=str(data), images=evaluated, top1=top_k_accuracy(targets, np.array(ranked), 1),
        topk=top_k_accuracy(targets, np.array(ranked), k), k=k,
        per_class=tuple(per_class), confusion=tuple(tuple(int(v) for v in row) for row in confusion), columns=columns,
        skipped=tuple(skipped), preprocessing=classifier.transform.describe(), runtime=classifier.loaded.runtime,
        seconds=time.perf_counter() - start, predictions=tuple(int(v) for v in predictions),
        warnings=classifier.warnings,
    )
