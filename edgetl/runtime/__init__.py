"""On-device inference without TensorFlow: runtime discovery, delegates, tensors, host fingerprint."""

from edgetl.runtime.environment import host_fingerprint
from edgetl.runtime.interpreter import (
    DelegateSpec,
    LoadedModel,
    Runtime,
    RuntimeInfo,
    find_runtime,
    load_interpreter,
)
from edgetl.runtime.tensors import InputTransform, dequantize, input_transform

__all__ = [
    "DelegateSpec",
    "InputTransform",
    "LoadedModel",
    "Runtime",
    "RuntimeInfo",
    "dequantize",
    "find_runtime",
    "host_fingerprint",
    "input_transform",
    "load_interpreter",
]
