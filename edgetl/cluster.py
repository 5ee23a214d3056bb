"""This process's role in a multi-worker training cluster, from ``TF_CONFIG`` (no TensorFlow).

``edgetl train|run --strategy multiworker`` runs the same command on every
machine; TensorFlow's ``MultiWorkerMirroredStrategy`` finds the others through
``TF_CONFIG``. edgetl reads the same variable to decide which process writes
the run directory (the chief) before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import json
import os

from edgetl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's place in a multi-worker cluster (``TF_CONFIG``).

    Attributes:
      chief: whether it writes the run directory (task 'chief', or 'worker' 0 when there is no chief).
      task: e.g. 'worker:1'.
      workers: number of processes training together (1 without TF_CONFIG).
    """

    chief: bool = True
    task: str = "chief"
    workers: int = 1


def worker_role(strategy: str) -> WorkerRole:
    """Reads ``TF_CONFIG`` for ``strategy='multiworker'``; every other strategy is a single chief.

    TF_CONFIG is the JSON TensorFlow's cluster resolver reads
    (https://www.tensorflow.org/guide/distributed_training#setting_up_the_tf_config_environment_variable):
    ``{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}``.
    Worker 0 is the chief unless the cluster names a 'chief' task, as in Keras.

    Raises:
      ConfigError: TF_CONFIG missing or malformed for 'multiworker'.
    """
    if strategy != "multiworker":
        return WorkerRole()
    text = os.environ.get("TF_CONFIG", "")
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text.strip():
        raise ConfigError(f"--strategy multiworker needs the TF_CONFIG environment variable on every worker, e.g. "
                          f"{example} (index 1 on the second machine); see the README, 'When one machine is not enough'.")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = str(task["type"]), int(task.get("index", 0))
        members = cluster[kind]
        if not 0 <= index < len(members):
            raise IndexError(index)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({type(e).__name__}: {e}); expected e.g. "
                          f"{example}.") from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    return WorkerRole(chief, f"{kind}:{index}", workers)
