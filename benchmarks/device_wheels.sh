#!/usr/bin/env bash
# Wheels of the packages the lent GPU machine lacks (its image has torch, numpy, pandas,
# pytest, ... but not webdataset nor snakemake and their needs), at constraints.txt's
# versions, for its Python 3.12 on x86-64, into .whl/ (git-ignored, about 26 MB).
# Run on the workstation before a device call, then carry .whl (README, "Speed").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
PKGS="webdataset braceexpand snakemake annotated-types argparse-dataclass conda-inject configargparse connection-pool
docutils dpath fastjsonschema gitdb gitpython greenlet humanfriendly immutables jsonschema jsonschema-specifications
jupyter-core nbformat platformdirs pulp pydantic pydantic-core referencing rpds-py smart-open smmap
snakemake-interface-common snakemake-interface-executor-plugins snakemake-interface-logger-plugins
snakemake-interface-report-plugins snakemake-interface-scheduler-plugins snakemake-interface-storage-plugins
sqlalchemy sqlmodel tenacity throttler traitlets typing-inspection yte"
mkdir -p .whl
for p in $PKGS; do
  pin=$(grep -i "^$(echo "$p" | sed 's/[-_.]/[-_.]/g')==" constraints.txt | head -1)
  [ -n "$pin" ] || { echo "error: $p is not pinned in constraints.txt" >&2; exit 1; }
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$pin" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w .whl "$pin"  # only a source release: a pure-Python wheel built here
done
echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
