"""The child-process probe of unverified .tflite files (edgetl.runtime.sandbox): fork and spawn, cache, settings."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("ai_edge_litert")

from device_models import build_colour_model, build_crashing_model  # noqa: E402

from edgetl.errors import ModelFileError  # noqa: E402
from edgetl.runtime import sandbox  # noqa: E402
from edgetl.runtime.interpreter import DelegateSpec, find_runtime, load_interpreter  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGETL_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "_VERIFIED", set())
    return tmp_path / "cache" / "verified"


@pytest.fixture
def probes(monkeypatch):
    calls = []
    real = sandbox.probe

    def counting(*args, **kwargs):
        calls.append(args[3:4])
        return real(*args, **kwargs)

    monkeypatch.setattr(sandbox, "probe", counting)
    return calls


@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_fork_and_spawn_report_the_same(how):
    spec = DelegateSpec("xnnpack")
    good = sandbox.probe(build_colour_model("int8"), "litert", spec, 1, "good.tflite", timeout=60, how=how)
    assert good.ok and good.stage == "invoke" and good.how == how
    crash = sandbox.probe(build_crashing_model(), "litert", spec, 1, "crash.tflite", timeout=60, how=how)
    assert not crash.ok and crash.signal == 11 and crash.stage == "load"
    foreign = sandbox.probe(b"\x00" * 64, "litert", spec, 1, "x.tflite", timeout=60, how=how)
    assert not foreign.ok and foreign.error_type == "ModelFileError" and "not a TFLite model" in foreign.message


def test_a_verified_file_is_probed_once(cache, probes):
    data = build_colour_model("uint8")
    load_interpreter(data, name="m.tflite")
    load_interpreter(data, name="m.tflite", threads=2)  # same file, runtime and delegate: the process remembers
    assert len(probes) == 1
    assert len(list(cache.iterdir())) == 1
    sandbox._VERIFIED.clear()
    load_interpreter(data, name="copy.tflite")  # a new process would find the marker
    assert len(probes) == 1
    load_interpreter(data, delegate="cpu", name="m.tflite")  # another delegate is another check
    assert len(probes) == 2


def test_always_and_off(cache, probes, monkeypatch):
    data = build_colour_model("float32")
    monkeypatch.setenv("EDGETL_SANDBOX", "always")
    load_interpreter(data, name="m.tflite")
    load_interpreter(data, name="m.tflite")
    assert len(probes) == 2
    monkeypatch.setenv("EDGETL_SANDBOX", "off")
    load_interpreter(data, name="m.tflite")
    assert len(probes) == 2


def test_an_unwritable_cache_costs_only_a_probe(tmp_path, monkeypatch, probes):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(blocker))
    monkeypatch.setattr(sandbox, "_VERIFIED", set())
    load_interpreter(build_colour_model("int8", dynamic_batch=True), name="m.tflite")
    assert len(probes) == 1


def test_a_crash_is_never_cached(cache):
    for _ in range(2):
        with pytest.raises(ModelFileError, match="crashed the TFLite runtime.*SIGSEGV"):
            load_interpreter(build_crashing_model(), name="crash.tflite")
    assert not cache.exists() or not list(cache.iterdir())


def test_other_threads_mean_a_fresh_process(cache):
    """A fork copies only the calling thread; with another thread alive the probe spawns a new interpreter."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not sandbox._can_fork({"kind": "xnnpack"})
        result = sandbox.probe(build_colour_model(), "litert", DelegateSpec("cpu"), None, "m.tflite", timeout=60)
        assert result.ok and result.how == "spawn"
    finally:
        stop.set()
        thread.join()
    assert sandbox._can_fork({"kind": "xnnpack"}) or "tensorflow" in __import__("sys").modules
    assert not sandbox._can_fork({"kind": "edgetpu"})


def test_signal_message_names_file_signal_and_runtime():
    error = sandbox.probe_error(sandbox.ProbeResult(False, "invoke", signal=6), "m.tflite", find_runtime(), "cpu", 10)
    assert str(error).startswith("'m.tflite' crashed the TFLite runtime (ai-edge-litert")
    assert "while running one inference" in str(error) and "SIGABRT" in str(error)
    killed = sandbox.probe_error(sandbox.ProbeResult(False, "load", signal=9), "m.tflite", find_runtime(), "cpu", 10)
    assert "out of memory" in str(killed)
