"""``pyro-dvae compare-estimators``: ELBO estimators side by side at fixed parameters."""

from __future__ import annotations

import math
from pathlib import Path

import click
from click.core import ParameterSource

from ..config import FitConfig, check_family_field
from ..wording import capped, plural
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
from .options import model_options


@cli.command("compare-estimators")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@model_options
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Images per batch: the first N test images, every estimate's batch.",
)
@click.option(
    "--repeats", type=click.IntRange(min=2), default=100, show_default=True, help="Estimates each."
)
@click.option(
    "--num-particles",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Samples per image in the ELBO estimate: the N of trace-N, set beside one-sample "
    "trace (fit's default, the paper's) to show what more samples buy; reparameterised "
    "families only.",
)
@click.option(
    "--iwae", "iwae_k", type=click.IntRange(min=1), multiple=True, help="IWAE k values [5, 50]."
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help=SEED_HELP.format("an untrained model's weights, and every estimate's draws"),
)
@click.option(
    "--iwae-snr",
    "snr_k",
    default="",
    help="Also the encoder's and decoder's gradient SNR of the IWAE bound with the standard, "
    "DReG and STL gradients at these K (comma-separated, e.g. 1,5,50,500), and its plot "
    "against K (iwae_snr.*).",
)
@click.option(
    "--train-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also train one model per objective (trace, trace-N, analytic, discrete-kl) from the "
    "same seed for N epochs and plot their test -ELBO curves.",
)
@click.option(
    "--temperatures",
    default="0.1,0.2,0.5,1,2",
    show_default=True,
    help="Categorical models: the temperatures of the Concrete relaxation compared.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write into: the tables and plots [default: RUN_DIR/estimators; a new "
    "model: ./estimators].",
)
@click.option("--guide", default=None, help=GUIDE_HELP)
@data_dir_option
@device_option()
@threads_option
@click.option("--progress/--no-progress", default=True, show_default=True, help=PROGRESS_HELP)
def compare_estimators(
    run_dir,
    batch_size,
    repeats,
    num_particles,
    iwae_k,
    seed,
    snr_k,
    train_epochs,
    temperatures,
    out,
    guide,
    data_dir,
    device,
    threads,
    progress,
    **model,
):
    """Compare ELBO estimators on one test batch at fixed parameters.

    Trace_ELBO with one and --num-particles samples (Monte Carlo KL),
    TraceMeanField_ELBO (analytic KL where one is registered: Gaussian and
    Logit-normal, not the relaxed Concrete), for Concrete the discrete KL of
    Jang et al., and IWAE bounds. For each: mean and sd of the loss, gradient
    variance (all, encoder, decoder), gradient SNR and time per estimate, as
    Markdown, CSV, JSON and a PNG.

    A categorical or bernoulli model is compared against its exact gradient
    (TraceEnum_ELBO over every code): its estimators by their fit --estimator
    names (score-function: no baseline; reinforce: the decaying baseline; nvil,
    vimco, disarm) and the relaxations at each of --temperatures; per estimator
    the mean squared error to the exact gradient, bias², variance and time, and
    a plot of the error against the temperature.
    """
    import pyro

    from ..data import load_dataset
    from ..devices import resolve_device
    from ..estimator_comparison import compare, default_estimators
    from ..estimator_report import (
        device_note,
        write_comparison,
        write_discrete_comparison,
        write_iwae_snr,
        write_training_curves,
    )
    from ..evaluation import load_run
    from ..families import FAMILIES, make_family
    from ..vae import VAE

    set_threads(threads)
    temperatures = _floats(temperatures)  # refused before any work, whatever the family
    snr_k = _particle_counts(snr_k)
    given = {k: v for k, v in model.items() if v is not None}
    if (run_dir is None) == (model["family"] is None) or (run_dir is not None and given):
        raise click.UsageError(
            "give either RUN_DIR or --family and its options (an untrained model)"
        )
    device = resolve_device(device)
    if run_dir is not None:
        run = load_run(run_dir, device=device, guide=guide)
        vae, config, epoch = run.vae, run.config, run.epoch
        out = out or Path(run_dir) / "estimators"
    else:
        for name in given:  # a family's own option, even at its default, is that family's
            check_family_field(name, given["family"])
        config = FitConfig(**given).validate(new=True)
        vae, epoch = None, 0
        out = out or Path("estimators")
    source = click.get_current_context().get_parameter_source("temperatures")
    if source == ParameterSource.COMMANDLINE and not FAMILIES[config.family].enumerable:
        raise click.UsageError(
            f"--temperatures applies to categorical models; this is a {config.family} model"
        )
    data = load_dataset(config.dataset, data_dir, subset=config.subset)
    x = data.test[:batch_size].to(device)
    whose = f"the {config.dataset} test set's"
    if note := capped("--batch-size", batch_size, x.shape[0], whose, "image"):
        log_line(note)
    if vae is None:  # untrained, sized to the dataset's images
        pyro.set_rng_seed(seed)
        vae = VAE(make_family(config), x.shape[1], config.hidden).to(device)
    if vae.input_dim != x.shape[1]:
        raise click.UsageError(
            f"the model expects {vae.input_dim} pixels, the data has {x.shape[1]}"
        )
    if vae.family.enumerable:
        if snr_k:
            raise click.UsageError("--iwae-snr compares gradients of reparameterised families")
        if train_epochs:
            raise click.UsageError(
                "--train-epochs compares training objectives of reparameterised families; "
                "train a discrete model with fit --estimator (enum, reinforce, ...)"
            )
        from ..discrete_gradients import discrete_estimators

        ests = discrete_estimators(vae, temperatures)
        log_line(f"{len(ests)} estimators x {repeats} gradients on {x.shape[0]} test images")
        head = (
            f"{vae.family.describe()}, {config.dataset}, epoch {epoch}, batch {x.shape[0]}: "
            "gradient estimators"
        )
        note = device_note(device)
        md = write_discrete_comparison(
            vae, x, ests, repeats, seed, out, head, note, progress, clip=config.clip_norm
        )
        click.echo(md)
        log_line(f"written: {out}")
        return
    ests = default_estimators(vae, num_particles, tuple(iwae_k) or (5, 50))
    log_line(f"{len(ests)} estimators x {repeats} estimates on {x.shape[0]} test images")
    rows = compare(vae, x, ests, repeats, seed, progress)
    title = f"{vae.family.describe()}, {config.dataset}, epoch {epoch}, batch {x.shape[0]}"
    title += f", {repeats} repeats"
    title += device_note(device)
    click.echo(write_comparison(rows, out, title, vae.family.describe()))
    if snr_k:
        log_line(f"IWAE gradient SNR: {len(snr_k)} K values x 3 gradients x {repeats} estimates")
        click.echo(write_iwae_snr(vae, x, snr_k, repeats, seed, out, title, progress))
    if train_epochs:
        from ..estimator_comparison import train_side_by_side

        curves = train_side_by_side(
            config, data, train_epochs, num_particles, device, log_line, guide, progress
        )
        write_training_curves(curves, out, f"{vae.family.describe()}, seed {config.seed}")
        for name, curve in curves.items():
            click.echo(f"{name}: test -ELBO after {plural(len(curve), 'epoch')} {curve[-1]:.2f}")
    log_line(f"written: {out}")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a comma-separated list of numbers", param_hint="--temperatures"
        ) from None
    if not all(0 < v < math.inf for v in values):
        raise click.BadParameter(
            "temperatures must be finite numbers > 0", param_hint="--temperatures"
        )
    return values


def _particle_counts(text: str) -> tuple[int, ...]:
    """``--iwae-snr``'s K values (none: not asked)."""
    if not text.strip():
        return ()
    try:
        ks = tuple(int(v) for v in text.split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise click.BadParameter(
            f"{text!r} is not a comma-separated list of whole numbers >= 1", param_hint="--iwae-snr"
        )
    return ks
