#!/usr/bin/env bash
# The test command: creates (first run) or reuses .venv/ inside the checkout, installs the
# package with its test extras, and runs the whole suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not e2e" -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "[test.sh] creating virtual env in $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when what decides the install changed (setup.py, pyproject.toml), not on
# every run: the stamp records their hash.
stamp="$VENV/.noisygrpo-install-stamp"
want=$(cat setup.py pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c "import verl_ext, verl" 2>/dev/null; then
  echo "[test.sh] installing noisygrpo[test] (first run or setup.py changed)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  echo "$want" > "$stamp"
else
  echo "[test.sh] reusing $VENV (install up to date)"
fi

# No hub access at test time: everything is built locally.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
"$VENV/bin/python" -m ruff check .
"$VENV/bin/python" -m pytest -ra "$@"
