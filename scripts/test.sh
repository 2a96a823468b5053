#!/usr/bin/env bash
# The test command: creates (first run) or reuses .venv/ inside the checkout, installs the
# package with its test extras, runs ruff and the whole suite (CPU; GPU tests skip without
# CUDA). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not e2e" -x`.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
"$VENV_PYTHON" -m ruff check .
"$VENV_PYTHON" -m pytest -ra "$@"
