"""Defaults that adapt to the data: the training recipe chosen from the folder's size (no TensorFlow).

When a run is given no recipe values for training (no ``--recipe`` file that sets them, no typed flag),
``adapt_configs`` looks at the image folder — training images per class, number of classes, batch size —
and picks the fine-tuning depth, epochs and learning rates by the first rule of ``RULES`` that matches.
Every value the user gives wins over the rule, one field at a time, and the run's ``config.yaml`` records
the values used, so the run can be repeated exactly with ``--recipe RUN/config.yaml``.

The rules and the measurements behind them are in docs/benchmarks.md ("Defaults that adapt to the data");
``edgetl rules`` prints the table.

The split follows the usual practice for small-data transfer learning — train the new head first; with
few images per class fine-tune only the top of the backbone, with more fine-tune all of it at a low
learning rate (Yosinski et al., "How transferable are features in deep neural networks?", NeurIPS 2014;
Kornblith et al., "Do Better ImageNet Models Transfer Better?", CVPR 2019) — and its numbers (the
threshold, the step budget, the learning rates) are the ones measured on the two real datasets this
project has offline (hymenoptera, median 122 training images per class; TrashNet, median 317).
They do not look at the backbone or the input size yet: every measurement behind them is MobileNetV2
alpha 0.35 at 224 px (the only backbone with ImageNet weights offline here at two widths), so a rule
that differs by backbone would have nothing to stand on.

This is edgetl's own code: the choice is a few lines of arithmetic on a folder scan, and none of the
AutoML libraries (KerasTuner, Optuna) chooses a starting recipe from dataset size without running trials.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Tuple

from edgetl.config import DataConfig, TrainConfig
from edgetl.errors import DatasetError

# TrainConfig fields a rule may set; everything else keeps its default or the user's value.
AUTO_FIELDS = ("epochs", "learning_rate", "fine_tune_epochs", "fine_tune_layers", "fine_tune_learning_rate",
               "warmup_epochs")

# Fine-tuning all layers: about this many optimizer steps, but no fewer than MIN and no more than MAX epochs.
# 560 steps = 10 epochs of TrashNet's 1,767 training images at batch 32, the setting measured there; a
# 50 k-image folder gets MIN epochs (its epochs are long), a 200-image one MAX (its epochs are seconds).
FULL_FINE_TUNE_STEPS = 560
MIN_FULL_EPOCHS, MAX_FULL_EPOCHS = 2, 10
# Median training images per class from which every backbone layer is fine-tuned.
FULL_FINE_TUNE_FROM = 100


@dataclasses.dataclass(frozen=True)
class DataProfile:
    """What the rules look at: the training split's size, counted from file names (nothing decoded).

    Attributes:
      classes: number of classes.
      train_images: image files that go to training (with no separate validation
        folder, the share left after ``val_fraction``).
      images_per_class: median of ``train_images`` per class (the median, so one
        large class does not make a small dataset look large).
      batch_size: the data config's batch size (steps per epoch follow from it).
    """

    classes: int
    train_images: int
    images_per_class: int
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.train_images / self.batch_size))

    def describe(self) -> str:
        return (f"{self.train_images} training images in {self.classes} classes "
                f"(median {self.images_per_class} per class)")


def profile_counts(counts: Mapping[str, int], batch_size: int, val_fraction: Optional[float] = None) -> DataProfile:
    """A DataProfile from ``{class: image files}``.

    Args:
      counts: image files per class of the training folder.
      batch_size: images per step.
      val_fraction: the share of each class the split holds out for
        validation; None when a separate validation folder is given.
    """
    keep = 1.0 - (val_fraction or 0.0)
    per_class = [max(1, int(round(n * keep))) for n in counts.values()]
    return DataProfile(classes=len(per_class), train_images=sum(per_class),
                       images_per_class=int(statistics.median(per_class)), batch_size=batch_size)


def profile_folder(data: DataConfig) -> DataProfile:
    """The DataProfile of ``data.path`` from a scan of file names (milliseconds for thousands of files).

    Raises:
      DatasetError: a missing folder or one without class sub-folders (as ``scan_candidates``).
    """
    from edgetl.data.folder import scan_candidates

    counts = scan_candidates(data.path).counts()
    return profile_counts(counts, data.batch_size, None if data.val_path else data.val_fraction)


def _full_fine_tune_epochs(profile: DataProfile) -> int:
    return min(MAX_FULL_EPOCHS, max(MIN_FULL_EPOCHS, round(FULL_FINE_TUNE_STEPS / profile.steps_per_epoch)))


@dataclasses.dataclass(frozen=True)
class Rule:
    """One line of the rule table.

    Attributes:
      name: short identifier, printed in the run's output and recorded in config.yaml.
      when: the condition in words.
      applies: the condition as a test of a DataProfile.
      settings: TrainConfig values as a function of the profile.
      describe: the settings in words, for the table.
      evidence: what was measured (docs/benchmarks.md has the commands).
    """

    name: str
    when: str
    applies: Callable[[DataProfile], bool]
    settings: Callable[[DataProfile], Dict[str, Any]]
    describe: str
    evidence: str


RULES: Tuple[Rule, ...] = (
    Rule(
        name="few-images",
        when=f"fewer than {FULL_FINE_TUNE_FROM} training images per class (median)",
        applies=lambda p: p.images_per_class < FULL_FINE_TUNE_FROM,
        settings=lambda p: {"epochs": 10, "learning_rate": 1e-3, "fine_tune_epochs": 5, "fine_tune_layers": 30,
                            "fine_tune_learning_rate": 1e-4, "warmup_epochs": 0},
        describe="head 10 epochs at 1e-3; then the top 30 backbone layers for 5 epochs at 1e-4 (cosine)",
        evidence=("val accuracy, top 30 layers vs all layers: hymenoptera at 40 per class 90.85 % vs 88.89 %, "
                  "TrashNet at 50 per class 69.42 % vs 72.48 %: the two sets disagree, so the cheaper one"),
    ),
    Rule(
        name="many-images",
        when=f"{FULL_FINE_TUNE_FROM} or more training images per class (median)",
        applies=lambda p: p.images_per_class >= FULL_FINE_TUNE_FROM,
        settings=lambda p: {"epochs": 10, "learning_rate": 1e-3, "fine_tune_epochs": _full_fine_tune_epochs(p),
                            "fine_tune_layers": -1, "fine_tune_learning_rate": 3e-4, "warmup_epochs": 1},
        describe=(f"head 10 epochs at 1e-3; then every backbone layer (BatchNorm frozen) for about "
                  f"{FULL_FINE_TUNE_STEPS} steps ({MIN_FULL_EPOCHS}-{MAX_FULL_EPOCHS} epochs): 1 warm-up epoch "
                  f"to 3e-4, then cosine decay"),
        evidence=("val accuracy: TrashNet (median 317 per class) 90.52 % with this rule (upright) vs 84.40 % with "
                  "`few-images`' settings; with --orientation any 92.35 %, and 89.91 % without the warm-up; "
                  "92.05 % with the orientation test (any) on another machine; hymenoptera (median 122) 92.81 % "
                  "with this rule, with `few-images`' settings and with the orientation test"),
    ),
)


@dataclasses.dataclass(frozen=True)
class AutoRecipe:
    """The outcome of the rules for one folder.

    Attributes:
      rule: the rule that fired.
      profile: the folder's DataProfile.
      chosen: the TrainConfig fields the rule set (fields the user gave are not in it).
      train: the TrainConfig with them applied.
    """

    rule: Rule
    profile: DataProfile
    chosen: Dict[str, Any]
    train: TrainConfig

    def line(self) -> str:
        """One line for the run's output: which rule fired, on what, and what it set."""
        values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.chosen.items())
        return (f"recipe chosen from the data: {self.profile.describe()} -> rule `{self.rule.name}`: {values} "
                f"(flags you type or a --recipe file override these; `edgetl rules` lists the rules)")


