"""Defaults that adapt to the data: which rule fires for which folder, and that user values win (no TensorFlow)."""

from __future__ import annotations

import math

import pytest
import yaml
from click.testing import CliRunner

from edgetl import auto_recipe
from edgetl.auto_recipe import adapt_configs, choose, profile_counts, profile_folder
from edgetl.cli import main
from edgetl.config import DataConfig, TrainConfig
from edgetl.errors import DatasetError
from edgetl.recipe import load_recipe


def _folder(root, counts):
    """Class folders with ``counts`` image files each (names only matter to the scan; nothing is decoded)."""
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"{i:05d}.jpg").write_bytes(b"\xff\xd8\xff")
    return str(root)


@pytest.mark.parametrize("counts, val_path, rule", [
    ({"a": 20, "b": 30}, None, "few-images"),                   # 16 and 24 train after a 0.2 split
    ({"a": 120, "b": 120}, None, "few-images"),                 # 96 each go to training
    ({"a": 150, "b": 150, "c": 150}, None, "many-images"),     # 120 each
    ({"a": 99, "b": 99}, "val", "few-images"),                  # a separate val folder: all 99 train
    ({"a": 100, "b": 100}, "val", "many-images"),               # the threshold itself
    ({"a": 500, "b": 10, "c": 120}, "val", "many-images"),      # median, not mean or minimum
    ({"a": 500, "b": 10, "c": 90}, "val", "few-images"),
])
def test_which_rule_fires_for_which_folder(tmp_path, counts, val_path, rule):
    data = DataConfig(path=_folder(tmp_path / "train", counts), val_path=str(tmp_path) if val_path else None)
    auto = choose(profile_folder(data), TrainConfig())
    assert auto.rule.name == rule, auto.line()
    assert auto.rule.name in auto.line()


def test_the_rules_set_what_their_table_says():
    few = choose(profile_counts({"a": 40, "b": 40}, 32), TrainConfig()).train
    assert (few.fine_tune_layers, few.fine_tune_epochs, few.fine_tune_learning_rate) == (30, 5, 1e-4)
    # Full fine-tuning for about FULL_FINE_TUNE_STEPS steps, clamped to the epoch range.
    trashnet = choose(profile_counts(dict.fromkeys("abcdef", 295), 32), TrainConfig()).train
    assert trashnet.fine_tune_layers == -1 and trashnet.fine_tune_learning_rate == 3e-4
    assert trashnet.fine_tune_epochs == min(auto_recipe.MAX_FULL_EPOCHS,
                                            round(auto_recipe.FULL_FINE_TUNE_STEPS / math.ceil(6 * 295 / 32)))
    big = choose(profile_counts({"a": 25000, "b": 25000}, 32), TrainConfig()).train
    assert big.fine_tune_epochs == auto_recipe.MIN_FULL_EPOCHS  # 1,563 steps per epoch
    middle = choose(profile_counts({"a": 1000, "b": 1000}, 32), TrainConfig()).train
    assert middle.fine_tune_epochs == round(auto_recipe.FULL_FINE_TUNE_STEPS / 63)  # 2,000 images: 63 steps
    small_batches = choose(profile_counts({"a": 150, "b": 150}, 8), TrainConfig()).train
    assert small_batches.fine_tune_epochs == auto_recipe.MAX_FULL_EPOCHS  # 38 steps per epoch


def test_values_the_user_gives_are_kept_one_field_at_a_time(tmp_path):
    data = DataConfig(path=_folder(tmp_path / "train", {"a": 200, "b": 200}))
    configs = {"data": data, "train": TrainConfig(fine_tune_epochs=3)}
    adapted, auto = adapt_configs(configs, given={"train.fine_tune_epochs"})
    assert adapted["train"].fine_tune_epochs == 3 and "fine_tune_epochs" not in auto.chosen
    assert adapted["train"].fine_tune_layers == -1  # the rule still chose the rest
    everything = {f"train.{f}" for f in auto_recipe.AUTO_FIELDS}
    unchanged, none = adapt_configs(configs, given=everything)
    assert none is None and unchanged["train"] == configs["train"]
    # The rule's warm-up never takes every fine-tuning epoch the user asked for.
    one, auto = adapt_configs({"data": data, "train": TrainConfig(fine_tune_epochs=1)}, given={"train.fine_tune_epochs"})
    assert one["train"].fine_tune_epochs == 1 and one["train"].warmup_epochs == 0


