"""Ctrl-C during `edgetl train`: one line, exit 130, the last epoch's checkpoint on disk, and a re-run resumes from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

from tests.conftest import REPO, make_image_folder  # noqa: E402

FINE_TUNE_EPOCHS = 12


def _train_cmd(data: Path, out: Path):
    # Random init (nothing to download) at 32 px: each epoch takes a fraction of a second.
    return [sys.executable, "-m", "edgetl", "train", str(data), "--alpha", "0.35", "--size", "32", "--weights", "none",
            "--epochs", "1", "--fine-tune-epochs", str(FINE_TUNE_EPOCHS), "--fine-tune-layers", "-1", "--patience", "0",
            "--batch-size", "4", "--seed", "5", "--out", str(out)]


def _epochs_logged(history: Path) -> int:
    return max(len(history.read_text().splitlines()) - 1, 0) if history.is_file() else 0


def test_sigint_mid_training_stops_cleanly_and_resumes(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6, size=32)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(_train_cmd(data, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = out / "logs" / "fine_tune_history.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and _epochs_logged(history) < 2:
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be interrupted: " + process.stderr.read()[-2000:]
    time.sleep(0.05)  # into the next epoch
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: interrupted; finished artifacts and the last checkpoint are kept. "
                      "Run the same command again to resume."], stderr[-3000:]
    assert "Traceback" not in stderr
    done = _epochs_logged(history)
    assert 2 <= done < FINE_TUNE_EPOCHS
    backup = out / "checkpoints" / "fine_tune_backup"
    assert backup.is_dir() and any(backup.rglob("*.index")), "no checkpoint on disk after Ctrl-C"
    assert not (out / "model.keras").exists()
    leftovers = [p.name for p in out.rglob(".*.tmp")]
    assert not leftovers, leftovers

    resumed = subprocess.run(_train_cmd(data, out), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoints" in resumed.stdout
    assert "[head] epoch" not in resumed.stdout  # stage 1 is not repeated
    epochs_run = [line for line in resumed.stdout.splitlines() if line.startswith("[fine_tune] epoch")]
    # Only the epochs after the last checkpoint run again (the interrupted one at most once more).
    assert 1 <= len(epochs_run) <= FINE_TUNE_EPOCHS - done + 1, resumed.stdout
    assert epochs_run[-1].startswith(f"[fine_tune] epoch {FINE_TUNE_EPOCHS}/{FINE_TUNE_EPOCHS}")
    assert (out / "model.keras").is_file() and (out / "train_result.json").is_file()
