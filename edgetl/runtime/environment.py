"""Host fingerprint for results: OS, CPU and board model, cores, Python, Edge TPU library."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, Optional

# ARM 'CPU part' ids (implementer 0x41) of the cores found on Raspberry Pi and Coral boards.
_ARM_PARTS = {
    "0xb76": "ARM1176", "0xc07": "Cortex-A7", "0xc08": "Cortex-A8", "0xc09": "Cortex-A9", "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78",
}


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """A human CPU name: 'model name' on x86, the core type on ARM boards, else platform.processor()."""
    info = _read_text("/proc/cpuinfo")
    fields: Dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    part = fields.get("cpu part", "").lower()
    if fields.get("cpu implementer", "").lower() == "0x41" and part in _ARM_PARTS:
        return f"ARM {_ARM_PARTS[part]}"
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def board_model() -> str:
    """The board name from the device tree ('Raspberry Pi 4 Model B Rev 1.4'), or '' off ARM boards."""
    return _read_text("/proc/device-tree/model").rstrip("\x00").strip()


def memory_total_mb() -> Optional[float]:
    """Physical memory in MB, when the OS says."""
    for line in _read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20, 1)
    except (ValueError, OSError, AttributeError):
        return None


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity / container limits), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> Dict[str, Any]:
    """Describes this machine for a result row; cached for the process.

    Returns:
      A JSON-ready dictionary with hostname, os, machine, cpu, board, cores,
      usable_cores, memory_mb and python.

    Example:
      >>> host_fingerprint()["cpu"]
      'ARM Cortex-A72'
    """
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "board": board_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "memory_mb": memory_total_mb(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory so far, in MB; None where the OS does not say (Windows).

    Linux: VmHWM of /proc/self/status. Unlike ru_maxrss, it is not raised by the
    parent's memory, which Linux carries into a child across fork and exec.
    """
    for line in _read_text("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return round(peak / (2**20 if sys.platform == "darwin" else 1024.0), 1)


def loaded_library_path(name: str) -> str:
    """The file a shared library named ``name`` was loaded from, read from /proc/self/maps ('' if unknown)."""
    stem = Path(name).name.split(".so")[0].split(".dylib")[0]
    for line in _read_text("/proc/self/maps").splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if path.startswith("/") and Path(path).name.startswith(stem):
            return path
    return ""


def edgetpu_library_version(library: str) -> str:
    """The libedgetpu build string (``edgetpu_version()`` of its C API), or '' when unavailable.

    Only call this for a library that already loaded: it maps the library into
    the process.
    """
    try:
        handle = ctypes.CDLL(library)
        function = handle.edgetpu_version
    except (OSError, AttributeError):
        return ""
    function.restype = ctypes.c_char_p
    value = function()
    return value.decode("utf-8", "replace") if value else ""
