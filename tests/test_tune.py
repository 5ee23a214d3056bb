"""`edgetl run --tune`: the search's budget, its trials, the winner it hands to training, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from conftest import REPO, make_image_folder
from edgetl.cli import main
from edgetl.config import DataConfig, ModelConfig, TrainConfig, TuneConfig, parse_duration
from edgetl.errors import ConfigError
from edgetl.tune import FINE_TUNE_LAYERS, FINE_TUNE_LR, Trial, best_of, load_result

TINY_MODEL = ModelConfig("mobilenet_v2", alpha=0.35, size=32, weights="none")


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("90s", 90), ("600", 600),
                                           (" 2m ", 120), ("0.5h", 1800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "30 minutes", "0", "0m", "-5m", "3d", "m30", "30m junk"])
def test_bad_durations_say_which_forms_work(text):
    with pytest.raises(ConfigError, match="30m"):
        parse_duration(text)


def test_tune_config_ranges():
    with pytest.raises(ConfigError, match="tune.budget"):
        TuneConfig(budget=0)
    with pytest.raises(ConfigError, match="tune.max_trials"):
        TuneConfig(max_trials=-1)
    with pytest.raises(ConfigError, match="tune.enabled"):
        TuneConfig(enabled="yes")


def _trial(number, accuracy, state="complete", phase="fine_tune"):
    return Trial(number, phase, {}, accuracy, 1, 1, state, 1.0, given=number == 0)


def test_the_given_recipe_wins_ties_and_unfinished_trials_do_not_compete():
    trials = [_trial(0, 0.90), _trial(1, 0.90), _trial(2, 0.95, "pruned"), _trial(3, 0.97, "budget"), _trial(4, None)]
    assert best_of(trials, "fine_tune").number == 0
    trials.append(_trial(5, 0.91))
    assert best_of(trials, "fine_tune").number == 5
    assert best_of(trials, "head") is None
    assert best_of([_trial(0, 0.5, phase="head")], "head").number == 0


def test_the_cli_rejects_a_bad_budget_and_multiworker_in_one_line(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=3, size=24)
    bad = CliRunner().invoke(main, ["run", str(data), "--tune-budget", "half an hour", "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "--tune-budget" in bad.output and "30m" in bad.output, bad.output
    # --tune with several machines: refused before TensorFlow loads, nothing written.
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}})}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgetl", "run", str(data), "--tune",
                             "--strategy", "multiworker", "--out", "out"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120, env=env)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1 and len(errors) == 1 and "--tune" in errors[0] and "multiworker" in errors[0], errors
    assert " tensorflow" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.tf
def test_the_search_starts_from_the_given_recipe_and_stays_in_its_space(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("optuna")
    from edgetl.tune import tune

    data = DataConfig(path=str(make_image_folder(tmp_path / "data", per_class=8, size=32)), batch_size=8)
    given = TrainConfig(epochs=2, learning_rate=2e-3, fine_tune_epochs=2, fine_tune_layers=30,
                        fine_tune_learning_rate=1e-4, warmup_epochs=1)
    lines = []
    result = tune(data, TINY_MODEL, given, str(tmp_path / "run"),
                  TuneConfig(enabled=True, budget=600, head_trials=3, max_trials=3), echo=lines.append, progress=False)
    heads = [t for t in result.trials if t.phase == "head"]
    fine = [t for t in result.trials if t.phase == "fine_tune"]
    assert len(heads) == 3 and len(fine) == 3 and [t.number for t in result.trials] == list(range(6))
    # The first trial of each phase is the recipe as given.
    assert heads[0].given and heads[0].params == {"learning_rate": 2e-3}
    # Its orientation is what a run without --tune decides from the data (orientation 'auto', the default).
    decided = next(line for line in lines if line.startswith("orientation from the data"))
    orientation = "any" if "cost nothing" in decided else "upright"
    assert fine[0].given and fine[0].params == {"fine_tune_layers": 30, "fine_tune_learning_rate": 1e-4,
                                                 "warmup_epochs": 1, "augment.orientation": orientation}
    # Then the same recipe under the other orientation: the knob no rule can read from file names.
    other = {"any": "upright", "upright": "any"}[orientation]
    assert not fine[1].given and fine[1].params == {**fine[0].params, "augment.orientation": other}
    for trial in fine:
        params = trial.params
        assert params["fine_tune_layers"] in FINE_TUNE_LAYERS
        assert FINE_TUNE_LR[0] <= params["fine_tune_learning_rate"] <= FINE_TUNE_LR[1]
        assert params["augment.orientation"] in ("upright", "any") and params["warmup_epochs"] in (0, 1)
        assert trial.state in ("complete", "pruned") and 1 <= trial.epochs <= 2
    # What the run trains with is the winning trial's recipe; the fields the search does not vary stay as given.
    winner = result.best_trial()
    assert winner is best_of(result.trials, "fine_tune") and result.best_accuracy == winner.accuracy
    assert result.given_accuracy == fine[0].accuracy
    assert result.train.fine_tune_layers == winner.params["fine_tune_layers"]
    assert result.train.fine_tune_learning_rate == winner.params["fine_tune_learning_rate"]
    assert result.augment.orientation == winner.params["augment.orientation"]
    assert result.train.learning_rate == best_of(result.trials, "head").params["learning_rate"]
    assert (result.train.epochs, result.train.fine_tune_epochs, result.train.seed) == (2, 2, given.seed)
    # Saved for the report and for a run that skips the search; one echoed line per trial.
    saved = load_result(tmp_path / "run")
    assert saved is not None and saved.train == result.train and len(saved.trials) == 6
    assert sum(line.startswith("  trial ") for line in lines) == 6
    csv_rows = (tmp_path / "run" / "tune" / "trials.csv").read_text().splitlines()
    assert len(csv_rows) == 7 and csv_rows[0].startswith("number,phase,given,state,accuracy")
    best = yaml.safe_load((tmp_path / "run" / "tune" / "best.yaml").read_text())
    assert best["train"]["fine_tune_learning_rate"] == result.train.fine_tune_learning_rate
    # The winner's weights are kept for the run's training stage (it adopts them rather than training again).
    assert result.weights_trial == winner.number and saved.weights_trial == winner.number
    assert (tmp_path / "run" / "tune" / "best_trial.h5").is_file()
    assert f"the model is trial {winner.number}'s weights" in result.summary()


@pytest.mark.tf
def test_a_budget_too_short_for_any_trial_keeps_the_given_recipe(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("optuna")
    from edgetl.tune import tune

    data = DataConfig(path=str(make_image_folder(tmp_path / "data", per_class=8, size=32)), batch_size=8)
    given = TrainConfig(epochs=50, fine_tune_epochs=3, fine_tune_layers=30)
    lines = []
    # The decode and the backbone features alone take longer than 0.01 s: the first head trial is stopped at
    # its first batch, and no fine-tuning trial starts.
    result = tune(data, TINY_MODEL, given, str(tmp_path / "run"), TuneConfig(enabled=True, budget=0.01),
                  echo=lines.append, progress=False)
    assert [t.state for t in result.trials] == ["budget"] and result.trials[0].epochs <= 1
    assert result.best_trial() is None and result.best_accuracy is None and result.given_accuracy is None
    assert result.weights_trial is None and not (tmp_path / "run" / "tune" / "best_trial.h5").exists()
    assert result.train == given and result.augment == data.augment
    assert any("did not finish within the budget" in line and "training uses the given one" in line for line in lines)
    assert "0 fine-tuning complete" in result.summary() and "stopped by the budget" in result.summary()


@pytest.mark.tf
def test_run_tune_trains_with_the_winner_reports_the_trials_and_repeats_without_searching(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("optuna")
    data = make_image_folder(tmp_path / "data", per_class=8, size=32)
    out = tmp_path / "run"
    fast = ["--weights", "none", "--size", "32", "--epochs", "2", "--fine-tune-epochs", "2", "--batch-size", "8",
            "--variants", "fp32", "--bench-threads", "1", "--bench-seconds", "0", "--bench-runs", "3",
            "--bench-rounds", "1", "--no-progress", "--out", str(out)]
    runner = CliRunner()
    first = runner.invoke(main, ["run", str(data), "--tune-budget", "10m", "--tune-trials", "2", *fast])
    assert first.exit_code == 0, first.output
    assert "[1/7] tune: searching the training recipe for 10.0 min" in first.output
    result = load_result(out)
    assert len([t for t in result.trials if t.phase == "fine_tune"]) == 2
    # The training stage ran the winner's recipe, and config.yaml repeats it without a search.
    config = yaml.safe_load((out / "config.yaml").read_text())
    for field in ("learning_rate", "fine_tune_layers", "fine_tune_learning_rate", "warmup_epochs"):
        assert config["train"][field] == getattr(result.train, field), field
    assert config["data"]["augment"]["orientation"] == result.augment.orientation and "tune" not in config
    report = json.loads((out / "report.json").read_text())
    assert len(report["tuning"]["rows"]) == len(result.trials)
    assert sum(row[0].endswith(" *") for row in report["tuning"]["rows"]) == 1
    markdown = (out / "report.md").read_text()
    assert "## Recipe search (--tune)" in markdown and "| # | phase | params |" in markdown
    assert "Recipe search (--tune):" in first.output
    # The model is the winning trial's weights, not a second draw of its recipe: the same validation accuracy.
    assert result.weights_trial == result.best_trial().number
    assert "using the weights the recipe search trained with this recipe" in first.output
    trained = json.loads((out / "train_result.json").read_text())
    assert trained["val_accuracy"] == pytest.approx(result.best_accuracy, abs=1e-6)

    again = runner.invoke(main, ["run", str(data), "--tune-budget", "10m", "--tune-trials", "2", *fast])
    assert again.exit_code == 0, again.output
    assert "[1/7] tune: skipped" in again.output and "[2/7] train: skipped" in again.output
    repeat = runner.invoke(main, ["run", str(data), "--recipe", str(out / "config.yaml"), *fast])
    assert repeat.exit_code == 0 and "[1/7] tune: off" in repeat.output and "[2/7] train: skipped" in repeat.output
    # Another search setting on the finished run: one line, before any work.
    other = runner.invoke(main, ["run", str(data), "--tune-budget", "20m", *fast])
    assert other.exit_code == 1 and "Error: Run directory" in other.output and "--fresh" in other.output, other.output
