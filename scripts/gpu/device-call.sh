#!/usr/bin/env bash
# One device call, from the repository's root on the GPU machine:
#   bash scripts/gpu/device-call.sh check evaluate      # either or both, in that order
# check:    scripts/gpu_check.py (issue 30's GPU numbers: the compiled step in both torch.compile
#           modes against the hand-written loops, groups, the paper's grid extrapolated)
#           -> $OUT/gpu_check.txt
# evaluate: `pyro-dvae evaluate --k $K --discrete-k $K` of each run folder in .gpu/runs (slim
#           copies: python scripts/gpu/slim_checkpoint.py RUN...; about 6 MB a 200-bit run, so
#           five fit beside the code, MNIST and the wheels in the 64 MiB a call carries)
#           -> $OUT/evaluations.tgz (RUN/evaluation.json for each)
# Needs in .gpu/ (ignored by git; carry it): whl/ (pyro-ppl and pyro-api wheels),
# mnist/*.gz (gzipped MNIST raw files). Without $OUT (a dry run here) it writes to ./device-out.
set -u
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT=${OUT:-$PWD/device-out}
K=${K:-1000}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "---- $1 [$(($(date +%s) - t0)) s]"; }
if ! python3 -c "import pyro" 2> /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/site .gpu/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
data=/tmp/device-data
mkdir -p $data/MNIST/raw
for f in .gpu/mnist/*.gz; do gunzip -c "$f" > "$data/MNIST/raw/$(basename "$f" .gz)"; done
export PYRO_DVAE_DATA=$data
python3 -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)"
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for part in "$@"; do
    case $part in
    check)
        stamp "gpu_check.py on $DEVICE"
        timeout "${CHECK_S:-420}" python3 scripts/gpu_check.py --device "$DEVICE" \
            --data-dir $data > "$OUT/gpu_check.txt" 2>&1
        echo "gpu_check rc=$?"
        grep -E "PASS|FAIL|ratio|ms/step|minutes" "$OUT/gpu_check.txt" | tail -40
        ;;
    evaluate)
        stamp "evaluate --k $K --discrete-k $K on $DEVICE"
        done_dir=/tmp/device-evaluations
        rm -rf $done_dir && mkdir -p $done_dir
        for d in .gpu/runs/*/; do
            r=$(basename "$d")
            cp -r "$d" /tmp/$r
            /usr/bin/time -f "$r: %e s wall" timeout "${EVAL_S:-150}" python3 -m pyro_dvae \
                evaluate /tmp/$r --k "$K" --discrete-k "$K" --device "$DEVICE" --no-progress 2>&1 |
                tail -3
            [ -f /tmp/$r/evaluation.json ] && mkdir -p $done_dir/$r &&
                cp /tmp/$r/evaluation.json $done_dir/$r/
        done
        tar czf "$OUT/evaluations.tgz" -C $done_dir .
        ls $done_dir
        ;;
    *) echo "unknown part: $part (check, evaluate)" && exit 2 ;;
    esac
done
stamp "end"
