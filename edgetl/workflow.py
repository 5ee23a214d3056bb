"""``edgetl run``: image folder -> train -> qat -> export -> eval -> bench -> report, resumable stage by stage.

The run is a list of ``Stage`` objects (``STAGES``) executed in one loop.
Each stage says what its result depends on (``key``: its settings and the
tokens of the stages before it), whether its outputs are on disk and intact
(``outputs_ok``: the exported files' sha256 included), how to run it and what
to record. ``RUN/run.json`` keeps each stage's key and a token that changes
whenever it runs again. A stage is skipped when its key matches and its
outputs are intact, so re-running the same command after a failure continues
where it stopped and a finished run is only re-reported. The training stage's
key also holds the data's identity (``edgetl.data.identity``: class list,
every image's content digest, decode settings), computed without decoding:
added, removed or edited images and added or renamed classes retrain, and
through the tokens every later stage runs again, with one line naming what
changed. Other settings on a finished run are refused (``--fresh`` or another
``--out``). With ``--tune`` a first stage searches the training recipe
(``edgetl.tune``) and hands the winner to the training stage, whose key and
config.yaml then hold it. TensorFlow is imported only by the stages that need it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import shutil
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgetl import __version__
from edgetl._atomic import file_sha256, write_json, write_text
from edgetl.config import (DataConfig, ExportConfig, ModelConfig, QATConfig, ReportConfig, TrainConfig, TuneConfig, dump_yaml,
                           to_dict)
from edgetl.errors import ConfigError, RunDirError
from edgetl.report import Report, build_report, write_report
from edgetl.run_dir import RunPaths


@dataclasses.dataclass
class StageRecord:
    """What happened to one stage in this invocation.

    Attributes:
      name: the stage.
      status: 'ran', 'skipped' (outputs already there and valid) or 'off' (not requested).
      seconds: wall time in this invocation.
      detail: one line of what it produced.
    """

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""


@dataclasses.dataclass
class RunResult:
    """What ``run`` did and the report it wrote.

    Attributes:
      run_dir: the run directory.
      stages: one record per stage, in order.
      report: the comparison report (also in report.md/.json/.csv); None on a
        multi-worker run's non-chief worker, which only trains.
      files: the report files written.
    """

    run_dir: str
    stages: List[StageRecord]
    report: Optional[Report]
    files: List[str]

    def stage(self, name: str) -> StageRecord:
        """The record of stage ``name``."""
        return next(s for s in self.stages if s.name == name)

    def summary(self) -> str:
        """Stage lines, then the report table and the recommendation."""
        lines = [f"{s.name:7} {s.status:8} {s.seconds:7.1f} s  {s.detail}" for s in self.stages]
        if self.report is None:
            return "\n".join(lines + ["", "This worker's part is done: the chief runs qat, export, eval, bench and report."])
        return "\n".join(lines + ["", self.report.format()])


def check_plan(configs: Mapping[str, Any]) -> List[str]:
    """Rejects impossible combinations before any work starts; returns notes.

    Raises:
      ConfigError: naming the setting and the fix.
      UnknownBackboneError: the backbone is not registered.
    """
    from edgetl.export.variants import VARIANTS, get_variant
    from edgetl.model.registry import get

    model: ModelConfig = configs["model"]
    train: TrainConfig = configs["train"]
    export: ExportConfig = configs["export"]
    if not configs["data"].path:
        raise ConfigError("No image folder given: pass DATA (a folder with one sub-folder per class).")
    spec = get(model.backbone)
    alpha = spec.resolve_alpha(model.alpha)
    size = spec.resolve_size(model.size)
    if (model.weights or "").strip().lower() == "imagenet":
        spec.check_imagenet(alpha, size)
    if train.epochs == 0 and (train.fine_tune_epochs == 0 or train.fine_tune_layers == 0):
        raise ConfigError("train.epochs is 0 and fine-tuning is off: nothing would be trained. "
                          "Set --epochs (head) or --fine-tune-epochs with --fine-tune-layers.")
    if getattr(configs.get("tune"), "enabled", False) and train.strategy == "multiworker":
        raise ConfigError("--tune runs its trials on one machine and --strategy multiworker trains on several: "
                          "tune first (without multiworker), then train with the run's config.yaml as --recipe.")
    variants = [get_variant(name) for name in export.variants]
    if export.edgetpu and not any(v.edgetpu_compatible for v in variants):
        compatible = [name for name, variant in VARIANTS.items() if variant.edgetpu_compatible]
        raise ConfigError(
            f"export.edgetpu is on but no 8-bit integer variant is exported ({', '.join(export.variants)}): the Edge TPU "
            f"runs only full-integer 8-bit models. Add {' or '.join(compatible)} to --variants, or drop --edgetpu."
        )
    if export.out_dir:
        raise ConfigError(f"export.out_dir='{export.out_dir}' is not used by `edgetl run` (its files go to RUN/export, "
                          f"where the report reads them); remove it from the recipe.")
    notes = []
    if export.edgetpu and any(not v.edgetpu_compatible for v in variants):
        notes.append("Edge TPU: only the 8-bit integer variants are compiled; the others are exported for comparison.")
    return notes


def _key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _versions() -> Dict[str, str]:
    """Versions of the training stack, read from package metadata (importing TensorFlow is not needed)."""
    found = {}
    for name in ("tensorflow", "tf-keras", "tensorflow-model-optimization"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class _State:
    """``run.json``: per-stage key, token and finish time, written atomically after each stage."""

    def __init__(self, paths: RunPaths):
        self.file = paths.state
        self.data: Dict[str, Any] = {"edgetl_version": __version__, "stages": {}}
        if self.file.is_file():
            try:
                self.data = json.loads(self.file.read_text(encoding="utf-8"))
                self.data.setdefault("stages", {})
            except ValueError:
                pass  # a damaged state only costs re-running stages; their own checks still apply

    def get(self, stage: str) -> Dict[str, Any]:
        return self.data["stages"].get(stage) or {}

    def token(self, stage: str) -> str:
        return self.get(stage).get("token", "")

    def done(self, stage: str, key: str, seconds: float, **extra: Any) -> None:
        self.data["stages"][stage] = {
            "key": key, "token": uuid.uuid4().hex[:12], "seconds": round(seconds, 2),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra,
        }
        self.data["edgetl_version"] = __version__
        write_json(self.file, self.data)


@dataclasses.dataclass
class RunContext:
    """What the stages of one ``edgetl run`` share.

    Attributes:
      configs: every stage's config, by section.
      paths: the run directory.
      state: ``run.json``.
      role: this process's part in a multi-worker run (``edgetl.cluster``).
      fresh: ``--fresh`` was given.
      echo: progress lines.
      progress: progress bars.
      manifest: the export's manifest, once the export stage is done.
      records: what each stage did so far.
      report: the report, once the report stage is done.
      report_files: the files it wrote.
      qat_model: the QAT model the qat stage of this process trained and saved,
        with the (size, mtime) of the file it saved; the export converts it
        instead of reloading the file while the file is unchanged.
    """

    configs: Dict[str, Any]
    paths: RunPaths
    state: _State
    role: Any
    fresh: bool
    echo: Callable[[str], None]
    progress: bool
    manifest: Optional[Dict[str, Any]] = None
    records: List["StageRecord"] = dataclasses.field(default_factory=list)
    report: Optional[Report] = None
    report_files: List[str] = dataclasses.field(default_factory=list)
    qat_model: Optional[Tuple[Any, Tuple[int, int]]] = None

    @property
    def wants_qat(self) -> bool:
        from edgetl.export.variants import get_variant

        return any(get_variant(name).needs_qat for name in self.configs["export"].variants)

    @property
    def threads(self) -> Tuple[int, ...]:
        from edgetl.runtime.environment import usable_cores

        return self.configs["report"].threads or tuple(dict.fromkeys((1, usable_cores())))


class Stage:
    """One stage of ``edgetl run``: the loop in ``run_configs`` calls these in order.

    Attributes:
      name: the stage's name in ``run.json``, the records and the headers.
      always: run even when its key matches (cheap, and its rule may change).
      every_worker: in a multi-worker run, every worker runs it (else the chief alone).
    """

    name = ""
    always = False
    every_worker = False

    def off(self, run: RunContext) -> Optional[Tuple[str, str]]:
        """``(record detail, header text)`` when the stage is not wanted in this run, else None."""
        return None

    def key(self, run: RunContext) -> str:
        """What the stage's result depends on: its settings and the tokens of the stages it reads."""
        raise NotImplementedError

    def outputs_ok(self, run: RunContext) -> bool:
        """Whether its outputs are on disk and intact."""
        raise NotImplementedError

    def skipped(self, run: RunContext) -> Tuple[str, str]:
        """``(record detail, header text)`` of a stage skipped because its outputs are there."""
        raise NotImplementedError

    def describe(self, run: RunContext) -> str:
        """The header text of a stage about to run."""
        raise NotImplementedError

    def run(self, run: RunContext) -> Tuple[str, Dict[str, Any]]:
        """Runs the stage: ``(record detail, extra fields recorded in run.json)``."""
        raise NotImplementedError

    def after(self, run: RunContext) -> None:
        """Called once the stage ran or was skipped, before the next stage."""

    def check(self, run: RunContext) -> None:
        """Refuses the run before any work starts (called on the first stage that is on)."""


