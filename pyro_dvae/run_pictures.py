"""Pictures of one run: prior samples, reconstructions, latent traversals, training curves.

What a picture shows is computed apart from the drawing (``prior_samples``,
``reconstructions``, ``traversals``; the curves in ``training_curves``), so a test can check
the arrays and that the drawn figure holds exactly them. ``show_run`` writes the four PNGs of
a run and a README with the command that drew them; a run without weights still gets its
curves.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .collapse import last_verdict
from .data import IMAGE_SHAPES, load_dataset
from .errors import RunDirError, StorageError
from .families import FAMILIES
from .families.enumeration import enumerated_reconstructions
from .fileio import atomic_write_text
from .inference import seeded
from .plotting import figure, save_figure
from .rundir import RunDir
from .training_curves import draw_curves
from .vae import VAE
from .wording import capped, plural

#: what each picture of ``show`` holds, for the README beside them
WHAT = {
    "samples.png": "draws from the prior, decoded (Bernoulli means; binary draws with --binary)",
    "reconstructions.png": "test images (indices below) above their reconstructions",
    "traversals.png": "the most active units, each swept alone, the others at the prior's centre",
    "curves.png": "train (dashed) and test (solid) −ELBO, reconstruction and KL per epoch",
}
#: ``samples.png`` of a relaxed run (Concrete, a relaxed estimator): its two priors' panels
RELAXED_SAMPLES = WHAT["samples.png"].replace("the prior", "two priors") + (
    ": the relaxed prior the run trains with, and the discrete prior (hard codes: one-hot or "
    "bits) of the discrete model it stands for, whose −ELBO is the 'hard codes' one"
)

#: ``pyro-dvae show``'s settings (the options of :func:`show_run`), as its CLI defaults them
SHOW_DEFAULTS = {
    "samples": 64,
    "cols": 8,
    "binary": False,
    "reconstructions": 12,
    "units": 8,
    "steps": 10,
    "activity_images": 1000,
    "seed": 0,
    "data_dir": None,
}


@dataclass
class Panel:
    """Images (rows, cols, h, w) in [0, 1] with a title and optional row/column labels."""

    title: str
    images: np.ndarray
    row_labels: list[str] | None = None
    col_labels: list[str] | None = None
    x_label: str | None = None  #: what the column labels are

    @property
    def gap(self) -> int:
        """Pixels between neighbouring images: a tenth of an image, at least one."""
        return max(1, min(self.images.shape[2:]) // 10)

    def canvas(self) -> np.ndarray:
        """The images tiled into one array, ``gap`` pixels of NaN between them (drawn as
        the figure's background): what the figure shows. Image (r, c) starts at row
        r·(h + gap) and column c·(w + gap)."""
        rows, cols, h, w = self.images.shape
        g = self.gap
        padded = np.pad(
            self.images.astype(np.float64), ((0, 0), (0, 0), (0, g), (0, g)), constant_values=np.nan
        )
        return padded.transpose(0, 2, 1, 3).reshape(rows * (h + g), cols * (w + g))[:-g, :-g]


def tiled(images: torch.Tensor, cols: int, shape: tuple[int, int]) -> np.ndarray:
    """(n, h·w) pixel probabilities → (rows, cols, h, w); the last row is filled up with NaN
    images, drawn as background."""
    n = images.shape[0]
    rows = -(-n // cols)
    flat = torch.full((rows * cols, shape[0] * shape[1]), float("nan"))
    flat[:n] = images.detach().float().cpu()
    return flat.reshape(rows, cols, *shape).numpy()


# --------------------------------------------------------------------------- the arrays


@torch.no_grad()
def prior_samples(
    vae: VAE, n: int, seed: int, discrete: bool = False, binary: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws z from the prior and their decoded images (Bernoulli means, or with
    ``binary`` one Bernoulli draw per pixel). ``discrete``: the prior of the discrete
    model a relaxed family stands for (one-hot codes, bits)."""
    model = vae.with_family(vae.family.discrete()) if discrete else vae
    return model.sample(n, binary=binary, seed=seed, return_z=True)


def pick_test_images(
    dataset: str, data_dir, count: int, seed: int
) -> tuple[list[int], torch.Tensor]:
    """``count`` test images picked by ``seed`` (the test set's one fixed binarisation)."""
    return _pick(load_dataset(dataset, data_dir).test, count, seed)


def _pick(test: torch.Tensor, count: int, seed: int) -> tuple[list[int], torch.Tensor]:
    order = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(seed))
    indices = sorted(order[:count].tolist())
    return indices, test[indices]


