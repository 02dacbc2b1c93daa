#!/usr/bin/env python
"""The checks that matter on a GPU, in one short run: every family's step compiled against
eager, a group against its members trained alone, then the group benchmark.

    python scripts/gpu_check.py --device cuda --data-dir ../shared/data
    python scripts/gpu_check.py --device cpu --members 1,2   # the same checks on a CPU

Each check prints one ``PASS``/``FAIL`` line; the exit status is the number of failures.
``scripts/gpu_check.sh`` runs it on a GPU machine and keeps the output under ``results/gpu``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pyro
import torch

from pyro_dvae.config import FitConfig
from pyro_dvae.data import load_dataset
from pyro_dvae.group import GroupTrainer
from pyro_dvae.train import Trainer

FAMILIES = [
    ("gaussian", {}),
    ("logitnormal", {"alpha": 1.78}),
    ("beta", {}),
    ("concrete", {"categories": 10, "latent_dim": 4}),
]


def quiet(msg: str) -> None:
    pass


def compiled_against_eager(data, device: str) -> bool:
    """One epoch of 500 images of each family, compiled and eager, from the same seed."""
    ok = True
    for family, extra in FAMILIES:
        losses = []
        for jit in (True, False):
            pyro.clear_param_store()
            cfg = FitConfig(family=family, subset=500, epochs=1, jit=jit, **extra)
            trainer = Trainer(cfg, data, device, progress=False, log=quiet)
            losses.append(trainer.train_epoch()["train_loss"])
        close = abs(losses[0] - losses[1]) <= 1e-3 * abs(losses[1])
        ok &= close
        print(f"{'PASS' if close else 'FAIL'} {family}: compiled {losses[0]:.4f}, "
              f"eager {losses[1]:.4f}")  # fmt: skip
    return ok


def group_against_solo(data, device: str) -> bool:
    """A group of four Logit-normal priors, one epoch of 500 images, against each alone."""
    alphas = [0.32, 0.56, 1.0, 1.78]
    configs = [FitConfig(alpha=a, seed=i, subset=500, epochs=1) for i, a in enumerate(alphas)]
    pyro.clear_param_store()
    group = GroupTrainer(configs, data, device, progress=False, log=quiet)
    group.fit()
    solo = []
    for cfg in configs:
        pyro.clear_param_store()
        trainer = Trainer(cfg, data, device, progress=False, log=quiet)
        trainer.fit()
        solo.append(trainer.history[-1]["test_loss"])
    grouped = [t.history[-1]["test_loss"] for t in group.members]
    # members draw their solo runs' noise from their own streams: equal but for the rounding
    # of batched kernels (docs/groups.md)
    close = all(abs(g - s) < 0.05 for g, s in zip(grouped, solo, strict=True))
    print(f"{'PASS' if close else 'FAIL'} group of 4 vs alone, test -ELBO after 1 epoch: "
          + ", ".join(f"{g:.2f}/{s:.2f}" for g, s in zip(grouped, solo, strict=True)))  # fmt: skip
    pyro.clear_param_store()
    one = GroupTrainer(configs[:1], data, device, progress=False, log=quiet)
    one.fit()
    same = one.members[0].history[-1]["test_loss"] == solo[0]
    print(f"{'PASS' if same else 'FAIL'} group of one == solo run: "
          f"{one.members[0].history[-1]['test_loss']!r} vs {solo[0]!r}")  # fmt: skip
    return close and same


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--members", default="1,2,4,8,16,32")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    print(f"torch {torch.__version__}, pyro {pyro.__version__}")
    data = load_dataset("mnist", args.data_dir, subset=500)
    failures = sum(not ok for ok in (
        compiled_against_eager(data, args.device),
        group_against_solo(data, args.device),
    ))  # fmt: skip
    bench = [sys.executable, str(Path(__file__).with_name("benchmark.py"))]
    bench += ["--members", args.members, "--device", args.device, "--rounds", str(args.rounds)]
    if args.data_dir:
        bench += ["--data-dir", args.data_dir]
    sys.stdout.flush()
    failures += subprocess.call(bench) != 0
    print(f"{failures} failure(s)")
    return failures


if __name__ == "__main__":
    sys.exit(main())
