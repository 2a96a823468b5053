# Sourced by test.sh and run_demo.sh: creates (first run) or reuses .venv/ inside the
# checkout and installs this package into it with the extras named in NOISYGRPO_EXTRAS
# (default "test"). Reinstalls only when setup.py / pyproject.toml / the extras changed.
# Sets VENV_PYTHON.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
NOISYGRPO_EXTRAS=${NOISYGRPO_EXTRAS:-test}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual env in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
VENV_PYTHON="$VENV/bin/python"

stamp="$VENV/.noisygrpo-install-stamp"
want=$( (cat setup.py pyproject.toml; echo "$NOISYGRPO_EXTRAS") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV_PYTHON" -c "import verl_ext, verl" 2>/dev/null; then
  echo "[setup] installing noisygrpo[$NOISYGRPO_EXTRAS] into $VENV (first run or setup.py changed; torch is large, this takes a few minutes)"
  "$VENV_PYTHON" -m pip install --quiet --upgrade pip
  "$VENV_PYTHON" -m pip install --quiet -e ".[$NOISYGRPO_EXTRAS]"
  echo "$want" > "$stamp"
else
  echo "[setup] reusing $VENV (install up to date)"
fi

# Nothing is downloaded from a model hub at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
