"""``pyro-dvae evaluate``: score trained runs on the test set."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import click

from ..errors import PyroDvaeError, RunDirError
from ..evaluation import DISCRETE_K
from ..rundir import find_runs
from .main import (
    GUIDE_HELP,
    PROGRESS_HELP,
    SEED_HELP,
    cli,
    data_dir_option,
    device_option,
    log_line,
    set_threads,
    threads_option,
)


def run_dirs(paths: tuple[Path, ...]) -> list[Path]:
    """Run directories named directly, or found one or two levels below a sweep directory."""
    found: list[Path] = []
    for path in paths:
        below = find_runs(path)
        if not below:
            raise RunDirError(f"{path} is neither a run directory nor a folder of runs")
        found.extend(below)
    return found


#: the legend of a table with an "as trained" row
AS_TRAINED = (
    "as trained: the test -ELBO of the objective the run minimised (the relaxed codes, its "
    "estimator's analytic KL); the run's own row scores the relaxed codes with the relaxed "
    "densities' Monte Carlo KL; hard codes: the discrete model it stands for."
)


def _as_trained(row: dict) -> float | None:
    """The test −ELBO a relaxed run trained on, where its KL is not the relaxed densities'
    (Jang et al.'s analytic KL of the codes): else None, the run's own row being it."""
    trained = row.get("discrete", {}).get("relaxed_test_loss")
    if trained is None or math.isclose(trained, row["test_loss"], rel_tol=1e-9):
        return None
    return trained


def _table(rows: list[dict]) -> str:
    # the -ELBO here is the mean of k draws per image; training's (and report's) draws one
    head = ["run", "epoch", "-ELBO, k draws", "recon", "KL", "log p(x)", "k", "active units"]
    head += ["kNN acc"]
    lines = [head]
    for r in rows:
        lines.append(
            [
                Path(r["run"]).name,
                str(r["epoch"]),
                f"{r['test_loss']:.2f}",
                f"{r['test_recon']:.2f}",
                f"{r['test_kl']:.2f}",
                f"{r['test_log_likelihood']:.2f}",
                str(r["k"]),
                f"{r['active_units']}/{r['latent_units']}",
                f"{r['knn_accuracy']:.3f}",
            ]
        )
        if "exact" in r:  # a categorical run: the −ELBO summed over every code
            e = r["exact"]
            lines.append(
                ["  exact, all codes", "", f"{e['test_loss']:.2f}", f"{e['test_recon']:.2f}"]
                + [f"{e['test_kl']:.2f}", "", "", "", ""]
            )
        if "discrete" in r:  # the discrete model behind a relaxed run
            d = r["discrete"]
            if (trained := _as_trained(r)) is not None:
                recon = r["test_recon"]
                lines.append(
                    ["  as trained", "", f"{trained:.2f}", f"{recon:.2f}"]
                    + [f"{trained - recon:.2f}", "", "", "", ""]
                )
            lines.append(
                [
                    "  hard codes",
                    "",
                    f"{d['test_loss']:.2f}",
                    f"{d['test_recon']:.2f}",
                    f"{d['test_kl']:.2f}",
                    f"{d['test_log_likelihood']:.2f}",
                    str(d.get("k", r["k"])),
                    "",
                    "",
                ]
            )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in lines
    )


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--k",
    type=int,
    default=5000,
    show_default=True,
    help="Importance samples per image for the IWAE log-likelihood (Burda et al.: 5000).",
)
@click.option(
    "--images",
    type=int,
    default=0,
    show_default=True,
    help="First N test images: those the -ELBO and IWAE score (0: all; the active units and "
    "kNN accuracy use all).",
)
@click.option(
    "--neighbors", type=int, default=5, show_default=True, help="k of the kNN classifier."
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help=SEED_HELP.format("the posterior draws, and the training images' binarisation (kNN)"),
)
@click.option(
    "--skip-done/--redo",
    default=False,
    show_default=True,
    help="Skip runs whose evaluation.json is of the latest epoch with at least this --k and "
    "--images (k = 5000 on all images covers k = 1000 on 1000).",
)
@click.option(
    "--discrete-k",
    type=click.IntRange(min=1),
    default=None,
    help="IWAE samples per image for the discrete model behind a relaxed run (hard codes) "
    f"[default: the smaller of --k and {DISCRETE_K}].",
)
@click.option("--guide", default=None, help=GUIDE_HELP)
@data_dir_option
@device_option()
@threads_option
@click.option("--progress/--no-progress", default=True, show_default=True, help=PROGRESS_HELP)
def evaluate(
    paths,
    k,
    images,
    neighbors,
    seed,
    skip_done,
    discrete_k,
    guide,
    data_dir,
    device,
    threads,
    progress,
):
    """Evaluate trained runs; write evaluation.json in each.

    PATHS are run directories or sweep directories holding runs. Each run gets
    its test -ELBO and parts averaged over k posterior samples, the IWAE
    log-likelihood bound with k samples, the number of active latent units, and
    the accuracy of a kNN classifier on the posterior means. Runs whose codes
    relax a discrete model (Concrete: one-hot codes; Logit-normal: the bits
    1[y > 0]; every bernoulli run) also get that model's -ELBO (analytic KL to
    the uniform prior) and IWAE with --discrete-k samples, and the relaxation
    gap to their own -ELBO. Categorical runs
    (at most 1024 codes) also get their exact -ELBO, summed over every code.

    A stopped evaluation (Ctrl-C, SIGTERM) keeps the progress of its IWAE passes
    in evaluation.partial.pt; the same command started again continues them and
    gives the numbers an uninterrupted one would have given.

    A damaged run is reported and the others are evaluated; the command then
    exits non-zero, listing the runs that failed.
    """
    from ..evaluation import check_options, evaluate_run, evaluation_is_current, read_evaluation

    check_options(k, images, neighbors)
    set_threads(threads)
    log_once = functools.cache(log_line)  # a tip that every run's pass gives, said once
    rows, failed = [], []
    found = run_dirs(paths)
    for path in found:
        if skip_done and evaluation_is_current(path, k, images, discrete_k):
            log_line(f"{path}: evaluation of its latest epoch with k={k} is up to date")
            rows.append(read_evaluation(path))
            continue
        if len(found) > 1:
            log_line(f"evaluating {path} (k={k})")
        try:
            rows.append(
                evaluate_run(
                    path,
                    data_dir,
                    device,
                    k,
                    images,
                    neighbors,
                    seed,
                    progress,
                    guide,
                    log_once,
                    discrete_k,
                )
            )
        except PyroDvaeError as err:
            if len(found) == 1:
                raise
            log_line(f"[FAILED] {path}: {err}")
            failed.append(path)
    if rows:
        click.echo(_table(rows))
        if any(_as_trained(r) is not None for r in rows):
            click.echo(AS_TRAINED)
    if failed:
        names = ", ".join(p.name for p in failed)
        raise RunDirError(f"{len(failed)} of {len(found)} runs could not be evaluated: {names}")
