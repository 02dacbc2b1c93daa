#!/usr/bin/env bash
# Device call 2: the two k=5000 IWAE evaluations (fixed code) and every command once on CUDA.
# Usage: bash .gpu/check2.sh [cuda|cpu] [images]   (cpu: a dry rehearsal here)
DEV=${1:-cuda}; N=${2:-2000}; export PYTHONUNBUFFERED=1
t0=$(date +%s); stamp() { echo "---- $1 [$(( $(date +%s) - t0 )) s]"; }
try() { echo "\$ $*"; timeout 120 "$@" > /tmp/try.log 2>&1; rc=$?; tail -n 4 /tmp/try.log; echo "rc=$rc"; }
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  mkdir -p /tmp/data/MNIST/raw
  for f in .gpu/mnist/*.gz; do gunzip -c "$f" > /tmp/data/MNIST/raw/$(basename "$f" .gz); done
  export PYRO_DVAE_DATA=/tmp/data; PY=python3
  stamp "IWAE k=5000 on 10000 images, cuda"
  for r in logitnormal-d8-a1.78 logitnormal-d20-a1.78; do
    rm -rf /tmp/$r; cp -r .gpu/runs/$r /tmp/$r
    /usr/bin/time -f "$r: %e s wall" timeout 150 python3 -m pyro_dvae evaluate /tmp/$r --k 5000 --device cuda --no-progress
    mkdir -p $OUT/$r; cp /tmp/$r/evaluation.json $OUT/$r/
    python3 -c "import json; e=json.load(open('/tmp/$r/evaluation.json')); print({k: e[k] for k in e if not isinstance(e[k], (list, dict))})"
    stamp "$r done"
  done
  stamp "IWAE chunks, cuda"
  timeout 60 python3 scripts/benchmark.py --device cuda --rounds 3 --k 5000 --images 500 --iwae-chunks 2000,20000,100000
else
  PY=.venv/bin/python; export PYRO_DVAE_DATA=../shared/data
fi
P="$PY -m pyro_dvae"; S=/tmp/sw-$DEV; rm -rf $S /tmp/one-$DEV
stamp "every command on $DEV"
try $P sweep --family logitnormal --alpha 0.32 --alpha 0.56 --alpha 1 --alpha 1.78 --family gaussian \
  --latent-dim 2 --latent-dim 8 --subset $N --epochs 2 --group-size 4 --jobs 2 --device $DEV \
  --evaluate 100 --images 500 --out $S
try $P report $S --out $S/report
head -c 1500 $S/report/report.md
try $P plot $S --device $DEV --out $S/figs --images 500 --sizes 2,8 --tsne-size 8 --hist-size 8
ls $S/figs
R=$(ls -d $S/runs/logitnormal-d2-a1.78* | head -1)
try $P show $R --device $DEV --out $S/pics
for fam in "--family concrete --latent-dim 20 --categories 10 --elbo analytic --kl discrete --anneal-rate 1e-4" \
           "--family concrete --latent-dim 1 --categories 20" \
           "--family categorical --latent-dim 1 --categories 8 --elbo enum" \
           "--family categorical --latent-dim 1 --categories 8 --elbo tracegraph --baseline neural" \
           "--family beta --latent-dim 8" "--family gaussian --latent-dim 8 --elbo analytic --num-particles 4"; do
  rm -rf /tmp/one-$DEV
  try $P fit $fam --subset $N --epochs 1 --device $DEV --no-progress --out /tmp/one-$DEV
  try $P evaluate /tmp/one-$DEV --k 200 --images 300 --device $DEV --no-progress
done
stamp "end"
