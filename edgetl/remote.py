"""Benchmarks on other devices over SSH: copy the models with scp, run ``edgetl bench --json`` there, bring the rows back.

Only the OpenSSH client is used, always with argument lists. ssh joins the
words after the host into one string for the remote shell, so every remote
word is quoted with ``shlex.quote``; nothing the user typed reaches a local
shell at all.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from edgetl.bench import BenchConfig, BenchResult, benchmark, find_images
from edgetl.errors import ConfigError, EdgetlError, MissingDependencyError, RemoteError
from edgetl.modelfile import read_model

LOCAL = "local"
# user@host, host, an IPv6 literal in brackets, or an ~/.ssh/config alias; never an option ('-...').
_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.%A-Za-z]+\])$")
_SAFE_DIR = re.compile(r"^/[A-Za-z0-9._/-]+$")
_SSH_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=.+$")
# What OpenSSH says when an established or half-open connection goes away.
_DROPPED = ("connection closed", "connection reset", "broken pipe", "closed by remote host", "kex_exchange_identification",
            "timeout, server", "not responding")


@dataclasses.dataclass(frozen=True)
class SSHConfig:
    """How edgetl reaches remote devices.

    Attributes:
      port: SSH port (None = ssh's default or ~/.ssh/config).
      options: extra ``-o KEY=VALUE`` options, e.g. 'IdentityFile=~/.ssh/pi'.
      connect_timeout: seconds before an unreachable host is given up.
      remote_edgetl: command that runs edgetl on the device, split like a
        shell would ('edgetl', '/home/pi/venv/bin/edgetl', 'python3 -m edgetl').
      ssh: the ssh client program.
      scp: the scp client program.
    """

    port: Optional[int] = None
    options: Tuple[str, ...] = ()
    connect_timeout: int = 10
    remote_edgetl: str = "edgetl"
    ssh: str = "ssh"
    scp: str = "scp"

    def __post_init__(self):
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ConfigError(f"`--ssh-port` must be in [1, 65535], got {self.port}.")
        if self.connect_timeout < 1:
            raise ConfigError(f"`--ssh-timeout` must be >= 1 second, got {self.connect_timeout}.")
        for option in self.options:
            if not _SSH_OPTION.match(option):
                raise ConfigError(f"SSH option '{option}' is not KEY=VALUE; write e.g. --ssh-option IdentityFile=~/.ssh/id_pi.")
        if not self.edgetl_argv():
            raise ConfigError("`--remote-edgetl` is empty; pass the command that runs edgetl on the device, e.g. 'edgetl'.")

    def edgetl_argv(self) -> List[str]:
        """``remote_edgetl`` split into words."""
        try:
            return shlex.split(self.remote_edgetl)
        except ValueError as e:
            raise ConfigError(f"`--remote-edgetl` '{self.remote_edgetl}' cannot be split into words ({e}); fix its quotes.") from None

    def common_options(self) -> List[str]:
        """Options shared by ssh and scp: never prompt, give up on dead hosts, user extras."""
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        for option in self.options:
            args += ["-o", option]
        return args

    def ssh_argv(self, host: str, remote_words: Sequence[str]) -> List[str]:
        """``ssh ... host -- 'quoted words'`` as an argument list."""
        port = ["-p", str(self.port)] if self.port else []
        return [self.ssh, *self.common_options(), *port, "--", host, remote_command(remote_words)]

    def scp_argv(self, host: str, files: Sequence[str], remote_dir: str) -> List[str]:
        """``scp ... files host:dir/`` as an argument list."""
        port = ["-P", str(self.port)] if self.port else []
        return [self.scp, "-q", *self.common_options(), *port, "--", *files, f"{host}:{remote_dir}/"]


def remote_command(words: Sequence[str]) -> str:
    """Joins words for the remote shell, each quoted (so spaces and ';' stay inside their word).

    A leading '~/' stays unquoted so the remote shell still expands it to the
    remote home folder ('~/venv/bin/edgetl'); the rest of that word is quoted.
    """
    return " ".join("~/" + shlex.quote(str(word)[2:]) if str(word).startswith("~/") else shlex.quote(str(word))
                    for word in words)


def check_host(host: str) -> str:
    """Validates an SSH target ('user@host', 'host', '[::1]', an ssh_config alias).

    Raises:
      ConfigError: empty, starting with '-', or containing characters a host name cannot have.
    """
    host = host.strip()
    if not host or not _HOST.match(host) or host.startswith("-"):
        raise ConfigError(
            f"SSH target '{host}' is not valid; expected user@hostname, hostname or an ~/.ssh/config alias "
            f"(letters, digits, '.', '-', '_'). Pass the port with --ssh-port, not in the target."
        )
    return host


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")]
    return lines[-1] if lines else ""


def _ssh_failure(host: str, stderr: str, ssh: SSHConfig) -> RemoteError:
    reason = _last_line(stderr).rstrip(".") or "no message from ssh"
    probe = " ".join(["ssh"] + (["-p", str(ssh.port)] if ssh.port else []) + [host, "true"])
    lowered = reason.lower()
    if "permission denied" in lowered:
        hint = f"edgetl never types passwords: set up key login (ssh-copy-id {host}) or pass --ssh-option IdentityFile=KEY"
    elif "host key verification failed" in lowered or "host key" in lowered:
        hint = "connect once with ssh to accept the host key, or pass --ssh-option StrictHostKeyChecking=accept-new"
    elif "could not resolve" in lowered:
        hint = "check the host name (or add it to ~/.ssh/config)"
    elif any(words in lowered for words in _DROPPED):
        reason = f"the connection dropped ({reason})"
        hint = ("check the device's power and network (a Pi that reboots or a flaky Wi-Fi link), then run the same "
                "command again")
    else:
        hint = "check that the device is on, sshd runs there and the port is right"
    return RemoteError(f"Cannot reach '{host}' over SSH: {reason}. {hint[0].upper()}{hint[1:]}; test with: {probe}")


def _run(argv: List[str], host: str, ssh: SSHConfig, stage: str, timeout: Optional[float]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise MissingDependencyError(
            f"'{argv[0]}' (the OpenSSH client) is not installed, so edgetl cannot reach '{host}'. "
            f"Install it (apt install openssh-client) or benchmark without --host."
        ) from None
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{stage} on '{host}' did not finish within {timeout:.0f} s; check the device and network.") from None


def _prepare(host: str, ssh: SSHConfig) -> Tuple[str, str]:
    """Creates a private temp folder on the device and checks edgetl runs there; returns (folder, edgetl version line)."""
    edgetl = remote_command(ssh.edgetl_argv())
    script = (
        'd=$(mktemp -d "${TMPDIR:-/tmp}/edgetl.XXXXXX") || exit 90; printf "%s\\n" "$d"; '
        f'{edgetl} --version 2>&1; rc=$?; if [ $rc -ne 0 ]; then rm -rf "$d"; exit $rc; fi'
    )
    port = ["-p", str(ssh.port)] if ssh.port else []
    # The script is edgetl's own text; the only user word in it (the edgetl command) is quoted above.
    argv = [ssh.ssh, *ssh.common_options(), *port, "--", host, script]
    done = _run(argv, host, ssh, "Connecting", ssh.connect_timeout + 60)
    if done.returncode == 255:
        raise _ssh_failure(host, done.stderr, ssh)
    lines = done.stdout.splitlines()
    folder = lines[0].strip() if lines else ""
    output = "\n".join(lines[1:]) + "\n" + done.stderr
    if done.returncode in (126, 127) or "no module named edgetl" in output.lower():
        raise RemoteError(
            f"edgetl is not installed on '{host}' ('{ssh.remote_edgetl}': {_last_line(output) or 'command not found'}). "
            f"Install it there (pip install edgetl) or pass --remote-edgetl with its full path, e.g. "
            f"--remote-edgetl '/home/pi/venv/bin/edgetl'."
        )
    if done.returncode == 90:
        raise RemoteError(f"Cannot create a temporary folder on '{host}' (mktemp failed: {_last_line(done.stderr)}); check its /tmp.")
    if done.returncode != 0:
        raise RemoteError(f"'{ssh.remote_edgetl} --version' failed on '{host}' (exit {done.returncode}): "
                          f"{_last_line(output)}. Repair the edgetl install there.")
    if not _SAFE_DIR.match(folder):
        raise RemoteError(f"Unexpected temporary folder '{folder}' on '{host}'; set TMPDIR there to a plain path like /tmp.")
    return folder, _last_line("\n".join(lines[1:]))


def _stage(models: Sequence[str], images: Sequence[Path], staging: Path) -> Tuple[List[str], List[str]]:
    """Links the files under unique, shell-safe names; returns (model names, image names)."""
    def safe(index: int, prefix: str, path: Path) -> str:
        return f"{prefix}{index:03d}_" + re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[-80:]

    model_names, image_names = [], []
    for index, model in enumerate(models):
        name = safe(index, "m", Path(model))
        os.symlink(Path(model).resolve(), staging / name)
        model_names.append(name)
    for index, image in enumerate(images):
        name = safe(index, "i", image)
        os.symlink(image.resolve(), staging / name)
        image_names.append(name)
    return model_names, image_names


def bench_remote(host: str, models: Sequence[str], config: BenchConfig, ssh: SSHConfig = SSHConfig(),
                 timeout: Optional[float] = None) -> List[BenchResult]:
    """Runs ``edgetl bench --json`` on ``host`` over SSH and returns its results.

    The models (and ``config.images``) are checked locally, copied with scp
    into a private temp folder on the device, benchmarked there and deleted.

    Args:
      host: SSH target, e.g. 'pi@raspberrypi.local'.
      models: local ``.tflite`` files.
      config: the sweep (thread counts default to the device's cores).
      ssh: port, options, timeout and the remote edgetl command.
      timeout: seconds allowed for the remote benchmark (None = no limit;
        ssh keep-alives still end it if the device disappears).

    Returns:
      The device's BenchResults, with ``host`` set and ``model`` set to the
      local path given.

    Raises:
      RemoteError: the host cannot be reached, edgetl is missing there, or
        the remote benchmark failed (its one-line error is quoted).
      ModelFileError: a local model fails the checks (before any connection).
      MissingDependencyError: no ssh/scp client.

    Example:
      >>> rows = bench_remote("pi@pi5.local", ["model_int8.tflite"], BenchConfig(threads=(1, 4)),
      ...                     SSHConfig(remote_edgetl="/home/pi/venv/bin/edgetl"))
    """
    host = check_host(host)
    for model in models:
        read_model(model)
    images = find_images(config.images) if config.images else []
    folder, _ = _prepare(host, ssh)
    with tempfile.TemporaryDirectory(prefix="edgetl-remote-") as staging_dir:
        staging = Path(staging_dir)
        model_names, image_names = _stage(models, images, staging)
        files = [str(staging / name) for name in model_names + image_names]
        copied = _run(ssh.scp_argv(host, files, folder), host, ssh, "Copying the models", timeout)
    if copied.returncode != 0:
        _cleanup(host, folder, ssh)
        if copied.returncode == 255 and "scp:" not in copied.stderr:
            raise _ssh_failure(host, copied.stderr, ssh)
        raise RemoteError(f"Copying the models to '{host}:{folder}' failed: {_last_line(copied.stderr)}. Check free space there.")
    remote_config = dataclasses.replace(config, images=tuple(f"{folder}/{name}" for name in image_names))
    bench_words = ssh.edgetl_argv() + ["bench", "--json", "--no-progress"] + remote_config.to_args()
    if image_names:
        for path in remote_config.images:
            bench_words += ["--images", path]
    bench_words += [f"{folder}/{name}" for name in model_names]
    script = f"{remote_command(bench_words)}; rc=$?; rm -rf {shlex.quote(folder)}; exit $rc"
    port = ["-p", str(ssh.port)] if ssh.port else []
    done = _run([ssh.ssh, *ssh.common_options(), *port, "--", host, script], host, ssh, "The benchmark", timeout)
    if done.returncode == 255:
        raise _ssh_failure(host, done.stderr, ssh)
    if done.returncode != 0:
        message = _last_line(done.stderr).removeprefix("Error: ") or f"exit code {done.returncode}"
        raise RemoteError(f"edgetl bench failed on '{host}': {message}")
    try:
        document = json.loads(done.stdout)
        rows = [BenchResult.from_dict(row) for row in document["results"]]
    except (ValueError, KeyError, TypeError) as e:
        raise RemoteError(
            f"'{host}' answered with something that is not edgetl bench JSON ({e}; starts with {done.stdout[:80]!r}). "
            f"Install the same edgetl version there."
        ) from None
    local_of = {f"{folder}/{name}": model for name, model in zip(model_names, models)}
    return [dataclasses.replace(row, host=host, model=local_of.get(row.model, row.model)) for row in rows]


def _cleanup(host: str, folder: str, ssh: SSHConfig) -> None:
    try:
        subprocess.run(ssh.ssh_argv(host, ["rm", "-rf", folder]), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=ssh.connect_timeout + 30)
    except (OSError, subprocess.SubprocessError):
        pass  # best effort: the folder is in the device's temp space anyway


def benchmark_on(models: Sequence[str], config: BenchConfig, hosts: Sequence[str] = (), ssh: SSHConfig = SSHConfig(),
                 progress: bool = False) -> Tuple[List[BenchResult], Dict[str, str]]:
    """Benchmarks ``models`` here, or on ``hosts`` over SSH when any are given: the choice ``edgetl bench`` makes.

    Args:
      models: local ``.tflite`` files.
      config: the sweep.
      hosts: SSH targets and/or 'local'; none = this machine only.
      ssh: SSH settings shared by all hosts.
      progress: a progress bar for the local part.

    Returns:
      (results, {host: one-line error} for the hosts that failed).

    Raises:
      RemoteError: every host failed (each one's error, joined).
      ConfigError, ModelFileError, MissingDependencyError: see ``bench_hosts`` and ``edgetl.bench.benchmark``.
    """
    if not hosts:
        return benchmark(list(models), config, progress=progress), {}
    results, failures = bench_hosts(hosts, models, config, ssh, progress=progress)
    if failures and not results:
        raise RemoteError(" | ".join(failures.values()))
    return results, failures


def bench_hosts(hosts: Sequence[str], models: Sequence[str], config: BenchConfig, ssh: SSHConfig = SSHConfig(),
                progress: bool = False) -> Tuple[List[BenchResult], Dict[str, str]]:
    """Benchmarks on several hosts at once ('local' = this machine); one failing host does not stop the others.

    Args:
      hosts: SSH targets and/or 'local'.
      models: local ``.tflite`` files.
      config: the sweep.
      ssh: SSH settings shared by all hosts.
      progress: progress bar for the local part when it runs alone.

    Returns:
      (results in host order, {host: one-line error} for the hosts that failed).

    Raises:
      ConfigError: an invalid host string (before anything runs).
    """
    hosts = list(dict.fromkeys(h.strip() for h in hosts if h.strip()))
    for host in hosts:
        if host != LOCAL:
            check_host(host)
    for model in models:
        read_model(model)
    if shutil.which(ssh.ssh) is None and any(h != LOCAL for h in hosts):
        raise MissingDependencyError(f"'{ssh.ssh}' (the OpenSSH client) is not installed; install openssh-client to use --host.")

    def one(host: str) -> List[BenchResult]:
        if host == LOCAL:
            return benchmark(models, config, progress=progress and len(hosts) == 1)
        return bench_remote(host, models, config, ssh)

    outcome: Dict[str, List[BenchResult]] = {}
    failures: Dict[str, str] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {host: pool.submit(one, host) for host in hosts}
        for host, future in futures.items():
            try:
                outcome[host] = future.result()
            except EdgetlError as e:
                failures[host] = str(e)
    return [row for host in hosts for row in outcome.get(host, [])], failures
