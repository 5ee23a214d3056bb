"""Per-stage configuration dataclasses, YAML load/dump and validation (no TensorFlow).

Validation here is pure: types and ranges. Nothing touches the disk or imports
TensorFlow, so the CLI can reject a bad value before any training starts.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

import yaml

from edgetl.errors import ConfigError, suggest

T = TypeVar("T")
logger = logging.getLogger(__name__)

# Config keys renamed since a release, by config class: {old key: new key}. Recipes (a run's config.yaml
# included) written with the old key still load, with a warning naming the new one.
RENAMED_KEYS: Dict[str, Dict[str, str]] = {
    "ExportConfig": {"max_accuracy_drop": "flag_drop"},
}


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-only image augmentation.

    Stage 2 applies all of it, randomly, to every batch. Stage 1 trains on
    backbone features computed once, so it can only use fixed views: the
    label-preserving flips and 90-degree rotations this config allows (see
    ``TrainConfig.feature_views``).

    Attributes:
      enabled: master switch; False turns every augmentation off.
      flip: random horizontal flips (and vertical ones with orientation 'any').
      orientation: 'upright' when the photos have a natural up (people,
        scenes: a rotated photo is a different picture); 'any' when
        objects are photographed in any orientation (from above, on a table,
        under a microscope, TrashNet's waste): 90-degree rotations and vertical
        flips keep the label too; 'auto' (the default) lets the training stage
        decide from the data before stage 1 (``edgetl.orientation``: a head
        trained with 90-degree turned copies against one without, on the
        validation split); QAT fine-tunes with the training stage's decision.
        Where nothing decided it (a run without stage 1 on cached
        features), 'auto' acts as 'upright'.
      rotation: maximum rotation as a fraction of a full turn (0.1 = +-36 degrees).
      zoom: maximum zoom in/out as a fraction of the side.
      contrast: maximum contrast change as a fraction.
    """

    enabled: bool = True
    flip: bool = True
    orientation: str = "auto"
    rotation: float = 0.05
    zoom: float = 0.1
    contrast: float = 0.1

    def __post_init__(self):
        for name in ("rotation", "zoom", "contrast"):
            _check_range(f"augment.{name}", getattr(self, name), 0.0, 1.0)
        _check_choice("augment.orientation", self.orientation, ORIENTATIONS)

    def views(self) -> Tuple[int, ...]:
        """The label-preserving views of a square image, as ``edgetl.data.pipeline.dihedral`` indices.

        Most useful first: the identity, the horizontal flip, a 90-degree
        rotation, then the rest of the dihedral group (4 rotations x flip).
        """
        if not self.enabled:
            return (0,)
        if self.orientation == "any":
            return (0, 1, 5, 2, 6, 3, 4, 7) if self.flip else (0, 5, 3, 6)
        return (0, 1) if self.flip else (0,)


ORIENTATIONS = ("auto", "upright", "any")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split and batched.

    Attributes:
      path: image folder with one sub-folder per class (nested folders are
        searched), or the training folder when ``val_path`` is given.
      val_path: a separate validation folder with the same class folders.
      val_fraction: share of each class held out for validation when
        ``val_path`` is not given (stratified, deterministic from ``seed``).
      seed: seed of the split and of the shuffling.
      batch_size: images per batch.
      class_weights: 'auto' weights classes by inverse frequency when the
        largest class has 1.5x the images of the smallest; 'on' always; 'off' never.
      min_images_per_class: classes with fewer usable images are an error.
      augment: training-only augmentation.
    """

    path: str = ""
    val_path: Optional[str] = None
    val_fraction: float = 0.2
    seed: int = 42
    batch_size: int = 32
    class_weights: str = "auto"
    min_images_per_class: int = 2
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def __post_init__(self):
        _check_range("val_fraction", self.val_fraction, 0.0, 0.9, low_open=True)
        _check_range("batch_size", self.batch_size, 1, 4096)
        _check_range("min_images_per_class", self.min_images_per_class, 1, 10**9)
        _check_choice("class_weights", self.class_weights, ("auto", "on", "off"))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which backbone, at what width and size, with which weights and head.

    Attributes:
      backbone: registry name (``edgetl backbones`` lists them).
      alpha: width multiplier (MobileNets only); None = the backbone's default.
      size: square input side in pixels; None = the backbone's default.
      weights: 'imagenet', 'none', or a path to a no-top ``.h5`` file.
      weights_dir: folder holding Keras' cached ImageNet files
        (``~/.keras/models`` of another machine) for air-gapped use; the
        EDGETL_WEIGHTS_DIR environment variable sets the same.
      dropout: dropout rate before the classification layer.
      hidden_units: width of an optional hidden Dense+ReLU layer in the head (0 = none).
    """

    backbone: str = "mobilenet_v2"
    alpha: Optional[float] = None
    size: Optional[int] = None
    weights: str = "imagenet"
    weights_dir: Optional[str] = None
    dropout: float = 0.2
    hidden_units: int = 0

    def __post_init__(self):
        _check_range("dropout", self.dropout, 0.0, 0.95)
        _check_range("hidden_units", self.hidden_units, 0, 65536)
        if self.size is not None:
            _check_range("size", self.size, 1, 4096)


