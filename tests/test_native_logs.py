"""The `edgetl` command keeps TensorFlow's C++ log lines (absl format) off stderr and lets everything else through."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO

ABSL = "E0000 00:00:1796209564.189678   19612 util.cc:131] oneDNN supports DT_UINT8 only on platforms with AVX-512."


def _stderr_of(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_native_log_lines_are_dropped_and_nothing_else_is():
    stderr = _stderr_of(f'''
        import os, subprocess, sys
        from edgetl._native import filter_native_logs
        assert filter_native_logs() and not filter_native_logs()  # once per process
        os.write(2, b"{ABSL}\\n")                      # C++ writes to the descriptor, past sys.stderr
        os.write(2, b"plain native line\\n")
        os.write(2, b"\\rdecoding images:  50%")       # a progress update without a newline
        sys.stderr.write("python line\\n")
        # A child process inherits the descriptor: its native log lines are dropped too, its other lines kept.
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'{ABSL}\\\\nchild line\\\\n')"], check=True)
        os.write(2, b"W0000 00:00:1796209564.189678   19612 cpu_feature_guard.cc:210] partial")  # no newline at exit
    ''')
    assert "util.cc" not in stderr and "cpu_feature_guard" not in stderr
    for kept in ("plain native line", "decoding images:  50%", "python line", "child line"):  # (text mode turns \r into \n)
        assert kept in stderr, (kept, stderr)


def test_python_stderr_still_reaches_the_terminal_when_the_filter_is_on():
    # Progress bars ask sys.stderr.isatty(); after the filter it must answer for the real stderr, not the pipe.
    stderr = _stderr_of('''
        import os, sys
        before = os.isatty(2)
        from edgetl._native import filter_native_logs
        filter_native_logs()
        sys.stderr.write(f"isatty {before} {sys.stderr.isatty()} fd2-is-pipe {not os.isatty(2)}\\n")
    ''')
    assert "isatty False False fd2-is-pipe True" in stderr  # captured here: not a terminal before or after


def test_a_capture_inside_the_filter_still_catches_python_writes():
    # The converter warns through Python ("Statistics for quantized inputs were expected ...") while edgetl
    # captures fds 1/2 around it; with the filter on, sys.stderr has a descriptor of its own, so the capture
    # must take it too or the warning reaches the user's terminal (seen in a quickstart run).
    stderr = _stderr_of('''
        import os, sys, warnings
        from edgetl._native import capture_native_output, filter_native_logs
        filter_native_logs()
        with capture_native_output((1, 2)) as captured:
            warnings.warn("converter warning")
            sys.stderr.write("python inside\\n")
            print("stdout inside")
            os.write(2, b"native inside\\n")
        for kept in ("converter warning", "python inside", "stdout inside", "native inside"):
            assert kept in captured["text"], (kept, captured["text"])
        sys.stderr.write("python after\\n")
        os.write(2, b"native after\\n")
    ''')
    assert "inside" not in stderr, stderr
    assert "python after" in stderr and "native after" in stderr, stderr


def test_the_edgetl_command_installs_it_and_verbose_does_not():
    script = '''
        import sys
        sys.argv = ["edgetl", *{argv!r}]
        import edgetl._native as native
        import edgetl.cli as cli
        try:
            cli.run()
        except SystemExit:
            pass
        print("installed" if native._filter_installed["on"] else "not installed", file=sys.stderr)
    '''
    assert "not installed" not in _stderr_of(script.format(argv=["--version"]))
    assert "not installed" in _stderr_of(script.format(argv=["--verbose", "--version"]))
