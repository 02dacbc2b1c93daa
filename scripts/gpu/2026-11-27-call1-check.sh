#!/usr/bin/env bash
# One device call: GPU checks and the two pending k=5000 IWAE evaluations of issue 10.
export PYTHONUNBUFFERED=1
t0=$(date +%s); stamp() { echo "---- $1 [$(( $(date +%s) - t0 )) s]"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/data/MNIST/raw
for f in .gpu/mnist/*.gz; do gunzip -c "$f" > /tmp/data/MNIST/raw/$(basename "$f" .gz); done
export PYRO_DVAE_DATA=/tmp/data
nvidia-smi -L; nproc
python3 -c "import torch, pyro, sklearn; print('torch', torch.__version__, 'pyro', pyro.__version__, torch.cuda.get_device_name())"
stamp "IWAE k=5000 on 10000 images, cuda"
for r in logitnormal-d8-a1.78 logitnormal-d20-a1.78; do
  cp -r .gpu/runs/$r /tmp/$r
  /usr/bin/time -f "$r: %e s wall" timeout 150 python3 -m pyro_dvae evaluate /tmp/$r --k 5000 --device cuda --no-progress
  mkdir -p $OUT/$r; cp /tmp/$r/evaluation.json $OUT/$r/ 2>/dev/null
  stamp "$r done"
done
python3 -c "import json; [print(r, json.dumps(json.load(open('/tmp/'+r+'/evaluation.json')))[:900]) for r in ('logitnormal-d8-a1.78','logitnormal-d20-a1.78')]"
stamp "training step, cuda vs hand-written"
timeout 70 python3 scripts/benchmark.py --device cuda --rounds 8 --images 6000
stamp "families, cuda"
timeout 60 python3 scripts/benchmark.py --device cuda --rounds 4 --images 3000 --families gaussian,logitnormal,concrete
stamp "groups, cuda"
timeout 60 python3 scripts/benchmark.py --device cuda --rounds 4 --images 3000 --members 1,4,16
stamp "IWAE chunks, cuda"
timeout 50 python3 scripts/benchmark.py --device cuda --rounds 3 --k 5000 --images 500 --iwae-chunks 2000,20000,100000
stamp "fit + resume on cuda, cli"
timeout 60 python3 -m pyro_dvae fit --family logitnormal --alpha 1.78 --latent-dim 20 --epochs 1 --device cuda --no-progress --out /tmp/fit1 && \
timeout 60 python3 -m pyro_dvae fit --resume /tmp/fit1 --epochs 2 --device cuda --no-progress && \
python3 -c "import torch; s=torch.load('/tmp/fit1/checkpoint.pt', weights_only=True, map_location='cpu'); print('checkpoint loads on cpu, keys', sorted(s)[:8])"
cat /tmp/fit1/summary.json 2>/dev/null | head -30
stamp "end"
