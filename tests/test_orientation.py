"""`--orientation auto`: the rule, the test on features, and how training applies and remembers the decision."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_image_folder
from edgetl.cli import main
from edgetl.config import AugmentConfig
from edgetl.orientation import PROBE_IMAGES, decide, probe_rows


def test_turned_copies_that_cost_nothing_mean_any_orientation():
    assert decide(0.90, 0.91) == "any"
    assert decide(0.90, 0.90) == "any"  # a tie: the turned copies cost nothing
    assert decide(0.90, 0.8999) == "upright"


def test_the_test_turns_a_bounded_seeded_sample():
    assert list(probe_rows(5, seed=1)) == [0, 1, 2, 3, 4]
    big = probe_rows(PROBE_IMAGES * 10, seed=3)
    assert len(big) == PROBE_IMAGES == len(set(big.tolist())) and list(big) == sorted(big)
    assert np.array_equal(big, probe_rows(PROBE_IMAGES * 10, seed=3))
    assert not np.array_equal(big, probe_rows(PROBE_IMAGES * 10, seed=4))


def test_auto_is_the_default_and_acts_as_upright_where_nothing_decided():
    assert AugmentConfig().orientation == "auto"
    assert AugmentConfig().views() == AugmentConfig(orientation="upright").views() == (0, 1)


@pytest.mark.tf
def test_the_head_test_tells_orientation_free_data_from_orientation_as_label():
    pytest.importorskip("tensorflow")
    from edgetl.model.keras import keras
    from edgetl.orientation import choose_orientation

    rng = np.random.default_rng(0)
    # Two classes told apart by which feature is high; "turning" an image swaps the two features.
    def features(labels):
        x = rng.normal(0, 0.3, size=(len(labels), 4)).astype(np.float32)
        x[np.arange(len(labels)), labels] += 2.0
        return x

    labels = np.repeat([0, 1], 40)
    val_labels = np.repeat([0, 1], 20)
    train, val = features(labels), features(val_labels)
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    before = [w.copy() for w in head.get_weights()]
    settings = dict(epochs=30, learning_rate=0.05, batch_size=16, seed=0, patience=0)

    # Turned copies that look like their own class (waste on a board): no accuracy lost -> any.
    same = choose_orientation(head, train, features(labels), labels, val, val_labels, **settings)
    assert same.orientation == "any" and same.turned_accuracy >= same.upright_accuracy > 0.9
    # Turned copies that look like the other class (orientation is the label), and strongly so: accuracy lost
    # -> upright. (Copies exactly as strong as the originals only cancel them out, and the best epoch of a
    # head that learned nothing is a coin toss.)
    swapped = choose_orientation(head, train, 3 * train[:, [1, 0, 2, 3]], labels, val, val_labels, **settings)
    assert swapped.orientation == "upright" and swapped.turned_accuracy < swapped.upright_accuracy
    assert swapped.images == 80 and swapped.val_images == 40 and "upright" in swapped.line()
    # The head is left as it was found: the test is not stage 1.
    assert all(np.array_equal(a, b) for a, b in zip(before, head.get_weights()))


@pytest.mark.tf
def test_training_decides_once_records_it_and_a_typed_orientation_skips_the_test(tmp_path):
    pytest.importorskip("tensorflow")
    data = make_image_folder(tmp_path / "data", per_class=6, size=32)
    fast = ["--weights", "none", "--size", "32", "--epochs", "2", "--fine-tune-epochs", "1", "--batch-size", "8",
            "--no-progress"]
    out = tmp_path / "auto"
    first = CliRunner().invoke(main, ["train", str(data), "--out", str(out), *fast])
    assert first.exit_code == 0, first.output
    assert "orientation from the data: a head trained with 90-degree turned copies of 15 training images" in first.output
    result = json.loads((out / "train_result.json").read_text())
    test = result["orientation_test"]
    assert result["orientation"] == test["orientation"] == decide(test["upright_accuracy"], test["turned_accuracy"])
    assert json.loads((out / "checkpoints" / "state.json").read_text())["orientation"] == result["orientation"]
    # The same command again resumes with the decision it started with; it does not test again.
    again = CliRunner().invoke(main, ["train", str(data), "--out", str(out), *fast])
    assert again.exit_code == 0, again.output
    assert f"orientation from the data: {result['orientation']} (decided when this run's training started)" in again.output
    assert "turned copies of" not in again.output

    typed = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "typed"), "--orientation", "any", *fast])
    assert typed.exit_code == 0 and "orientation from the data" not in typed.output, typed.output
    typed_result = json.loads((tmp_path / "typed" / "train_result.json").read_text())
    assert typed_result["orientation"] == "any" and typed_result["orientation_test"] is None
    # Only fine-tuning and extra views use the orientation: a head-only run has nothing to decide.
    head_only = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "head"), *fast[:-5],
                                          "--fine-tune-epochs", "0", "--batch-size", "8", "--no-progress"])
    assert head_only.exit_code == 0 and "orientation from the data" not in head_only.output, head_only.output
