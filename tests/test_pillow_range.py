"""Decoding is the same on the lowest and the highest Pillow that pyproject.toml allows.

The lowest is installed into a real second virtualenv (under a temp folder),
a zoo of unusual modes is decoded there and here with ``edgetl.images``, and
the RGB bytes are compared. Skips when pip cannot install it (no network, no
wheel for this Python).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from mode_zoo import write_mode_zoo
from edgetl.images import _to_rgb, load_image, load_image_digest

# Run in each interpreter: decode every zoo file the way training (store), the device and the scan do.
DECODE = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np, PIL
from PIL import Image
from edgetl.images import _to_rgb, load_image, load_image_digest

def h(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()

out = {"pillow": PIL.__version__, "files": {}}
for path in sorted(Path(sys.argv[1]).iterdir()):
    small, digest = load_image_digest(path, 32)
    assert (small == load_image(path, 32)).all(), path  # the store's decode is the device's decode
    with Image.open(path) as image:
        mode = image.mode
    out["files"][path.name] = {"mode": mode, "32": h(small), "300": h(load_image(path, 300)), "digest": digest}
# Modes no file format here produces, built in memory the same way on every Pillow.
pa = Image.frombytes("PA", (4, 3), bytes(range(0, 240, 10)))
pa.putpalette([(i * 7) % 256 for i in range(768)])
out["files"]["memory:PA"] = {"mode": "PA", "32": h(np.asarray(_to_rgb(pa)))}
print(json.dumps(out))
"""


def _floor() -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'"Pillow>=([0-9.]+)"', text)
    assert match, "pyproject.toml names no Pillow floor"
    return match.group(1)


def _decode(python: str, zoo: Path) -> dict:
    result = subprocess.run([python, "-c", DECODE, str(zoo)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_integer_greyscale_does_not_depend_on_the_mode_label(tmp_path):
    # Pillow 9 labels a 16-bit PNG 'I', newer Pillow 'I;16': the same samples must give the same pixels.
    grey16 = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    as_i16 = Image.fromarray(grey16)
    as_i = Image.fromarray(grey16.astype(np.int32))
    assert as_i16.mode == "I;16" and as_i.mode == "I"
    expected = (grey16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    for image in (as_i16, as_i):
        for bits in (16, None):
            np.testing.assert_array_equal(np.asarray(_to_rgb(image, bits))[..., 0], expected)
    # Not stretched to the image's own maximum: a dark 16-bit image stays dark.
    dark = Image.fromarray((grey16 // 16).astype(np.int32))
    assert np.asarray(_to_rgb(dark, 16)).max() == 16
    Image.fromarray(grey16 // 16).save(tmp_path / "dark16.png")
    assert load_image(tmp_path / "dark16.png", 30).max() == 16


def test_store_decode_equals_device_decode(tmp_path):
    for path in write_mode_zoo(tmp_path / "zoo"):
        pixels, digest = load_image_digest(path, 32)
        np.testing.assert_array_equal(pixels, load_image(path, 32), err_msg=path.name)
        assert len(digest) == 32


@pytest.mark.venv
def test_lowest_and_highest_allowed_pillow_decode_the_same_bytes(tmp_path_factory):
    floor = _floor()
    zoo = tmp_path_factory.mktemp("zoo")
    write_mode_zoo(zoo)
    env_dir = tmp_path_factory.mktemp("pillow-floor")
    started = time.perf_counter()
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = str(env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python"))
    # numpy < 2: the oldest Pillow predates numpy 2's ABI; numpy>=1.23 is edgetl's own floor.
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--only-binary", ":all:", f"Pillow=={floor}", "numpy>=1.23,<2"],
                             capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"pip cannot install Pillow=={floor} here: {install.stderr.strip().splitlines()[-1:]}")
    setup_seconds = time.perf_counter() - started
    lowest = _decode(python, zoo)
    highest = _decode(sys.executable, zoo)
    assert tuple(map(int, lowest["pillow"].split("."))) == tuple(map(int, (floor + ".0.0").split(".")[:3]))
    print(f"Pillow {lowest['pillow']} vs {highest['pillow']}: virtualenv {setup_seconds:.1f} s")
    assert set(lowest["files"]) == set(highest["files"])
    differing = {name: (lowest["files"][name], highest["files"][name]) for name in highest["files"]
                 if {k: v for k, v in lowest["files"][name].items() if k != "mode"}
                 != {k: v for k, v in highest["files"][name].items() if k != "mode"}}
    assert not differing, differing
