"""`edgetl bench --host` against a real sshd started on 127.0.0.1 (no mocks), plus SSH argument hygiene."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("ai_edge_litert")

from device_models import write_colour_model  # noqa: E402

from edgetl.cli import main  # noqa: E402
from edgetl.errors import ConfigError  # noqa: E402
from edgetl.remote import SSHConfig, check_host, remote_command  # noqa: E402

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)
FAST = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0", "--threads", "1"]
# The remote side is this same interpreter, so the test needs no `edgetl` on the server's PATH.
REMOTE_EDGETL = f"{shlex.quote(sys.executable)} -m edgetl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A throwaway sshd on 127.0.0.1 with its own host key and an authorized client key."""
    if SSHD is None or shutil.which("ssh") is None or shutil.which("scp") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    port = free_port()
    user = getpass.getuser()
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", f"AllowUsers {user}", "PermitRootLogin yes", "StrictModes no",
        "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
    ]))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    log = open(root / "sshd.log", "wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdout=log, stderr=log)
    options = [f"IdentityFile={root / 'client_key'}", "IdentitiesOnly=yes", f"UserKnownHostsFile={root / 'known_hosts'}",
               "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes", "LogLevel=ERROR"]
    ssh_args = ["ssh", "-p", str(port)] + [a for o in options for a in ("-o", o)] + ["-o", "BatchMode=yes", f"{user}@127.0.0.1", "true"]
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            log.close()
            pytest.skip(f"sshd did not start: {(root / 'sshd.log').read_text()[-300:]}")
        if subprocess.run(ssh_args, capture_output=True, timeout=20).returncode == 0:
            break
        if time.monotonic() > deadline:
            process.terminate()
            pytest.fail(f"sshd on port {port} accepts no login: {(root / 'sshd.log').read_text()[-500:]}")
        time.sleep(0.2)
    cli_options = [x for o in options for x in ("--ssh-option", o)]
    yield {"target": f"{user}@127.0.0.1", "port": port, "options": cli_options}
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def remote_temp_folders():
    return set(Path(tempfile.gettempdir()).glob("edgetl.*"))


def test_remote_bench_row_comes_back_into_the_table(sshd, tmp_path, tiny_folder):
    model = write_colour_model(tmp_path / "my models" / "colour int8.tflite", "int8")
    before = remote_temp_folders()
    result = invoke("bench", model, "--host", sshd["target"], "--ssh-port", sshd["port"], *sshd["options"],
                    "--remote-edgetl", REMOTE_EDGETL, *FAST, "--images", tiny_folder, "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)["results"]
    assert row["host"] == sshd["target"] and row["inputs"] == "images:18"
    assert row["model"] == str(model)  # the local path, not the device's temp copy
    assert row["model_sha256"] and row["runs"] >= 5 and 0 < row["min_ms"] <= row["p50_ms"] <= row["p99_ms"]
    assert row["runtime"]["package"] == "ai-edge-litert" and row["environment"]["python"]
    table = invoke("bench", model, "--hosts", f"local,{sshd['target']}", "--ssh-port", sshd["port"], *sshd["options"],
                   "--remote-edgetl", REMOTE_EDGETL, *FAST)
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:2] == ["host", "model"]
    assert [line.split()[0] for line in lines[2:4]] == ["local", sshd["target"]]
    assert remote_temp_folders() <= before, "the device's temp folder was not removed"


def test_remote_errors_are_one_line(sshd, tmp_path):
    model = write_colour_model(tmp_path / "m.tflite", "float32")
    result = invoke("bench", model, "--host", sshd["target"], "--ssh-port", sshd["port"], *sshd["options"],
                    "--remote-edgetl", "/nonexistent/bin/edgetl", *FAST)
    assert result.exit_code == 1
    assert result.output.startswith("Error: edgetl is not installed on") and "--remote-edgetl" in result.output
    assert result.output.count("\n") == 1
    # A failure on the device (here: an option the remote bench rejects) is quoted in one line.
    result = invoke("bench", model, "--host", sshd["target"], "--ssh-port", sshd["port"], *sshd["options"],
                    "--remote-edgetl", REMOTE_EDGETL, "--delegate", "/nonexistent/libdelegate.so", *FAST)
    assert result.exit_code == 1 and result.output.startswith(f"Error: edgetl bench failed on '{sshd['target']}'")
    assert "libdelegate.so" in result.output and result.output.count("\n") == 1


def test_unreachable_host_fails_fast_with_one_line(tmp_path):
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    model = write_colour_model(tmp_path / "m.tflite", "float32")
    start = time.monotonic()
    result = invoke("bench", model, "--host", "nobody@127.0.0.1", "--ssh-port", free_port(), "--ssh-timeout", "3", *FAST)
    assert time.monotonic() - start < 15
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: Cannot reach 'nobody@127.0.0.1' over SSH")
    assert "ssh -p" in result.output


def test_host_strings_that_could_be_options_are_refused(tmp_path):
    model = write_colour_model(tmp_path / "m.tflite", "float32")
    for host in ("-oProxyCommand=touch /tmp/x", "pi@host;reboot", "", "pi@host name"):
        with pytest.raises(ConfigError):
            check_host(host)
    result = invoke("bench", model, "--host", "-oProxyCommand=sh")
    assert result.exit_code == 1 and "is not valid" in result.output
    assert check_host("pi@raspberrypi.local") == "pi@raspberrypi.local" and check_host("[::1]") == "[::1]"


def test_remote_words_are_quoted_for_the_remote_shell():
    words = ["/opt/my venv/bin/edgetl", "bench", "/tmp/x; rm -rf ~", "$(reboot)"]
    command = remote_command(words)
    assert shlex.split(command) == words
    # '~/' must reach the remote shell unquoted to expand to the remote home folder
    assert remote_command(["~/venv/bin/edgetl", "~/my models/m.tflite"]) == "~/venv/bin/edgetl ~/'my models/m.tflite'"
    argv = SSHConfig(port=2222, options=("IdentityFile=/k",)).ssh_argv("pi@pi", ["true"])
    assert argv[:2] == ["ssh", "-o"] and "BatchMode=yes" in argv and "ConnectTimeout=10" in argv
    assert argv[argv.index("--") + 1:] == ["pi@pi", "true"] and argv[argv.index("-p") + 1] == "2222"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        SSHConfig(options=("-oProxyCommand",))
    assert SSHConfig(remote_edgetl="python3 -m edgetl").edgetl_argv() == ["python3", "-m", "edgetl"]
