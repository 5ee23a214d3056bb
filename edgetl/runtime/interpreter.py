"""Loads a ``.tflite`` file on the device side: checks it, runs it once in a child process, then builds it: load_interpreter() -> LoadedModel.

The checks (``edgetl.modelfile``: size, identifier, a full flatbuffer walk)
run before any native code sees the bytes; a file not verified before is
loaded and run once in a child process (``edgetl.runtime.sandbox``); then
``edgetl.runtime.backend.build_interpreter`` builds the interpreter, as the
child did. Runtimes and delegates live in ``edgetl.runtime.backend``; their
names are re-exported here.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from edgetl.errors import ConfigError, ModelFileError
from edgetl.modelfile import parse_model, read_model
from edgetl.runtime.backend import (  # noqa: F401  (re-exported: the device side imports them from here)
    DELEGATE_KINDS,
    EDGETPU_LIBRARIES,
    RUNTIME_CHOICES,
    DelegateSpec,
    LoadedModel,
    Runtime,
    RuntimeInfo,
    build_interpreter,
    check_delegate_fits,
    check_delegate_loads,
    delegate_specs,
    find_runtime,
    invoke_error,
    parse_options,
)
from edgetl.runtime.sandbox import ensure_verified


def load_interpreter(
    model: Union[str, os.PathLike, bytes],
    delegate: Union[str, DelegateSpec] = "xnnpack",
    threads: Optional[int] = None,
    runtime: str = "auto",
    name: Optional[str] = None,
) -> LoadedModel:
    """Checks a model, then builds an interpreter with the delegate and allocates its tensors.

    The structural checks (size, identifier, a full flatbuffer walk) run before
    any native code sees the bytes, and the checked bytes are what the
    interpreter loads. A file not verified before is first loaded and run once
    in a child process (``edgetl.runtime.sandbox``; EDGETL_SANDBOX=off skips it).

    Args:
      model: path of a ``.tflite`` file, or its bytes.
      delegate: a DelegateSpec or a ``--delegate`` string (see DelegateSpec.parse).
      threads: interpreter threads; None leaves the runtime's default.
      runtime: 'auto', 'litert', 'tflite-runtime' or 'tensorflow'.
      name: name used in messages when ``model`` is bytes.

    Returns:
      The LoadedModel.

    Raises:
      ModelFileError: the file is missing, damaged or uses ops the runtime lacks,
        or it crashed, hung or failed in the child process that first runs it.
      DelegateError: the delegate library cannot be loaded, or an Edge
        TPU-compiled model is run without it.
      MissingDependencyError: no runtime is installed.
      ConfigError: bad delegate, runtime or thread count.

    Example:
      >>> loaded = load_interpreter("model_int8.tflite", delegate="xnnpack", threads=4)
      >>> loaded.runtime.describe()
      'ai-edge-litert 2.3.0, xnnpack, 4 threads'
    """
    if isinstance(model, (bytes, bytearray)):
        data, label = bytes(model), name or "model"
    else:
        data, label = read_model(model), name or str(model)
    info = parse_model(data, label)
    spec = delegate if isinstance(delegate, DelegateSpec) else DelegateSpec.parse(delegate)
    if threads is not None and threads < 1:
        raise ConfigError(f"`threads` must be >= 1, got {threads}.")
    if not info.inputs or not info.outputs:
        raise ModelFileError(f"'{label}' declares no inputs or outputs; re-export the model.")
    check_delegate_fits(info, spec)
    found = find_runtime(runtime)
    # A flatbuffer that passed every check can still crash native code: the first load of a
    # file happens in a child process (edgetl.runtime.sandbox).
    ensure_verified(data, info.sha256, found, spec, threads, label)
    return build_interpreter(data, info, found, spec, threads, label)


__all__ = ["DELEGATE_KINDS", "EDGETPU_LIBRARIES", "RUNTIME_CHOICES", "DelegateSpec", "LoadedModel", "Runtime",
           "RuntimeInfo", "check_delegate_fits", "check_delegate_loads", "delegate_specs", "find_runtime", "invoke_error",
           "load_interpreter", "parse_options"]
