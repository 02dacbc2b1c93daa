#!/usr/bin/env python
"""The checks that matter on a GPU, in one short run: every family's step compiled against
eager, a group against its members trained alone, then the benchmarks of issue 30: the
solo step against the hand-written loop eager and compiled (torch.compile's default mode,
then ``reduce-overhead``: CUDA graphs), the groups, and two epochs of the paper's grid
trained as groups (``--sweep-epochs``), extrapolated to its 200 epochs.

    python scripts/gpu_check.py --device cuda --data-dir ../shared/data
    python scripts/gpu_check.py --device cpu --members 1,2   # the same checks on a CPU

Each check prints one ``PASS``/``FAIL`` line; the exit status is the number of failures.
``scripts/gpu_check.sh`` runs it on a GPU machine and keeps the output under ``results/gpu``.
"""

from __future__ import annotations

import argparse
import os
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


def compiled_against_eager(data, device: str, hidden: int) -> bool:
    """One epoch of 500 images of each family, compiled and eager, from the same seed."""
    ok = True
    for family, extra in FAMILIES:
        losses = []
        for compile in ("on", "off"):
            pyro.clear_param_store()
            cfg = FitConfig(
                family=family, subset=500, epochs=1, compile=compile, hidden=hidden, **extra
            )
            trainer = Trainer(cfg, data, device, progress=False, log=quiet)
            trainer.begin()
            losses.append(trainer.train_epoch()["train_loss"])
        close = abs(losses[0] - losses[1]) <= 1e-3 * abs(losses[1])
        ok &= close
        print(f"{'PASS' if close else 'FAIL'} {family}: compiled {losses[0]:.4f}, "
              f"eager {losses[1]:.4f}")  # fmt: skip
    return ok


def group_against_solo(data, device: str, hidden: int) -> bool:
    """A group of four Logit-normal priors, one epoch of 500 images, against each alone."""
    alphas = [0.32, 0.56, 1.0, 1.78]
    configs = [
        FitConfig(alpha=a, seed=i, subset=500, epochs=1, compile="on", hidden=hidden)
        for i, a in enumerate(alphas)
    ]
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


def paper_sweep(args) -> bool:
    """The paper's grid as groups for ``--sweep-epochs`` epochs; the last epoch's seconds,
    summed over the groups (trained one after another), times the paper's 200 epochs."""
    import json
    import tempfile
    import time

    out = Path(tempfile.mkdtemp()) / "paper"
    command = [sys.executable, "-m", "pyro_dvae", "sweep", "--preset", "paper"]
    command += ["--epochs", str(args.sweep_epochs), "--group-size", "4", "--compile", "on"]
    command += ["--device", args.device, "--out", str(out)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.sweep_subset:
        command += ["--subset", str(args.sweep_subset)]
    t0 = time.perf_counter()
    rc = subprocess.call(command, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    last = {}
    for metrics in out.glob("runs/*/metrics.jsonl"):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        last[metrics.parent.name] = rows[-1]["seconds"] if rows else float("nan")
    # the members of a group record the group's seconds: count each group's epoch once
    epoch = sum(set(last.values()))
    print(f"{'PASS' if rc == 0 else 'FAIL'} paper grid as groups of 4, {len(last)} runs, "
          f"{args.sweep_epochs} epochs in {wall:.0f} s wall; one epoch of the grid "
          f"{epoch:.1f} s -> 200 epochs about {200 * epoch / 60:.1f} min")  # fmt: skip
    return rc == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--members", default="1,2,4,8,16,32")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--sweep-epochs", type=int, default=2, help="0: skip the paper grid")
    p.add_argument("--sweep-subset", type=int, default=0, help="train images (0: all)")
    p.add_argument("--hidden", type=int, default=500, help="hidden width of every network")
    p.add_argument("--images", type=int, default=5000, help="images per timed epoch")
    args = p.parse_args()
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    print(f"torch {torch.__version__}, pyro {pyro.__version__}")
    data = load_dataset("mnist", args.data_dir, subset=500)
    failures = sum(not ok for ok in (
        compiled_against_eager(data, args.device, args.hidden),
        group_against_solo(data, args.device, args.hidden),
    ))  # fmt: skip
    bench = [sys.executable, str(Path(__file__).with_name("benchmark.py"))]
    bench += ["--device", args.device, "--rounds", str(args.rounds), "--hidden", str(args.hidden)]
    if args.data_dir:
        bench += ["--data-dir", args.data_dir]
    modes = ["", "reduce-overhead"] if args.device.startswith("cuda") else [""]
    for mode in modes:
        env = {**os.environ, "PYRO_DVAE_COMPILE_MODE": mode}
        print(f"---- torch.compile mode: {mode or 'default'}", flush=True)
        failures += subprocess.call([*bench, "--images", str(args.images)], env=env) != 0
        failures += subprocess.call([*bench, "--members", args.members], env=env) != 0
    if args.sweep_epochs:
        failures += not paper_sweep(args)
    print(f"{failures} failure(s)")
    return failures


if __name__ == "__main__":
    sys.exit(main())