def test_the_command_line_applies_the_rule_records_it_and_lets_flags_and_recipes_win(tmp_path):
    """`edgetl train` on a folder with 150 images per class picks full fine-tuning; a typed flag or a recipe wins.

    The folder's files are not images, so training stops at the decode with one clear line, after the
    recipe line was printed (the point here is the choice, not the training).
    """
    data = _folder(tmp_path / "train", {"a": 190, "b": 190})
    runner = CliRunner()
    done = runner.invoke(main, ["train", data, "--out", str(tmp_path / "run"), "--no-progress"])
    assert "rule `many-images`" in done.output and "fine_tune_layers=-1" in done.output, done.output
    typed = runner.invoke(main, ["train", data, "--out", str(tmp_path / "run"), "--no-progress",
                                 "--fine-tune-layers", "12"])
    assert "rule `many-images`" in typed.output and "fine_tune_layers" not in typed.output.split("rule")[1].split("\n")[0]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"fine_tune_layers": 20, "fine_tune_epochs": 4}}))
    from_recipe = runner.invoke(main, ["train", data, "--recipe", str(recipe), "--out", str(tmp_path / "run"),
                                       "--no-progress"])
    line = next(line for line in from_recipe.output.splitlines() if "rule `" in line)
    assert "fine_tune_layers" not in line and "fine_tune_epochs" not in line and "fine_tune_learning_rate=0.0003" in line
    assert load_recipe(str(recipe))["train"].fine_tune_layers == 20


def test_edgetl_rules_prints_the_table_and_the_rule_for_a_folder(tmp_path):
    data = _folder(tmp_path / "train", {"a": 30, "b": 30})
    done = CliRunner().invoke(main, ["rules", data])
    assert done.exit_code == 0, done.output
    for rule in auto_recipe.RULES:
        assert f"`{rule.name}`" in done.output and rule.evidence in done.output
    assert "-> rule `few-images`" in done.output
    missing = CliRunner().invoke(main, ["rules", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and missing.output.count("\n") == 1 and "does not exist" in missing.output


def test_a_missing_folder_is_a_dataset_error_but_adapting_leaves_it_to_the_stages(tmp_path):
    with pytest.raises(DatasetError):
        profile_folder(DataConfig(path=str(tmp_path / "nope")))
    # `run` reports its plan's notes first, then the folder, with the stage's own message.
    (tmp_path / "one" / "only_class").mkdir(parents=True)
    for path in (str(tmp_path / "nope"), str(tmp_path / "one")):
        configs = {"data": DataConfig(path=path), "train": TrainConfig()}
        assert adapt_configs(configs, given=()) == (configs, None)


def test_the_python_api_applies_the_rule_where_neither_recipe_nor_overrides_set_a_value(tmp_path):
    """``edgetl.run`` picks the same rule as the command line and leaves the overrides it is given alone.

    The files are not images, so the run stops at the decode (a DatasetError) after the recipe line.
    """
    import edgetl

    data = _folder(tmp_path / "train", {"a": 150, "b": 150})
    lines = []
    with pytest.raises(DatasetError):
        edgetl.run(data, out=str(tmp_path / "run"), overrides={"train": {"fine_tune_epochs": 4}},
                   echo=lines.append, progress=False)
    line = next(line for line in lines if "rule `" in line)
    assert "rule `many-images`" in line and "fine_tune_layers=-1" in line and "fine_tune_epochs" not in line
