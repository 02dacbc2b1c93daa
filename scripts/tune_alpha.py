#!/usr/bin/env python
"""Search the Logit-normal prior variance α with Ray Tune and ASHA (the paper tried four values).

α is drawn log-uniformly from [0.05, 20]; each trial is one pyro-dvae run
(``pyro_dvae.tune.trainable``) reporting its test −ELBO every epoch, and ASHA stops the
trials that fall behind early. Running the same command again after an interruption
continues the search (``Tuner.restore``): finished trials are kept, the others resume
from their last checkpoint.

    pip install ".[ray]"
    python scripts/tune_alpha.py --data-dir ../shared/data --latent-dim 20 --epochs 10 \\
        --samples 12 --out tune-results
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from pyro_dvae.tune import trainable

NAME = "tune-alpha"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10, help="epochs of a trial that ASHA keeps")
    p.add_argument("--samples", type=int, default=12, help="trials (values of alpha)")
    p.add_argument("--low", type=float, default=0.05)
    p.add_argument("--high", type=float, default=20.0)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--subset", type=int, default=0, help="first N train and test images (0: all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cpus-per-trial", type=int, default=1)
    p.add_argument("--grace", type=int, default=2, help="epochs before ASHA may stop a trial")
    p.add_argument("--out", default="tune-results", help="where Tune keeps the search")
    p.add_argument("--seed", type=int, default=0, help="seed of the alpha draws")
    args = p.parse_args()

    space = {
        "family": "logitnormal",
        "alpha": tune.loguniform(args.low, args.high),
        "latent_dim": args.latent_dim,
        "epochs": args.epochs,
        "dataset": args.dataset,
        "subset": args.subset,
        "threads": args.cpus_per_trial,
        "device": "cpu",
        **({"data_dir": str(Path(args.data_dir).resolve())} if args.data_dir else {}),
    }
    storage = str(Path(args.out).resolve())
    train = tune.with_resources(trainable, {"cpu": args.cpus_per_trial})
    path = str(Path(storage) / NAME)
    if tune.Tuner.can_restore(path):
        print(f"continuing the search in {path}")
        tuner = tune.Tuner.restore(path, train, resume_unfinished=True, resume_errored=True)
    else:
        scheduler = ASHAScheduler(max_t=args.epochs, grace_period=args.grace, reduction_factor=3)
        tuner = tune.Tuner(
            train,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="test_loss",
                mode="min",
                num_samples=args.samples,
                scheduler=scheduler,
                search_alg=tune.search.BasicVariantGenerator(random_state=args.seed),
            ),
            run_config=tune.RunConfig(name=NAME, storage_path=storage, verbose=0),
        )
    results = tuner.fit()
    rows = sorted(
        (r.metrics.get("test_loss", float("nan")), r.config["alpha"], r.metrics.get("epoch", 0))
        for r in results
        if r.metrics
    )
    print(f"{len(rows)} trials, size {args.latent_dim}, up to {args.epochs} epochs (ASHA)")
    print("| alpha | epochs run | test -ELBO |")
    print("| --- | --- | --- |")
    for loss, alpha, epochs in sorted(rows, key=lambda r: r[1]):
        print(f"| {alpha:.3g} | {epochs} | {loss:.2f} |")
    if not rows:
        raise SystemExit(f"no trial reported a result; see the trials' errors in {path}")
    full = [r for r in rows if r[2] == max(e for _, _, e in rows)]  # trials ASHA kept to the end
    loss, alpha, epochs = min(full)
    print(f"best of the trials run to {epochs} epochs: alpha = {alpha:.3g}, test -ELBO {loss:.2f}")


if __name__ == "__main__":
    main()
