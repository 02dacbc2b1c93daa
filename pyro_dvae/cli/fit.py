"""``pyro-dvae fit``: train one VAE."""

from __future__ import annotations

import time
from pathlib import Path

import click
from click.core import ParameterSource

from ..config import RESUMABLE_FIELDS
from ..data import ENV_DATA
from ..errors import RunDirError
from ..naming import run_name
from .group import cli, interrupted_line, log_line, set_threads
from .options import config_from, config_options


@cli.command()
@config_options()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory [default: runs/<run name>-<time>, e.g. runs/logitnormal-d20-a1-<time>].",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this directory (--epochs may be raised).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Dataset root [default: ${ENV_DATA}, else ~/.cache/pyro-dvae].",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
@click.pass_context
def fit(ctx: click.Context, out, resume_dir, data_dir, device, threads, progress, **options):
    """Train one VAE and write its run directory."""
    from ..runs import fit as fit_run
    from ..runs import resume as resume_run
    from ..train import TrainingInterrupted

    set_threads(threads)

    given = {k for k in options if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    try:
        if resume_dir is not None:
            if out is not None:
                raise click.UsageError("give either --out or --resume, not both")
            from ..rundir import RunDir

            stored = RunDir.open(resume_dir, need_checkpoint=False).read_config()
            clash = [
                k for k in sorted(given - RESUMABLE_FIELDS) if options[k] != getattr(stored, k)
            ]
            if clash:
                k = clash[0]
                raise RunDirError(
                    f"{resume_dir} was trained with --{k.replace('_', '-')} {getattr(stored, k)}; "
                    f"it cannot be resumed with {options[k]} "
                    "(only --epochs, --eval-every and --jit may change)"
                )
            changes = {k: options[k] for k in given & RESUMABLE_FIELDS}
            guide = options["guide"] if "guide" in given else None  # named here, so trusted
            summary = resume_run(
                resume_dir, data_dir, device, progress, log_line, guide=guide, **changes
            )
            out = resume_dir
        else:
            config = config_from(options)
            out = out or Path("runs") / f"{run_name(config)}-{time.strftime('%Y%m%d-%H%M%S')}"
            summary = fit_run(config, out, data_dir, device, progress, log_line)
    except TrainingInterrupted as err:
        where = (
            f"after epoch {err.epoch}; continue with: pyro-dvae fit --resume {out or resume_dir}"
        )
        click.echo(interrupted_line(err.signum, where), err=True)
        return err.exit_code
    final = summary.get("final_test", {})
    msg = f"done: {summary['epochs_completed']} epochs"
    if final:
        msg += f", test -ELBO {final['test_loss']:.2f}"
    click.echo(f"{msg}; run directory {out}", err=True)
    return 0
