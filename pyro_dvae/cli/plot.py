"""``pyro-dvae plot``: the paper's figures from a sweep folder."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import DATASETS
from .main import (
    GUIDE_HELP,
    PICTURES_ON_CPU,
    SEED_HELP,
    cli,
    data_dir_option,
    device_option,
    log_line,
    set_threads,
    threads_option,
)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of sizes") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("sizes must be >= 1")
    return sizes


@cli.command()
@click.argument("sweep_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write into: the PNG files [default: SWEEP_DIR/figures].",
)
@click.option(
    "--figure",
    "names",
    multiple=True,
    type=click.Choice(["fig2", "fig3", "fig4", "fig5", "fig6", "curves"]),
    help="Draw only these (repeat the option) [default: all].",
)
@click.option(
    "--dataset",
    type=click.Choice(sorted(DATASETS)),
    default=None,
    help="Dataset: draw its runs [default: the folder's only dataset, else MNIST].",
)
@click.option("--sizes", default="4,40", show_default=True, help="Figure 2: latent sizes.")
@click.option("--tsne-size", type=int, default=8, show_default=True, help="Figure 3: size.")
@click.option(
    "--tsne-alpha", type=float, default=0.32, show_default=True, help="Figure 3: Logit-normal α."
)
@click.option(
    "--images",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First N test images: those Figure 3 encodes (0: all).",
)
@click.option("--hist-size", type=int, default=40, show_default=True, help="Figure 4: size.")
@click.option(
    "--grid",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Figure 5: cells per side.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help=SEED_HELP.format("Figure 3's t-SNE")
)
@click.option("--guide", default=None, help=GUIDE_HELP)
@data_dir_option
@device_option("cpu", PICTURES_ON_CPU)
@threads_option
def plot(
    sweep_dir,
    out,
    names,
    dataset,
    sizes,
    tsne_size,
    tsne_alpha,
    images,
    hist_size,
    grid,
    seed,
    guide,
    data_dir,
    device,
    threads,
):
    """Figures 2-6 of the paper as PNG files: reconstruction curves (2), t-SNE of
    the test encodings (3), one latent dimension's histogram (4), the decoded 2-D
    latent space (5), Logit-normal densities (6), and the test -ELBO per epoch of
    Table 3's models (curves)."""
    from ..paper_figures import make_figures
    from ..rundir import refuse_run_folder

    refuse_run_folder(sweep_dir, "plot", f"pyro-dvae show {sweep_dir}")
    set_threads(threads)
    notes: dict[Path, list[str]] = {}
    paths = make_figures(
        sweep_dir,
        out if out is not None else sweep_dir / "figures",
        list(names) or None,
        notes,
        dataset,
        log_line,
        sizes=_sizes(sizes),
        tsne_size=tsne_size,
        tsne_alpha=tsne_alpha,
        images=images,
        hist_size=hist_size,
        grid=grid,
        seed=seed,
        guide=guide,
        data_dir=data_dir,
        device=device,
    )
    for path in paths:
        empty = f" (empty panels: {'; '.join(notes[path])})" if path in notes else ""
        log_line(f"written: {path}{empty}")
