#!/usr/bin/env python
"""Test −ELBO (and reconstruction) per epoch of any run directories, side by side, as one PNG.

    python scripts/plot_curves.py RUN_DIR [RUN_DIR ...] --out curves.png [--label NAME ...]

Each run's ``metrics.jsonl`` is read as written; epochs without a test evaluation are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_dvae.rundir import RunDir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", action="append", default=[], help="one per run, in order")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.runs):
        parser.error(f"{len(args.label)} labels for {len(args.runs)} runs")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, path in enumerate(args.runs):
        records = [r for r in RunDir(path).read_metrics() if "test_loss" in r]
        if not records:
            print(f"error: {path} has no test evaluations in metrics.jsonl", file=sys.stderr)
            return 1
        label = args.label[i] if args.label else path.name
        epochs = [r["epoch"] for r in records]
        axes[0].plot(epochs, [r["test_loss"] for r in records], label=label)
        axes[1].plot(epochs, [r["test_recon"] for r in records], label=label)
    names = ["test −ELBO (nats)", "test reconstruction −log p(x|z) (nats)"]
    for ax, what in zip(axes, names, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
