#!/usr/bin/env bash
# Set up, then run the whole test suite (real ONNX Runtime on real small models). Extra arguments go
# to pytest, e.g. scripts/test.sh -k bad_input
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${KILN_VENV:-.venv}"
"$VENV/bin/ruff" check src tests benchmarks scripts
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
