"""The ``edgetl`` command line: a thin click shell over the stage functions.

Heavy modules (TensorFlow above all) are imported inside each command, so the
device-side commands start fast and work where TensorFlow is not installed.
Errors the user can fix (EdgetlError) print one line and exit 1; anything
unexpected prints one line too, with ``--debug`` to see the traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Optional

import click

from edgetl import __version__
from edgetl.errors import EdgetlError, os_error_message
from edgetl.export.variants import DEFAULT_VARIANTS, IO_TYPES, VARIANTS, float_variant_names, qat_variant_names

_DEBUG = {"on": False}


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    """Turns exceptions into one line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EdgetlError as e:
            if _DEBUG["on"]:
                raise
            _fail(" ".join(str(e).split("\n")), e.exit_code)
        except KeyboardInterrupt:
            if _DEBUG["on"]:
                raise
            _fail("interrupted; finished artifacts and the last checkpoint are kept. Run the same command again to resume.", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except MemoryError:
            _fail("out of memory; lower --batch-size or --size.", 1)
        except Exception as e:  # noqa: BLE001 - the CLI promises no tracebacks
            if _DEBUG["on"]:
                raise
            text = " ".join(str(e).split())[:500]
            problem = os_error_message(e, text)
            if problem:
                _fail(problem, 1)
            _fail(f"unexpected {type(e).__name__}: {text} (re-run with `edgetl --debug ...` for the traceback and report it)", 1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgetl")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log more detail (INFO level), TensorFlow's own C++ log lines included.")
def main(debug: bool, verbose: bool) -> None:
    """edgetl: from an image folder to a small, fast, accurate TFLite classifier.

    \b
    Workstation (pip install "edgetl[train]"):
      edgetl run DATA --recipe models/mobilenet_v2_035_224.yaml --out runs/pets
          (train, qat, export, eval, bench and report.md in one resumable command)
      edgetl train DATA --backbone mobilenet_v2 --alpha 0.35 --out runs/pets
    Device (pip install edgetl):
      bench / eval / predict / inspect a .tflite file, no TensorFlow needed.

    Run `edgetl COMMAND --help` for the options of each command.
    """
    _DEBUG["on"] = debug
    # Undecodable bytes in file names must print as \xNN, not end the command (stderr already does this).
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        import os

        os.environ["EDGETL_TF_LOGS"] = "1"  # read when TensorFlow is first imported (edgetl.model.keras)


# CLI parameter -> (config section, field). Values given on the command line override a recipe.
_TRAIN_FLAGS = {
    "val_path": ("data", "val_path"), "val_fraction": ("data", "val_fraction"), "batch_size": ("data", "batch_size"),
    "class_weights": ("data", "class_weights"),
    "backbone": ("model", "backbone"), "alpha": ("model", "alpha"), "size": ("model", "size"),
    "weights": ("model", "weights"), "weights_dir": ("model", "weights_dir"), "dropout": ("model", "dropout"),
    "hidden_units": ("model", "hidden_units"),
    "epochs": ("train", "epochs"), "learning_rate": ("train", "learning_rate"),
    "fine_tune_epochs": ("train", "fine_tune_epochs"), "fine_tune_layers": ("train", "fine_tune_layers"),
    "fine_tune_learning_rate": ("train", "fine_tune_learning_rate"), "lr_schedule": ("train", "lr_schedule"),
    "warmup_epochs": ("train", "warmup_epochs"),
    "early_stopping_patience": ("train", "early_stopping_patience"), "strategy": ("train", "strategy"),
    "feature_views": ("train", "feature_views"),
}


def _train_configs(ctx: click.Context, recipe: Optional[str], extra_flags=None):
    """Recipe (or defaults) + the flags the user actually typed -> every stage's config.

    ``extra_flags`` (param -> (section, field)) are applied only when typed, so
    a recipe's value or the config default stands otherwise.
    """
    import dataclasses

    from click.core import ParameterSource

    from edgetl.recipe import apply_overrides, load_recipe

    params = ctx.params
    typed = {name for name in params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    overrides = {"data": {"path": params["data"]}, "model": {}, "train": {}, "tune": {}, "qat": {}, "export": {}, "report": {}}
    for name, (section, field) in _TRAIN_FLAGS.items():
        if name in typed or recipe is None:
            overrides[section][field] = params[name]
    for name, (section, field) in (extra_flags or {}).items():
        if name in typed:
            overrides[section][field] = params[name]
    if "seed" in typed or recipe is None:
        overrides["data"]["seed"] = overrides["train"]["seed"] = params["seed"]
    if params["no_cache_features"]:
        overrides["train"]["cache_features"] = False
    configs = apply_overrides(load_recipe(recipe), overrides)
    augment = configs["data"].augment
    if params["no_augment"]:
        augment = dataclasses.replace(augment, enabled=False)
    if params["orientation"]:
        augment = dataclasses.replace(augment, orientation=params["orientation"])
    configs["data"] = dataclasses.replace(configs["data"], augment=augment)
    # Training values nobody gave (no typed flag, not in the recipe file) come from the rules for this folder.
    from edgetl.auto_recipe import adapt_configs
    from edgetl.recipe import recipe_fields

    given = recipe_fields(recipe) | {".".join(_TRAIN_FLAGS[name]) for name in typed if name in _TRAIN_FLAGS}
    configs, _ = adapt_configs(configs, given, echo=click.echo)
    return configs


_BY_RULE = "Default: chosen from the folder's size by the rules `edgetl rules` lists (unless a --recipe sets it)."


def _train_options(func):
    """The data/model/train flags `train` and `run` share (names map to config fields in _TRAIN_FLAGS)."""
    options = [
        click.option("--val", "val_path", type=click.Path(file_okay=False), default=None,
                      help="Separate validation folder (same class folders). Default: split DATA by --val-fraction."),
        click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of each class held out for validation."),
        click.option("--backbone", default="mobilenet_v2", show_default=True, help="Registry name; `edgetl backbones` lists them."),
        click.option("--alpha", type=float, default=None, help="Width multiplier (MobileNets), e.g. 0.35. Default: the backbone's."),
        click.option("--size", type=int, default=None, help="Square input side in pixels. Default: the backbone's (224 for MobileNets)."),
        click.option("--weights", default="imagenet", show_default=True, help="'imagenet', 'none' (random init) or a no-top .h5 file."),
        click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
                      help="Offline folder of Keras' ImageNet weight files (as in ~/.keras/models). Also $EDGETL_WEIGHTS_DIR."),
        click.option("--epochs", type=int, default=10,
                     help=f"Stage 1: epochs training the head on cached features. {_BY_RULE}"),
        click.option("--lr", "learning_rate", type=float, default=1e-3, help=f"Stage 1 learning rate. {_BY_RULE}"),
        click.option("--fine-tune-epochs", type=int, default=5,
                     help=f"Stage 2: fine-tuning epochs (0 = skip stage 2). {_BY_RULE}"),
        click.option("--fine-tune-layers", type=int, default=30,
                     help=f"Stage 2: backbone layers unfrozen from the top (-1 = all). {_BY_RULE}"),
        click.option("--fine-tune-lr", "fine_tune_learning_rate", type=float, default=1e-4,
                     help=f"Stage 2 peak learning rate. {_BY_RULE}"),
        click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True, help="Stage 2 schedule."),
        click.option("--warmup-epochs", type=int, default=0,
                     help=f"Stage 2: epochs of linear learning-rate warm-up from 0 before the schedule. {_BY_RULE}"),
        click.option("--patience", "early_stopping_patience", type=int, default=5, show_default=True, help="Early stopping patience in epochs (0 = off)."),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option("--dropout", type=float, default=0.2, show_default=True, help="Dropout before the classifier."),
        click.option("--hidden-units", type=int, default=0, show_default=True, help="Optional hidden Dense+ReLU layer in the head."),
        click.option("--no-augment", is_flag=True, help="Turn off training augmentation (flip, rotation, zoom, contrast)."),
        click.option("--orientation", type=click.Choice(["auto", "upright", "any"]), default=None,
                     help="'any' when objects are photographed in any orientation (from above, on a table): 90-degree "
                          "rotations and vertical flips then augment training too; 'upright' when the photos have a "
                          "natural up. Default: auto, decided from the data before stage 1 (a head trained with "
                          "90-degree turned copies against one without, on the validation split)."),
        click.option("--feature-views", type=click.IntRange(0, 8), default=1, show_default=True,
                     help="Stage 1: fixed flipped/rotated views of each image the head trains on (1 = the images "
                          "as they are, 0 = every view the augmentation allows: 2 upright, 8 with --orientation any); "
                          "each costs one backbone pass over the training images."),
        click.option("--class-weights", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
                      help="Inverse-frequency class weights; 'auto' = only for imbalanced folders."),
        click.option("--no-cache-features", is_flag=True, help="Stage 1 through the frozen backbone every epoch (slower; for comparison)."),
        click.option("--strategy", type=click.Choice(["auto", "mirrored", "multiworker", "default"]), default="auto",
                      show_default=True,
                      help="tf.distribute strategy: 'auto' mirrors over this machine's GPUs when it has several; "
                           "'multiworker' trains on several machines, each running this command with TF_CONFIG set "
                           "(README: 'When one machine is not enough')."),
        click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split, initialisation and augmentation."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="YAML recipe (see models/*.yaml, or a run's config.yaml); flags you type override it.")
@_train_options
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory. Default: runs/<backbone>. Re-running resumes from its checkpoints.")
@click.option("--fresh", is_flag=True,
              help="Ignore checkpoints in --out and start over (the decoded images in --out/store are reused: "
                   "they are keyed by each file's content).")
@click.option("--no-progress", is_flag=True, help="No progress bars (the one line per epoch stays).")
@handle_errors
def train(recipe, out, fresh, no_progress, **_):
    """Transfer learning on an image folder: head on cached features, then fine-tuning.

    DATA holds one sub-folder per class (nested folders allowed): DATA/<class>/<image>.jpg.
    JPEG, PNG, BMP, GIF and WebP are read; corrupt files are skipped and listed.

    \b
    Examples:
      edgetl train data/flowers --backbone mobilenet_v2 --alpha 0.35 --size 224 \\
          --epochs 10 --fine-tune-epochs 5 --out runs/flowers
      edgetl train data/flowers --recipe models/mobilenet_v3_small_minimalistic_224.yaml --epochs 20
    """
    from edgetl.model.registry import get

    configs = _train_configs(click.get_current_context(), recipe)
    get(configs["model"].backbone)  # unknown names fail here, before TensorFlow loads
    from edgetl.data.folder import check_layout

    check_layout(configs["data"].path, configs["data"].val_path, configs["data"].min_images_per_class)  # so does a bad folder
    from edgetl.cluster import worker_role

    worker_role(configs["train"].strategy)  # and a missing or malformed TF_CONFIG for --strategy multiworker
    from edgetl.train import train as run_training

    result = run_training(configs["data"], configs["model"], configs["train"],
                          out=out or f"runs/{configs['model'].backbone}", fresh=fresh, echo=click.echo,
                          progress=not no_progress and sys.stderr.isatty())
    click.echo(result.summary())


_MIN_RUNTIME_HELP = ("Oldest TFLite runtime every exported file must load in (2.14 = tflite-runtime on 32-bit Pi OS "
                     "and Coral images). Op versions are kept there where the converter can; a file that cannot is "
                     "named with the version it needs.")

# `run` flags beyond the train ones: applied only when typed (a recipe's value stands otherwise).
_RUN_FLAGS = {
    "qat_epochs": ("qat", "epochs"), "qat_lr": ("qat", "learning_rate"),
    "variants": ("export", "variants"), "io_type": ("export", "io_type"),
    "calibration_images": ("export", "calibration_images"), "edgetpu": ("export", "edgetpu"),
    "min_runtime": ("export", "min_runtime"),
    "bench_threads": ("report", "threads"), "bench_seconds": ("report", "bench_seconds"), "bench_runs": ("report", "bench_runs"),
    "bench_rounds": ("report", "bench_rounds"),
    "max_drop": ("report", "max_drop"), "prefer": ("report", "prefer"),
    "tune": ("tune", "enabled"), "tune_budget": ("tune", "budget"), "tune_trials": ("tune", "max_trials"),
}


def _duration_option(ctx, param, value):
    from edgetl.config import parse_duration
    from edgetl.errors import ConfigError

    try:
        return parse_duration(value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


@main.command("run")
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="YAML recipe (see models/*.yaml, or a run's config.yaml); flags you type override it.")
@_train_options
@click.option("--qat-epochs", type=int, default=3, show_default=True, help="Quantization-aware fine-tuning epochs.")
@click.option("--qat-lr", type=float, default=1e-5, show_default=True, help="QAT learning rate (keep it low).")
@click.option("--variants", default=",".join(DEFAULT_VARIANTS), show_default=True, metavar="V[,V...]",
              help=f"Exported variants, of {', '.join(VARIANTS)}; QAT runs only when {' or '.join(qat_variant_names())} "
                   f"is among them.")
@click.option("--io-type", type=click.Choice(IO_TYPES), default=IO_TYPES[0], show_default=True,
              help="Input/output dtype of the integer variants.")
@click.option("--calibration-images", type=int, default=300, show_default=True, help="Training images calibrating int8 PTQ.")
@click.option("--edgetpu", is_flag=True, help="Also compile the integer variants with edgetpu_compiler (when on PATH).")
@click.option("--min-runtime", default="2.14", show_default=True, metavar="VERSION", help=_MIN_RUNTIME_HELP)
@click.option("--bench-threads", default=None, metavar="N[,N...]", help="Thread counts benchmarked. Default: 1 and all usable cores.")
@click.option("--bench-seconds", type=float, default=1.0, show_default=True, help="Minimum timed seconds per file and thread count.")
@click.option("--bench-runs", type=int, default=50, show_default=True, help="Minimum timed runs per file and thread count.")
@click.option("--bench-rounds", type=int, default=5, show_default=True,
              help="Files are benchmarked interleaved in this many rounds; noisy latencies are re-measured, then not ranked.")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="Recommend only files within this many accuracy points of the Keras float model.")
@click.option("--prefer", type=click.Choice(["latency", "size"]), default="latency", show_default=True,
              help="Among those files, recommend the fastest (p50) or the smallest.")
@click.option("--tune", is_flag=True,
              help="Before training, search the recipe on the validation split (Optuna): head learning rate, then "
                   "fine-tuning depth, peak learning rate, warm-up and 90-degree rotations. The run then trains with "
                   "the best trial's recipe and writes it to RUN/config.yaml; the report lists every trial.")
@click.option("--tune-budget", default="30m", show_default=True, metavar="DURATION", callback=_duration_option,
              help="Wall time of the search, decode included: 30m, 1h, 90s or seconds. Giving it turns --tune on.")
@click.option("--tune-trials", type=int, default=0, show_default=True,
              help="With --tune: fine-tuning trials at most (0 = as many as the budget allows).")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory. Default: runs/<backbone>. Re-running skips finished stages.")
@click.option("--fresh", is_flag=True,
              help="Delete the run's checkpoints and results and start over (the decoded images in RUN/store are reused).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@handle_errors
def run_command(recipe, out, fresh, no_progress, **_):
    """Everything: train, QAT, export all variants, evaluate and benchmark each file, report.

    DATA holds one sub-folder per class. Each stage is skipped when its outputs
    are already in --out and were made with the same settings, so running the
    same command again after a failure or Ctrl-C continues where it stopped.

    The run directory ends with report.md, report.json and report.csv: one row
    per exported file with its size, its accuracy measured by running the file on
    the validation split, the change against the Keras float model, p50/p90
    latency on this machine and the speed-up over the fp32 file, plus plots/ and the
    recommended file (the fastest within --max-drop points of float, by default).

    \b
    Examples:
      edgetl run data/flowers --recipe models/mobilenet_v2_035_224.yaml --out runs/flowers
      edgetl run data/flowers --backbone mobilenet_v3_small_minimalistic --variants int8,qat-int8 --edgetpu
      # the same run again, another rule: only the report is rebuilt
      edgetl run data/flowers --recipe runs/flowers/config.yaml --out runs/flowers --max-drop 0.5 --prefer size
      # search the training recipe for 30 minutes first, then train, quantize and export with the best one
      edgetl run data/flowers --tune --tune-budget 30m --out runs/flowers-tuned
    """
    from edgetl.export.variants import parse_variants

    ctx = click.get_current_context()
    params = ctx.params
    params["variants"] = parse_variants(params["variants"])
    params["bench_threads"] = _int_list(params["bench_threads"], "--bench-threads")
    configs = _train_configs(ctx, recipe, _RUN_FLAGS)
    if ctx.get_parameter_source("tune_budget") == click.core.ParameterSource.COMMANDLINE and not configs["tune"].enabled:
        import dataclasses

        configs["tune"] = dataclasses.replace(configs["tune"], enabled=True)
    if not params["variants"]:
        raise click.BadParameter("give at least one variant, e.g. int8", param_hint="--variants")
    from edgetl.workflow import run_configs

    result = run_configs(configs, out or f"runs/{configs['model'].backbone}", fresh=fresh, echo=click.echo,
                         progress=not no_progress and sys.stderr.isatty())
    click.echo("")
    click.echo(result.summary())


@main.command()
@click.argument("data", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--val", "val_path", type=click.Path(file_okay=False), default=None,
              help="Separate validation folder (then every image of DATA trains).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of each class held out.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@handle_errors
def rules(data, val_path, val_fraction, batch_size):
    """The rules that choose the training recipe from the data, and which one fires for DATA.

    When `train` or `run` is given no value for the head and fine-tuning
    settings (no flag, no --recipe that sets them), edgetl picks them from
    the training images per class; the table says what each rule sets and
    what it was measured on (docs/benchmarks.md has the commands).

    \b
    Examples:
      edgetl rules
      edgetl rules data/flowers
    """
    from edgetl.auto_recipe import choose, profile_folder, rules_table
    from edgetl.config import DataConfig, TrainConfig

    auto = None
    if data:  # a bad folder fails before the table is printed
        auto = choose(profile_folder(DataConfig(path=data, val_path=val_path, val_fraction=val_fraction,
                                                batch_size=batch_size)), TrainConfig())
    click.echo(rules_table())
    click.echo("")
    click.echo("Augmentation: with --orientation auto (the default) the training stage decides from the photos whether "
               "90-degree rotations and vertical flips keep the label (a head trained with turned copies against one "
               "without, on the validation split); `edgetl train` prints the figures and the decision.")
    if auto is not None:
        click.echo("")
        click.echo(auto.line())


@main.command()
@click.argument("pattern", default="*")
@click.option("--details", is_flag=True,
              help="Also build each backbone (random weights) to count parameters and MACs, and look for local ImageNet files.")
@click.option("--alpha", type=float, default=None, help="Width multiplier for --details. Default: each backbone's.")
@click.option("--size", type=int, default=None, help="Input side for --details. Default: each backbone's.")
@click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
              help="Offline weights folder searched by --details (also $EDGETL_WEIGHTS_DIR, ~/.keras/models).")
@handle_errors
def backbones(pattern, details, alpha, size, weights_dir):
    """List registered backbones (optionally matching a glob PATTERN).

    Shows the default input size, the widths (alpha) it accepts, which have
    ImageNet weights, and whether its int8 files are Edge TPU compatible
    (every op in the Edge TPU's list). --details
    builds each one without its top (needs TensorFlow; a few seconds each) and
    adds parameters, MACs per image (convolutions and dense layers) and the
    local ImageNet weights file, if any.

    \b
    Examples:
      edgetl backbones
      edgetl backbones 'mobilenet*' --details --size 160
    """
    from edgetl.model.table import backbone_table

    click.echo(backbone_table(pattern, details=details, alpha=alpha, size=size, weights_dir=weights_dir,
                              progress=sys.stderr.isatty()))


# === Device side: bench / eval / predict / inspect (TensorFlow-free; modules imported inside each command) ===

# Mirrors edgetl.runtime.interpreter.RUNTIME_CHOICES (a test keeps them equal) so `--help` needs no numpy.
_RUNTIME_NAMES = ("auto", "litert", "tflite-runtime", "tensorflow")
_RUNTIME_HELP = "TFLite runtime: auto = ai_edge_litert, else tflite_runtime, else tensorflow.lite."
_DELEGATE_HELP = ("cpu (builtin kernels, XNNPACK off), xnnpack (the runtime's default CPU path), "
                  "edgetpu[:usb|:pci[:N]], or the path of a delegate library (.so/.dylib/.dll).")


def _int_list(text: Optional[str], name: str):
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,2,4; got '{text}'", param_hint=name) from None


def _warn(warnings) -> None:
    """Problems that were set aside (e.g. a third-party file's damaged metadata): one stderr line each."""
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


def _emit(text: str, output: Optional[str]) -> None:
    click.echo(text)
    if output:
        from edgetl._atomic import write_text

        write_text(output, text if text.endswith("\n") else text + "\n")


def _to_json(data) -> str:
    import json

    # numpy scalars/arrays and paths can reach the result dictionaries.
    return json.dumps(data, indent=2, default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value))


@main.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--threads", default=None, metavar="N[,N...]", help="Thread counts to sweep, e.g. 1,2,4. Default: all usable cores.")
@click.option("--delegate", "delegates", default="xnnpack", show_default=True, metavar="D[,D...]",
              help="Delegates to sweep, comma-separated: " + _DELEGATE_HELP)
@click.option("--delegate-option", multiple=True, metavar="KEY=VALUE", help="Option for an Edge TPU / external delegate (repeatable).")
@click.option("--runtime", type=click.Choice(_RUNTIME_NAMES), default="auto", show_default=True, help=_RUNTIME_HELP)
@click.option("--runs", type=int, default=50, show_default=True, help="Minimum timed runs per row.")
@click.option("--min-seconds", type=float, default=1.0, show_default=True, help="Keep running until this many seconds have passed.")
@click.option("--max-seconds", type=float, default=150.0, show_default=True, help="Stop timed runs after this many seconds.")
@click.option("--warmup", "warmup_runs", type=int, default=1, show_default=True, help="Untimed runs after the first inference.")
@click.option("--warmup-seconds", type=float, default=0.5, show_default=True, help="Minimum warm-up duration.")
@click.option("--images", multiple=True, metavar="PATH", help="Feed these images (files or folders) instead of random input (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input.")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Measure the MODELs interleaved in this many rounds (A B, B A, ...), re-measuring noisy ones; "
                   "use 5 or more on a busy machine. 1 = one model after the other.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every run's latency included unless --no-times).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per measurement.")
@click.option("--no-times", is_flag=True, help="Leave the per-run latencies out of --json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write what is printed to this file.")
@click.option("--no-progress", is_flag=True, help="No progress bar on sweeps.")
@click.option("--host", "hosts", multiple=True, metavar="USER@HOST",
              help="Benchmark on this device over SSH instead of here (repeatable; 'local' = this machine).")
@click.option("--hosts", "host_list", default=None, metavar="H1,H2", help="Comma-separated SSH targets, run at the same time.")
@click.option("--ssh-port", type=int, default=None, help="SSH port of the hosts.")
@click.option("--ssh-option", multiple=True, metavar="KEY=VALUE", help="Extra ssh -o option, e.g. IdentityFile=~/.ssh/pi (repeatable).")
@click.option("--ssh-timeout", type=int, default=10, show_default=True, help="Seconds before an unreachable host is given up.")
@click.option("--remote-edgetl", default="edgetl", show_default=True,
              help="Command running edgetl on the hosts, e.g. '/home/pi/venv/bin/edgetl' or 'python3 -m edgetl'.")
@handle_errors
def bench(models, threads, delegates, delegate_option, runtime, runs, min_seconds, max_seconds, warmup_runs, warmup_seconds,
          images, seed, rounds, as_json, as_csv, no_times, output, no_progress, hosts, host_list, ssh_port, ssh_option,
          ssh_timeout, remote_edgetl):
    """Latency of .tflite models: init, first inference, mean/std/p50/p90/p99, throughput, peak RSS.

    Sweeps every MODEL x --delegate x --threads combination in one table, like
    LiteRT's benchmark_model. Runs until both --runs and --min-seconds are reached.

    \b
    Examples:
      edgetl bench model_int8.tflite
      edgetl bench model_fp32.tflite model_int8.tflite --threads 1,2,4 --delegate cpu,xnnpack
      edgetl bench model_int8_edgetpu.tflite --delegate edgetpu:usb --json > tpu.json
      edgetl bench model_int8.tflite --host pi@raspberrypi.local --remote-edgetl '~/venv/bin/edgetl'
      edgetl bench model_int8.tflite --hosts local,pi@pi4.local,pi@pi5.local --csv -o bench.csv
    """
    from edgetl.bench import BenchConfig, format_results, results_csv, results_json
    from edgetl.errors import RemoteError
    from edgetl.runtime.interpreter import parse_options

    if as_json and as_csv:
        raise click.UsageError("--json and --csv are exclusive; pick one.")
    config = BenchConfig(
        threads=_int_list(threads, "--threads"), delegates=(delegates,), delegate_options=parse_options(delegate_option),
        runtime=runtime, runs=runs, min_seconds=min_seconds, max_seconds=max_seconds, warmup_runs=warmup_runs,
        warmup_seconds=warmup_seconds, images=tuple(images), seed=seed, keep_times=not no_times, rounds=rounds,
    )
    from edgetl.remote import SSHConfig, benchmark_on

    targets = list(hosts) + [h for h in (host_list or "").split(",") if h.strip()]
    ssh = SSHConfig(port=ssh_port, options=tuple(ssh_option), connect_timeout=ssh_timeout, remote_edgetl=remote_edgetl)
    results, failures = benchmark_on(list(models), config, targets, ssh,
                                     progress=not no_progress and sys.stderr.isatty())
    if as_json:
        _emit(_to_json(results_json(results, times=not no_times)), output)
    elif as_csv:
        _emit(results_csv(results).rstrip("\n"), output)
    else:
        _emit(format_results(results), output)
    if failures:
        raise RemoteError(" | ".join(failures.values()))


def _inference_options(func):
    """The labels, preprocessing and interpreter options `eval` and `predict` share."""
    options = [
        click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
                     help="Labels file (one per line, output order, or Coral's INDEX LABEL lines); default: the "
                          "edgetl metadata's labels, else those of the TFLite metadata."),
        click.option("--mean", default=None, metavar="M|R,G,B", help="Override the per-channel mean (third-party float models)."),
        click.option("--std", default=None, metavar="S|R,G,B", help="Override the per-channel std, e.g. 127.5 for [-1, 1] inputs."),
        click.option("--delegate", default="xnnpack", show_default=True, help=_DELEGATE_HELP),
        click.option("--delegate-option", multiple=True, metavar="KEY=VALUE",
                     help="Option for an Edge TPU / external delegate (repeatable)."),
        click.option("--threads", type=int, default=None, help="Interpreter threads. Default: the runtime's."),
        click.option("--runtime", type=click.Choice(_RUNTIME_NAMES), default="auto", show_default=True, help=_RUNTIME_HELP),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command("eval")
@click.argument("model")
@click.argument("data")
@click.option("--top-k", type=int, default=5, show_default=True, help="k of the top-k accuracy.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per invoke when the model's batch is dynamic.")
@_inference_options
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write what is printed to this file.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@handle_errors
def eval_command(model, data, top_k, batch_size, labels_file, mean, std, delegate, delegate_option, threads, runtime,
                 as_json, output, no_progress):
    """Accuracy of a .tflite classifier on an image folder DATA/<class>/<image>.

    Reports top-1, top-k, per-class recall/precision and the confusion matrix.
    Images are decoded with Pillow and preprocessed exactly as in training
    (the edgetl metadata's mean/std and size). Class folders are matched to the
    model's labels by name; a folder may hold a subset of the classes.

    \b
    Examples:
      edgetl eval runs/flowers/export/model_int8.tflite data/flowers_test
      edgetl eval mobilenet_v2_1.0_224_quant.tflite imagenet_subset --labels imagenet_labels.txt --json
    """
    from edgetl.evaluate import EvalConfig, evaluate
    from edgetl.runtime.interpreter import parse_options
    from edgetl.runtime.tensors import parse_channel_values

    config = EvalConfig(
        top_k=top_k, batch_size=batch_size, delegate=delegate, delegate_options=parse_options(delegate_option),
        threads=threads, runtime=runtime, labels_file=labels_file, mean=parse_channel_values(mean, "mean"),
        std=parse_channel_values(std, "std"), progress=not no_progress and sys.stderr.isatty(),
    )
    result = evaluate(model, data, config)
    _warn(result.warnings)
    _emit(_to_json(result.to_dict()) if as_json else result.format(), output)


@main.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-k", "--top-k", type=int, default=5, show_default=True, help="Classes to show per image.")
@_inference_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def predict(model, images, top_k, labels_file, mean, std, delegate, delegate_option, threads, runtime, as_json):
    """Top-k labels with scores for each IMAGE.

    Labels and preprocessing come from --labels/--mean/--std, else the file's
    edgetl metadata, else its standard TFLite metadata (labels.txt,
    NormalizationOptions), else the defaults. A uint8/int8 model without
    edgetl metadata gets raw pixels; a float model gets (pixel - mean) / std
    (default 0 and 1). --labels takes one label per line, or Coral's INDEX LABEL lines.

    \b
    Examples:
      edgetl predict runs/flowers/export/model_int8.tflite rose.jpg tulip.png
      edgetl predict mobilenet_v2_1.0_224_quant.tflite parrot.jpg --labels imagenet_labels.txt -k 3
    """
    from edgetl.labels import parse_labels
    from edgetl.predict import predict as run_predict
    from edgetl.runtime.interpreter import DelegateSpec, parse_options
    from edgetl.runtime.tensors import parse_channel_values

    result = run_predict(
        model, list(images), top_k=top_k, delegate=DelegateSpec.parse(delegate, parse_options(delegate_option)),
        threads=threads, runtime=runtime, labels=parse_labels(labels_file) if labels_file else None,
        mean=parse_channel_values(mean, "mean"), std=parse_channel_values(std, "std"),
    )
    _warn(result.warnings)
    click.echo(_to_json(result.to_dict()) if as_json else result.format())


@main.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (tensors, op counts, Edge TPU issues, edgetl metadata).")
@handle_errors
def inspect(model, as_json):
    """What a .tflite file holds, without running it.

    Inputs/outputs (shape, dtype, quantization), op histogram, whether it is
    fully integer, whether it is Edge TPU-compiled or ready to compile, the
    oldest TFLite runtime it loads in, the metadata entries, the standard
    TFLite metadata (what MediaPipe and the Task Library read), the embedded
    edgetl metadata, and which labels and preprocessing the device
    commands use, from where.

    \b
    Examples:
      edgetl inspect runs/flowers/export/model_int8.tflite
      edgetl inspect mobilenet_v2_1.0_224_quant.tflite --json
    """
    from edgetl.modelfile import format_info, inspect_model

    info = inspect_model(model)
    click.echo(_to_json(info.to_dict()) if as_json else format_info(info))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--epochs", type=int, default=3, show_default=True, help="Fine-tuning epochs of the quantized model.")
@click.option("--lr", "learning_rate", type=float, default=1e-5, show_default=True, help="Adam learning rate (keep it low).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--steps-per-epoch", type=int, default=None, help="Optimizer steps per epoch. Default: one pass over the training images.")
@click.option("--calibration-batches", type=int, default=4, show_default=True,
              help="Training batches that initialise activation ranges before fine-tuning (0 = tfmot's [-6, 6]).")
@click.option("--no-augment", is_flag=True, help="Turn off augmentation while fine-tuning.")
@click.option("--distillation", type=float, default=0.0, show_default=True,
              help="Weight of the float model's probabilities in the loss (0 = labels only, 1 = match the float model).")
@click.option("--nondeterministic", is_flag=True,
              help="Let TensorFlow ops run nondeterministically (a little faster; the same seed no longer gives the same model).")
@click.option("--seed", type=int, default=42, show_default=True)
@handle_errors
def qat(run_dir, epochs, learning_rate, batch_size, steps_per_epoch, calibration_batches, no_augment, distillation,
        nondeterministic, seed):
    """Quantization-aware fine-tuning of a trained run (writes RUN_DIR/qat/).

    Works on every registry backbone: unsupported layers are rewritten into
    quantizable ones (input normalisation, hard-swish, squeeze-excite Multiply)
    and listed. Prints the Keras float and QAT accuracy on the validation split.

    \b
    Example:
      edgetl qat runs/flowers --epochs 3 --lr 1e-5
      edgetl export runs/flowers --variants int8,qat-int8
    """
    from edgetl.config import QATConfig
    from edgetl.run_dir import RunPaths

    config = QATConfig(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                       calibration_batches=calibration_batches, augment=not no_augment, seed=seed,
                       distillation=distillation, deterministic=not nondeterministic)
    RunPaths.of(run_dir).require_model()  # fail before TensorFlow loads
    from edgetl.quant.qat import quantize_aware_finetune

    result = quantize_aware_finetune(run_dir, config, echo=click.echo)
    click.echo(result.summary())


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--variants", default=None, metavar="V[,V...]",
              help=f"Comma-separated, of: {', '.join(VARIANTS)}. Default: {','.join(float_variant_names())} "
                   f"(+{','.join(qat_variant_names())} when RUN_DIR/qat exists).")
@click.option("--io-type", type=click.Choice(IO_TYPES), default=IO_TYPES[0], show_default=True,
              help="Input/output dtype of the integer-I/O variants "
                   f"({', '.join(name for name, v in VARIANTS.items() if v.integer_io)}).")
@click.option("--calibration-images", type=int, default=300, show_default=True,
              help="Training images calibrating int8 post-training quantization.")
@click.option("--calibration-dir", type=click.Path(file_okay=False), default=None,
              help="Calibrate on the images of this folder instead of the run's training split.")
@click.option("--verify-images", type=int, default=500, show_default=True,
              help="Validation images each exported file is run on.")
@click.option("--no-verify", is_flag=True, help="Skip running the exported files on validation images.")
@click.option("--flag-drop", type=float, default=2.0, show_default=True,
              help="Flag a file losing more accuracy points than this against the Keras float model (a warning; "
                   "`edgetl run --max-drop` is the recommendation's tolerance).")
@click.option("--max-drop", "old_max_drop", type=float, default=None, hidden=True)
@click.option("--edgetpu", is_flag=True, help="Also compile int8 models with edgetpu_compiler (when on PATH).")
@click.option("--min-runtime", default="2.14", show_default=True, metavar="VERSION", help=_MIN_RUNTIME_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Output folder. Default: RUN_DIR/export.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the calibration sample.")
@handle_errors
def export(run_dir, variants, io_type, calibration_images, calibration_dir, verify_images, no_verify,
           flag_drop, old_max_drop, edgetpu, min_runtime, out_dir, seed):
    """Export a trained run to TFLite, one verified .tflite per variant.

    Each file embeds its edgetl metadata (labels, input size/dtype/quantization,
    preprocessing, backbone, edgetl version) and the standard TFLite metadata
    (labels.txt, NormalizationOptions) that MediaPipe Tasks and the TFLite Task
    Library read; labels.txt and manifest.json (name, variant, size, sha256,
    accuracy, minimum runtime) are written next to them. Every file is run on
    validation images right after export and its accuracy compared with the
    Keras float model.

    \b
    Examples:
      edgetl export runs/flowers --variants fp32,fp16,dynamic,int8,qat-int8
      edgetl export runs/flowers --variants int8 --io-type int8 --edgetpu
      edgetl export runs/flowers --min-runtime 2.17   # newer devices only: per-channel dynamic-range weights
    """
    from edgetl.config import ExportConfig
    from edgetl.run_dir import RunPaths

    if old_max_drop is not None:
        if click.get_current_context().get_parameter_source("flag_drop") == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--max-drop is the old name of --flag-drop; give only --flag-drop.")
        click.echo("Warning: `edgetl export --max-drop` is now --flag-drop (`edgetl run --max-drop` is the "
                   "recommendation's tolerance); read as --flag-drop.", err=True)
        flag_drop = old_max_drop
    config = ExportConfig(variants=variants or (), io_type=io_type, calibration_images=calibration_images,
                          calibration_dir=calibration_dir, verify=not no_verify, verify_images=verify_images,
                          flag_drop=flag_drop, edgetpu=edgetpu, out_dir=out_dir, seed=seed,
                          min_runtime=min_runtime)
    RunPaths.of(run_dir).require_model()  # fail before TensorFlow loads
    from edgetl.export.tflite import export_run

    result = export_run(run_dir, config, echo=click.echo)
    click.echo(result.summary())


@main.command()
@click.option("--out", default="runs/quickstart", show_default=True, type=click.Path(file_okay=False),
              help="Run directory; running again reuses its finished stages.")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Your image folder (DATA/<class>/*.jpg, or DATA/train and DATA/val). Default: the TrashNet photos "
                   "shipped with edgetl.")
@click.option("--backbone", default="mobilenet_v2", show_default=True, help="Registry name; `edgetl backbones` lists them.")
@click.option("--alpha", type=float, default=0.35, show_default=True, help="Width multiplier (MobileNets).")
@click.option("--size", type=int, default=160, show_default=True, help="Square input side in pixels.")
@click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of Keras' ImageNet weight files, for other backbones on offline machines "
                   "(also $EDGETL_WEIGHTS_DIR and ~/.keras/models).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@handle_errors
def quickstart(out, data, backbone, alpha, size, weights_dir, no_progress):
    """The whole pipeline on real photos, offline, in a few minutes on a laptop CPU.

    A recycling sorter: MobileNetV2 alpha 0.35 from the ImageNet weights that ship
    with edgetl, trained on a TrashNet subset that ships too (6 classes of waste
    photos), then QAT, export of fp32/fp16/dynamic/int8/qat-int8, each file
    evaluated and benchmarked on this machine. It ends in the run's report:
    OUT/report.md (+ .json, .csv, plots/). Nothing is downloaded.

    \b
    Examples:
      edgetl quickstart
      edgetl quickstart --data data/flowers --out runs/flowers-quick
      edgetl quickstart --backbone mobilenet_v2 --alpha 1.0 --size 224 --weights-dir ~/keras-weights
    """
    from edgetl.model.registry import get
    from edgetl.quickstart import quickstart as run_quickstart

    from click.core import ParameterSource

    spec = get(backbone)  # unknown names fail here, before TensorFlow loads
    if not spec.alphas and click.get_current_context().get_parameter_source("alpha") != ParameterSource.COMMANDLINE:
        alpha = None  # the default width is a MobileNet's; a typed --alpha is checked by the registry
    result = run_quickstart(out=out, data=data, backbone=backbone, alpha=alpha, size=size, weights_dir=weights_dir,
                            echo=click.echo, progress=not no_progress and sys.stderr.isatty())
    click.echo("")
    click.echo(result.summary())


def run() -> None:
    """The ``edgetl`` command: ``main``, with TensorFlow's C++ log lines kept off stderr unless ``--verbose``.

    Not done inside ``main``: tests and other programs call ``main`` in their own
    process, whose stderr is theirs (see ``edgetl._native.filter_native_logs``).
    """
    import os

    if not {"-v", "--verbose"} & set(sys.argv[1:]) and os.environ.get("EDGETL_TF_LOGS") != "1":
        from edgetl._native import filter_native_logs

        filter_native_logs()
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
