#!/usr/bin/env bash
# Copy the small outputs of a sweep's runs (config, metrics, summary, evaluation; no checkpoints)
# into a results folder:  scripts/export_runs.sh SWEEP_DIR RESULTS_DIR  ->  RESULTS_DIR/runs/<name>/
set -euo pipefail
SWEEP=${1:?usage: export_runs.sh SWEEP_DIR RESULTS_DIR}
RESULTS=${2:?usage: export_runs.sh SWEEP_DIR RESULTS_DIR}
for run in "$SWEEP"/runs/*/; do
  name=$(basename "$run")
  mkdir -p "$RESULTS/runs/$name"
  for f in config.json metrics.jsonl summary.json evaluation.json; do
    if [ -f "$run/$f" ]; then cp "$run/$f" "$RESULTS/runs/$name/"; fi
  done
done
