"""``pyro-dvae compare-estimators``: ELBO estimators side by side at fixed parameters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
from click.core import ParameterSource

from ..config import FitConfig, check_family_field
from ..wording import capped, plural
from .group import (
    GUIDE_HELP,
    SEED_HELP,
    cli,
    data_dir_option,
    device_option,
    log_line,
    set_threads,
    threads_option,
)
from .options import model_options

_COLUMNS = [
    ("estimator", "estimator", "{}"),
    ("KL", "kl", "{}"),
    ("loss mean", "loss_mean", "{:.3f}"),
    ("loss sd", "loss_sd", "{:.3f}"),
    ("grad var (all)", "grad_var_all", "{:.4g}"),
    ("grad var (encoder)", "grad_var_encoder", "{:.4g}"),
    ("grad var (decoder)", "grad_var_decoder", "{:.4g}"),
    ("grad SNR (all)", "grad_snr_all", "{:.3f}"),
    ("ms / estimate", "seconds", "{:.1f}"),
]


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row[key]
    if key == "kl":
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if key == "seconds":
        value = 1000 * value
    return fmt.format(value)


def estimator_table(rows: list[dict], title: str):
    """The rows as a :class:`~pyro_dvae.table.Table` (Markdown and CSV)."""
    from ..table import Table

    cells = [(r["estimator"], [_cell(r, k, f) for _, k, f in _COLUMNS[1:]]) for r in rows]
    return Table(title, [c[0] for c in _COLUMNS[1:]], cells, first="estimator")


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["estimator"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label in [
        (axes[0], "grad_var_encoder", "gradient variance, encoder (sum over parameters)"),
        (axes[1], "grad_var_decoder", "gradient variance, decoder (sum over parameters)"),
        (axes[2], "grad_snr_all", "mean gradient SNR |E g| / sd(g)"),
    ]:
        ax.bar(names, [r[key] for r in rows], color="tab:blue")
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(axis="x", rotation=45)
        if key.startswith("grad_var"):
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_curves(curves: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import epoch_axis

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    epoch_axis(ax)
    ax.set_ylabel("test −ELBO (one-sample Monte Carlo, nats)")
    ax.set_title(f"training objectives side by side: {title}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@cli.command("compare-estimators")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@model_options
@click.option(
    "--batch-size",
    type=int,
    default=50,
    show_default=True,
    help="Images per batch: the first N test images, every estimate's batch.",
)
@click.option("--repeats", type=int, default=100, show_default=True, help="Estimates each.")
@click.option(
    "--num-particles",
    type=int,
    default=10,
    show_default=True,
    help="Samples per image in the ELBO estimate: the N of trace-N, set beside one-sample "
    "trace (fit's default, the paper's) to show what more samples buy; reparameterised "
    "families only.",
)
@click.option("--iwae", "iwae_k", type=int, multiple=True, help="IWAE k values [5, 50].")
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
    type=int,
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
    from ..estimators import compare, default_estimators
    from ..evaluation import load_run
    from ..families import FAMILIES, make_family
    from ..vae import VAE

    set_threads(threads)
    for name, value, low in [
        ("--batch-size", batch_size, 1),
        ("--repeats", repeats, 2),
        ("--num-particles", num_particles, 1),
        ("--iwae", min(iwae_k, default=1), 1),
        ("--train-epochs", train_epochs, 0),
    ]:
        if value < low:
            raise click.BadParameter(f"must be >= {low}", param_hint=name)
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
        _compare_discrete(vae, x, repeats, seed, temperatures, out, epoch, device)
        return
    ests = default_estimators(vae, num_particles, tuple(iwae_k) or (5, 50))
    log_line(f"{len(ests)} estimators x {repeats} estimates on {x.shape[0]} test images")
    rows = compare(vae, x, ests, repeats, seed)
    title = f"{vae.family.describe()}, epoch {epoch}, batch {x.shape[0]}, {repeats} repeats" + _on(
        device
    )
    from ..fileio import atomic_write_text

    table = estimator_table(rows, title)
    md = table.markdown()
    for r in rows:
        fallback = [site for site, kind in r["kl"].items() if kind == "monte-carlo"]
        if r["estimator"] == "analytic" and fallback:
            md += (
                f"\nNote: no analytic KL is registered for site {', '.join(fallback)} "
                f"({vae.family.describe()}): TraceMeanField_ELBO fell back to Monte Carlo, "
                "so 'analytic' is the same estimator as 'trace' here.\n"
            )
    atomic_write_text(out / "estimators.md", md)
    atomic_write_text(out / "estimators.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "estimators.csv", table.csv())
    _plot(rows, out / "estimators.png", title)
    click.echo(md)
    if snr_k:
        _compare_iwae_snr(vae, x, snr_k, repeats, seed, out, title)
    if train_epochs:
        from ..estimators import train_side_by_side

        curves = train_side_by_side(
            config, data, train_epochs, num_particles, device, log=log_line, guide=guide
        )
        atomic_write_text(out / "training.json", json.dumps(curves, indent=2) + "\n")
        _plot_curves(curves, out / "training.png", f"{vae.family.describe()}, seed {config.seed}")
        for name, curve in curves.items():
            click.echo(f"{name}: test -ELBO after {plural(len(curve), 'epoch')} {curve[-1]:.2f}")
    log_line(f"written: {out}")


def _on(device) -> str:
    """A title's note of the device, off the CPU (the times are that device's)."""
    return "" if device.type == "cpu" else f", on {device}"


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


def _compare_discrete(vae, x, repeats, seed, temperatures, out, epoch, device) -> None:
    """A discrete model's estimators against its exact, enumerated gradient; past 1024 codes,
    their variance, signal-to-noise ratio and time."""
    from .. import discrete_estimators as de
    from ..fileio import atomic_write_text

    ests = de.discrete_estimators(vae, temperatures)
    log_line(f"{len(ests)} estimators x {repeats} gradients on {x.shape[0]} test images")
    head = f"{vae.family.describe()}, epoch {epoch}, batch {x.shape[0]}: gradient estimators"
    if not vae.family.summable:
        rows = de.compare_spread(vae, x, ests, repeats, seed=seed)
        table = de.spread_table(rows, f"{head}, their spread" + _on(device))
        atomic_write_text(out / "estimators.md", table.markdown())
        atomic_write_text(out / "estimators.json", json.dumps(rows, indent=2) + "\n")
        atomic_write_text(out / "estimators.csv", table.csv())
        click.echo(table.markdown())
        log_line(f"written: {out}")
        return
    rows = de.compare_to_exact(vae, x, ests, repeats, seed=seed)
    title = f"{head} against the exact gradient" + _on(device)
    table = de.exact_table(rows, title)
    atomic_write_text(out / "estimators.md", table.markdown())
    atomic_write_text(out / "estimators.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "estimators.csv", table.csv())
    de.plot_mse(rows, out / "gradient_mse.png", title)
    click.echo(table.markdown())
    log_line(f"written: {out}")


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


def _compare_iwae_snr(vae, x, ks, repeats, seed, out, title) -> None:
    """The IWAE gradients' SNR against K: a table (Markdown, CSV, JSON) and a plot."""
    from ..estimators import iwae_gradient_snr
    from ..fileio import atomic_write_text
    from ..table import Table

    log_line(f"IWAE gradient SNR: {len(ks)} K values x 3 gradients x {repeats} estimates")
    rows = iwae_gradient_snr(vae, x, ks, repeats=repeats, seed=seed)
    cells = [
        (
            r["gradient"],
            [str(r["k"]), f"{r['snr_encoder']:.4g}", f"{r['snr_decoder']:.4g}"]
            + [f"{1000 * r['seconds']:.1f}"],
        )
        for r in rows
    ]
    columns = ["K", "encoder SNR", "decoder SNR", "ms / estimate"]
    table = Table(f"IWAE gradient SNR |E g| / sd(g): {title}", columns, cells, first="gradient")
    atomic_write_text(out / "iwae_snr.md", table.markdown())
    atomic_write_text(out / "iwae_snr.csv", table.csv())
    atomic_write_text(out / "iwae_snr.json", json.dumps(rows, indent=2) + "\n")
    _plot_snr(rows, out / "iwae_snr.png", title)
    click.echo(table.markdown())


def _plot_snr(rows: list[dict], path: Path, title: str) -> None:
    """SNR against K, encoder and decoder, one line per gradient (Rainforth et al., Fig. 1);
    gradients whose SNRs are the same (the decoder's: DReG and STL leave it standard) are
    drawn once, named together, so that no line hides under another."""
    from ..plots import figure, save_figure

    fig, axes = figure(1, 2, figsize=(10, 4), layout="tight")
    for ax, side in zip(axes, ("encoder", "decoder"), strict=True):
        series: dict[tuple, list[str]] = {}
        for gradient in dict.fromkeys(r["gradient"] for r in rows):
            mine = [r for r in rows if r["gradient"] == gradient]
            # the same to 4 digits (the table's) is one line: DReG's decoder gradient is the
            # standard one up to rounding in the order of its sums
            points = tuple((r["k"], float(f"{r[f'snr_{side}']:.4g}")) for r in mine)
            series.setdefault(points, []).append(gradient)
        for points, names in series.items():
            ks, snrs = zip(*points, strict=True)
            ax.plot(ks, snrs, "o-", label=" = ".join(names))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (particles)")
        ax.set_ylabel(f"{side} gradient SNR, mean |E g| / sd(g)")
        ax.legend()
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
