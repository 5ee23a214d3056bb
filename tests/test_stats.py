"""The report's statistics against statsmodels' reference implementations on known counts."""

from __future__ import annotations

import pytest

pytest.importorskip("scipy")
statsmodels = pytest.importorskip("statsmodels")

from statsmodels.stats.contingency_tables import mcnemar  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402

from edgetl.stats import compare_paired, mcnemar_exact, split_size_note, wilson_interval  # noqa: E402


@pytest.mark.parametrize("correct, total", [(140, 153), (153, 153), (0, 10), (1, 3), (245, 327), (50, 100)])
def test_wilson_interval_matches_statsmodels(correct, total):
    low, high = wilson_interval(correct, total)
    ref_low, ref_high = proportion_confint(correct, total, alpha=0.05, method="wilson")
    assert low == pytest.approx(ref_low, abs=1e-9) and high == pytest.approx(ref_high, abs=1e-9)
    assert low <= correct / total <= high


@pytest.mark.parametrize("lost, gained", [(3, 0), (0, 3), (5, 1), (11, 0), (7, 7), (20, 9), (0, 0)])
def test_mcnemar_exact_matches_statsmodels(lost, gained):
    # statsmodels' table: rows = reference right/wrong, columns = candidate right/wrong.
    table = [[100, lost], [gained, 10]]
    assert mcnemar_exact(lost, gained) == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)


def test_paired_comparison_in_words():
    # The example: 153 images, the file loses 3 the float model got right: -1.96 pts, p = 0.25.
    reference = [True] * 140 + [False] * 13
    candidate = [False] * 3 + [True] * 137 + [False] * 13
    comparison = compare_paired(reference, candidate)
    assert (comparison.lost, comparison.gained, comparison.delta_pts) == (3, 0, -1.96)
    assert comparison.p_value == pytest.approx(0.25)
    assert comparison.describe() == "-1.96 pts, 3 images net (3 lost, 0 gained), p = 0.25: not a measurable loss"
    assert not comparison.measurably_worse
    worse = compare_paired([True] * 153, [False] * 11 + [True] * 142)
    assert worse.measurably_worse and "a measurable loss" in worse.describe()
    with pytest.raises(ValueError):
        compare_paired([True], [True, False])


def test_split_size_note():
    assert split_size_note(153, {"ants": 70, "bees": 83}, max_drop=1.0) is None
    assert "only 20 images" in split_size_note(20, {"a": 10, "b": 10})
    assert "'b' 3" in split_size_note(60, {"a": 57, "b": 3})
    assert "more than the allowed drop of 0.5 pts" in split_size_note(153, {"a": 70, "b": 83}, max_drop=0.5)
