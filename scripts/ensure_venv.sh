#!/usr/bin/env bash
# Creates or updates .venv (Python 3.10) with the locked dependencies.
#
# Order of preference for the interpreter: $PYTHON310, python3.10 on PATH,
# pyenv's 3.10.x, and only then `uv python install 3.10` (which downloads).
# The venv keeps pip (TFX installs module wheels with `python -m pip`), and
# uv installs the lock (plain pip backtracks for a very long time on TFX).
# Re-runs are a no-op unless requirements.lock or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.installed

find_python310() {
  if [ -n "${PYTHON310:-}" ] && "$PYTHON310" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    echo "$PYTHON310"; return; fi
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import venv' 2>/dev/null; then
    command -v python3.10; return; fi
  local root
  root=$( (pyenv root 2>/dev/null) || echo "$HOME/.pyenv")
  for p in "$root"/versions/3.10.*/bin/python3.10; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  # Fallback: uv downloads a managed CPython 3.10.
  echo "No Python 3.10 found; installing one with uv (needs network)..." >&2
  local uvbin
  uvbin=$(command -v uv 2>/dev/null || true)
  if [ -z "$uvbin" ]; then
    python3 -m pip install --quiet --user uv >&2
    uvbin="$(python3 -m site --user-base)/bin/uv"
  fi
  "$uvbin" python install 3.10 >&2
  "$uvbin" python find 3.10
}

if [ -x $VENV/bin/python ] && ! $VENV/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  echo ".venv is not Python 3.10; recreating it" >&2
  rm -rf $VENV
fi
if [ ! -x $VENV/bin/python ]; then
  PY=$(find_python310)
  echo "Creating .venv with $PY" >&2
  "$PY" -m venv $VENV
fi
if [ ! -f $STAMP ] || [ requirements.lock -nt $STAMP ] || [ setup.py -nt $STAMP ]; then
  [ -x $VENV/bin/uv ] || $VENV/bin/python -m pip install --quiet --disable-pip-version-check uv
  echo "Installing locked dependencies into .venv (about a minute the first time)..." >&2
  $VENV/bin/uv pip install --quiet --python $VENV/bin/python -r requirements.lock
  $VENV/bin/uv pip install --quiet --python $VENV/bin/python --no-deps -e .
  touch $STAMP
  rm -f $VENV/.bytecode
fi
# Bytecode for the installed packages, once per install: uv installs without
# it, and where Python cannot write __pycache__ (PYTHONDONTWRITEBYTECODE, a
# read-only venv) every run would compile TensorFlow's sources again (~7 s of
# each process start on 2 cores). About a minute. Its exit status and
# messages are dropped: a few packages ship files that are not Python 3
# (templates, test data), which compileall reports as failures.
if [ ! -f $VENV/.bytecode ]; then
  echo "Compiling the installed packages' bytecode (once, about a minute)..." >&2
  $VENV/bin/python -m compileall -q -j 0 $VENV/lib/python3.10/site-packages >/dev/null 2>&1 || true
  touch $VENV/.bytecode
fi
