#!/usr/bin/env bash
# Create .venv and install selectivbench with its test and cluster extras (the tests run Ray). torch first, pinned to the CPU
# build this machine keeps on disk (pyproject only asks torch>=2.4, which it satisfies).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,cluster]"
