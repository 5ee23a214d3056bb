"""``edgetl run``: image folder -> train -> qat -> export -> eval -> bench -> report, resumable stage by stage.

Each stage records in ``RUN/run.json`` a key of the settings it ran with and
a token that changes whenever it runs again. A stage is skipped when its key
matches (settings and upstream tokens unchanged) and its outputs are on disk
and intact (the exported files' sha256 included), so re-running the same
command after a failure continues where it stopped and a finished run is only
re-reported. The training stage's key also holds the data's identity
(``edgetl.data.identity``: class list, every image's content digest, decode
settings), computed without decoding: added, removed or edited images and
added or renamed classes retrain, and through the tokens every later stage
runs again, with one line naming what changed. Other settings on a finished
run are refused (``--fresh`` or another ``--out``). TensorFlow is imported only
by the stages that need it.
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
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgetl import __version__
from edgetl._atomic import file_sha256, write_json, write_text
from edgetl.config import DataConfig, ExportConfig, ModelConfig, QATConfig, ReportConfig, TrainConfig, dump_yaml, to_dict
from edgetl.errors import ConfigError, RunDirError
from edgetl.report import BENCH_FILE, EVAL_DIR, REPORT_CSV, REPORT_JSON, REPORT_MD, Report, build_report, write_report
from edgetl.run_dir import RunPaths

STAGES = ("train", "qat", "export", "eval", "bench", "report")
STATE_FILE = "run.json"
ALL_VARIANTS = ("fp32", "fp16", "dynamic", "int8", "qat-int8")


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
    from edgetl.export.variants import get_variant
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
    variants = [get_variant(name) for name in export.variants]
    if export.edgetpu and not any(v.edgetpu_compilable for v in variants):
        raise ConfigError(
            f"export.edgetpu is on but no integer variant is exported ({', '.join(export.variants)}): the Edge TPU runs "
            f"only full-integer models. Add int8 or qat-int8 to --variants, or drop --edgetpu."
        )
    if export.out_dir:
        raise ConfigError(f"export.out_dir='{export.out_dir}' is not used by `edgetl run` (its files go to RUN/export, "
                          f"where the report reads them); remove it from the recipe.")
    notes = []
    if export.edgetpu and any(not v.edgetpu_compilable for v in variants):
        notes.append("Edge TPU: only the integer variants are compiled; the float ones are exported for comparison.")
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
        self.file = paths.root / STATE_FILE
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


def _train_outputs_ok(paths: RunPaths) -> bool:
    return paths.model.is_file() and paths.train_result.is_file() and paths.dataset.is_file()


def _qat_outputs_ok(paths: RunPaths) -> bool:
    model = paths.qat / "model.h5"
    return (model.is_file() and (paths.qat / "qat_result.json").is_file()
            and model.stat().st_mtime >= paths.model.stat().st_mtime)


def _manifest(paths: RunPaths) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((paths.export / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _export_outputs_ok(paths: RunPaths, variants: Tuple[str, ...]) -> bool:
    manifest = _manifest(paths)
    if not manifest or sorted(m["variant"] for m in manifest.get("models", [])) != sorted(variants):
        return False
    for model in manifest["models"]:
        path = paths.export / model["name"]
        if not path.is_file() or path.stat().st_size != model["size_bytes"] or file_sha256(path) != model["sha256"]:
            return False
    return True


def _eval_outputs_ok(paths: RunPaths, manifest: Dict[str, Any]) -> bool:
    for model in manifest["models"]:
        try:
            data = json.loads((paths.root / EVAL_DIR / f"{model['variant']}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if data.get("model_sha256") != model["sha256"]:
            return False
    return True


def _bench_outputs_ok(paths: RunPaths, manifest: Dict[str, Any], threads: Tuple[int, ...]) -> bool:
    try:
        results = json.loads((paths.bench / BENCH_FILE).read_text(encoding="utf-8"))["results"]
    except (OSError, ValueError, KeyError):
        return False
    measured = {(r.get("model_sha256"), r.get("threads")) for r in results}
    return all((m["sha256"], t) in measured for m in manifest["models"] for t in threads)


def run(data: str, out: Optional[str] = None, recipe: Optional[str] = None,
        overrides: Optional[Mapping[str, Mapping[str, Any]]] = None, fresh: bool = False,
        echo: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """The whole pipeline on an image folder, ending in the comparison report.

    Args:
      data: image folder, one sub-folder per class.
      out: run directory; default ``runs/<backbone>``. An existing one is continued.
      recipe: YAML recipe (``models/*.yaml`` or a run's ``config.yaml``).
      overrides: ``{section: {field: value}}`` applied on top of the recipe,
        sections data, model, train, qat, export, report.
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
    from edgetl.recipe import apply_overrides, load_recipe

    sections = {name: dict(values) for name, values in (overrides or {}).items()}
    sections.setdefault("data", {})["path"] = str(data)
    configs = apply_overrides(load_recipe(recipe), sections)
    return run_configs(configs, out or f"runs/{configs['model'].backbone}", fresh=fresh, echo=echo, progress=progress)


def run_configs(configs: Mapping[str, Any], out: str, fresh: bool = False, echo: Callable[[str], None] = print,
                progress: bool = True) -> RunResult:
    """``run`` with ready config objects: ``{data, model, train, qat, export, report}`` (missing ones default)."""
    configs = dict(configs)
    defaults = {"data": DataConfig(), "model": ModelConfig(), "train": TrainConfig(), "qat": QATConfig(),
                "export": ExportConfig(), "report": ReportConfig()}
    for name, value in defaults.items():
        configs.setdefault(name, value)
    if not configs["export"].variants:
        configs["export"] = dataclasses.replace(configs["export"], variants=ALL_VARIANTS)
    for note in check_plan(configs):
        echo(f"note: {note}")
    paths = RunPaths.of(out)
    from edgetl.cluster import worker_role

    role = worker_role(configs["train"].strategy)
    if fresh and role.chief:
        for stale in (paths.qat, paths.export, paths.root / EVAL_DIR, paths.bench):
            shutil.rmtree(stale, ignore_errors=True)
        # An old report must not describe files that are gone if this run stops before its own report.
        for name in (STATE_FILE, REPORT_MD, REPORT_JSON, REPORT_CSV):
            (paths.root / name).unlink(missing_ok=True)
    state = _State(paths)
    export_config: ExportConfig = configs["export"]
    report_config: ReportConfig = configs["report"]
    want_qat = "qat-int8" in export_config.variants
    keys: Dict[str, str] = {}
    keys["train"] = _key(to_dict(configs["data"]), to_dict(configs["model"]), to_dict(configs["train"]))
    previous = state.get("train")
    if not fresh and previous.get("key") and previous["key"] != keys["train"] and _train_outputs_ok(paths):
        raise ConfigError(
            f"Run directory '{paths.root}' was trained with other data/model/train settings "
            f"(see {paths.config}). Pass --fresh to start over there, or choose another --out."
        )
    records: List[StageRecord] = []
    total = len(STAGES)

    def header(index: int, name: str, text: str) -> None:
        echo(f"[{index}/{total}] {name}: {text}")

    # --- train -------------------------------------------------------------------------------------
    started = time.perf_counter()
    same_data = False
    if not fresh and previous.get("key") == keys["train"] and _train_outputs_ok(paths):
        from edgetl.data.identity import current_identity, describe_changes, recorded_identity
        from edgetl.model.registry import get

        model_config: ModelConfig = configs["model"]
        size = get(model_config.backbone).resolve_size(model_config.size)
        identity = current_identity(configs["data"].path, configs["data"].val_path, str(paths.root), size)
        same_data = previous.get("data") == identity.key
        if not same_data:
            echo(f"data changed since {paths.root} was trained: {describe_changes(recorded_identity(paths), identity)}. "
                 f"Training again, and every stage after it.")
    if same_data:
        train_result = json.loads(paths.train_result.read_text(encoding="utf-8"))
        records.append(StageRecord("train", "skipped", 0.0, f"val accuracy {train_result['val_accuracy']:.2%} (already trained)"))
        header(1, "train", f"skipped, {paths.model} is there")
    else:
        from edgetl.data.folder import check_layout

        data_config: DataConfig = configs["data"]
        check_layout(data_config.path, data_config.val_path, data_config.min_images_per_class)  # before TensorFlow loads
        header(1, "train", f"{configs['model'].backbone} on {data_config.path}")
        from edgetl.train import train

        trained = train(configs["data"], configs["model"], configs["train"], out=str(paths.root), fresh=fresh, echo=echo)
        if not role.chief:
            records.append(StageRecord("train", "ran", time.perf_counter() - started, f"as {role.task}"))
        else:
            from edgetl.data.identity import recorded_identity

            recorded = recorded_identity(paths)
            state.done("train", keys["train"], time.perf_counter() - started, data=recorded.key if recorded else "")
            records.append(StageRecord("train", "ran", time.perf_counter() - started,
                                       f"val accuracy {trained.val_accuracy:.2%}" + (" (resumed)" if trained.resumed else "")))
    if not role.chief:
        # The chief trained the same model with this worker and runs every later stage, alone.
        records.extend(StageRecord(name, "off", 0.0, "the chief's") for name in STAGES[1:])
        return RunResult(str(paths.root), records, None, [])

    # The run's config.yaml holds every section, so it repeats this run as a recipe.
    write_text(paths.config, dump_yaml({**{name: configs[name] for name in defaults}, "edgetl_version": __version__}))

    # --- qat ---------------------------------------------------------------------------------------
    keys["qat"] = _key(to_dict(configs["qat"]), state.token("train"))
    started = time.perf_counter()
    if not want_qat:
        records.append(StageRecord("qat", "off", 0.0, "qat-int8 not in the variants"))
        header(2, "qat", "off (qat-int8 not requested)")
    elif state.get("qat").get("key") == keys["qat"] and _qat_outputs_ok(paths):
        records.append(StageRecord("qat", "skipped", 0.0, "QAT model already there"))
        header(2, "qat", f"skipped, {paths.qat / 'model.h5'} is there")
    else:
        header(2, "qat", f"{configs['qat'].epochs} epoch(s) at lr {configs['qat'].learning_rate:g}")
        from edgetl.qat import quantize_aware_finetune

        qat = quantize_aware_finetune(str(paths.root), configs["qat"], echo=echo)
        state.done("qat", keys["qat"], time.perf_counter() - started)
        records.append(StageRecord("qat", "ran", time.perf_counter() - started,
                                   f"Keras QAT accuracy {qat.qat_accuracy:.2%}" if qat.qat_accuracy is not None else ""))

    # --- export ------------------------------------------------------------------------------------
    keys["export"] = _key(to_dict(export_config), state.token("train"), state.token("qat") if want_qat else "")
    started = time.perf_counter()
    if state.get("export").get("key") == keys["export"] and _export_outputs_ok(paths, export_config.variants):
        records.append(StageRecord("export", "skipped", 0.0, f"{len(export_config.variants)} files already there"))
        header(3, "export", f"skipped, {paths.export} is complete")
    else:
        header(3, "export", ", ".join(export_config.variants))
        from edgetl.export.tflite import export_run

        exported = export_run(str(paths.root), export_config, echo=echo, progress=progress)
        state.done("export", keys["export"], time.perf_counter() - started)
        records.append(StageRecord("export", "ran", time.perf_counter() - started,
                                   f"{len(exported.variants)} files in {exported.out_dir}"))
    manifest = _manifest(paths)
    if manifest is None:
        raise RunDirError(f"'{paths.export / 'manifest.json'}' is missing or damaged after export; run again with --fresh.")

    # --- eval --------------------------------------------------------------------------------------
    keys["eval"] = _key(state.token("export"), [m["sha256"] for m in manifest["models"]])
    started = time.perf_counter()
    if state.get("eval").get("key") == keys["eval"] and _eval_outputs_ok(paths, manifest):
        records.append(StageRecord("eval", "skipped", 0.0, "every file already evaluated"))
        header(4, "eval", "skipped, every file already evaluated")
    else:
        record = paths.load_dataset()
        val_paths, val_labels = record.paths_labels("val")
        header(4, "eval", f"{len(manifest['models'])} files on {len(val_paths)} validation images")
        from edgetl.data.store import open_run_store

        # The validation images training decoded: read from the run's store, not decoded again per file.
        store = open_run_store(paths.root, record.image_size, val_paths, progress=progress, echo=echo)
        accuracies = _evaluate_files(paths, manifest, val_paths, val_labels, record.class_names, progress, echo, store)
        state.done("eval", keys["eval"], time.perf_counter() - started)
        records.append(StageRecord("eval", "ran", time.perf_counter() - started,
                                   ", ".join(f"{v} {a:.2%}" for v, a in accuracies.items())))

    # --- bench -------------------------------------------------------------------------------------
    from edgetl.runtime.environment import usable_cores

    threads = report_config.threads or tuple(dict.fromkeys((1, usable_cores())))
    keys["bench"] = _key(state.token("export"), list(threads), report_config.delegate, report_config.bench_runs,
                         report_config.bench_seconds, report_config.bench_rounds)
    started = time.perf_counter()
    if state.get("bench").get("key") == keys["bench"] and _bench_outputs_ok(paths, manifest, threads):
        records.append(StageRecord("bench", "skipped", 0.0, "every file already benchmarked"))
        header(5, "bench", "skipped, every file already benchmarked")
    else:
        header(5, "bench", f"{len(manifest['models'])} files x threads {','.join(map(str, threads))} ({report_config.delegate})")
        from edgetl.bench import BenchConfig, benchmark, results_json

        config = BenchConfig(threads=threads, delegates=(report_config.delegate,), runs=report_config.bench_runs,
                             min_seconds=report_config.bench_seconds,
                             max_seconds=max(30.0, 10 * report_config.bench_seconds), keep_times=False,
                             rounds=report_config.bench_rounds)
        results = benchmark([str(paths.export / m["name"]) for m in manifest["models"]], config, progress=progress)
        paths.bench.mkdir(parents=True, exist_ok=True)
        write_json(paths.bench / BENCH_FILE, results_json(results, times=False))
        state.done("bench", keys["bench"], time.perf_counter() - started)
        records.append(StageRecord("bench", "ran", time.perf_counter() - started, f"{len(results)} measurements"))

    # --- report (always: cheap, and the rule may have changed) -------------------------------------
    started = time.perf_counter()
    header(6, "report", f"recommendation rule: {report_config.prefer} within {report_config.max_drop:g} pts of float")
    versions = state.data.setdefault("versions", {})
    if any(r.status == "ran" and r.name in ("train", "qat", "export") for r in records):
        versions.update(_versions())  # the stack that produced the files, not whatever is installed later
    report = build_report(paths.root, report_config, versions=versions)
    files = write_report(report)
    state.done("report", _key(to_dict(report_config)), time.perf_counter() - started)
    records.append(StageRecord("report", "ran", time.perf_counter() - started, f"recommended: {report.recommended}"))
    return RunResult(str(paths.root), records, report, [str(f) for f in files])


def _evaluate_files(paths: RunPaths, manifest: Dict[str, Any], val_paths, val_labels, class_names, progress: bool,
                    echo, store=None) -> Dict[str, float]:
    from edgetl.evaluate import EvalConfig, evaluate_split

    accuracies = {}
    (paths.root / EVAL_DIR).mkdir(parents=True, exist_ok=True)
    for model in manifest["models"]:
        config = EvalConfig(top_k=min(5, len(class_names)), progress=progress)
        result = evaluate_split(str(paths.export / model["name"]), val_paths, val_labels, class_names, config, store=store)
        write_json(paths.root / EVAL_DIR / f"{model['variant']}.json", {"model_sha256": model["sha256"], **result.to_dict()})
        accuracies[model["variant"]] = result.top1
        echo(f"  {model['name']}: top-1 {result.top1:.2%} on {result.images} images")
    return accuracies
