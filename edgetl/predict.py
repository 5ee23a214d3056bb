"""Top-k labels of images with a ``.tflite`` classifier: the Classifier shared by ``predict`` and ``eval`` (no TF)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgetl.errors import ConfigError, DatasetError, ModelFileError
from edgetl.images import ImageReadError, load_image
from edgetl.labels import LabelsFile, read_labels  # noqa: F401 (read_labels: public here since before edgetl.labels)
from edgetl.modelfile import check_image_input, input_metadata, model_labels, parse_model, read_model
from edgetl.runtime.interpreter import DelegateSpec, LoadedModel, RuntimeInfo, load_interpreter
from edgetl.runtime.tensors import InputTransform, Triple, input_transform, to_scores

PathLike = Union[str, os.PathLike]
# Output types whose values edgetl turns into scores (integers are dequantized).
_SCORE_TYPES = ("float32", "float16", "uint8", "int8", "int16")
@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image.

    Attributes:
      image: the image file.
      indices: class indices, best first.
      labels: their labels ('' when the model has none and no --labels was given).
      scores: their scores (probabilities for edgetl models; dequantized outputs otherwise).
    """

    image: str
    indices: Tuple[int, ...]
    labels: Tuple[str, ...]
    scores: Tuple[float, ...]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dictionary with a 'top' list of {index, label, score}."""
        return {"image": self.image, "top": [{"index": i, "label": label, "score": round(score, 6)}
                                             for i, label, score in zip(self.indices, self.labels, self.scores)]}


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """Predictions for a list of images.

    Attributes:
      model: the model file.
      predictions: one per image, in the order given.
      preprocessing: how pixels were turned into input tensors.
      runtime: runtime, delegate and threads used.
      seconds: wall time of decoding and inference.
      warnings: problems with the file's standard metadata that were set aside.
    """

    model: str
    predictions: Tuple[Prediction, ...]
    preprocessing: str
    runtime: RuntimeInfo
    seconds: float
    warnings: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dictionary."""
        return {"model": self.model, "preprocessing": self.preprocessing, "runtime": self.runtime.to_dict(),
                "seconds": round(self.seconds, 4), "predictions": [p.to_dict() for p in self.predictions],
                "warnings": list(self.warnings)}

    def format(self) -> str:
        """One block per image: rank, score, index and label."""
        lines = []
        for prediction in self.predictions:
            lines.append(prediction.image)
            for rank, (index, label, score) in enumerate(zip(prediction.indices, prediction.labels, prediction.scores), 1):
                lines.append(f"  {rank}. {score:7.4f}  {index:>5}  {label}")
        return "\n".join(lines)