def _identity(run: RunContext):
    """The data's identity now (``edgetl.data.identity.current_identity``) at the run's input size."""
    from edgetl.data.identity import current_identity
    from edgetl.model.registry import get

    model_config: ModelConfig = run.configs["model"]
    size = get(model_config.backbone).resolve_size(model_config.size)
    return current_identity(run.configs["data"].path, run.configs["data"].val_path, str(run.paths.root), size)


def _data_unchanged(run: RunContext, stage: str, done: str, again: str) -> bool:
    """Whether the folder's identity is the one ``stage`` recorded in run.json; says what changed when not."""
    from edgetl.data.identity import describe_changes, recorded_identity

    identity = _identity(run)
    if run.state.get(stage).get("data") == identity.key:
        return True
    run.echo(f"data changed since {run.paths.root} was {done}: "
             f"{describe_changes(recorded_identity(run.paths), identity)}. {again} again, and every stage after it.")
    return False


class TuneStage(Stage):
    """``--tune``: searches the training recipe, then hands the best one to the training stage (``edgetl.tune``)."""

    name = "tune"

    def off(self, run):
        if run.configs["tune"].enabled:
            return None
        return "not asked", "off (--tune searches the training recipe first)"

    def key(self, run):
        # The recipe as given (before the search replaces it): the search's own starting point.
        return _key(*(to_dict(run.configs[name]) for name in ("data", "model", "train", "tune")))

    def check(self, run):
        previous = run.state.get(self.name).get("key")
        if (not run.fresh and run.state.get(TrainStage.name).get("key") and TrainStage._files_ok(run.paths)
                and previous != self.key(run)):
            how = "other tuning or training settings" if previous else "other settings, without --tune"
            raise ConfigError(f"Run directory '{run.paths.root}' was trained with {how} (see {run.paths.config}). "
                              f"Pass --fresh to start over there, or choose another --out.")

    def outputs_ok(self, run):
        from edgetl.tune import load_result

        return load_result(run.paths.root) is not None and _data_unchanged(run, self.name, "tuned", "Tuning")

    def skipped(self, run):
        from edgetl.tune import load_result

        result = load_result(run.paths.root)
        best = "-" if result.best_accuracy is None else f"{result.best_accuracy:.2%}"
        return (f"best val accuracy {best} of {len(result.trials)} trials (already tuned)",
                f"skipped, {run.paths.tune_result} is there")

    def describe(self, run):
        from edgetl.data.folder import check_layout
        from edgetl.tune import format_duration

        data_config: DataConfig = run.configs["data"]
        check_layout(data_config.path, data_config.val_path, data_config.min_images_per_class)
        return f"searching the training recipe for {format_duration(run.configs['tune'].budget)} on the validation split"

    def run(self, run):
        from edgetl.tune import tune

        result = tune(run.configs["data"], run.configs["model"], run.configs["train"], str(run.paths.root),
                      run.configs["tune"], echo=run.echo, progress=run.progress)
        identity = _identity(run)
        best = "-" if result.best_accuracy is None else f"{result.best_accuracy:.2%}"
        given = "-" if result.given_accuracy is None else f"{result.given_accuracy:.2%}"
        return f"best val accuracy {best} of {len(result.trials)} trials (given recipe {given})", {"data": identity.key}

    def after(self, run):
        if not run.configs["tune"].enabled:
            return
        from edgetl.tune import load_result

        result = load_result(run.paths.root)
        if result is not None:
            # The training stage (its key, its config.yaml) sees the best recipe, so the run repeats without a search.
            run.configs["train"] = result.train
            run.configs["data"] = dataclasses.replace(run.configs["data"], augment=result.augment)


