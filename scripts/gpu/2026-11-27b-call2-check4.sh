#!/usr/bin/env bash
# Device call 2 of 2026-11-27 (second day): k = 5000 IWAE of the runs in .gpu/runs (first: its
# evaluation.json is what must come back), the CUDA-only tests, then the whole suite on a
# machine with CUDA after the cross-device resume fix (call 1 found 20 failures).
export PYTHONUNBUFFERED=1
t0=$(date +%s); stamp() { echo "---- $1 [$(( $(date +%s) - t0 )) s]"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/data/MNIST/raw
for f in .gpu/mnist/*.gz; do gunzip -c "$f" > /tmp/data/MNIST/raw/$(basename "$f" .gz); done
export PYRO_DVAE_DATA=/tmp/data MPLBACKEND=Agg
stamp "IWAE k=5000 on 10000 images, cuda"
for d in .gpu/runs/*/; do
  r=$(basename "$d"); rm -rf /tmp/$r; cp -r "$d" /tmp/$r
  /usr/bin/time -f "$r: %e s wall" timeout 120 python3 -m pyro_dvae evaluate /tmp/$r --k 5000 --device cuda --no-progress 2>&1 | tail -3
  mkdir -p $OUT/$r; cp /tmp/$r/evaluation.json $OUT/$r/
done
stamp "CUDA-only tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests -k cuda -rs 2>&1 | tail -6
stamp "the whole suite on a CUDA machine, 12 workers"
timeout ${SUITE_S:-250} python3 -m pytest -q -p no:cacheprovider -n 12 tests > /tmp/suite.log 2>&1
echo "suite rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" /tmp/suite.log | tail -25
grep -E "^E " /tmp/suite.log | head -20
stamp "end"
