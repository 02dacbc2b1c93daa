"""``pyro-dvae leaderboard``: the discrete estimators' table and plot from sweep folders."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from .main import cli


@cli.command()
@click.argument(
    "sweep_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False)
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write into: leaderboard.csv, leaderboard.md and leaderboard.png "
    "[default: the first SWEEP_DIR's leaderboard/].",
)
def leaderboard(sweep_dirs: tuple[Path, ...], out: Path | None) -> None:
    """The discrete-estimator leaderboard of the bernoulli, categorical and relaxed runs
    below SWEEP_DIRS (evaluated with `pyro-dvae evaluate`): one row per model and
    estimator, scored as the discrete model it stands for, mean and sd over seeds."""
    from ..leaderboard import write_leaderboard
    from ..rundir import refuse_run_folder

    for d in sweep_dirs:
        if not d.is_dir():
            raise click.BadParameter(f"{d} is not a folder", param_hint="SWEEP_DIRS")
        refuse_run_folder(d, "leaderboard", f"pyro-dvae evaluate {d}")
    out = out or sweep_dirs[0] / "leaderboard"
    command = "pyro-dvae " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    paths = write_leaderboard(list(sweep_dirs), out, command)
    click.echo(paths[1].read_text())
    click.echo(f"written: {', '.join(str(p) for p in paths)}", err=True)