class TrainStage(Stage):
    name = "train"
    every_worker = True

    def key(self, run):
        return _key(to_dict(run.configs["data"]), to_dict(run.configs["model"]), to_dict(run.configs["train"]))

    def check(self, run: RunContext) -> None:
        """Refuses other settings on a finished run before anything is done."""
        previous = run.state.get(self.name)
        if not run.fresh and previous.get("key") and previous["key"] != self.key(run) and self._files_ok(run.paths):
            raise ConfigError(
                f"Run directory '{run.paths.root}' was trained with other data/model/train settings "
                f"(see {run.paths.config}). Pass --fresh to start over there, or choose another --out."
            )

    @staticmethod
    def _files_ok(paths: RunPaths) -> bool:
        return paths.model.is_file() and paths.train_result.is_file() and paths.dataset.is_file()

    def outputs_ok(self, run):
        return self._files_ok(run.paths) and _data_unchanged(run, self.name, "trained", "Training")

    def skipped(self, run):
        train_result = json.loads(run.paths.train_result.read_text(encoding="utf-8"))
        return f"val accuracy {train_result['val_accuracy']:.2%} (already trained)", f"skipped, {run.paths.model} is there"

    def describe(self, run):
        from edgetl.data.folder import check_layout

        data_config: DataConfig = run.configs["data"]
        check_layout(data_config.path, data_config.val_path, data_config.min_images_per_class)  # before TensorFlow loads
        return f"{run.configs['model'].backbone} on {data_config.path}"

    def run(self, run):
        from edgetl.train import train

        trained = train(run.configs["data"], run.configs["model"], run.configs["train"], out=str(run.paths.root),
                        fresh=run.fresh, echo=run.echo, progress=run.progress, adopt=self._tuned_weights(run))
        if not run.role.chief:
            return f"as {run.role.task}", {}
        from edgetl.data.identity import recorded_identity

        recorded = recorded_identity(run.paths)
        return (f"val accuracy {trained.val_accuracy:.2%}" + (" (resumed)" if trained.resumed else ""),
                {"data": recorded.key if recorded else ""})

    @staticmethod
    def _tuned_weights(run) -> Optional[str]:
        """The search's winning trial's weights when this run searched and its recipe is the winner's, else None."""
        if not run.configs["tune"].enabled:
            return None
        from edgetl.tune import load_result

        result = load_result(run.paths.root)
        if (result is None or result.weights_trial is None or not run.paths.tune_weights.is_file()
                or result.train != run.configs["train"] or result.augment != run.configs["data"].augment):
            return None
        return str(run.paths.tune_weights)

    def after(self, run):
        if run.role.chief:
            # The run's config.yaml holds every section, so it repeats this run as a recipe.
            sections = {name: run.configs[name] for name in ("data", "model", "train", "qat", "export", "report")}
            write_text(run.paths.config, dump_yaml({**sections, "edgetl_version": __version__}))


