#!/usr/bin/env bash
# GPU checks of issue 13 (groups) and the compiled step, as one short run on a GPU machine:
#   bash scripts/gpu_check.sh [data-dir]        # default ../shared/data
# Writes results/gpu/<GPU name>.txt (the checks' PASS/FAIL lines and the group benchmark).
set -euo pipefail
data=${1:-../shared/data}
name=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))")
mkdir -p results/gpu
python scripts/gpu_check.py --device cuda --data-dir "$data" 2>&1 | tee "results/gpu/$name.txt"
