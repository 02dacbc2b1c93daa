#!/usr/bin/env bash
# Reproduce the paper: the sweep (resumable), seeds, the working Concrete run, evaluation,
# Tables 1-3 with the scorecard, and Figures 2-6.
#
#   scripts/reproduce_paper.sh               # 200 epochs; every run scored on all 10,000 test
#                                            # images: IWAE k = 1000, k = 5000 for Table 3's runs
#   EPOCHS=10 SEEDS=0 FULL_IWAE=0 scripts/reproduce_paper.sh   # a first pass in a few hours,
#                                            # k = 1000 on all test images for every run
#   DEVICE=cuda GROUP_SIZE=4 JOBS=4 scripts/reproduce_paper.sh # on a GPU: each size's four
#                                            # Logit-normal α as one group, step 2's seeds
#                                            # in groups too (docs/paper.md, docs/groups.md)
#
# Run it again to continue: finished runs are skipped, unfinished ones resume (Ctrl-C or
# SIGTERM leave every run at a resumable checkpoint). Raising EPOCHS continues every run.
#   1. the paper's grid (30 runs);
#   2. seeds 1 and 2 of the size-20 Gaussian and of the size-20 best Logit-normal (α chosen
#      by train -ELBO, never on the test set), beside the grid's seed 0;
#   3. the concrete-working preset (Jang et al.'s Concrete VAE, and its relaxed twin);
#   4. evaluation, one protocol for every table: IWAE with k = 1000 on all 10,000 test images
#      for every run (the Logit-normal and Concrete runs also read as discrete codes), then
#      (unless FULL_IWAE=0) Burda et al.'s k = 5000 for Table 3's Gaussian and best
#      Logit-normal runs, about 30 core-minutes each;
#   5. the small outputs (no checkpoints) to $RESULTS/runs, the tables to $RESULTS, figures
#      to $FIGURES.
set -uo pipefail
EPOCHS=${EPOCHS:-200}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
SEEDS=${SEEDS:-2}          # extra seeds (1..SEEDS) of the size-20 comparison; 0: none
FULL_IWAE=${FULL_IWAE:-1}  # 1: k = 5000 on all test images for Table 3's runs; 0: skip it
DEVICE=${DEVICE:-auto}     # auto: CUDA when available
GROUP_SIZE=${GROUP_SIZE:-1} # runs of one shape trained as one group; > 1 pays on a GPU
SWEEP=${SWEEP:-sweeps/paper}
RESULTS=${RESULTS:-results/paper}
FIGURES=${FIGURES:-figures}
here=$(dirname "$0")
run=(--epochs "$EPOCHS" --jobs "$JOBS" --threads "$THREADS" --device "$DEVICE" --group-size "$GROUP_SIZE"
  --out "$SWEEP")

step() { echo "== $* ($(date -u +%H:%M:%S))" >&2; }
stopped() { [ "$1" -ge 128 ] && { echo "stopped; run the same command again to continue" >&2; exit "$1"; }; }

step "1. the paper's grid"
pyro-dvae sweep --preset paper "${run[@]}"; stopped $?

if [ "$SEEDS" -gt 0 ]; then
  alpha=$(python - "$SWEEP" <<'EOF'
import sys
from pyro_dvae.results import best_alpha, collect
best = best_alpha(collect(sys.argv[1]), 20, "train")
print(best.runs[0].config.alpha if best else 1.78)
EOF
  )
  step "2. seeds 1..$SEEDS at size 20 (Logit-normal α = $alpha by train -ELBO)"
  seeds=(); for s in $(seq 1 "$SEEDS"); do seeds+=(--seed "$s"); done
  pyro-dvae sweep --family gaussian --family logitnormal --alpha "$alpha" --latent-dim 20 \
    "${seeds[@]}" "${run[@]}"; stopped $?
fi

step "3. the working Concrete VAE"
pyro-dvae sweep --preset concrete-working "${run[@]}"; stopped $?

step "4. evaluation"
pyro-dvae evaluate "$SWEEP" --k 1000 --skip-done --no-progress --threads "$JOBS" \
  --device "$DEVICE"
stopped $?
if [ "$FULL_IWAE" != 0 ]; then
  table3=$(python -c 'import sys
from pyro_dvae.results import burda_runs, collect
print(*(r.path for r in burda_runs(collect(sys.argv[1]))), sep="\n")' "$SWEEP")
  # shellcheck disable=SC2086
  [ -n "$table3" ] && pyro-dvae evaluate $table3 --k 5000 --skip-done --no-progress \
    --threads "$JOBS" --device "$DEVICE"
  stopped $?
fi

step "5. results"
"$here/export_runs.sh" "$SWEEP" "$RESULTS" || exit 1
pyro-dvae report "$SWEEP" --out "$RESULTS" > /dev/null || exit 1
pyro-dvae plot "$SWEEP" --out "$FIGURES" || exit 1
echo "tables: $RESULTS/report.md; figures: $FIGURES/" >&2