class QATStage(Stage):
    name = "qat"

    def off(self, run):
        if run.wants_qat:
            return None
        from edgetl.export.variants import qat_variant_names

        names = " or ".join(qat_variant_names())
        return f"{names} not in the variants", f"off ({names} not requested)"

    def key(self, run):
        return _key(to_dict(run.configs["qat"]), run.state.token("train"))

    def outputs_ok(self, run):
        paths = run.paths
        return (paths.qat_model.is_file() and paths.qat_result.is_file()
                and paths.qat_model.stat().st_mtime >= paths.model.stat().st_mtime)

    def skipped(self, run):
        return "QAT model already there", f"skipped, {run.paths.qat_model} is there"

    def describe(self, run):
        return f"{run.configs['qat'].epochs} epoch(s) at lr {run.configs['qat'].learning_rate:g}"

    def run(self, run):
        from edgetl.quant.qat import quantize_aware_finetune

        qat = quantize_aware_finetune(str(run.paths.root), run.configs["qat"], echo=run.echo, progress=run.progress)
        run.qat_model = (qat.model, _file_stamp(run.paths.qat_model))
        return (f"Keras QAT accuracy {qat.qat_accuracy:.2%}" if qat.qat_accuracy is not None else ""), {}


class ExportStage(Stage):
    name = "export"

    def key(self, run):
        return _key(to_dict(run.configs["export"]), run.state.token("train"),
                    run.state.token("qat") if run.wants_qat else "")

    def outputs_ok(self, run):
        manifest = _manifest(run.paths)
        variants = run.configs["export"].variants
        if not manifest or sorted(m["variant"] for m in manifest.get("models", [])) != sorted(variants):
            return False
        for model in manifest["models"]:
            path = run.paths.export / model["name"]
            if not path.is_file() or path.stat().st_size != model["size_bytes"] or file_sha256(path) != model["sha256"]:
                return False
        return True

    def skipped(self, run):
        return f"{len(run.configs['export'].variants)} files already there", f"skipped, {run.paths.export} is complete"

    def describe(self, run):
        return ", ".join(run.configs["export"].variants)

    def run(self, run):
        from edgetl.export.tflite import export_run

        in_memory = None
        if run.qat_model is not None and run.qat_model[1] == _file_stamp(run.paths.qat_model):
            in_memory = run.qat_model[0]
        exported = export_run(str(run.paths.root), run.configs["export"], echo=run.echo, progress=run.progress,
                              qat_model=in_memory)
        return f"{len(exported.variants)} files in {exported.out_dir}", {}

    def after(self, run):
        """Loads the manifest the later stages read."""
        run.manifest = _manifest(run.paths)
        if run.manifest is None:
            raise RunDirError(f"'{run.paths.manifest}' is missing or damaged after export; run again with --fresh.")


