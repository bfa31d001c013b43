#!/usr/bin/env bash
# The Python package's tests: builds the wheel (sharing the Cargo target directory), installs it
# into a virtual environment (created once under ~/.cache/atheria/venv) and runs pytest against
# the installed package, so that what the wheel ships (`atheria` and `atheria_core`) is tested.
set -euo pipefail
cd "$(dirname "$0")"
venv="${ATHERIA_VENV:-$HOME/.cache/atheria/venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.5,<2" numpy pytest
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/atheria/target}"
wheels="$CARGO_TARGET_DIR/python-test-wheels"
rm -rf "$wheels"
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin build --release --quiet --interpreter "$venv/bin/python" -o "$wheels"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/atheria-*.whl
# From the tests' folder, so that the source tree's `atheria/` is not what gets imported.
cd tests
"$venv/bin/python" -m pytest -q .
