"""TFLite runtimes, delegates, and building an allocated interpreter from checked model bytes (no TensorFlow unless forced).

``build_interpreter`` is the one place an interpreter is constructed on the
device side: ``edgetl.runtime.interpreter.load_interpreter`` calls it after
its checks, and so does the child process of ``edgetl.runtime.sandbox`` that
runs a file first. Runtimes, in order of preference: ``ai_edge_litert`` (the
maintained LiteRT package), then ``tflite_runtime`` (2.14, old Pi OS and Coral
images), then ``tensorflow.lite`` (imported only when nothing lighter is
installed, or when forced).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import importlib
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from edgetl._native import capture_native_output
from edgetl.errors import ConfigError, DelegateError, MissingDependencyError, ModelFileError, suggest
from edgetl.modelfile import EDGETPU_CUSTOM_OP, ModelInfo

RUNTIME_CHOICES = ("auto", "litert", "tflite-runtime", "tensorflow")
DELEGATE_KINDS = ("cpu", "xnnpack", "edgetpu")

# name -> (module holding Interpreter/load_delegate, distribution name, pip requirement)
_RUNTIMES = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert", "pip install ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime", "pip install \"edgetl[tflite-runtime]\""),
    "tensorflow": ("tensorflow", "tensorflow", "pip install \"edgetl[train]\""),
}

EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_EDGETPU_DEVICE = re.compile(r"^(usb|pci)(:\d+)?$")
_LIBRARY_SUFFIX = re.compile(r"\.(so(\.\d+)*|dylib|dll)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """An importable TFLite runtime.

    Attributes:
      name: 'litert', 'tflite-runtime' or 'tensorflow'.
      package: the distribution that provides it ('ai-edge-litert').
      version: its installed version.
      interpreter_class: the ``Interpreter`` class.
      load_delegate: the ``load_delegate(library, options)`` function.
      no_default_delegates: the ``OpResolverType`` that turns XNNPACK off.
    """

    name: str
    package: str
    version: str
    interpreter_class: Any = dataclasses.field(compare=False, repr=False)
    load_delegate: Any = dataclasses.field(compare=False, repr=False)
    no_default_delegates: Any = dataclasses.field(compare=False, repr=False)


def _package_version(distribution: str, module: Any) -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(distribution)
    except (ImportError, PackageNotFoundError):
        return str(getattr(module, "__version__", "unknown"))


def _import_runtime(name: str) -> Runtime:
    module_name, distribution, _ = _RUNTIMES[name]
    module = importlib.import_module(module_name)
    if name == "tensorflow":
        lite = module.lite
        return Runtime(name, distribution, module.__version__, lite.Interpreter, lite.experimental.load_delegate,
                       lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    package = importlib.import_module(module_name.split(".")[0])
    return Runtime(name, distribution, _package_version(distribution, package), module.Interpreter, module.load_delegate,
                   module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


@functools.lru_cache(maxsize=None)
def find_runtime(name: str = "auto") -> Runtime:
    """Imports the TFLite runtime ``name``, or the first available one for 'auto'.

    Args:
      name: 'auto', 'litert', 'tflite-runtime' or 'tensorflow'.

    Returns:
      The Runtime.

    Raises:
      ConfigError: unknown name.
      MissingDependencyError: the requested runtime (or, for 'auto', every
        runtime) is not installed.

    Example:
      >>> find_runtime().package, find_runtime().version
      ('ai-edge-litert', '2.3.0')
    """
    if name not in RUNTIME_CHOICES:
        raise ConfigError(f"Unknown runtime '{name}'; expected one of {', '.join(RUNTIME_CHOICES)}.{suggest(name, RUNTIME_CHOICES)}")
    candidates = list(_RUNTIMES) if name == "auto" else [name]
    failures = []
    for candidate in candidates:
        try:
            return _import_runtime(candidate)
        except ImportError as e:
            failures.append(f"{candidate}: {e}")
    if name == "auto":
        raise MissingDependencyError(
            "No TFLite runtime is installed (tried ai_edge_litert, tflite_runtime, tensorflow). "
            "Install one: pip install ai-edge-litert (or pip install \"edgetl[tflite-runtime]\" on 32-bit Pi OS / Coral images)."
        )
    raise MissingDependencyError(
        f"--runtime {name} needs the '{_RUNTIMES[name][1]}' package, which cannot be imported ({failures[0]}). "
        f"Install it ({_RUNTIMES[name][2]}) or use --runtime auto."
    )


@dataclasses.dataclass(frozen=True)
class DelegateSpec:
    """Which delegate runs the model.

    Attributes:
      kind: 'cpu' (builtin kernels, XNNPACK off), 'xnnpack' (the runtime's
        default CPU path), 'edgetpu' or 'external' (any delegate library).
      library: library to load for 'edgetpu' (default: the platform's
        libedgetpu name) and 'external'.
      device: Edge TPU device, e.g. 'usb', 'usb:0', 'pci:1' ('' = first found).
      options: delegate options as (key, value) pairs.
    """

    kind: str = "xnnpack"
    library: str = ""
    device: str = ""
    options: Tuple[Tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.kind not in DELEGATE_KINDS + ("external",):
            raise ConfigError(f"Unknown delegate kind '{self.kind}'; expected cpu, xnnpack, edgetpu or a library path.")
        if self.device and not _EDGETPU_DEVICE.match(self.device):
            raise ConfigError(f"Edge TPU device '{self.device}' is not valid; expected usb, pci, usb:N or pci:N (e.g. edgetpu:usb:0).")

    @property
    def label(self) -> str:
        """Short name for tables: 'xnnpack', 'edgetpu:usb', 'libfoo_delegate.so'."""
        if self.kind == "external":
            return Path(self.library).name
        if self.kind == "edgetpu":
            return "edgetpu" + (f":{self.device}" if self.device else "")
        return self.kind

    @property
    def library_name(self) -> str:
        """The library ``load_delegate`` receives ('' for cpu/xnnpack)."""
        if self.kind == "edgetpu":
            return self.library or EDGETPU_LIBRARIES.get(platform.system(), "libedgetpu.so.1")
        return self.library

    @property
    def load_options(self) -> Dict[str, str]:
        """Options passed to the delegate library (none for the CPU paths)."""
        if self.kind in ("cpu", "xnnpack"):
            return {}
        options = dict(self.options)
        if self.kind == "edgetpu" and self.device:
            options.setdefault("device", self.device)
        return options

    @classmethod
    def parse(cls, text: str, options: Iterable[Tuple[str, str]] = ()) -> "DelegateSpec":
        """Parses a ``--delegate`` value.

        Accepted: 'cpu', 'xnnpack', 'edgetpu', 'edgetpu:usb', 'edgetpu:pci:0',
        or the path of a delegate library (a libedgetpu path counts as 'edgetpu').

        Raises:
          ConfigError: anything else, with close matches.
        """
        value = text.strip()
        lowered = value.lower()
        options = tuple(options)
        if lowered in ("cpu", "xnnpack"):
            return cls(lowered, options=options)
        if lowered == "edgetpu" or lowered.startswith("edgetpu:"):
            return cls("edgetpu", device=lowered.partition(":")[2], options=options)
        path = value[len("external:"):] if lowered.startswith("external:") else value
        if path and (os.sep in path or "/" in path or _LIBRARY_SUFFIX.search(path) or lowered.startswith("external:")):
            kind = "edgetpu" if "edgetpu" in Path(path).name.lower() else "external"
            return cls(kind, library=path, options=options)
        raise ConfigError(
            f"Unknown delegate '{text}'; expected cpu, xnnpack, edgetpu[:usb|:pci[:N]] or the path of a delegate "
            f"library (.so/.dylib/.dll).{suggest(lowered, DELEGATE_KINDS)}"
        )


def parse_options(pairs: Iterable[str]) -> Tuple[Tuple[str, str], ...]:
    """Turns ``KEY=VALUE`` strings (``--delegate-option``) into pairs.

    Raises:
      ConfigError: an item without '='.
    """
    parsed = []
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Delegate option '{item}' is not KEY=VALUE; write e.g. --delegate-option device=usb:0.")
        parsed.append((key.strip(), value.strip()))
    return tuple(parsed)


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """How a model was run: recorded in every bench/eval/predict result.

    Attributes:
      runtime: 'litert', 'tflite-runtime' or 'tensorflow'.
      package: distribution name of the runtime.
      version: its version.
      delegate: delegate label ('cpu', 'xnnpack', 'edgetpu:usb', library name).
      delegate_library: file the delegate library was loaded from ('' if none).
      delegate_version: the library's version string when it reports one (libedgetpu).
      delegate_options: options passed to the delegate.
      threads: interpreter threads (None = the runtime's default).
      xnnpack: whether the XNNPACK default delegate was allowed.
    """

    runtime: str
    package: str
    version: str
    delegate: str
    delegate_library: str = ""
    delegate_version: str = ""
    delegate_options: Dict[str, str] = dataclasses.field(default_factory=dict)
    threads: Optional[int] = None
    xnnpack: bool = True

    def describe(self) -> str:
        """One line such as 'ai-edge-litert 2.3.0, xnnpack, 4 threads'."""
        text = f"{self.package} {self.version}, {self.delegate}"
        if self.delegate_library:
            text += f" ({self.delegate_library}{' ' + self.delegate_version if self.delegate_version else ''})"
        if self.threads:
            text += f", {self.threads} thread{'s' if self.threads != 1 else ''}"
        return text

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dictionary."""
        return dataclasses.asdict(self)


class LoadedModel:
    """An allocated interpreter with the checked model it runs.

    Attributes:
      interpreter: the runtime's Interpreter, tensors allocated.
      model: what the flatbuffer declares (I/O, ops, metadata).
      runtime: runtime, delegate and threads used.
      init_seconds: interpreter construction + delegate + allocation time.
    """

    def __init__(self, interpreter: Any, model: ModelInfo, runtime: RuntimeInfo, init_seconds: float, keep: tuple):
        self.interpreter = interpreter
        self.model = model
        self.runtime = runtime
        self.init_seconds = init_seconds
        # The interpreter reads the model bytes in place and calls into the delegate library:
        # both must outlive it.
        self._keep = keep

    @property
    def input_index(self) -> int:
        """Tensor index of the first input."""
        return self.model.inputs[0].index

    @property
    def output_index(self) -> int:
        """Tensor index of the first output."""
        return self.model.outputs[0].index

    def resize_batch(self, batch: int) -> None:
        """Sets the batch dimension of every input (models with a dynamic batch) and reallocates."""
        for tensor in self.model.inputs:
            self.interpreter.resize_tensor_input(tensor.index, [batch] + list(tensor.shape[1:]), strict=True)
        self.interpreter.allocate_tensors()

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Sets the first input, invokes, and returns a copy of the first output.

        Raises:
          ModelFileError: the runtime refused the input or failed to run the model.
        """
        try:
            self.interpreter.set_tensor(self.input_index, inputs)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output_index).copy()
        except (RuntimeError, ValueError) as e:
            raise invoke_error(self, e) from e


def invoke_error(loaded: LoadedModel, error: Exception) -> ModelFileError:
    """The one-line error for a runtime failure while setting inputs or invoking."""
    reason = " ".join(str(error).split())[:400] or type(error).__name__
    return ModelFileError(
        f"{loaded.runtime.package} {loaded.runtime.version} failed to run '{loaded.model.path}' with delegate "
        f"'{loaded.runtime.delegate}': {reason}. The file is damaged or uses a feature this runtime lacks; re-export it "
        f"or try another --runtime."
    )


def _native_message(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("INFO:")]
    return " ".join(lines)[:400]


def _forward_warnings(text: str) -> None:
    for line in text.splitlines():
        if line.strip() and not line.startswith("INFO:"):
            print(line, file=sys.stderr)


def check_delegate_fits(model: ModelInfo, delegate: DelegateSpec) -> None:
    """Rejects an Edge TPU-compiled model without the Edge TPU delegate (before any native code runs).

    Raises:
      DelegateError: the model needs the Edge TPU delegate and another was chosen.
    """
    if model.edgetpu_compiled and delegate.kind != "edgetpu":
        raise DelegateError(
            f"'{model.path}' is compiled for the Edge TPU (it contains '{EDGETPU_CUSTOM_OP}') but the delegate is "
            f"'{delegate.label}'. Run it with --delegate edgetpu (needs libedgetpu and a Coral device), "
            f"or use the model exported before edgetpu_compiler for the CPU."
        )


def _create_delegate(runtime: Runtime, spec: DelegateSpec) -> Tuple[Any, str, str]:
    library = spec.library_name
    options = spec.load_options
    with capture_native_output() as captured:
        try:
            # Open the library first: when the runtime's own dlopen fails it leaves a half-built
            # Delegate whose __del__ prints a traceback at exit.
            ctypes.CDLL(library)
            delegate = runtime.load_delegate(library, options or None)
            error = None
        except (OSError, ValueError, RuntimeError) as e:
            delegate, error = None, e
    if error is not None:
        reason = " ".join(str(error).split()) or type(error).__name__
        native = _native_message(captured["text"])
        if native and native not in reason:
            reason += f"; {native}"
        where = f"device '{spec.device}', " if spec.device else ""
        versions = (f"{where}runtime {runtime.package} {runtime.version}, Python {platform.python_version()}, "
                    f"{platform.system()} {platform.machine()}")
        if spec.kind == "edgetpu":
            raise DelegateError(
                f"Could not load the Edge TPU delegate '{library}' ({versions}): {reason}. Install the Edge TPU runtime "
                f"(libedgetpu1-std, https://coral.ai/docs/accelerator/get-started/), attach the device, and use a libedgetpu "
                f"built for the same TensorFlow version as the runtime."
            ) from error
        raise DelegateError(
            f"Could not load the delegate library '{library}' with options {options or {}} ({versions}): {reason}. "
            f"Check the path and that the library was built for this runtime version."
        ) from error
    _forward_warnings(captured["text"])
    from edgetl.runtime.environment import edgetpu_library_version, loaded_library_path

    path = loaded_library_path(library) or library
    version = edgetpu_library_version(path) if spec.kind == "edgetpu" else ""
    return delegate, path, version


def check_delegate_loads(spec: DelegateSpec, runtime: str = "auto") -> None:
    """Loads and releases an Edge TPU / external delegate once, so a sweep fails before its first measurement.

    Raises:
      DelegateError: the library cannot be loaded or refuses its options.
    """
    if spec.kind in ("edgetpu", "external"):
        _create_delegate(find_runtime(runtime), spec)


def build_interpreter(data: bytes, info: ModelInfo, runtime: Runtime, spec: DelegateSpec, threads: Optional[int],
                      label: str) -> LoadedModel:
    """Builds the runtime's interpreter on checked bytes with the delegate and allocates its tensors.

    No checks and no child process: the caller has parsed and checked ``data``
    (``info``) and, in this process, had it verified by the sandbox
    (``edgetl.runtime.interpreter.load_interpreter``).

    Args:
      data: the model bytes; the interpreter reads them in place, so the result keeps them.
      info: ``edgetl.modelfile.parse_model(data)``.
      runtime: from ``find_runtime``.
      spec: the delegate.
      threads: interpreter threads; None leaves the runtime's default.
      label: the file name for messages.

    Raises:
      ModelFileError: the runtime cannot load or allocate the model.
      DelegateError: the delegate library cannot be loaded.
    """
    start = time.perf_counter()
    delegates, library, library_version = [], "", ""
    if spec.kind in ("edgetpu", "external"):
        created, library, library_version = _create_delegate(runtime, spec)
        delegates.append(created)
    kwargs: Dict[str, Any] = {"model_content": data, "experimental_delegates": delegates or None}
    if threads is not None:
        kwargs["num_threads"] = threads
    if spec.kind == "cpu":
        kwargs["experimental_op_resolver_type"] = runtime.no_default_delegates
    with capture_native_output() as captured, warnings.catch_warnings():
        # tf.lite.Interpreter warns that it is deprecated; a forced --runtime tensorflow already chose it.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        try:
            interpreter = runtime.interpreter_class(**kwargs)
            interpreter.allocate_tensors()
            error = None
        except (ValueError, RuntimeError) as e:
            error = e
    if error is not None:
        reason = " ".join(str(error).split())
        native = _native_message(captured["text"])
        if native and native not in reason:
            reason += f"; {native}"
        reason = reason.rstrip(".")
        hint = f" The model needs TFLite runtime >= {info.min_runtime_version}." if info.min_runtime_version else ""
        if info.custom_ops:
            hint += f" It uses custom ops ({', '.join(info.custom_ops)}) that the runtime must provide."
        raise ModelFileError(
            f"{runtime.package} {runtime.version} cannot load '{label}' with delegate '{spec.label}': {reason}.{hint} "
            f"Try another --runtime or a newer runtime version."
        ) from error
    _forward_warnings(captured["text"])
    init_seconds = time.perf_counter() - start
    info_runtime = RuntimeInfo(
        runtime=runtime.name, package=runtime.package, version=runtime.version, delegate=spec.label,
        delegate_library=library, delegate_version=library_version, delegate_options=spec.load_options,
        threads=threads, xnnpack=spec.kind != "cpu",
    )
    return LoadedModel(interpreter, info, info_runtime, init_seconds, keep=(data, tuple(delegates)))


def delegate_specs(values: Sequence[str], options: Iterable[Tuple[str, str]] = ()) -> Tuple[DelegateSpec, ...]:
    """Parses comma-separated ``--delegate`` values into specs, keeping order and dropping duplicates."""
    options = tuple(options)
    specs = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                spec = DelegateSpec.parse(part, options)
                if spec not in specs:
                    specs.append(spec)
    if not specs:
        raise ConfigError("No delegate given; pass e.g. --delegate xnnpack or --delegate cpu,xnnpack,edgetpu.")
    return tuple(specs)


__all__ = ["DELEGATE_KINDS", "EDGETPU_LIBRARIES", "RUNTIME_CHOICES", "DelegateSpec", "LoadedModel", "Runtime",
           "RuntimeInfo", "build_interpreter", "check_delegate_fits", "check_delegate_loads", "delegate_specs",
           "find_runtime", "invoke_error", "parse_options"]
