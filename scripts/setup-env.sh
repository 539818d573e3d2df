#!/usr/bin/env bash
# Create .venv with the pinned environment (requirements.lock) and install sep-bench into it.
# Idempotent: does nothing when .venv already matches requirements.lock and pyproject.toml.
#
# Installs with uv (pinned in the lock; ~30 s on a fresh 2-core machine against ~2.5 min for pip, measured by
# benchmarks/pipeline.py --env); the lock is applied as constraints, so the environment is exactly the lock.
# SEP_BENCH_INSTALLER=pip falls back to pip with the same lock.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
"$PY" -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), "sep-bench needs Python 3.11 or 3.12"'

want="$(cat requirements.lock pyproject.toml scripts/setup-env.sh | sha256sum | cut -d' ' -f1)"
stamp=.venv/.sep-bench-env
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/sep-bench ]; then
  exit 0
fi

echo "setting up .venv (pinned by requirements.lock; torch's CUDA build runs on CPU too) ..."
[ -d .venv ] || "$PY" -m venv .venv
if [ "${SEP_BENCH_INSTALLER:-uv}" = pip ]; then
  .venv/bin/python -m pip install --quiet --upgrade "pip>=24"
  .venv/bin/python -m pip install --quiet --constraint requirements.lock --editable ".[test]"
else
  uv_pin="$(grep -E '^uv==' requirements.lock)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$uv_pin"
  # --compile-bytecode: pip compiles .pyc files at install, uv does not by default; without them every pipeline
  # stage recompiles torch, timm and mlflow from source (about 4 s per process, measured) wherever Python may
  # not write its cache (PYTHONDONTWRITEBYTECODE, read-only installs)
  .venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python --constraint requirements.lock \
    --editable ".[test]"
fi
echo "$want" > "$stamp"
echo "environment ready: .venv"