class EvalStage(Stage):
    name = "eval"

    def key(self, run):
        return _key(run.state.token("export"), [m["sha256"] for m in run.manifest["models"]])

    def outputs_ok(self, run):
        for model in run.manifest["models"]:
            try:
                data = json.loads(run.paths.eval_result(model["variant"]).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            if data.get("model_sha256") != model["sha256"]:
                return False
        return True

    def skipped(self, run):
        return "every file already evaluated", "skipped, every file already evaluated"

    def describe(self, run):
        val_images = len(run.paths.load_dataset().val)
        return f"{len(run.manifest['models'])} files on {val_images} validation images"

    def run(self, run):
        from edgetl.data.store import open_run_store

        record = run.paths.load_dataset()
        val_paths, val_labels = record.paths_labels("val")
        # The validation images training decoded: read from the run's store, not decoded again per file.
        store = open_run_store(run.paths.root, record.image_size, val_paths, progress=run.progress, echo=run.echo)
        accuracies = _evaluate_files(run.paths, run.manifest, val_paths, val_labels, record.class_names, run.progress,
                                     run.echo, store)
        return ", ".join(f"{v} {a:.2%}" for v, a in accuracies.items()), {}


class BenchStage(Stage):
    name = "bench"

    def key(self, run):
        config: ReportConfig = run.configs["report"]
        return _key(run.state.token("export"), list(run.threads), config.delegate, config.bench_runs,
                    config.bench_seconds, config.bench_rounds)

    def outputs_ok(self, run):
        try:
            results = json.loads(run.paths.bench_results.read_text(encoding="utf-8"))["results"]
        except (OSError, ValueError, KeyError):
            return False
        measured = {(r.get("model_sha256"), r.get("threads")) for r in results}
        return all((m["sha256"], t) in measured for m in run.manifest["models"] for t in run.threads)

    def skipped(self, run):
        return "every file already benchmarked", "skipped, every file already benchmarked"

    def describe(self, run):
        return (f"{len(run.manifest['models'])} files x threads {','.join(map(str, run.threads))} "
                f"({run.configs['report'].delegate})")

    def run(self, run):
        from edgetl.bench import BenchConfig, benchmark, results_json

        report_config: ReportConfig = run.configs["report"]
        config = BenchConfig(threads=run.threads, delegates=(report_config.delegate,), runs=report_config.bench_runs,
                             min_seconds=report_config.bench_seconds,
                             max_seconds=max(30.0, 10 * report_config.bench_seconds), keep_times=False,
                             rounds=report_config.bench_rounds)
        results = benchmark([str(run.paths.export / m["name"]) for m in run.manifest["models"]], config,
                            progress=run.progress)
        run.paths.bench.mkdir(parents=True, exist_ok=True)
        write_json(run.paths.bench_results, results_json(results, times=False))
        return f"{len(results)} measurements", {}


class ReportStage(Stage):
    name = "report"
    always = True

    def key(self, run):
        return _key(to_dict(run.configs["report"]))

    def describe(self, run):
        config: ReportConfig = run.configs["report"]
        return f"recommendation rule: {config.prefer} within {config.max_drop:g} pts of float"

    def run(self, run):
        versions = run.state.data.setdefault("versions", {})
        if any(r.status == "ran" and r.name in ("train", "qat", "export") for r in run.records):
            versions.update(_versions())  # the stack that produced the files, not whatever is installed later
        report = build_report(run.paths.root, run.configs["report"], versions=versions)
        run.report = report
        run.report_files = [str(f) for f in write_report(report)]
        return f"recommended: {report.recommended}", {}


STAGES: Tuple[Stage, ...] = (TuneStage(), TrainStage(), QATStage(), ExportStage(), EvalStage(), BenchStage(), ReportStage())
STAGE_NAMES: Tuple[str, ...] = tuple(stage.name for stage in STAGES)


def _file_stamp(path: Path) -> Tuple[int, int]:
    """(size, mtime in ns) of a file, (-1, -1) when it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def _manifest(paths: RunPaths) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(paths.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run(data: str, out: Optional[str] = None, recipe: Optional[str] = None,
        overrides: Optional[Mapping[str, Mapping[str, Any]]] = None, fresh: bool = False,
        echo: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """The whole pipeline on an image folder, ending in the comparison report.

    Args:
      data: image folder, one sub-folder per class.
      out: run directory; default ``runs/<backbone>``. An existing one is continued.
      recipe: YAML recipe (``models/*.yaml`` or a run's ``config.yaml``).
      overrides: ``{section: {field: value}}`` applied on top of the recipe,
        sections data, model, train, qat, export, report. Training values
        that neither sets come from the rules for this folder
        (``edgetl.auto_recipe``; the chosen values are echoed and recorded in
        RUN/config.yaml).
      fresh: delete the run's checkpoints and results first and start over.
      echo: progress lines.
      progress: progress bars.

    Returns:
      A RunResult; the report is also written to RUN/report.md, .json and .csv.

    Raises:
      ConfigError: a bad recipe or an impossible combination, before any work starts.
      DatasetError, WeightsError, ExportError, RunDirError: from the stages.

    Example:
      >>> result = run("data/flowers", out="runs/flowers", recipe="models/mobilenet_v2_035_224.yaml",
      ...              overrides={"train": {"epochs": 5}, "report": {"max_drop": 0.5}})
      >>> print(result.report.recommended)
      int8
    """
    from edgetl.auto_recipe import adapt_configs
    from edgetl.recipe import apply_overrides, load_recipe, recipe_fields

    sections = {name: dict(values) for name, values in (overrides or {}).items()}
    sections.setdefault("data", {})["path"] = str(data)
    configs = apply_overrides(load_recipe(recipe), sections)
    given = recipe_fields(recipe) | {f"{name}.{field}" for name, values in sections.items() for field in values}
    configs, _ = adapt_configs(configs, given, echo=echo)
    return run_configs(configs, out or f"runs/{configs['model'].backbone}", fresh=fresh, echo=echo, progress=progress)


def run_configs(configs: Mapping[str, Any], out: str, fresh: bool = False, echo: Callable[[str], None] = print,
                progress: bool = True) -> RunResult:
    """``run`` with ready config objects: ``{data, model, train, qat, export, report}`` (missing ones default)."""
    configs = dict(configs)
    defaults = {"data": DataConfig(), "model": ModelConfig(), "train": TrainConfig(), "tune": TuneConfig(), "qat": QATConfig(),
                "export": ExportConfig(), "report": ReportConfig()}
    for name, value in defaults.items():
        configs.setdefault(name, value)
    if not configs["export"].variants:
        from edgetl.export.variants import DEFAULT_VARIANTS

        configs["export"] = dataclasses.replace(configs["export"], variants=DEFAULT_VARIANTS)
    for note in check_plan(configs):
        echo(f"note: {note}")
    paths = RunPaths.of(out)
    from edgetl.cluster import worker_role

    role = worker_role(configs["train"].strategy)
    if fresh and role.chief:
        for stale in (paths.tune, paths.qat, paths.export, paths.eval, paths.bench):
            shutil.rmtree(stale, ignore_errors=True)
        # An old report must not describe files that are gone if this run stops before its own report.
        for stale_file in (paths.state, paths.report_md, paths.report_json, paths.report_csv):
            stale_file.unlink(missing_ok=True)
    run = RunContext(configs, paths, _State(paths), role, fresh, echo, progress)
    next(stage for stage in STAGES if stage.off(run) is None).check(run)
    total = len(STAGES)
    for index, stage in enumerate(STAGES, 1):
        if not (role.chief or stage.every_worker):
            # The chief trained the same model with this worker and runs every later stage, alone.
            run.records.append(StageRecord(stage.name, "off", 0.0, "the chief's"))
            continue
        started = time.perf_counter()
        off = stage.off(run)
        key = stage.key(run) if off is None else ""
        if off is not None:
            run.records.append(StageRecord(stage.name, "off", 0.0, off[0]))
            echo(f"[{index}/{total}] {stage.name}: {off[1]}")
        elif not stage.always and not fresh and run.state.get(stage.name).get("key") == key and stage.outputs_ok(run):
            detail, text = stage.skipped(run)
            run.records.append(StageRecord(stage.name, "skipped", 0.0, detail))
            echo(f"[{index}/{total}] {stage.name}: {text}")
        else:
            echo(f"[{index}/{total}] {stage.name}: {stage.describe(run)}")
            detail, extra = stage.run(run)
            if role.chief:
                run.state.done(stage.name, key, time.perf_counter() - started, **extra)
            run.records.append(StageRecord(stage.name, "ran", time.perf_counter() - started, detail))
        stage.after(run)
    return RunResult(str(paths.root), run.records, run.report, run.report_files)


def _evaluate_files(paths: RunPaths, manifest: Dict[str, Any], val_paths, val_labels, class_names, progress: bool,
                    echo, store=None) -> Dict[str, float]:
    from edgetl.evaluate import EvalConfig, evaluate_split

    accuracies = {}
    paths.eval.mkdir(parents=True, exist_ok=True)
    for model in manifest["models"]:
        config = EvalConfig(top_k=min(5, len(class_names)), progress=progress)
        result = evaluate_split(str(paths.export / model["name"]), val_paths, val_labels, class_names, config, store=store)
        write_json(paths.eval_result(model["variant"]), {"model_sha256": model["sha256"], **result.to_dict()})
        accuracies[model["variant"]] = result.top1
        echo(f"  {model['name']}: top-1 {result.top1:.2%} on {result.images} images")
    return accuracies
