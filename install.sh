#!/usr/bin/env bash
# Install FossilSegment (engine, CLI and test tools) into .venv at the repo root, then run the demo:
# the bundled model segments the bundled demo scan and writes its results to ./demo_output/.
# Usage: ./install.sh [--no-demo]
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml (see README for GPU builds).
.venv/bin/python -m pip install --quiet -e ".[test]"
if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/fossilsegment demo -o demo_output --force
fi
