#!/usr/bin/env bash
# Set up, then run the whole test suite (real ONNX Runtime on real small models). Extra arguments go
# to pytest, e.g. scripts/test.sh -k bad_input
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${KILN_VENV:-.venv}"
# report.html is checked in a real headless browser: Debian's chromium, installed here when missing
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  echo "test: installing chromium (Debian) for the report.html browser test" >&2
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null; } || echo "test: could not install chromium; the browser tests will say so" >&2
fi
# llama.cpp for the GGUF tests: built once per CPU from the pinned sdist, cached outside the checkout
# (~/.cache/kiln/llama.cpp; about 4 minutes on 2 cores). Its build tools come from Debian when missing.
if ! { command -v cmake && command -v ninja && command -v c++; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  echo "test: installing cmake, ninja and g++ (Debian) to build llama.cpp" >&2
  $SUDO apt-get install -y -q cmake ninja-build g++ >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q cmake ninja-build g++ >/dev/null; }
fi
"$VENV/bin/kiln" build-llama-cpp
"$VENV/bin/ruff" check src tests benchmarks scripts
before=""
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  before="$(git status --porcelain --untracked-files=all)"
fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
# Nothing kiln or its tools run may write into the checkout (it once left 90 MB shape-inference files here)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  after="$(git status --porcelain --untracked-files=all)"
  if [ "$after" != "$before" ]; then
    echo "test.sh: the test run left files in the checkout:" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    exit 1
  fi
fi
