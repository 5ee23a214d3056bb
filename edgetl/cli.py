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
from edgetl.errors import EdgetlError

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
            _fail(f"unexpected {type(e).__name__}: {text} (re-run with `edgetl --debug ...` for the traceback and report it)", 1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgetl")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log more detail (INFO level).")
def main(debug: bool, verbose: bool) -> None:
    """edgetl: from an image folder to a small, fast, accurate TFLite classifier.

    \b
    Workstation (pip install "edgetl[train]"):
      edgetl train DATA --backbone mobilenet_v2 --alpha 0.35 --out runs/pets
    Device (pip install edgetl):
      bench / eval / predict / inspect a .tflite file, no TensorFlow needed.

    Run `edgetl COMMAND --help` for the options of each command.
    """
    _DEBUG["on"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@click.option("--val", "val_path", type=click.Path(file_okay=False), default=None,
              help="Separate validation folder (same class folders). Default: split DATA by --val-fraction.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of each class held out for validation.")
@click.option("--backbone", default="mobilenet_v2", show_default=True, help="Registry name; `edgetl backbones` lists them.")
@click.option("--alpha", type=float, default=None, help="Width multiplier (MobileNets), e.g. 0.35. Default: the backbone's.")
@click.option("--size", type=int, default=None, help="Square input side in pixels. Default: the backbone's (224 for MobileNets).")
@click.option("--weights", default="imagenet", show_default=True, help="'imagenet', 'none' (random init) or a no-top .h5 file.")
@click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
              help="Offline folder of Keras' ImageNet weight files (as in ~/.keras/models). Also $EDGETL_WEIGHTS_DIR.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Stage 1: epochs training the head on cached features.")
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True, help="Stage 1 learning rate.")
@click.option("--fine-tune-epochs", type=int, default=5, show_default=True, help="Stage 2: fine-tuning epochs (0 = skip stage 2).")
@click.option("--fine-tune-layers", type=int, default=30, show_default=True, help="Stage 2: backbone layers unfrozen from the top (-1 = all).")
@click.option("--fine-tune-lr", "fine_tune_learning_rate", type=float, default=1e-4, show_default=True, help="Stage 2 peak learning rate.")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True, help="Stage 2 schedule.")
@click.option("--patience", "early_stopping_patience", type=int, default=5, show_default=True, help="Early stopping patience in epochs (0 = off).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--dropout", type=float, default=0.2, show_default=True, help="Dropout before the classifier.")
@click.option("--hidden-units", type=int, default=0, show_default=True, help="Optional hidden Dense+ReLU layer in the head.")
@click.option("--no-augment", is_flag=True, help="Turn off training augmentation (flip, rotation, zoom, contrast).")
@click.option("--class-weights", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Inverse-frequency class weights; 'auto' = only for imbalanced folders.")
@click.option("--no-cache-features", is_flag=True, help="Stage 1 through the frozen backbone every epoch (slower; for comparison).")
@click.option("--strategy", type=click.Choice(["auto", "mirrored", "default"]), default="auto", show_default=True,
              help="tf.distribute strategy; 'auto' mirrors over several GPUs.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split, initialisation and augmentation.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory. Default: runs/<backbone>. Re-running resumes from its checkpoints.")
@click.option("--fresh", is_flag=True, help="Ignore checkpoints in --out and start over.")
@handle_errors
def train(data, val_path, val_fraction, backbone, alpha, size, weights, weights_dir, epochs, learning_rate,
          fine_tune_epochs, fine_tune_layers, fine_tune_learning_rate, lr_schedule, early_stopping_patience,
          batch_size, dropout, hidden_units, no_augment, class_weights, no_cache_features, strategy, seed, out, fresh):
    """Transfer learning on an image folder: head on cached features, then fine-tuning.

    DATA holds one sub-folder per class (nested folders allowed): DATA/<class>/<image>.jpg.
    JPEG, PNG, BMP, GIF and WebP are read; corrupt files are skipped and listed.

    \b
    Example:
      edgetl train data/flowers --backbone mobilenet_v2 --alpha 0.35 --size 224 \\
          --epochs 10 --fine-tune-epochs 5 --out runs/flowers
    """
    from edgetl.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
    from edgetl.model.registry import get

    get(backbone)  # unknown names fail here, before TensorFlow loads
    data_config = DataConfig(
        path=data, val_path=val_path, val_fraction=val_fraction, seed=seed, batch_size=batch_size,
        class_weights=class_weights, augment=AugmentConfig(enabled=not no_augment),
    )
    model_config = ModelConfig(backbone=backbone, alpha=alpha, size=size, weights=weights, weights_dir=weights_dir,
                               dropout=dropout, hidden_units=hidden_units)
    train_config = TrainConfig(
        epochs=epochs, learning_rate=learning_rate, fine_tune_epochs=fine_tune_epochs,
        fine_tune_layers=fine_tune_layers, fine_tune_learning_rate=fine_tune_learning_rate,
        lr_schedule=lr_schedule, early_stopping_patience=early_stopping_patience,
        cache_features=not no_cache_features, strategy=strategy, seed=seed,
    )
    from edgetl.train import train as run_training

    result = run_training(data_config, model_config, train_config, out=out or f"runs/{backbone}", fresh=fresh, echo=click.echo)
    click.echo(result.summary())


@main.command()
@click.argument("pattern", default="*")
@handle_errors
def backbones(pattern):
    """List registered backbones (optionally matching a glob PATTERN)."""
    from edgetl.model.registry import get, list_backbones

    names = list_backbones(pattern)
    if not names:
        raise EdgetlError(f"No backbone matches '{pattern}'. Run 'edgetl backbones' to list all.")
    click.echo(f"{'name':34} {'size':>5} {'alphas':24} {'ImageNet alphas':20} {'EdgeTPU':7}  notes")
    for name in names:
        spec = get(name)
        alphas = ",".join(str(a) for a in spec.alphas) or "-"
        imagenet = ",".join(str(a) for a in spec.imagenet_alphas) or "yes"
        click.echo(f"{name:34} {spec.default_size:>5} {alphas:24} {imagenet:20} {'yes' if spec.edgetpu_friendly else 'no':7}  {spec.description}")


if __name__ == "__main__":  # pragma: no cover
    main()
