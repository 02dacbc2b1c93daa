"""``pyro-dvae report``: the paper's tables from a sweep folder."""

from __future__ import annotations

from pathlib import Path

import click

from .main import cli


@cli.command()
@click.argument("sweep_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write into: report.md and the CSV files [default: SWEEP_DIR/report].",
)
def report(sweep_dir: Path, out: Path | None) -> None:
    """Tables 1-3 of the paper (train and test, beside the paper's numbers), the IWAE
    log-likelihoods in the same layout, and a table of every run."""
    from ..report import build_report
    from ..rundir import refuse_run_folder

    refuse_run_folder(sweep_dir, "report", f"pyro-dvae evaluate {sweep_dir}")
    path = build_report(sweep_dir, out)
    click.echo(path.read_text())
    click.echo(f"written: {path.parent}", err=True)
