"""How sure an accuracy is: Wilson intervals, McNemar's exact test, and whether a split can tell a drop apart.

Validation sets of edge projects are small (153 images: one image is 0.65
points), so a difference of a point or two between two exported files is often
a couple of images. Every accuracy edgetl reports carries its 95 % Wilson score
interval, and every file's difference from the Keras float model is tested
with McNemar's exact test on the same images (the files are evaluated on the
same validation split, so the comparison is paired).

The statistics come from SciPy (``scipy.stats.binomtest``), which is part of the
``[train]`` extra: reports are built where training runs, and a device with
only a TFLite runtime does not need SciPy.

References:
  E. B. Wilson, "Probable inference, the law of succession, and statistical
  inference", JASA 22 (1927); recommended over the normal (Wald) interval by
  Brown, Cai and DasGupta, "Interval Estimation for a Binomial Proportion",
  Statistical Science 16 (2001).
  Q. McNemar, "Note on the sampling error of the difference between
  correlated proportions or percentages", Psychometrika 12 (1947); the exact
  form is a two-sided binomial test of the discordant pairs at p = 0.5
  (as ``statsmodels.stats.contingency_tables.mcnemar(exact=True)``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence, Tuple

from edgetl._optional import import_optional

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
# Below these, a validation split cannot tell a drop of about a point apart from noise
# (30 images: one image is 3.3 points; a class of 4 images: one image is 25 % of its recall).
MIN_SPLIT_IMAGES = 30
MIN_CLASS_IMAGES = 5


def _binomtest():
    return import_optional("scipy.stats", "train", "Confidence intervals and McNemar's test in the report").binomtest


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """The Wilson score interval of an accuracy ``correct / total``.

    Args:
      correct: images classified right (0 <= correct <= total).
      total: images evaluated.
      confidence: confidence level, 0.95 for the usual 95 % interval.

    Returns:
      ``(low, high)`` as fractions in [0, 1]; ``(0.0, 1.0)`` when ``total`` is 0.

    Raises:
      ValueError: ``correct`` outside [0, total].
    """
    if total == 0:
        return 0.0, 1.0
    if not 0 <= correct <= total:
        raise ValueError(f"correct={correct} is outside [0, {total}]")
    interval = _binomtest()(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def mcnemar_exact(only_reference: int, only_candidate: int) -> float:
    """Two-sided p-value of McNemar's exact test from the discordant pairs.

    Args:
      only_reference: images the reference (the Keras float model) got right
        and the candidate got wrong.
      only_candidate: images the candidate got right and the reference wrong.

    Returns:
      The p-value; 1.0 when there is no discordant pair.
    """
    discordant = int(only_reference) + int(only_candidate)
    if discordant == 0:
        return 1.0
    return float(_binomtest()(int(only_candidate), discordant, 0.5, alternative="two-sided").pvalue)


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """A candidate's accuracy against a reference's on the same images.

    Attributes:
      images: images both were evaluated on.
      delta_pts: candidate minus reference accuracy, in percentage points.
      lost: images the reference got right and the candidate wrong.
      gained: images the candidate got right and the reference wrong.
      p_value: McNemar's exact two-sided p-value.
    """

    images: int
    delta_pts: float
    lost: int
    gained: int
    p_value: float

    @property
    def measurable(self) -> bool:
        """True when the difference is significant at the 5 % level."""
        return self.p_value < ALPHA

    @property
    def measurably_worse(self) -> bool:
        """True when the candidate loses accuracy and the loss is significant."""
        return self.measurable and self.lost > self.gained

    def describe(self) -> str:
        """E.g. '-1.96 pts, 3 images, p = 0.25: not a measurable loss'."""
        net = self.gained - self.lost
        what = "loss" if net < 0 else "gain" if net > 0 else "difference"
        verdict = f"a measurable {what}" if self.measurable else f"not a measurable {what}"
        images = abs(net)
        return (f"{self.delta_pts:+.2f} pts, {images} image{'s' if images != 1 else ''} net "
                f"({self.lost} lost, {self.gained} gained), p = {self.p_value:.2g}: {verdict}")


def compare_paired(reference: Sequence[bool], candidate: Sequence[bool]) -> PairedComparison:
    """McNemar's exact test of two classifiers' correctness on the same images.

    Args:
      reference: per image, whether the reference (Keras float model) was right.
      candidate: per image, whether the candidate file was right; same order and length.

    Raises:
      ValueError: the sequences differ in length or are empty.
    """
    if len(reference) != len(candidate) or not len(reference):
        raise ValueError(f"paired comparison needs two equal, non-empty sequences, got {len(reference)} and {len(candidate)}")
    lost = sum(1 for r, c in zip(reference, candidate) if r and not c)
    gained = sum(1 for r, c in zip(reference, candidate) if c and not r)
    delta = (gained - lost) * 100.0 / len(reference)
    return PairedComparison(len(reference), round(delta, 2), lost, gained, mcnemar_exact(lost, gained))


def split_size_note(images: int, class_counts: Optional[Mapping[str, int]] = None,
                    max_drop: Optional[float] = None) -> Optional[str]:
    """One line when a validation split is too small to tell an accuracy drop apart, else None.

    Args:
      images: validation images.
      class_counts: validation images per class.
      max_drop: the allowed drop in points (``--max-drop``), when there is one.
    """
    problems = []
    if images < MIN_SPLIT_IMAGES:
        problems.append(f"only {images} images (one image = {100.0 / max(images, 1):.1f} pts)")
    elif max_drop is not None and 100.0 / images > max_drop:
        problems.append(f"one image is {100.0 / images:.2f} pts, more than the allowed drop of {max_drop:g} pts")
    small = {name: count for name, count in (class_counts or {}).items() if count < MIN_CLASS_IMAGES}
    if small:
        listed = ", ".join(f"'{name}' {count}" for name, count in list(small.items())[:5])
        problems.append(f"{len(small)} class(es) with fewer than {MIN_CLASS_IMAGES} images ({listed})")
    if not problems:
        return None
    return ("the validation split is too small to tell small accuracy differences apart: " + "; ".join(problems)
            + ". Add validation images (or a larger --val-fraction) before trusting differences of a few points.")
