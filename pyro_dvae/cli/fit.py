"""``pyro-dvae fit``: train one VAE."""

from __future__ import annotations

import time
from pathlib import Path

import click
from click.core import ParameterSource

from ..config import RESUMABLE_FIELDS
from ..errors import RunDirError
from ..naming import run_name
from ..wording import plural
from .main import (
    PROGRESS_HELP,
    cli,
    data_dir_option,
    device_option,
    interrupted_line,
    log_line,
    set_threads,
    threads_option,
)
from .options import config_from, config_options


@cli.command()
@config_options()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write into: the run directory [default: runs/<run name>-<time>, e.g. "
    "runs/logitnormal-d20-a1-<time>].",
)
@click.option(
    "--resume",
    "resume_dirs",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Continue the run in this directory (--epochs may be raised). Given several "
    "times: train those runs as one group (same shapes; docs/groups.md).",
)
@data_dir_option
@device_option()
@threads_option
@click.option("--progress/--no-progress", default=True, show_default=True, help=PROGRESS_HELP)
@click.pass_context
def fit(ctx: click.Context, out, resume_dirs, data_dir, device, threads, progress, **options):
    """Train one VAE and write its run directory."""
    from ..fit_resume import fit as fit_run
    from ..fit_resume import resume as resume_run
    from ..fit_resume import resume_group
    from ..train import TrainingInterrupted

    set_threads(threads)

    given = {k for k in options if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    resume_dir = resume_dirs[0] if resume_dirs else None
    try:
        if resume_dirs:
            if out is not None:
                raise click.UsageError("give either --out or --resume, not both")
            for path in resume_dirs:
                _check_unchanged(path, options, given)
            changes = {k: options[k] for k in given & RESUMABLE_FIELDS}
            if len(resume_dirs) > 1:
                if "guide" in given:
                    raise click.UsageError("a group trains the families' own guides (no --guide)")
                return _group_done(
                    resume_group(resume_dirs, data_dir, device, progress, log_line, **changes),
                    resume_dirs,
                )
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
        again = " ".join(f"--resume {p}" for p in resume_dirs) or f"--resume {out}"
        where = f"after epoch {err.epoch}; continue with: pyro-dvae fit {again}"
        click.echo(interrupted_line(err.signum, where), err=True)
        return err.exit_code
    msg = f"done: {plural(summary['epochs_completed'], 'epoch')}{_scores(summary)}"
    click.echo(f"{msg}; run directory {out}", err=True)
    return 0


def _scores(summary: dict) -> str:
    """The last evaluation in words: test -ELBO and how many units are active (runs from
    before ``latent_units`` was recorded give the -ELBO alone)."""
    final = summary.get("final_test", {})
    if not final:
        return ""
    said = f", test -ELBO {final['test_loss']:.2f}"
    if "test_active_units" in final and "test_latent_units" in final:
        said += f", {final['test_active_units']} of {final['test_latent_units']} units active"
    return said


def _check_unchanged(path: Path, options: dict, given: set[str]) -> None:
    """Flags that define a run must match the stored run's values when given again."""
    from ..rundir import RunDir

    stored = RunDir.open(path, need_checkpoint=False).read_config()
    clash = [k for k in sorted(given - RESUMABLE_FIELDS) if options[k] != getattr(stored, k)]
    if clash:
        k = clash[0]
        raise RunDirError(
            f"{path} was trained with --{k.replace('_', '-')} {getattr(stored, k)}; "
            f"it cannot be resumed with {options[k]} "
            "(only --epochs, --eval-every, --compile and --log may change)"
        )


def _group_done(summaries: list[dict], paths: tuple[Path, ...]) -> int:
    """One line per member; exit status 1 if any member failed."""
    for path, summary in zip(paths, summaries, strict=True):
        epochs = plural(summary.get("epochs_completed", 0), "epoch")
        click.echo(f"{path}: {summary['status']}, {epochs}{_scores(summary)}", err=True)
    return 1 if any(s["status"] == "failed" for s in summaries) else 0
