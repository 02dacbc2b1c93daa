"""How much noise a Logit-normal encoder keeps: over test images and units, the quantiles
of its posterior's scale in logit space (σ(x) / τ for the relaxation z = sigmoid(y / τ),
y ~ N(μ(x), σ(x)²); σ(x) for the paper's family) and of |μ(x) / σ(x)|, the certainty of the
bits it stands for, q(b = 1 | x) = Φ(μ / σ). A unit at its prior LN(0, α) has a scale of
√α / τ and μ near 0: its bit is a coin flip.

A relaxation whose objective stops pricing σ (the bits' KL of
``--estimator logitnormal-discrete-kl`` charges at most log 2 a bit, however small σ)
can drive σ towards 0 and carry continuous information in μ; this shows whether it did.

    python scripts/posterior_noise.py RUN [RUN ...] --images 500
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from pyro.distributions import Independent

from pyro_dvae.data import load_dataset
from pyro_dvae.distributions import LogitNormal
from pyro_dvae.evaluation import load_run

LEVELS = (0.0, 0.01, 0.5, 0.99, 1.0)
NAMES = ("min", "1 %", "median", "99 %", "max")


def noise(run_path: str, images: int) -> str:
    run = load_run(run_path, device="cpu")
    x = load_dataset(run.config.dataset, None).test[:images]
    with torch.no_grad():
        q = run.vae.family.posterior(run.vae.encoder(x))
        while isinstance(q, Independent):
            q = q.base_dist
        if not isinstance(q, LogitNormal):
            raise SystemExit(f"Error: {run_path} has no Logit-normal posterior")
        levels = torch.tensor(LEVELS, dtype=q.scale.dtype)
        sigma = torch.quantile(q.scale.flatten(), levels)
        ratio = torch.quantile((q.loc / q.scale).abs().flatten(), levels)
    cells = " | ".join(f"{v:.3g}" for v in [*sigma, *ratio])
    return f"| {Path(run_path).name} | {run.epoch} | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--images", type=int, default=500, help="first N test images")
    args = parser.parse_args()
    head = " | ".join([*(f"scale {n}" for n in NAMES), *(f"abs(μ / σ) {n}" for n in NAMES)])
    print(f"| run | epoch | {head} |")
    print("| --- " * (2 + 2 * len(LEVELS)) + "|")
    for path in args.runs:
        print(noise(path, args.images))


if __name__ == "__main__":
    main()
