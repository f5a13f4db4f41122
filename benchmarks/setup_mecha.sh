#!/usr/bin/env bash
# Optional: a separate venv with sd-mecha 1.1.8 for bench_merge.py (torch pinned to the CPU build).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv-mecha
.venv-mecha/bin/python -m pip install --quiet "torch==2.13.0"
echo "torch==2.13.0" > .venv-mecha/constraints.txt
.venv-mecha/bin/python -m pip install --quiet -c .venv-mecha/constraints.txt "sd-mecha==1.1.8"
echo "sd-mecha ready: benchmarks/.venv-mecha/bin/python"