class Classifier:
    """A loaded image classifier: decode with Pillow, preprocess as trained, run, return scores.

    Attributes:
      loaded: the interpreter and model information.
      transform: pixels -> input tensor.
      labels: class names by output index ('' entries when unknown).
      labels_source: where they come from: '--labels', 'model metadata',
        'TFLite metadata, labels.txt' or 'none'.
      num_classes: number of outputs.
      warnings: problems with the file's standard metadata (set aside: the
        flags and defaults apply instead), one line each.
    """

    def __init__(
        self,
        model: PathLike,
        delegate: Union[str, DelegateSpec] = "xnnpack",
        threads: Optional[int] = None,
        runtime: str = "auto",
        labels: Optional[Union[Sequence[str], LabelsFile]] = None,
        mean: Optional[Triple] = None,
        std: Optional[Triple] = None,
    ):
        """Loads ``model`` and works out its preprocessing and labels.

        Each comes from the first of: the arguments (flags), edgetl's model
        metadata, the standard TFLite metadata (labels.txt in the appended zip,
        NormalizationOptions), the defaults. Problems with a third-party
        file's standard metadata are returned as warnings and the metadata is
        not used (``warnings``).

        Args:
          model: ``.tflite`` file.
          delegate: see ``DelegateSpec.parse``.
          threads: interpreter threads (None = runtime default).
          runtime: 'auto', 'litert', 'tflite-runtime' or 'tensorflow'.
          labels: labels overriding the embedded ones (e.g. ``--labels``); a
            LabelsFile is read plain or in Coral's indexed form knowing the
            model (``LabelsFile.resolve``).
          mean: override of the per-channel mean.
          std: override of the per-channel std.

        Raises:
          ModelFileError: unusable model (not an RGB image classifier, an
            implausible input size, a metadata of another export...).
          ConfigError: the labels do not match the number of outputs.
          DelegateError: see ``load_interpreter``.
        """
        data = read_model(model)
        # Checked before the interpreter allocates (and the sandbox runs) an implausibly large input.
        check_image_input(parse_model(data, str(model)))
        self.loaded: LoadedModel = load_interpreter(data, delegate=delegate, threads=threads, runtime=runtime, name=str(model))
        info = self.loaded.model
        metadata = info.edgetl_metadata
        self.warnings: Tuple[str, ...] = info.warnings
        self.transform: InputTransform = input_transform(info.inputs[0], metadata, mean, std, model_name=info.path,
                                                         standard=input_metadata(info))
        output = info.outputs[0]
        if output.dtype not in _SCORE_TYPES:
            raise ModelFileError(f"'{info.path}' has a {output.dtype} output ({output.describe()}); edgetl reads class "
                                 f"scores of type {', '.join(_SCORE_TYPES)}. Re-export the model.")
        try:
            computed = tuple(int(d) for d in self.loaded.interpreter.get_output_details()[0]["shape"])
        except ValueError as e:  # e.g. a tensor name that is not UTF-8, which the runtime cannot decode
            raise ModelFileError(f"The runtime cannot describe the output of '{info.path}' ({e}): the file is damaged. "
                                 f"Re-copy or re-export it.") from e
        if computed != tuple(output.shape):
            raise ModelFileError(
                f"'{info.path}' declares output {output.describe()} but its graph computes shape {list(computed)}: "
                f"the file is damaged. Re-copy or re-export it."
            )
        if not output.shape:
            raise ModelFileError(f"'{info.path}' has a scalar output ({output.describe()}), not class scores; "
                                 f"edgetl predict/eval need an image classifier.")
        self.num_classes = int(np.prod(output.shape[1:])) if len(output.shape) > 1 else int(output.shape[0])
        embedded, self.labels_source = model_labels(info)
        if isinstance(labels, LabelsFile):
            labels = labels.resolve(self.num_classes, embedded or None)
        if labels is not None:
            self.labels_source = "--labels"
        elif embedded:
            labels = embedded
        if labels is not None and len(labels) != self.num_classes:
            raise ConfigError(
                f"{'--labels' if self.labels_source == '--labels' else 'The ' + self.labels_source} has {len(labels)} "
                f"labels but '{info.path}' outputs {self.num_classes} classes ({output.describe()}); "
                + ("pass the labels file made for this model." if self.labels_source == "--labels"
                   else "the file is inconsistent: pass --labels FILE with one label per output.")
            )
        self.labels: Tuple[str, ...] = tuple(labels) if labels is not None else ("",) * self.num_classes
        self._fixed_batch = int(info.inputs[0].shape[0]) or 1
        self._dynamic_batch = info.inputs[0].shape_signature[0] < 0
        self._batch = self._fixed_batch

    @property
    def max_batch(self) -> Optional[int]:
        """Largest batch one invoke takes: None when the batch dimension is dynamic."""
        return None if self._dynamic_batch else self._fixed_batch

    def load(self, path: PathLike) -> np.ndarray:
        """Decodes and resizes one image file exactly as training did (``images.load_image``).

        Raises:
          ImageReadError: the image cannot be decoded.
        """
        return load_image(path, self.transform.size)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Scores of ``(N, H, W, 3)`` uint8 pixels as ``(N, num_classes)`` float32."""
        batch = self.transform(pixels)
        count = batch.shape[0]
        if self._dynamic_batch:
            if count != self._batch:
                self.loaded.resize_batch(count)
                self._batch = count
            return to_scores(self.loaded.run(batch), self.loaded.model.outputs[0], self.loaded.model.edgetl_metadata)
        results = []
        for start in range(0, count, self._fixed_batch):
            chunk = batch[start:start + self._fixed_batch]
            used = chunk.shape[0]
            if used < self._fixed_batch:  # a fixed batch > 1: pad the last chunk, drop the padding's outputs
                chunk = np.concatenate([chunk, np.zeros((self._fixed_batch - used,) + chunk.shape[1:], chunk.dtype)])
            results.append(to_scores(self.loaded.run(chunk), self.loaded.model.outputs[0], self.loaded.model.edgetl_metadata)[:used])
        return np.concatenate(results)

    def top_k(self, scores: np.ndarray, k: int) -> List[Tuple[Tuple[int, ...], Tuple[float, ...]]]:
        """Best ``k`` (indices, scores) per row, best first; ties keep the lower index first."""
        k = max(1, min(k, scores.shape[1]))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [(tuple(int(i) for i in row), tuple(float(scores[n, i]) for i in row)) for n, row in enumerate(order)]


def predict(
    model: PathLike,
    images: Sequence[PathLike],
    top_k: int = 5,
    delegate: Union[str, DelegateSpec] = "xnnpack",
    threads: Optional[int] = None,
    runtime: str = "auto",
    labels: Optional[Union[Sequence[str], LabelsFile]] = None,
    mean: Optional[Triple] = None,
    std: Optional[Triple] = None,
) -> PredictResult:
    """Top-k labels with scores for each image.

    Every image is decoded before the first inference, so a bad file fails
    fast with its name.

    Args:
      model: ``.tflite`` classifier.
      images: image files.
      top_k: how many classes to report per image.
      delegate: see ``DelegateSpec.parse``.
      threads: interpreter threads.
      runtime: TFLite runtime to use.
      labels: labels overriding the embedded ones (a LabelsFile from ``--labels``, or names).
      mean: per-channel mean override (third-party float models).
      std: per-channel std override.

    Returns:
      The PredictResult.

    Raises:
      DatasetError: an image is missing or cannot be decoded.
      ModelFileError: unusable model (see ``Classifier``).
      DelegateError: the delegate cannot be loaded.
      ConfigError: bad options or labels that do not fit the model.

    Example:
      >>> result = predict("mobilenet_v2_1.0_224_quant.tflite", ["parrot.jpg"])  # labels from its metadata
      >>> result.predictions[0].labels[0]
      'macaw'
    """
    if top_k < 1:
        raise ConfigError(f"`--top-k` must be >= 1, got {top_k}.")
    if not images:
        raise ConfigError("No images given; pass one or more image files after the model.")
    start = time.perf_counter()
    classifier = Classifier(model, delegate, threads, runtime, labels, mean, std)
    pixels = []
    for image in images:
        if not Path(image).is_file():
            raise DatasetError(f"Image '{image}' does not exist or is not a file; pass image files (JPEG, PNG, BMP...).")
        try:
            pixels.append(classifier.load(image))
        except ImageReadError as e:
            raise DatasetError(f"Image '{e.path}' cannot be used: {e.reason}. Pass a JPEG, PNG, BMP, GIF or WebP image.") from None
    predictions = []
    for image, array in zip(images, pixels):
        scores = classifier.scores(array[None])
        (indices, values), = classifier.top_k(scores, top_k)
        predictions.append(Prediction(str(image), indices, tuple(classifier.labels[i] for i in indices), values))
    return PredictResult(str(model), tuple(predictions), classifier.transform.describe(), classifier.loaded.runtime,
                         time.perf_counter() - start, classifier.warnings)
