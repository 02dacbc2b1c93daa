"""``pyro-dvae show``, ``sample`` and ``curves``: pictures of trained runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ..errors import RunDirError
from ..run_pictures import SHOW_DEFAULTS as SHOW
from ..wording import plural
from .main import (
    GUIDE_HELP,
    PICTURES_ON_CPU,
    cli,
    data_dir_option,
    device_option,
    log_line,
    set_threads,
    threads_option,
)
from .options import renamed

#: the figure formats ``curves`` writes (matplotlib's, by the suffix of --file; none: PNG)
FIGURE_FORMATS = ("png", "pdf", "svg")
#: why ``show``'s --images became --reconstructions, and ``curves``' and ``sample``'s --out --file
REUSED_IMAGES = "--images is the first N test images scored in evaluate, sweep and plot"
REUSED_OUT = "--out is the folder written into in every other command"


def _count(flag: str, default: int, help: str):
    """A positive integer option."""
    return click.option(
        flag, type=click.IntRange(min=1), default=default, show_default=True, help=help
    )


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write into: the PNGs and their README [default: RUN_DIR/pictures].",
)
@_count("--samples", SHOW["samples"], "Prior draws: the images of the sample grid.")
@_count("--cols", SHOW["cols"], "Images per row of the sample grid.")
@click.option(
    "--binary/--no-binary",
    default=SHOW["binary"],
    show_default=True,
    help="Binary images: also one 0/1 draw per pixel beside the Bernoulli means.",
)
@_count(
    "--reconstructions", SHOW["reconstructions"], "Test images reconstructed, picked by --seed."
)
@renamed(
    "--images", "--reconstructions", "reconstructions", REUSED_IMAGES, type=click.IntRange(min=1)
)
@_count(
    "--units",
    SHOW["units"],
    "Traversals: the most active units (Concrete, categorical: variables) to sweep; all of "
    "them when the model has fewer.",
)
@_count(
    "--steps",
    SHOW["steps"],
    "Traversals: values per unit (Concrete, categorical: its K categories).",
)
@_count(
    "--activity-images", SHOW["activity_images"], "Test images that rank the units by activity."
)
@click.option(
    "--seed",
    type=int,
    default=SHOW["seed"],
    show_default=True,
    help="Random seed: picks the prior draws and the test images.",
)
@click.option("--guide", default=None, help=GUIDE_HELP)
@data_dir_option
@device_option("cpu", PICTURES_ON_CPU)
@threads_option
def show(run_dir, out, guide, device, threads, **options):
    """Pictures of one run: samples from the prior, test digits beside their
    reconstructions, traversals of the most active latent units, and the training
    curves (train and test -ELBO, reconstruction and KL per epoch; the temperature of
    annealed Concrete runs). Concrete runs also get samples of the categorical model the
    relaxation stands for. A run without checkpoint.pt (a committed results folder) gets
    its curves. The PNGs go to --out with a README naming the command."""
    from ..run_pictures import show_run

    set_threads(threads)
    out = out if out is not None else Path(run_dir) / "pictures"
    # the command line as typed (in-process callers, such as tests, get the short form)
    typed = sys.argv[1:2] == ["show"]
    command = ["pyro-dvae", *sys.argv[1:]] if typed else ["pyro-dvae", "show", str(run_dir)]
    ctx = click.get_current_context()
    typed = {  # a count cut to what there is is said when it was asked for, not defaulted
        f"--{name.replace('_', '-')}"
        for name in options
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }

    def said(note: str) -> None:
        if note.split()[1] in typed:
            log_line(note)

    written, note = show_run(run_dir, out, options, command, device, guide, said)
    if note:
        log_line(f"note: {note}")
    for path in written:
        log_line(f"written: {path}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--file",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File to write: .png (a grid of the images) or .pt (a tensor).",
)
@renamed("--out", "--file", "out", REUSED_OUT, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-n",
    "--samples",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Prior draws: the images written.",
)
@_count("--cols", 8, "Images per row of the sample grid.")
@click.option(
    "--binary/--no-binary",
    default=False,
    show_default=True,
    help="Binary images: one 0/1 draw per pixel instead of the Bernoulli means.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed: picks the prior draws."
)
@click.option("--guide", default=None, help=GUIDE_HELP)
@device_option("cpu", PICTURES_ON_CPU)
@threads_option
def sample(run_dir, out, samples, cols, binary, seed, guide, device, threads):
    """Images of one run drawn from its prior and decoded, as a grid image (--file
    NAME.png) or a tensor file (--file NAME.pt: an (n, h, w) float32 tensor, read by
    torch.load(path, weights_only=True)): pixel probabilities (the Bernoulli means), or
    0/1 pixels with --binary."""
    from ..sampling import write_samples

    if out is None:
        raise click.UsageError("give --file NAME.png or NAME.pt: the file to write")
    set_threads(threads)
    what = write_samples(run_dir, out, samples, binary, seed, cols, device, guide)
    log_line(f"written: {out} ({what})")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--file",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("curves.png"),
    show_default=True,
    help="File to write: the figure, .png, .pdf or .svg.",
)
@renamed("--out", "--file", "out", REUSED_OUT, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="A legend label per run, in order (repeat the option) [default: run names].",
)
@click.option(
    "--title", default="", help="The figure's title [default: the runs' count and dataset]."
)
@click.option(
    "--split",
    type=click.Choice(["both", "train", "test"]),
    default="both",
    show_default=True,
    help="Which curves to draw.",
)
def curves(paths, out, labels, title, split):
    """Several runs' curves in one figure: -ELBO, reconstruction and KL per epoch (train
    dashed, test solid) and the temperature where a run records one. PATHS are run
    directories or sweep folders holding runs; no weights are needed."""
    from ..plotting import save_figure
    from ..rundir import RunDir
    from ..training_curves import draw_curves
    from .evaluate import run_dirs

    suffix = out.suffix.lower().lstrip(".")
    if suffix and suffix not in FIGURE_FORMATS:
        formats = ", ".join(f".{f}" for f in FIGURE_FORMATS[:-1]) + f" or .{FIGURE_FORMATS[-1]}"
        raise click.BadParameter(
            f"{out} is a .{suffix} file; a figure is written as {formats}", param_hint="--file"
        )
    found = run_dirs(paths)
    if labels and len(labels) != len(found):
        raise click.BadParameter(
            f"{len(labels)} labels for {len(found)} runs", param_hint="--label"
        )
    runs, datasets = [], set()
    for i, path in enumerate(found):
        run = RunDir(path)
        datasets.add(run.read_config().dataset)  # one whose config does not read is not drawn
        records = run.read_metrics()
        if not records:
            raise RunDirError(f"{path} has no epochs in metrics.jsonl yet")
        runs.append((labels[i] if labels else path.name, records))
    splits = ("train", "test") if split == "both" else (split,)
    title = title or f"{plural(len(runs), 'run')} on {', '.join(sorted(datasets))}"
    log_line(f"written: {save_figure(draw_curves(runs, title, splits), out)}")
