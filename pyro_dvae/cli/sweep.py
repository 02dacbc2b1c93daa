"""``pyro-dvae sweep``: a grid of runs, in parallel, resumable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from ..config import FAMILY_PARAMS, PARAMS
from ..signals import signal_of
from ..sweep import PRESETS
from ..sweep.launchers import LAUNCHERS
from ..wording import plural
from .main import (
    THREADS_HELP,
    cli,
    data_dir_option,
    device_option,
    interrupted_line,
    log_line,
)
from .options import config_options

#: runs per group: one process per run, so a run's numbers never depend on its company; on
#: a 2-core CPU groups only break even with --jobs 2 (docs/groups.md), on a GPU they pay
DEFAULT_GROUP_SIZE = 1


@cli.command()
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="A named grid: " + "; ".join(f"{k}: {v[1]}" for k, v in sorted(PRESETS.items())),
)
@config_options(for_sweep=True)
@click.option(
    "--seeds",
    "n_seeds",
    type=click.IntRange(min=1),
    default=None,
    help="Seeds 0 .. N-1 of every run.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write into: the sweep folder [default: sweeps/<preset>, or sweeps/grid].",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs at a time (--backend ray: as many as the cluster holds, unless given).",
)
@click.option(
    "--group-size",
    type=click.IntRange(min=1),
    default=DEFAULT_GROUP_SIZE,
    show_default=True,
    help="Train up to N runs of one shape as one group in one process (docs/groups.md; "
    "for GPUs); 1: one process per run.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help=f"{THREADS_HELP}; each run's [default: cores // jobs].",
)
@click.option(
    "--backend",
    type=click.Choice(sorted(LAUNCHERS)),
    default="local",
    show_default=True,
    help="local: child processes here; ray: one Ray task per run, on a Ray cluster "
    "(docs/cluster.md).",
)
@click.option(
    "--address",
    default=None,
    help="ray: the cluster to join [default: $RAY_ADDRESS, else a local one on this machine].",
)
@click.option(
    "--cpus-per-run",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="ray: CPUs (threads) per run.",
)
@click.option(
    "--gpus-per-run",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="ray: GPUs per run.",
)
@click.option(
    "--evaluate",
    "evaluate_k",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Evaluate each finished run with this many IWAE samples (0: no evaluation).",
)
@click.option(
    "--images",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First N test images: those the evaluation scores (0: all).",
)
@click.option(
    "--discrete-k",
    type=click.IntRange(min=1),
    default=None,
    help="IWAE samples per image for the discrete model behind a relaxed run (hard codes), "
    "when --evaluate scores each run [default: the smaller of --evaluate and 1000].",
)
@data_dir_option
@device_option()
@click.option("--dry-run", is_flag=True, help="Print what each run needs, run nothing.")
def sweep(
    preset,
    n_seeds,
    out,
    jobs,
    group_size,
    threads,
    backend,
    address,
    cpus_per_run,
    gpus_per_run,
    evaluate_k,
    images,
    discrete_k,
    data_dir,
    device,
    dry_run,
    **fields,
):
    """Train a grid of configurations into one folder; run it again to continue.

    The grid is the product of the repeatable options (--family, --latent-dim, and
    each family's own axes: --alpha for logitnormal, --categories for concrete, ...;
    --seed), or a --preset; every other option applies to all runs when given.
    Finished runs are skipped, unfinished ones resumed from their checkpoints,
    missing ones started. A run that fails is reported and the others go on.
    Raising --epochs and running again continues every run to the new length.
    """
    from ..naming import grid, named_grid, with_seeds
    from ..sweep import SweepSettings, plan, run_sweep
    from ..sweep.folder import check_sweep_dir
    from ..sweep.plan import plan_summary
    from ..sweep.settings import check_evaluation

    axes = {k: v for k, v in fields.items() if PARAMS[k].axis and k != "seed" and v}
    common = {k: v for k, v in fields.items() if not PARAMS[k].axis and v is not None}
    seeds = fields["seed"]
    if preset is not None:
        if axes:
            raise click.UsageError("give either --preset or a grid (--family, --latent-dim, ...)")
        configs = PRESETS[preset][0]()
    else:
        if not axes.get("family") or not axes.get("latent_dim"):
            raise click.UsageError("give --preset, or at least one --family and --latent-dim")
        configs = grid(axes)
    for key in common:  # a family's own option applies to that family's runs
        if key in FAMILY_PARAMS and not any(_takes(c, key) for c in configs):
            raise click.UsageError(f"{PARAMS[key].flag} applies to none of the grid's families")
    configs = [
        replace(c, **{k: v for k, v in common.items() if k not in FAMILY_PARAMS or _takes(c, k)})
        for c in configs
    ]
    for config in configs:
        config.validate(new=True)
    if seeds and n_seeds is not None:
        raise click.UsageError("give either --seed (repeated) or --seeds N, not both")
    if seeds or n_seeds:
        configs = with_seeds(configs, seeds or range(n_seeds))
    if backend != "ray" and (address or cpus_per_run != 1 or gpus_per_run):
        raise click.UsageError("--address, --cpus-per-run and --gpus-per-run go with --backend ray")
    check_evaluation(evaluate_k, images, discrete_k)  # before the folder, and for --dry-run
    out = check_sweep_dir(out or Path("sweeps") / (preset or "grid"))
    if dry_run:
        runs = plan(out, named_grid(configs, out), evaluate_k, images, discrete_k)
        for run in runs:
            detail = run.reason or (
                f"{run.epochs_done}/{plural(run.config.epochs, 'epoch')}" if run.epochs_done else ""
            )
            click.echo(f"{run.state:9s} {run.name}  {detail}".rstrip())
        one_per_process = backend == "local" and group_size == 1  # else no time estimate
        click.echo(plan_summary(runs, out, jobs if one_per_process else None))
        return 0
    ctx = click.get_current_context()
    params = ctx.params
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
    description = {"preset": preset, "options": {k: v for k, v in options.items() if v}}
    launcher = None
    if backend == "ray":
        from ..data import default_data_dir
        from ..sweep.launchers import RayLauncher

        if threads is not None:
            raise click.UsageError("with --backend ray, --cpus-per-run sets each run's threads")
        threads = cpus_per_run
        out = out.resolve()  # every node must find the same folder: not relative to its cwd
        data_dir = (data_dir or default_data_dir()).resolve()  # nor the workers' environment
        if not gpus_per_run and device == "auto":
            device = "cpu"  # a run Ray gave no GPU must not take one it was not counted for
        launcher = RayLauncher(address, cpus_per_run, gpus_per_run)  # joined inside the lock
        if ctx.get_parameter_source("jobs") != ParameterSource.COMMANDLINE:
            jobs = None  # as many as the cluster holds
    try:
        settings = SweepSettings(
            jobs=jobs,
            threads=threads,
            data_dir=data_dir,
            device=device,
            evaluate_k=evaluate_k,
            evaluate_images=images,
            evaluate_discrete_k=discrete_k,
            group_size=group_size,
        )
        outcome = run_sweep(out, configs, settings, description, log_line, launcher)
    except KeyboardInterrupt as err:
        signum = signal_of(err)
        click.echo(
            interrupted_line(signum, f"; run the same command again to continue {out}."), err=True
        )
        return 128 + signum
    failed = {k: v for k, v in outcome.items() if v != "finished"}
    click.echo(f"{len(outcome) - len(failed)} of {len(outcome)} runs finished in {out}", err=True)
    for name, why in failed.items():
        click.echo(f"  {name}: {why}", err=True)
    return 1 if failed else 0


def _takes(config, key: str) -> bool:
    """Whether ``config``'s family has the field ``key``."""
    return any(f.name == config.family for f in FAMILY_PARAMS[key][1])