@torch.no_grad()
def reconstructions(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Pixel probabilities decoded from the posterior mean code E_q[decoder input | x]; for a
    categorical latent (whose decoder only ever sees one-hot codes) the posterior mean image
    Σ_c q(c | x) E[x | c] over its codes instead (``enumerated_reconstructions``)."""
    x = x.to(next(vae.decoder.parameters()).device)
    if vae.family.enumerable and not vae.family.relaxed:
        return enumerated_reconstructions(vae, x)
    with seeded(0):  # Concrete codes are Monte Carlo means
        code = vae.family.code_mean(vae.encode(x))
    return torch.sigmoid(vae.decoder(code))


@torch.no_grad()
def most_active_units(vae: VAE, x: torch.Tensor, count: int) -> tuple[list[int], torch.Tensor]:
    """The ``count`` units whose mean code varies most over the images ``x``, and every
    unit's activity (Burda et al.'s statistic, per unit of the family)."""
    x = x.to(next(vae.decoder.parameters()).device)
    with seeded(0):
        codes = vae.family.code_mean(vae.encode(x)).flatten(1)
    activity = vae.family.unit_activity(codes).cpu()
    order = activity.argsort(descending=True)[:count]
    return order.tolist(), activity


@torch.no_grad()
def traversals(
    vae: VAE, units: list[int], steps: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """For each unit, codes sweeping it alone (``LatentFamily.traversal``) and their images:
    z (units, steps, ...), images (units, steps, pixels), the labels of the steps."""
    like = next(vae.decoder.parameters()).new_zeros(1)
    codes, labels = zip(*(vae.family.traversal(u, steps, like) for u in units), strict=True)
    z = torch.stack(codes)
    images = vae.decode(z.flatten(0, 1)).reshape(len(units), z.shape[1], -1)
    return z, images, list(labels[0])


# --------------------------------------------------------------------------- drawing


def draw_panels(panels: list[Panel], title: str, cell: float = 0.42):
    """The panels side by side, each as one tiled image with its labels."""
    from matplotlib import colormaps

    grey = colormaps["gray"].with_extremes(bad="white")  # NaN (the gaps) in the figure's white
    widths = [p.images.shape[1] for p in panels]
    height = max(p.images.shape[0] for p in panels)
    fig, axes = figure(
        1,
        len(panels),
        figsize=(cell * sum(widths) + 1.2 * len(panels), cell * height + 1.3),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for ax, panel in zip(axes[0], panels, strict=True):
        rows, cols, h, w = panel.images.shape
        g = panel.gap
        ax.imshow(panel.canvas(), cmap=grey, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xticks([c * (w + g) + (w - 1) / 2 for c in range(cols)] if panel.col_labels else [])
        ax.set_xticklabels(panel.col_labels or [], fontsize=7, rotation=90)
        if panel.x_label:
            ax.set_xlabel(panel.x_label, fontsize=8)
        ax.set_yticks([r * (h + g) + (h - 1) / 2 for r in range(rows)] if panel.row_labels else [])
        ax.set_yticklabels(panel.row_labels or [], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- one run


def run_title(run_dir: RunDir, epoch: int) -> str:
    """``<family and its settings>, <units> · <dataset> · epoch N``, each said once: the
    units are those ``evaluate`` counts (a Concrete 1×20 has 20); the run's folder is named
    by the README and the legend."""
    config = run_dir.read_config()
    family = FAMILIES[config.family](config)
    units = plural(family.code_size, "unit")
    return f"{family.describe()}, {units} · {config.dataset} · epoch {epoch}"


def weight_pictures(loaded, title: str, options: dict, out: Path, log=None) -> list[Path]:
    """Samples, reconstructions and traversals of a loaded run (they need its weights);
    ``log`` hears of a count cut to what there is."""
    vae, config = loaded.vae, loaded.config
    shape = IMAGE_SHAPES[config.dataset]
    cols, n, seed = options["cols"], options["samples"], options["seed"]
    test = options.get("test")  # the test images, or read them once, before drawing
    if test is None:
        test = load_dataset(config.dataset, options["data_dir"]).test
    whose = f"the {config.dataset} test set's"
    notes = [
        capped("--reconstructions", options["reconstructions"], len(test), whose, "image"),
        capped("--activity-images", options["activity_images"], len(test), whose, "image"),
    ]
    relaxed = vae.family.relaxed  # RELAXED_SAMPLES says what its two panels are
    priors = [("relaxed prior", False), ("discrete prior", True)] if relaxed else [("prior", False)]
    panels = []
    for name, discrete in priors:
        for binary in (False, True) if options["binary"] else (False,):
            _, images = prior_samples(vae, n, seed, discrete=discrete, binary=binary)
            what = "binary draws" if binary else "Bernoulli means"
            panels.append(Panel(f"{name}: {what}", tiled(images, cols, shape)))
    written = [save_figure(draw_panels(panels, f"samples · {title}"), out / "samples.png")]

    indices, x = _pick(test, options["reconstructions"], seed)
    recon = reconstructions(vae, x)
    pairs = torch.stack([x.cpu(), recon.cpu()], 0).reshape(2, len(indices), *shape).numpy()
    panel = Panel(
        f"test images (top) and their reconstructions {_reconstructed_from(vae)}",
        pairs,
        ["input", "recon."],
        [str(i) for i in indices],
    )
    written.append(
        save_figure(draw_panels([panel], f"reconstructions · {title}"), out / "reconstructions.png")
    )

    _, probe = _pick(test, options["activity_images"], seed)
    units, activity = most_active_units(vae, probe, options["units"])
    word = vae.family.unit_word
    notes.append(capped("--units", options["units"], len(activity), "the model's", word))
    for note in filter(None, notes) if log is not None else ():
        log(note)
    z, images, labels = traversals(vae, units, options["steps"])
    rows = [f"{word} {u} (var {activity[u]:.2g})" for u in units]
    panel = Panel(
        f"each row sweeps one {word}, the others stay at the prior's centre",
        images.reshape(len(units), z.shape[1], *shape).cpu().numpy(),
        rows,
        labels,
        vae.family.traversal_axis(),
    )
    written.append(
        save_figure(draw_panels([panel], f"traversals · {title}"), out / "traversals.png")
    )
    return written


def _reconstructed_from(vae: VAE) -> str:
    family = vae.family
    if not family.enumerable or family.relaxed:
        return "from E_q[z]"
    if not family.summable:
        return "from the most likely code"
    return "Σ_c q(c|x) E[x|c] over every code"


def readme(
    out: Path, title: str, command: list[str], written: list[Path], note: str, relaxed=False
) -> Path:
    """The figure folder's README: what was drawn, of which run and epoch, by which command;
    ``relaxed``: the run's samples have the panels of two priors."""
    what = WHAT | ({"samples.png": RELAXED_SAMPLES} if relaxed else {})
    lines = [f"# {title}", "", "Drawn with", "", "```bash", shlex.join(command), "```", ""]
    lines += [f"- `{p.name}`: {what.get(p.name, '')}".rstrip(": ") for p in written]
    if note:
        lines += ["", note]
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def show_run(
    path: str | Path,
    out: Path,
    options: dict,
    command: list[str],
    device="cpu",
    guide=None,
    log=None,
) -> tuple[list[Path], str]:
    """Draw the pictures of one run into ``out``; return the files and a note (non-empty
    when the run has no weights, so only its curves could be drawn, or when it collapsed).
    ``log`` hears of a count cut to what there is (``--reconstructions`` above the test
    set's size)."""
    from .evaluation import load_run

    run_dir = RunDir.open(path, need_checkpoint=False)
    records = run_dir.read_metrics()
    has_weights = run_dir.checkpoint_path.is_file()
    if not has_weights and not records:
        raise RunDirError(f"{run_dir.path} has no checkpoint.pt and no epochs: nothing to show")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a folder")
    loaded = load_run(path, device, guide) if has_weights else None  # fails before any drawing
    epoch = loaded.epoch if loaded else max((r.get("epoch", 0) for r in records), default=0)
    title = run_title(run_dir, epoch)
    note = (
        ""
        if loaded
        else f"{run_dir.path} has no checkpoint.pt: samples, reconstructions and traversals "
        "need the weights; drew its curves only"
    )
    note = " ".join(filter(None, [note, last_verdict(records, run_dir.read_config())]))
    # drawn into a scratch folder, moved into place once all are drawn: a failure leaves
    # --out as it was
    scratch = out.parent / f".{out.name}.drawing"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        drawn = weight_pictures(loaded, title, options, scratch, log) if loaded else []
        if records:
            fig = draw_curves([(run_dir.path.name, records)], f"curves · {title}")
            drawn.append(save_figure(fig, scratch / "curves.png"))
        relaxed = loaded is not None and loaded.vae.family.relaxed
        drawn.append(
            readme(scratch, f"{run_dir.path.name}: {title}", command, drawn, note, relaxed)
        )
        out.mkdir(parents=True, exist_ok=True)
        for stale in set(WHAT) - {p.name for p in drawn}:  # this command's, from a rerun
            (out / stale).unlink(missing_ok=True)
        written = []
        for p in drawn:
            p.replace(out / p.name)
            written.append(out / p.name)
    except OSError as err:
        raise StorageError(f"cannot write the pictures to {out}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written, note
