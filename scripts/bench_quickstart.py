"""Times the README's main job: `edgetl quickstart` from an empty run directory, offline.

Each repeat runs the installed `edgetl quickstart --out TMP --no-progress` in a fresh process, with an empty
HOME (no Keras cache) and EDGETL_WEIGHTS_URL pointing at a closed port (any download attempt fails), and
reports the wall time of the whole command, the time of each stage from the run's stage lines, and the
report's accuracies.

Example:
  .venv/bin/python scripts/bench_quickstart.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgetl.runtime.environment import cpu_model  # noqa: E402

STAGE_LINE = re.compile(r"^\s*(train|qat|export|eval|bench|report)\s+(ran|skipped|off)\s+([\d.]+) s", re.MULTILINE)




def run_once(edgetl: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgetl-quickstart-") as tmp:
        env = {**os.environ, "HOME": str(Path(tmp) / "home"), "EDGETL_WEIGHTS_URL": "http://127.0.0.1:9/"}
        env.pop("EDGETL_WEIGHTS_DIR", None)
        out = Path(tmp) / "run"
        started = time.perf_counter()
        completed = subprocess.run([edgetl, "quickstart", "--out", str(out), "--no-progress"], env=env,
                                   capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            sys.exit(f"edgetl quickstart failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
        report = json.loads((out / "report.json").read_text())
        return {
            "seconds": round(seconds, 1),
            "stages": {name: float(sec) for name, _, sec in STAGE_LINE.findall(completed.stdout)},
            "float_accuracy": report["float_accuracy"],
            "accuracy": {row["variant"]: row["accuracy"] for row in report["rows"]},
            "recommended": report["recommended"],
            "val_images": report["val_images"],
            "stderr_lines": [line for line in completed.stderr.splitlines() if line.strip()],
            # The stage lines and the report table, as the user saw them (the README's sample comes from here).
            "summary": completed.stdout[completed.stdout.rfind("\ntrain ") + 1:],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--edgetl", default=str(Path(sys.executable).parent / "edgetl"), help="the edgetl command")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--summary", action="store_true", help="also print the last run's stage lines and report table")
    args = parser.parse_args()
    results = [run_once(args.edgetl) for _ in range(args.repeats)]
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores")
    for result in results:
        stages = ", ".join(f"{name} {sec:.0f} s" for name, sec in result["stages"].items())
        accuracy = ", ".join(f"{v} {a:.2%}" for v, a in result["accuracy"].items())
        print(f"quickstart: {result['seconds']:.0f} s ({stages}); Keras float {result['float_accuracy']:.2%}; {accuracy}; "
              f"{result['val_images']} val images; recommended {result['recommended']}; "
              f"{len(result['stderr_lines'])} stderr lines")
        for line in result["stderr_lines"][:10]:
            print(f"  stderr: {line}")
    if args.summary:
        print(results[-1]["summary"])
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
