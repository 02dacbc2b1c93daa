#!/usr/bin/env bash
# Device call of 2026-11-27 (second day): k = 5000 IWAE on all 10,000 test images of the
# finished Table 3 runs in .gpu/runs (copies by .gpu/slim.py), the CUDA-only tests,
# compare-estimators on the CPU against CUDA, and the whole suite on a machine with CUDA.
export PYTHONUNBUFFERED=1
t0=$(date +%s); stamp() { echo "---- $1 [$(( $(date +%s) - t0 )) s]"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/data/MNIST/raw
for f in .gpu/mnist/*.gz; do gunzip -c "$f" > /tmp/data/MNIST/raw/$(basename "$f" .gz); done
export PYRO_DVAE_DATA=/tmp/data MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)"
stamp "IWAE k=5000 on 10000 images, cuda"
for d in .gpu/runs/*/; do
  r=$(basename "$d"); rm -rf /tmp/$r; cp -r "$d" /tmp/$r
  /usr/bin/time -f "$r: %e s wall" timeout 120 python3 -m pyro_dvae evaluate /tmp/$r --k 5000 --device cuda --no-progress 2>&1 | tail -4
  mkdir -p $OUT/$r; cp /tmp/$r/evaluation.json $OUT/$r/
done
stamp "CUDA-only tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests -k cuda -rs 2>&1 | tail -8
stamp "compare-estimators, cpu against cuda"
R=/tmp/$(ls .gpu/runs | head -1)
for dev in cpu cuda; do
  timeout 120 python3 -m pyro_dvae compare-estimators $R --device $dev --repeats 100 --threads 1 --out $OUT/estimators-$dev 2>&1 | tail -9
done
stamp "the whole suite on a CUDA machine, 12 workers"
timeout ${SUITE_S:-240} python3 -m pytest -q -p no:cacheprovider -n 12 tests > $OUT/suite.log 2>&1
echo "suite rc=$?"; grep -E "passed|failed|FAILED|ERROR" $OUT/suite.log | tail -25
stamp "end"