def choose(profile: DataProfile, base: TrainConfig, fixed: Collection[str] = ()) -> AutoRecipe:
    """Applies the first rule of ``RULES`` that matches ``profile`` to ``base``.

    Args:
      profile: the training folder's DataProfile.
      base: the TrainConfig to start from.
      fixed: TrainConfig field names the user gave (kept as they are in ``base``).

    Returns:
      The AutoRecipe (its ``chosen`` may be empty when the user gave every field).
    """
    rule = next(r for r in RULES if r.applies(profile))
    chosen = {k: v for k, v in rule.settings(profile).items() if k not in fixed}
    epochs = chosen.get("fine_tune_epochs", base.fine_tune_epochs)
    if chosen.get("warmup_epochs") and epochs and chosen["warmup_epochs"] >= epochs:
        chosen["warmup_epochs"] = epochs - 1  # the user's few fine-tuning epochs keep some at the peak rate
    return AutoRecipe(rule=rule, profile=profile, chosen=chosen, train=dataclasses.replace(base, **chosen))


def adapt_configs(configs: Mapping[str, Any], given: Collection[str],
                  echo: Optional[Callable[[str], None]] = None) -> Tuple[Dict[str, Any], Optional[AutoRecipe]]:
    """Every stage's config with the rules' training values where the user gave none.

    Args:
      configs: ``{section: config}`` with at least data and train.
      given: ``"section.field"`` names the user set (typed flags, keys of the recipe file).
      echo: receives ``AutoRecipe.line()`` when a rule set at least one value.

    Returns:
      ``(configs, auto)``; ``auto`` is None when the user gave every field a
      rule sets, or when the training folder cannot be scanned: then the
      configs are returned as they are and the stages' own checks report the
      folder in their usual order (after the plan's notes), with their message.
    """
    fixed = {name.split(".", 1)[1] for name in given if name.startswith("train.")}
    if all(field in fixed for field in AUTO_FIELDS):
        return dict(configs), None
    try:
        profile = profile_folder(configs["data"])
    except DatasetError:
        return dict(configs), None
    auto = choose(profile, configs["train"], fixed)
    if echo is not None:  # not every field was given, so the rule chose at least one
        echo(auto.line())
    result = dict(configs)
    result["train"] = auto.train
    return result, auto


def rules_table() -> str:
    """The rule table as Markdown, with each rule's evidence (what ``edgetl rules`` prints)."""
    lines = ["| rule | when | training | measured |", "|---|---|---|---|"]
    lines += [f"| `{r.name}` | {r.when} | {r.describe} | {r.evidence} |" for r in RULES]
    return "\n".join(lines)
