#!/usr/bin/env bash
# The prepared device check of issue 13 (what it runs: benchmarks/device_check.py --help).
#
#   bash benchmarks/device_check.sh OUT [--cpu-smoke] [--parts abcd] [--budget SECONDS]
#
# On a GPU it ends within 8 minutes and writes OUT/device_check.json and OUT/device_check.log.
# A GPU machine that lacks the project's extra packages (webdataset, snakemake, ...) gets them
# from wheels in .whl/ (made here by benchmarks/device_wheels.sh and carried along).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash benchmarks/device_check.sh OUT [--cpu-smoke] [--parts abcd] [--budget SECONDS]" >&2
  exit 2
fi
PY="${PYTHON:-$(command -v python || command -v python3)}"
"$PY" -c "import torch" 2> /dev/null || {
  echo "error: $PY cannot import torch; activate the project's venv (README) or set PYTHON=/path/to/python" >&2
  exit 2
}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/featnorm-site .whl/*.whl
  export PYTHONPATH="/tmp/featnorm-site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" benchmarks/device_check.py "$@"
