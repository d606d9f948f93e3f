#!/usr/bin/env bash
# The issue-18 GPU check (under 8 minutes on one GPU): latent diffusion at 256 px on kermany_cxr224, 4 minutes of
# training (autoencoder + UNet, mixed precision), 1000 sampled images, FID; writes benchmarks/results/gpu_check.json.
# Usage: bash benchmarks/gpu_check.sh [SHARED_DIR] [OUT_JSON]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${1:-${MONAI_SYNTH_SHARED:-../shared}}"
OUT="${2:-benchmarks/results/gpu_check.json}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device visible to torch')"
mkdir -p "$(dirname "$OUT")"
exec python benchmarks/gpu_check.py --data "$SHARED/data/kermany_cxr224" --image-size 256 --minutes 4 --n 1000 \
    --batch-size 250 --device cuda --work-dir "${WORK_DIR:-./outputs/gpu_check}" --out "$OUT"
