#!/usr/bin/env bash
# Developer entry points: `setup` (venv + editable install), `demo` (setup, then the
# offline quickstart on the shipped TrashNet photos), `test` (setup, then the whole test suite).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${EDGETL_VENV:-.venv}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet -e ".[train,dev]"
}

case "${1:-}" in
    setup)
        setup
        ;;
    demo)
        setup
        shift
        # The quickstart's photos and ImageNet weights ship inside edgetl: nothing to download.
        edgetl quickstart "$@"
        ;;
    test)
        setup
        shift
        # Real-data tests (marked slow) use ../shared/assets and skip cleanly without it. The slowest
        # tests are listed at the end: CI has a time budget (~30 min on 2 cores) and this shows where it goes.
        python -m pytest -q --run-slow --durations=25 "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh setup|demo|test [args...]" >&2
        exit 2
        ;;
esac
