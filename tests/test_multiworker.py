"""--strategy multiworker: two worker processes on 127.0.0.1 (CPU) train one model; only the chief writes the run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_image_folder

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

# No augmentation, no dropout, a constant learning rate: two workers splitting each global batch must give
# the weights one process gets from the same global batches (up to float summation order).
ARGS = ["--backbone", "mobilenet_v1", "--alpha", "0.25", "--weights", "none", "--size", "32", "--epochs", "2",
        "--fine-tune-epochs", "2", "--fine-tune-layers", "-1", "--lr-schedule", "constant", "--no-augment",
        "--dropout", "0", "--patience", "0", "--batch-size", "8", "--seed", "3", "--lr", "0.01"]


def _free_ports(count: int):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _weights(model_file: Path):
    from edgetl.model.head import load_model

    return load_model(model_file).get_weights()


def test_two_workers_train_one_model_and_only_the_chief_writes(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=10, size=32, classes={"red": (220, 40, 40), "green": (40, 200, 60)})
    run, worker_dir = tmp_path / "run", tmp_path / "worker1"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes = []
    for index in range(2):
        worker_env = {**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        if index == 1:
            worker_env["EDGETL_WORKER_DIR"] = str(worker_dir)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "edgetl", "train", str(data), "--out", str(run), "--strategy", "multiworker", *ARGS],
            env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    single = subprocess.run([sys.executable, "-m", "edgetl", "train", str(data), "--out", str(tmp_path / "single"),
                             "--strategy", "default", *ARGS], env=env, capture_output=True, text=True, timeout=600)
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, "\n\n".join(o[0][-1500:] + o[1][-2500:] for o in outputs)
    assert single.returncode == 0, single.stderr[-3000:]
    chief_out, worker_out = outputs[0][0], outputs[1][0]
    assert f"worker:1 of 2 workers: the chief writes {run}" in worker_out

    # One model: both workers end with the same weights, and they equal one process's on the same global batches,
    # which holds only if each global batch of 8 was split between the workers.
    chief, worker, alone = _weights(run / "model.keras"), _weights(worker_dir / "model.keras"), _weights(tmp_path / "single" / "model.keras")
    for a, b, c in zip(chief, worker, alone):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=2e-4)
    epochs = [line for line in chief_out.splitlines() if line.startswith("[fine_tune] epoch")]
    assert epochs == [line for line in worker_out.splitlines() if line.startswith("[fine_tune] epoch")] and len(epochs) == 2

    # Only the chief wrote the run directory: the worker's store, logs and model are in its own folder.
    written = {str(p.relative_to(run)) for p in run.rglob("*")}
    assert not any("workertemp" in name for name in written), written
    for name in ("model.keras", "dataset.json", "train_result.json", "logs/fine_tune_history.csv"):
        assert name in written and (worker_dir / name).is_file(), name
    assert len((run / "logs" / "fine_tune_history.csv").read_text().splitlines()) == 3  # one writer: header + 2 epochs


@pytest.mark.parametrize("tf_config, expected", [
    (None, "needs the TF_CONFIG environment variable on every worker"),
    ("{not json", "TF_CONFIG is not a valid cluster description"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "not a valid cluster description"),
], ids=["missing", "not-json", "index-out-of-range"])
def test_bad_tf_config_is_one_clear_line_before_tensorflow_loads(tmp_path, tf_config, expected):
    data = make_image_folder(tmp_path / "data", per_class=3, size=24)
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgetl", "train", str(data), "--out",
                             str(tmp_path / "run"), "--strategy", "multiworker", "--weights", "none", "--size", "32"],
                            env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1 and len(errors) == 1 and errors[0].startswith("Error: "), errors
    assert expected in errors[0]
    assert " tensorflow" not in result.stderr.replace("tensorflow_model", ""), "TensorFlow was imported"
    assert not (tmp_path / "run").exists()
