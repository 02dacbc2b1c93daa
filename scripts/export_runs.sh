#!/usr/bin/env bash
# Copy the small outputs of a sweep's runs (config, metrics, summary, evaluation; no checkpoints)
# into a results folder:  scripts/export_runs.sh [--scored] SWEEP_DIR RESULTS_DIR  ->  RESULTS_DIR/runs/<name>/
# --scored: only the runs that have an evaluation.json (a sweep still running: its finished,
# evaluated runs, so that a lost machine loses none of them).
set -euo pipefail
scored=0
if [ "${1:-}" = "--scored" ]; then scored=1; shift; fi
SWEEP=${1:?usage: export_runs.sh [--scored] SWEEP_DIR RESULTS_DIR}
RESULTS=${2:?usage: export_runs.sh [--scored] SWEEP_DIR RESULTS_DIR}
for run in "$SWEEP"/runs/*/; do
  name=$(basename "$run")
  if [ $scored = 1 ] && [ ! -f "$run/evaluation.json" ]; then continue; fi
  mkdir -p "$RESULTS/runs/$name"
  for f in config.json metrics.jsonl summary.json evaluation.json; do
    if [ -f "$run/$f" ]; then cp "$run/$f" "$RESULTS/runs/$name/"; fi
  done
done
