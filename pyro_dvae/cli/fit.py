"""``pyro-dvae fit``: train one VAE."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

import click
from click.core import ParameterSource

from ..config import KL_OBJECTIVES, RESUMABLE_FIELDS, FitConfig
from ..data import DATASETS, ENV_DATA
from ..errors import RunDirError
from ..families import FAMILIES
from ..inference import ELBOS
from .group import cli, interrupted_line, log_line, set_threads

_DEFAULTS = FitConfig()


def _default_out(cfg: FitConfig) -> Path:
    name = f"{cfg.family}-{cfg.dataset}-d{cfg.latent_dim}"
    if cfg.family == "logitnormal":
        name += f"-a{cfg.alpha:g}"
    if cfg.family == "concrete":
        name += f"x{cfg.categories}"
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@cli.command()
@click.option(
    "--family",
    type=click.Choice(sorted(FAMILIES)),
    default=_DEFAULTS.family,
    show_default=True,
    help="Latent family: posterior and prior.",
)
@click.option(
    "--latent-dim",
    type=int,
    default=_DEFAULTS.latent_dim,
    show_default=True,
    help="Latent size; for concrete, the number of categorical variables.",
)
@click.option(
    "--alpha",
    type=float,
    default=_DEFAULTS.alpha,
    show_default=True,
    help="Logit-normal prior variance: p(z) = LN(0, alpha I).",
)
@click.option(
    "--categories",
    type=int,
    default=_DEFAULTS.categories,
    show_default=True,
    help="Concrete: classes per categorical variable.",
)
@click.option(
    "--temperature",
    type=float,
    default=_DEFAULTS.temperature,
    show_default=True,
    help="Concrete: posterior temperature (initial value when annealed).",
)
@click.option(
    "--prior-temperature",
    type=float,
    default=_DEFAULTS.prior_temperature,
    show_default=True,
    help="Concrete: prior temperature.",
)
@click.option(
    "--anneal-rate",
    type=float,
    default=_DEFAULTS.anneal_rate,
    show_default=True,
    help="Concrete: temperature = max(min, initial * exp(-rate * step)); 0 keeps it fixed.",
)
@click.option(
    "--min-temperature",
    type=float,
    default=_DEFAULTS.min_temperature,
    show_default=True,
    help="Concrete: floor of the annealed temperature.",
)
@click.option(
    "--kl",
    type=click.Choice(sorted(KL_OBJECTIVES)),
    default=_DEFAULTS.kl,
    show_default=True,
    help="Concrete: relaxed (Maddison et al., Monte Carlo) or discrete (Jang et al.: analytic "
    "KL of the underlying categoricals; needs --elbo analytic).",
)
@click.option(
    "--guide",
    default=_DEFAULTS.guide,
    help="Your own guide: package.module:factory or file.py:factory, called as "
    "factory(family, input_dim, hidden) -> nn.Module (see the README).",
)
@click.option(
    "--hidden",
    type=int,
    default=_DEFAULTS.hidden,
    show_default=True,
    help="Width of the two hidden layers of encoder and decoder.",
)
@click.option(
    "--dataset",
    type=click.Choice(sorted(DATASETS)),
    default=_DEFAULTS.dataset,
    show_default=True,
    help="digits needs no download (scikit-learn ships it).",
)
@click.option(
    "--subset",
    type=int,
    default=_DEFAULTS.subset,
    show_default=True,
    help="Use only the first N training and test images (0: all).",
)
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True)
@click.option(
    "--lr", type=float, default=_DEFAULTS.lr, show_default=True, help="ClippedAdam learning rate."
)
@click.option(
    "--clip-norm",
    type=float,
    default=_DEFAULTS.clip_norm,
    show_default=True,
    help="ClippedAdam: each gradient element is clipped to [-c, c].",
)
@click.option(
    "--elbo",
    type=click.Choice(sorted(ELBOS)),
    default=_DEFAULTS.elbo,
    show_default=True,
    help="trace: Trace_ELBO, Monte Carlo KL (the paper); analytic: TraceMeanField_ELBO.",
)
@click.option(
    "--num-particles",
    type=int,
    default=_DEFAULTS.num_particles,
    show_default=True,
    help="Samples per image in the ELBO estimate.",
)
@click.option(
    "--jit/--no-jit",
    default=_DEFAULTS.jit,
    show_default=True,
    help="Compile the ELBO with torch.jit.trace (one graph per batch shape).",
)
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option(
    "--eval-every",
    type=int,
    default=_DEFAULTS.eval_every,
    show_default=True,
    help="Evaluate the test -ELBO every N epochs (and after the last).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory [default: runs/<family>-<dataset>-d<dim>-<time>].",
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
    from ..train import TrainingInterrupted
    from ..train import fit as fit_run
    from ..train import resume as resume_run

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
            config = FitConfig(**{f.name: options[f.name] for f in fields(FitConfig)}).validate()
            out = out or _default_out(config)
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
