#!/usr/bin/env bash
# The project's long experiments, one after another in the background, from a frozen copy of
# the code (so that edits to the checkout cannot change a running sweep); each step resumes
# where it stopped, a finished step is marked done. Steps: the discrete leaderboard (issue 27:
# 45 runs, each scored as soon as it has trained), the paper's runs again (issue 28; its
# Logit-normal runs read as bits for issue 27), the IWAE training runs (issue 29) and their
# k = 5000 evaluation.
#
#   scripts/background_queue.sh freeze        # clone HEAD to $WORK/code-<commit> with a venv;
#                                             # $WORK/code points at it
#   $WORK/code/scripts/background_queue.sh start    # start (or continue) the queue, detached
#                                             # (a frozen copy knows its WORK)
#   $WORK/code/scripts/background_queue.sh stop     # stop it at resumable checkpoints
#   $WORK/code/scripts/background_queue.sh status   # the steps and the leaderboard's runs
#
# (start it from the frozen copy: bash reads a script as it runs it, so the checkout's copy
# must stay free to edit). A step runs, to its end, the frozen copy it started with (kept as
# $WORK/queue/code/<step>), so its runs are all one code's; freezing again (with the queue
# stopped) gives the newer copy to the steps not yet started. WORK (default ~/pyro-dvae-work)
# holds the frozen code, the sweeps and the queue's logs; the data folder is the one
# $PYRO_DVAE_DATA names at `freeze` (default this checkout's ../shared/data), kept in
# $WORK/data_dir. Copy the results into the checkout with scripts/export_runs.sh [--scored] as
# runs finish. POLL: seconds between the leaderboard's looks for a trained run to score (60).
# tests/test_background_queue.py runs it against stand-in frozen copies.
set -u
here=$(cd "$(dirname "$0")/.." && pwd -P)
# a frozen copy, $WORK/code-<commit>, knows its WORK
case ${here##*/} in code-*) [ -f "${here%/*}/data_dir" ] && WORK=${WORK:-${here%/*}} ;; esac
export WORK=${WORK:-$HOME/pyro-dvae-work}
if [ -f "$WORK/data_dir" ]; then PYRO_DVAE_DATA=$(cat "$WORK/data_dir"); fi
export PYRO_DVAE_DATA=${PYRO_DVAE_DATA:-$here/../shared/data} MPLBACKEND=Agg
queue=$WORK/queue
code=${CODE:-$WORK/code} # a step's own: see step()
bin=$code/.venv/bin/pyro-dvae
leaderboard=$WORK/discrete-benchmark/sweep
# a run's evaluation on ATen's AVX2 kernels (a 1.28x faster IWAE pass on this project's
# AVX-512 machine; docs/speed.md), with Inductor's cache of its own
avx2=(env ATEN_CPU_CAPABILITY=avx2 TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor_avx2)

log() { echo "$(date -u +%FT%TZ) $*" >> "$queue/queue.log"; }

# the frozen copy a step runs: the one it started with
pinned() {
  mkdir -p "$queue/code"
  [ -L "$queue/code/$1" ] || ln -s "$(readlink -f "$WORK/code")" "$queue/code/$1"
  readlink -f "$queue/code/$1"
}

# each step (a command of this script) in its own process group, so that a stop reaches all
# of its processes, on its own frozen copy (its script too, where the copy has one). A step
# that is one sweep (leaderboard, iwae-train) and ran to its end with runs that failed (exit
# 1 after its "N of M runs finished" line: a NaN loss fails again at the same step) is done,
# its failures in its log; any other error stops the queue
step() {
  local name=$1
  [ -e "$queue/done/$name" ] && return 0
  local mine start script
  mine=$(pinned "$name")
  if [ ! -x "$mine/.venv/bin/pyro-dvae" ]; then
    log "Error: $name's frozen copy $queue/code/$name is gone; freeze again and remove that link"
    return 1
  fi
  script=$mine/scripts/background_queue.sh
  [ -x "$script" ] || script=$0 # a copy frozen before this script existed
  log "start $name (code: $(git -C "$mine" log --oneline -1 2> /dev/null | cut -c1-60))"
  start=$(wc -c 2> /dev/null < "$queue/logs/$name.log" || echo 0)
  CODE=$mine setsid "$script" "$name" >> "$queue/logs/$name.log" 2>&1 &
  child=$!
  wait $child; local rc=$?
  child=
  log "end $name rc=$rc"
  if [ $rc -eq 1 ] && { [ "$name" = leaderboard ] || [ "$name" = iwae-train ]; } &&
    tail -c +$((start + 1)) "$queue/logs/$name.log" | grep -q "runs finished in"; then
    log "$name: ran to its end, some runs failed (their [FAILED] lines: logs/$name.log); going on"
    rc=0
  fi
  [ $rc -eq 0 ] && touch "$queue/done/$name"
  return $rc
}

run_queue() {
  mkdir -p "$queue/logs" "$queue/done"
  echo $$ > "$queue/pid"
  child=
  trap '[ -n "$child" ] && kill -TERM -- "-$child" 2>/dev/null; wait; log paused; rm -f "$queue/pid"; exit 143' TERM INT
  for name in leaderboard paper-rerun iwae-train iwae-evaluate; do
    step $name || exit 1
  done
  log "all done"
  rm -f "$queue/pid"
}

# one finished, not yet scored leaderboard run: its hard codes' IWAE (k = 1000); a relaxed
# run's first pass, its relaxed model's IWAE, is not on the leaderboard: k = 10 there
evaluate_one() {
  local run k
  for run in "$leaderboard"/runs/*/; do
    run=${run%/}
    [ -e "$run/evaluation.json" ] && continue
    grep -qxF "$run" "$queue/eval-failed.txt" 2> /dev/null && continue
    grep -q '"status": "finished"' "$run/summary.json" 2> /dev/null || continue
    case "$run" in
      *-reinforce* | *-nvil* | *-vimco* | *-disarm*) k=1000 ;;
      *) k=10 ;;
    esac
    echo "$(date -u +%FT%TZ) evaluate $(basename "$run") --k $k --discrete-k 1000"
    "${avx2[@]}" "$bin" evaluate "$run" --k $k --discrete-k 1000 --threads 1 --no-progress &
    children=("$trainer" $!)
    wait $!
    local rc=$?
    # a failure (not a stop) is not tried again
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ ! -e "$run/evaluation.json" ]; then
      echo "$run" >> "$queue/eval-failed.txt"
    fi
    return 0
  done
  return 1
}

# the 45 runs, two at a time with one thread each, and beside them one scoring at a time
run_leaderboard() {
  children=()
  trap 'kill -TERM "${children[@]}" 2> /dev/null; wait; exit 143' TERM INT
  "$bin" sweep --preset discrete-benchmark --out "$leaderboard" --jobs 2 --threads 1 &
  trainer=$!
  children=("$trainer")
  while :; do
    if ! evaluate_one; then
      kill -0 "$trainer" 2> /dev/null || break
      sleep "${POLL:-60}" &
      children=("$trainer" $!)
      wait $!
    fi
  done
  wait "$trainer"
  local rc=$?
  while evaluate_one; do :; done # the runs that finished after the last look
  return $rc
}

# the project's own script: the grid, seeds 1-2 at size 20, the working Concrete, k = 1000
# on all test images for every run (k = 5000 for Table 3's); each size's four Logit-normal
# alphas as one group; on the AVX2 kernels throughout (its evaluation 1.2-1.5x faster, its
# training the same: docs/speed.md), so that a stopped evaluation continues as it began
run_paper() {
  # shellcheck disable=SC1091
  . "$code/.venv/bin/activate"
  cd "$code" || return 1
  SWEEP=$WORK/paper-rerun/sweep RESULTS=$WORK/paper-rerun/results \
    FIGURES=$WORK/paper-rerun/figures GROUP_SIZE=4 exec "${avx2[@]}" scripts/reproduce_paper.sh
}

case ${1:-} in
  freeze)
    [ -e "$WORK/code" ] && [ ! -L "$WORK/code" ] &&
      { echo "Error: $WORK/code is a folder; stop the queue and move it away first" >&2; exit 1; }
    [ -e "$queue/pid" ] && kill -0 "$(cat "$queue/pid")" 2> /dev/null &&
      { echo "Error: the queue is running; stop it first" >&2; exit 1; }
    new=$WORK/code-$(git -C "$here" rev-parse --short HEAD)
    [ -e "$new" ] && { echo "Error: $new exists (HEAD is frozen already)" >&2; exit 1; }
    mkdir -p "$WORK" && (cd "$PYRO_DVAE_DATA" && pwd) > "$WORK/data_dir" &&
      git clone -q "$here" "$new" && python3 -m venv "$new/.venv" &&
      "$new/.venv/bin/pip" install -q "$new" && ln -sfn "$new" "$WORK/code" &&
      git -C "$new" log --oneline -1
    ;;
  start)
    [ -x "$bin" ] || { echo "Error: no frozen copy in $code (run scripts/background_queue.sh freeze in a checkout)" >&2; exit 1; }
    [ -e "$queue/pid" ] && kill -0 "$(cat "$queue/pid")" 2> /dev/null &&
      { echo "Error: the queue is running (pid $(cat "$queue/pid"))" >&2; exit 1; }
    mkdir -p "$queue"
    setsid nohup "$0" run > /dev/null 2>&1 < /dev/null &
    echo "queue started; log: $queue/queue.log"
    ;;
  stop)
    pid=$(cat "$queue/pid" 2> /dev/null)
    { [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null; } || { echo "the queue is not running"; exit 0; }
    while kill -0 "$pid" 2> /dev/null; do sleep 2; done
    tail -1 "$queue/queue.log"
    ;;
  status)
    tail -5 "$queue/queue.log" 2> /dev/null
    python3 - "$WORK"/{discrete-benchmark,paper-rerun,iwae-training}/sweep <<'EOF'
import json, pathlib, sys
for folder in map(pathlib.Path, sys.argv[1:]):
    paths = sorted(folder.glob("runs/*/summary.json"))
    if paths:
        runs = [json.loads(p.read_text()) for p in paths]
        finished = sum(r.get("status") == "finished" for r in runs)
        scored = sum((p.parent / "evaluation.json").exists() for p in paths)
        done = sum(r.get("epochs_completed", 0) for r in runs)
        planned = sum(r.get("epochs_planned", 0) for r in runs)
        print(f"{folder}: {len(runs)} runs begun, {finished} finished, {scored} evaluated; "
              f"{done} of their {planned} epochs")
EOF
    lb=$queue/code/leaderboard/.venv/bin/pyro-dvae
    [ -x "$lb" ] || lb=$bin
    [ -x "$lb" ] && "$lb" sweep --preset discrete-benchmark --out "$leaderboard" --jobs 2 --dry-run | tail -1
    ;;
  run) run_queue ;;
  leaderboard) run_leaderboard ;;
  paper-rerun) run_paper ;;
  iwae-train)
    exec "$bin" sweep --preset iwae-training --out "$WORK/iwae-training/sweep" --jobs 2 --threads 1
    ;;
  iwae-evaluate)
    exec "${avx2[@]}" "$bin" evaluate "$WORK/iwae-training/sweep" --k 5000 --skip-done \
      --threads 2 --no-progress
    ;;
  *)
    echo "usage: $0 {freeze|start|stop|status}" >&2
    exit 2
    ;;
esac
