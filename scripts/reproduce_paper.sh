#!/usr/bin/env bash
# Reproduce the paper: the sweep (resumable), evaluation, Tables 1-3 and Figures 2-6.
#
#   scripts/reproduce_paper.sh                 # 200 epochs, IWAE with k = 5000 on all test images
#   EPOCHS=10 K=1000 IMAGES=1000 scripts/reproduce_paper.sh    # a first pass in under two hours
#
# Run it again to continue: finished runs are skipped, unfinished ones resume. Raising EPOCHS
# continues every run. The small outputs (config, metrics, summary, evaluation; no checkpoints)
# are copied to results/paper/runs, the tables to results/paper, the figures to figures/.
set -uo pipefail
EPOCHS=${EPOCHS:-200}
JOBS=${JOBS:-2}
K=${K:-5000}
IMAGES=${IMAGES:-0}
SWEEP=${SWEEP:-sweeps/paper}
RESULTS=${RESULTS:-results/paper}

pyro-dvae sweep --preset paper --out "$SWEEP" --epochs "$EPOCHS" --jobs "$JOBS" \
  || echo "some runs failed (listed above); the rest goes on" >&2
pyro-dvae evaluate "$SWEEP" --k "$K" --images "$IMAGES" --skip-done --no-progress || exit 1
"$(dirname "$0")/export_runs.sh" "$SWEEP" "$RESULTS" || exit 1
pyro-dvae report "$SWEEP" --out "$RESULTS" > /dev/null || exit 1
pyro-dvae plot "$SWEEP" --out figures || exit 1
echo "tables: $RESULTS/report.md; figures: figures/" >&2