STRATEGIES = ("auto", "mirrored", "multiworker", "default")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Two-stage transfer learning.

    Stage 1 trains the new head on backbone features computed once (the
    backbone is frozen, so its output never changes); stage 2 unfreezes the top
    ``fine_tune_layers`` layers of the backbone (BatchNorm stays frozen) and
    trains with augmentation at a lower learning rate.

    Attributes:
      epochs: stage-1 (head) epochs.
      learning_rate: stage-1 Adam learning rate.
      fine_tune_epochs: stage-2 epochs; 0 skips stage 2.
      fine_tune_layers: backbone layers to unfreeze from the top; -1 = all.
      fine_tune_learning_rate: stage-2 peak learning rate (keep it ~10x lower).
      lr_schedule: 'cosine' decays stage 2 to zero, 'constant' keeps it.
      warmup_epochs: stage-2 epochs over which the learning rate rises
        linearly from 0 to ``fine_tune_learning_rate`` before the schedule
        starts (Goyal et al., "Accurate, Large Minibatch SGD", 2017, sec. 2.2):
        the head's gradients are large when the backbone first unfreezes, and
        a full-depth step at the peak rate throws away what stage 1 learned.
      early_stopping_patience: epochs without val accuracy gain before a
        stage stops; 0 disables early stopping.
      cache_features: stage 1 on cached features (True) or through the frozen
        backbone every epoch (False, slower, same result without augmentation).
      feature_views: with cached features, how many fixed views of each
        training image stage 1 trains on (the identity, then the flips and
        90-degree rotations ``AugmentConfig.views`` allows); 0 = all of
        those, 1 = the images as they are (the default). Each view costs one
        more pass of the frozen backbone over the training images, and buys
        the head the augmentation stage 1 otherwise lacks (measured on the
        quickstart's TrashNet photos in docs/benchmarks.md).
      strategy: 'auto' (MirroredStrategy when several GPUs are visible),
        'mirrored' (the GPUs of this machine), 'multiworker'
        (MultiWorkerMirroredStrategy over the machines the TF_CONFIG
        environment variable names; run the same command on each) or 'default'.
      seed: seed of weights initialisation, dropout and augmentation.
    """

    epochs: int = 10
    learning_rate: float = 1e-3
    fine_tune_epochs: int = 5
    fine_tune_layers: int = 30
    fine_tune_learning_rate: float = 1e-4
    lr_schedule: str = "cosine"
    warmup_epochs: int = 0
    early_stopping_patience: int = 5
    cache_features: bool = True
    feature_views: int = 1
    strategy: str = "auto"
    seed: int = 42

    def __post_init__(self):
        _check_range("epochs", self.epochs, 0, 100000)
        _check_range("fine_tune_epochs", self.fine_tune_epochs, 0, 100000)
        _check_range("fine_tune_layers", self.fine_tune_layers, -1, 100000)
        _check_range("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        _check_range("fine_tune_learning_rate", self.fine_tune_learning_rate, 0.0, 10.0, low_open=True)
        _check_range("early_stopping_patience", self.early_stopping_patience, 0, 100000)
        _check_range("warmup_epochs", self.warmup_epochs, 0, 100000)
        if self.fine_tune_epochs and self.warmup_epochs >= self.fine_tune_epochs:
            raise ConfigError(f"`warmup_epochs`={self.warmup_epochs} leaves no fine-tuning epoch at the peak learning "
                              f"rate (fine_tune_epochs={self.fine_tune_epochs}); use fewer warm-up epochs than "
                              f"fine-tuning epochs.")
        _check_range("feature_views", self.feature_views, 0, 8)
        _check_choice("lr_schedule", self.lr_schedule, ("cosine", "constant"))
        _check_choice("strategy", self.strategy, STRATEGIES)


def _check_range(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"`{name}` must be a number, got {value!r}.")
    if value < low or value > high or (low_open and value == low):
        bound = "(" if low_open else "["
        raise ConfigError(f"`{name}`={value} is out of range; expected a value in {bound}{low}, {high}].")


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"`{name}`={value!r} is not valid; expected one of {', '.join(choices)}.{suggest(str(value), choices)}")


def to_dict(config: Any) -> Dict[str, Any]:
    """A dataclass config as plain dicts, lists and scalars (YAML-safe)."""
    return dataclasses.asdict(config)


def from_dict(cls: Type[T], values: Optional[Dict[str, Any]], where: str = "") -> T:
    """Builds ``cls`` from a dict, rejecting unknown keys and wrong types.

    Args:
      cls: a config dataclass.
      values: the dict (e.g. a YAML section); None gives the defaults.
      where: dotted prefix used in error messages, e.g. ``"train"``.

    Raises:
      ConfigError: naming the key, the bad value and the fix.
    """
    values = dict(values or {})
    if not isinstance(values, dict):
        raise ConfigError(f"`{where or cls.__name__}` must be a mapping, got {type(values).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for old, new in RENAMED_KEYS.get(cls.__name__, {}).items():
        if old in values:
            dotted_old, dotted_new = (f"{where}.{old}", f"{where}.{new}") if where else (old, new)
            if new in values:
                raise ConfigError(f"`{dotted_old}` and `{dotted_new}` are the same setting (renamed in edgetl 0.1.1); "
                                  f"keep only `{dotted_new}`.")
            logger.warning("`%s` is now called `%s`; read as that. Rename it in the recipe.", dotted_old, dotted_new)
            values[new] = values.pop(old)
    for key, value in values.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"Unknown key `{dotted}`.{suggest(str(key), fields)} Valid keys: {', '.join(fields)}.")
        kwargs[key] = _coerce(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where + ': ' if where else ''}{e}") from None


def _coerce(hint: Any, value: Any, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"`{dotted}` must be a mapping, got {value!r}.")
        return from_dict(hint, value, dotted)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, (str, Path)):
            return str(value)
    else:
        return value
    raise ConfigError(f"`{dotted}` must be {hint.__name__}, got {value!r} ({type(value).__name__}).")


def load_yaml(path: str) -> Dict[str, Any]:
    """Reads a YAML mapping from ``path`` with ``yaml.safe_load``.

    Raises:
      ConfigError: when the file is missing, malformed or not a mapping.
    """
    if Path(path).exists() and not Path(path).is_file():  # a folder, or a FIFO that would block the read
        raise ConfigError(f"Config file '{path}' is not a regular file; pass the path of a YAML file.")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' does not exist; check the path.") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"Config file '{path}' is not valid YAML{where}: {getattr(e, 'problem', e)}.") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"Config file '{path}' is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset "
                          f"{e.start}); save it as UTF-8.") from None
    except OSError as e:
        raise ConfigError(f"Config file '{path}' cannot be read: {e}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections, got {type(data).__name__}.")
    return data


def dump_yaml(sections: Dict[str, Any]) -> str:
    """YAML text of ``{section: config}``; dataclasses are expanded."""
    plain = {name: (to_dict(value) if dataclasses.is_dataclass(value) else value) for name, value in sections.items()}
    return yaml.safe_dump(plain, sort_keys=False)


@dataclasses.dataclass(frozen=True)
class QATConfig:
    """Quantization-aware fine-tuning of a trained model (stage `qat`).

    Attributes:
      epochs: fine-tuning epochs of the quantized model (a few suffice).
      learning_rate: Adam learning rate; keep it ~10x below the training one.
      batch_size: images per batch.
      steps_per_epoch: optimizer steps per epoch; None = one pass over the
        training images.
      calibration_batches: training batches used to initialise activation
        ranges before fine-tuning (tfmot otherwise starts them at [-6, 6]);
        0 keeps tfmot's initial ranges.
      augment: augment while fine-tuning, as the run's training did (its
        ``data.augment``, with the orientation the training stage decided).
      seed: seed of shuffling and augmentation.
      distillation: weight of the float model's probabilities in the QAT
        loss (knowledge distillation: 1 = match the float model only, 0 =
        the labels only).
      deterministic: run TensorFlow ops deterministically during QAT, so the
        same seed gives the same model (costs a little speed).
    """

    epochs: int = 3
    learning_rate: float = 1e-5
    batch_size: int = 32
    steps_per_epoch: Optional[int] = None
    calibration_batches: int = 4
    augment: bool = True
    seed: int = 42
    distillation: float = 0.0
    deterministic: bool = True

    def __post_init__(self):
        _check_range("epochs", self.epochs, 0, 10000)
        _check_range("distillation", self.distillation, 0.0, 1.0)
        _check_range("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        _check_range("batch_size", self.batch_size, 1, 4096)
        _check_range("calibration_batches", self.calibration_batches, 0, 10000)
        if self.steps_per_epoch is not None:
            _check_range("steps_per_epoch", self.steps_per_epoch, 1, 10**9)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """TFLite export of a run (stage `export`).

    Attributes:
      variants: variant names (``edgetl.export.variants``); empty = the
        table's defaults, the QAT ones only when the run has a QAT model.
      io_type: 'uint8' or 'int8' input/output of the integer variants.
      calibration_images: training images used to calibrate int8 PTQ.
      calibration_dir: image folder used for calibration instead of the
        run's training split.
      verify: run each exported file in the TFLite interpreter on validation
        images and compare its accuracy with the Keras float model.
      verify_images: at most this many validation images are used.
      flag_drop: accuracy points a file may lose against the Keras float
        model before it is flagged with a warning (``--flag-drop``; recipes
        written before 0.1.1 call it ``max_accuracy_drop``). Not to be confused
        with ``ReportConfig.max_drop``, the tolerance of the recommendation.
      edgetpu: also compile the integer variants with ``edgetpu_compiler``.
      out_dir: output folder; None = RUN/export.
      seed: seed of the calibration sample.
      min_runtime: the oldest TFLite runtime every file must load in
        ('2.14': tflite-runtime on 32-bit Pi OS and Coral images); the
        converter keeps op versions there where it can, and a file that
        still needs a newer one is named in a warning.
    """

    variants: Tuple[str, ...] = ()
    io_type: str = "uint8"
    calibration_images: int = 300
    calibration_dir: Optional[str] = None
    verify: bool = True
    verify_images: int = 500
    flag_drop: float = 2.0
    edgetpu: bool = False
    out_dir: Optional[str] = None
    seed: int = 42
    min_runtime: str = "2.14"

    def __post_init__(self):
        from edgetl.export.min_runtime import parse_version
        from edgetl.export.variants import IO_TYPES, parse_variants

        object.__setattr__(self, "variants", parse_variants(self.variants or ()))
        parse_version(self.min_runtime, "min_runtime")
        _check_choice("io_type", self.io_type, IO_TYPES)
        _check_range("calibration_images", self.calibration_images, 1, 10**6)
        _check_range("verify_images", self.verify_images, 1, 10**7)
        _check_range("flag_drop", self.flag_drop, 0.0, 100.0)


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """``edgetl run --tune``: a search of the training recipe on the validation split (``edgetl.tune``).

    Attributes:
      enabled: search before training; the run then trains with the best
        trial's recipe and writes it to RUN/config.yaml.
      budget: wall-clock seconds for the whole search, the decode and the
        backbone features included (``--tune-budget 30m``). A trial still
        running at the deadline is stopped and does not compete.
      max_trials: fine-tuning trials at most; 0 = as many as the budget allows.
      head_trials: stage-1 trials on the cached backbone features (seconds
        each); 0 keeps the head's learning rate as given.
    """

    enabled: bool = False
    budget: float = 1800.0
    max_trials: int = 0
    head_trials: int = 8

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"`tune.enabled` must be true or false, got {self.enabled!r}.")
        _check_range("tune.budget", self.budget, 0.0, 7 * 24 * 3600.0, low_open=True)
        _check_range("tune.max_trials", self.max_trials, 0, 100000)
        _check_range("tune.head_trials", self.head_trials, 0, 1000)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: Any) -> float:
    """Seconds in a duration such as ``'30m'``, ``'1h'``, ``'90s'``, ``'1h30m'`` or ``'600'`` (seconds).

    Raises:
      ConfigError: not a positive duration, with the accepted forms.
    """
    import re

    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", value)
        if not parts or re.sub(r"\s*(\d+(?:\.\d+)?)\s*[hms]", "", value):
            raise ConfigError(f"Duration {text!r} is not valid; use seconds (600) or units h/m/s, e.g. 30m, 1h, 1h30m, 90s.")
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ConfigError(f"Duration {text!r} must be more than 0 seconds, e.g. 30m.")
    return seconds


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """How ``edgetl run`` measures the exported files and picks the one to ship (stage `report`).

    Every exported file is evaluated on the whole validation split and
    benchmarked on this host at each thread count; the report recommends the
    variant that the rule below picks.

    Attributes:
      threads: interpreter thread counts to benchmark; empty = 1 and all usable cores.
      delegate: benchmark delegate: 'xnnpack' (the runtime's default CPU path) or 'cpu'.
      bench_runs: minimum timed runs per file and thread count.
      bench_seconds: minimum seconds of timed runs per file and thread count.
      bench_rounds: the files of one thread count are measured interleaved
        in this many rounds (A B C, B C A, ...), so a busy host slows them
        alike; noisy measurements are re-measured, then marked (see
        ``edgetl.bench.BenchConfig``).
      max_drop: accuracy points (vs the Keras float model) a variant may lose
        and still be recommended (``--max-drop``); a variant that loses more is still
        recommended when McNemar's test finds the loss not measurable.
      prefer: among the variants that keep the accuracy: 'latency' picks the
        fastest (p50; latencies within measurement noise are a tie, broken by
        size), 'size' the smallest file.
    """

    threads: Tuple[int, ...] = ()
    delegate: str = "xnnpack"
    bench_runs: int = 50
    bench_seconds: float = 1.0
    bench_rounds: int = 5
    max_drop: float = 1.0
    prefer: str = "latency"

    def __post_init__(self):
        threads = self.threads
        if isinstance(threads, (int, float)) and not isinstance(threads, bool):
            threads = (threads,)
        if not isinstance(threads, (list, tuple)) or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
            raise ConfigError(f"`threads` must be a list of integers >= 1 (e.g. [1, 2, 4]), got {self.threads!r}.")
        object.__setattr__(self, "threads", tuple(dict.fromkeys(threads)))
        _check_choice("delegate", self.delegate, ("xnnpack", "cpu"))
        _check_range("bench_runs", self.bench_runs, 1, 10**6)
        _check_range("bench_seconds", self.bench_seconds, 0.0, 3600.0)
        _check_range("bench_rounds", self.bench_rounds, 1, 1000)
        _check_range("max_drop", self.max_drop, 0.0, 100.0)
        _check_choice("prefer", self.prefer, ("latency", "size"))
