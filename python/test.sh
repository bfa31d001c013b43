#!/usr/bin/env bash
# The Python package's tests: builds the extension into a virtual environment (created once
# under ~/.cache/atheria/venv, sharing the Cargo target directory) and runs pytest.
set -euo pipefail
cd "$(dirname "$0")"
venv="${ATHERIA_VENV:-$HOME/.cache/atheria/venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.5,<2" numpy pytest
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/atheria/target}"
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --release --quiet
"$venv/bin/python" -m pytest -q tests
