#!/bin/bash
# The compiled step against the hand-written loops (docs/speed.md, "The compiled step"): a cold
# and a warm compile cache, Pyro's eager step, the Gaussian, and groups of 1 and 4, each one run
# of scripts/benchmark.py (its ratios pair the variants round by round in one process).
# Pause other jobs on the machine first. Usage: scripts/benchmark_compiled.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
bench=(python scripts/benchmark.py --data-dir "$data" --threads 2)
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
export TORCHINDUCTOR_CACHE_DIR=$cache
echo "== logitnormal, cold compile cache"; "${bench[@]}" --rounds 5
echo "== logitnormal, warm cache"; "${bench[@]}" --rounds 30
echo "== logitnormal, --compile off"; "${bench[@]}" --rounds 30 --compile off
echo "== gaussian"; "${bench[@]}" --rounds 30 --family gaussian
echo "== groups"; "${bench[@]}" --rounds 10 --members 1,4
