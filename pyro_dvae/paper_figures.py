"""The paper's Figures 2-6 from a sweep folder, as PNG files."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .data import IMAGE_SHAPES, load_dataset
from .errors import ConfigError, RunDirError
from .families import FAMILIES
from .paper import PAPER_DATASET
from .plotting import epoch_axis, figure, point_marker, save_figure
from .results import RunResult, collect, epochs_span, find_run, table3_cells
from .sweep import PAPER_ALPHAS, PAPER_SIZES
from .wording import capped

FIGURES: dict[str, Callable[..., Path]] = {}


def register_figure(name: str):
    def deco(fn):
        FIGURES[name] = fn
        return fn

    return deco


def _missing(ax, text: str, notes: list[str] | None) -> None:
    """A panel with no run: say so on it, and to ``notes`` (the command prints them)."""
    ax.text(0.5, 0.5, text, ha="center", transform=ax.transAxes)
    if notes is not None:
        notes.append(text)


def _label(r: RunResult) -> str:
    return FAMILIES[r.config.family].label(r.config)


def _suptitle(fig, text: str, dataset: str = PAPER_DATASET) -> None:
    """The figure's title, naming its dataset where it is not the paper's."""
    fig.suptitle(text if dataset == PAPER_DATASET else f"{text} · {dataset}")


# --------------------------------------------------------------------------- Figure 2


@register_figure("fig2")
def reconstruction_curves(
    runs, out: Path, sizes=(4, 40), notes=None, dataset=PAPER_DATASET, **_
) -> Path:
    """Negative log-Bernoulli (reconstruction) per epoch, every family, one panel per size."""
    fig, axes = figure(
        len(sizes), 1, figsize=(7, 3.6 * len(sizes)), squeeze=False, layout="constrained"
    )
    for ax, size in zip(axes[:, 0], sizes, strict=True):
        chosen = [r for r in runs if r.size == size]
        chosen.sort(key=lambda r: (r.config.family, r.config.alpha, r.config.seed))
        labels = [_label(r) for r in chosen]
        for r, label in zip(chosen, labels, strict=True):
            records = r.run_dir_metrics()
            epochs = [m["epoch"] for m in records]
            unique = labels.count(label) == 1  # else the run's name tells it apart (seed, τ, ...)
            recon, name = [m["train_recon"] for m in records], label if unique else r.name
            ax.plot(epochs, recon, label=name, marker=point_marker(len(epochs)), ms=4)
        ax.set_title(f"latent dimension {size}")
        epoch_axis(ax)
        ax.set_ylabel("−log p(x | z) (train, nats)")
        if chosen:
            ax.legend(fontsize=8)
        else:
            _missing(ax, f"no runs of size {size}", notes)
    drawn = [r for r in runs if r.size in sizes]
    span = f" (epochs reached: {epochs_span(drawn)})" if drawn else ""
    _suptitle(fig, f"Figure 2: reconstruction loss per epoch{span}", dataset)
    return save_figure(fig, out / "fig2_reconstruction.png")


# --------------------------------------------------------------------------- Figure 3


def _test_codes(r: RunResult, data_dir, device, images: int, guide=None):
    from .evaluation import load_run, posterior_means

    loaded = load_run(r.path, device, guide)
    data = load_dataset(r.config.dataset, data_dir, subset=r.config.subset)
    x = data.test[:images].to(device) if images else data.test.to(device)
    labels = data.test_labels[: x.shape[0]].numpy()
    return loaded, posterior_means(loaded.vae, x).cpu().numpy(), labels, data


def _scatter(ax, xy: np.ndarray, labels: np.ndarray, title: str) -> None:
    from matplotlib import colormaps

    for digit in range(int(labels.max()) + 1):
        mask = labels == digit
        ax.scatter(xy[mask, 0], xy[mask, 1], s=2, color=colormaps["tab10"](digit), label=str(digit))
    ax.set_title(title, fontsize=10)


@register_figure("fig3")
def tsne_encodings(
    runs,
    out: Path,
    tsne_size=8,
    tsne_alpha=0.32,
    images=0,
    data_dir=None,
    device="cpu",
    seed=0,
    guide=None,
    notes=None,
    dataset=PAPER_DATASET,
    log=None,
    **_,
) -> Path:
    """t-SNE of the test posterior means (size ``tsne_size``) and the raw 2-D Logit-normal codes."""
    from sklearn.manifold import TSNE

    panels = [
        (find_run(runs, "logitnormal", tsne_size, tsne_alpha), True),
        (find_run(runs, "gaussian", tsne_size), True),
        (find_run(runs, "concrete", tsne_size), True),
        (find_run(runs, "logitnormal", 2, tsne_alpha) or find_run(runs, "logitnormal", 2), False),
    ]
    wanted = [
        f"Logit-normal α={tsne_alpha:g} of size {tsne_size}",
        f"Gaussian of size {tsne_size}",
        f"Concrete 1×{tsne_size}",
        "2-D Logit-normal",
    ]
    fig, axes = figure(2, 2, figsize=(10, 10))
    encoded: set[int] = set()  # test images per panel: fewer than ``images`` on a small test set
    for ax, (r, tsne), what in zip(axes.flat, panels, wanted, strict=True):
        if r is None:
            _missing(ax, f"no {what} in the sweep", notes)
            ax.set_axis_off()
            continue
        _, codes, labels, _ = _test_codes(r, data_dir, device, images, guide)
        encoded.add(len(codes))
        if tsne:
            xy = TSNE(n_components=2, init="pca", random_state=seed).fit_transform(codes)
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            title = f"{_label(r)}, size {r.size}: t-SNE"
        else:
            xy = codes
            ax.set_xlabel("E[z₁ | x]")
            ax.set_ylabel("E[z₂ | x]")
            title = f"{_label(r)}, 2-D codes (no t-SNE)"
        _scatter(ax, xy, labels, f"{title} (epoch {r.epochs})")
    word = "digit" if dataset in ("mnist", "digits") else "class"  # Fashion-MNIST, KMNIST
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, title=word, markerscale=5, loc="center right")
    count = " or ".join(str(n) for n in sorted(encoded))
    whose = f"the {dataset} test set's"
    cut = capped("--images", images, max(encoded), whose, "image") if encoded and images else None
    if cut and log is not None:
        log(cut)
    title = f"encodings of {count} test images, coloured by {word}" if encoded else "no runs"
    _suptitle(fig, f"Figure 3: {title}", dataset)
    return save_figure(fig, out / "fig3_tsne.png")


# --------------------------------------------------------------------------- Figure 4


@register_figure("fig4")
def latent_histograms(
    runs,
    out: Path,
    hist_size=40,
    hist_alpha=1.78,
    data_dir=None,
    device="cpu",
    seed=0,
    guide=None,
    notes=None,
    dataset=PAPER_DATASET,
    **_,
) -> Path:
    """Histogram of one latent dimension's sampled z over the test set: Gaussian vs Logit-normal."""
    from .evaluation import active_units

    pair = [
        find_run(runs, "gaussian", hist_size),
        find_run(runs, "logitnormal", hist_size, hist_alpha),
    ]
    fig, axes = figure(1, 2, figsize=(10, 3.8))
    wanted = [f"Gaussian of size {hist_size}", f"Logit-normal α={hist_alpha:g} of size {hist_size}"]
    for ax, r, what in zip(axes, pair, wanted, strict=True):
        if r is None:
            _missing(ax, f"no {what} in the sweep", notes)
            continue
        loaded, means, _, data = _test_codes(r, data_dir, device, 0, guide)
        _, variances = active_units(torch.as_tensor(means))
        dim = int(np.argmax(variances))  # the most informative unit
        torch.manual_seed(seed)
        with torch.no_grad():
            z = loaded.vae.encode(data.test.to(device)).sample()[:, dim].cpu().numpy()
        ax.hist(z, bins=80, color="tab:blue" if r.config.family == "gaussian" else "tab:orange")
        ax.set_title(f"{_label(r)}, size {hist_size}: z_{dim + 1} (epoch {r.epochs})", fontsize=10)
        ax.set_xlabel(f"z_{dim + 1}, one posterior sample per test image")
        ax.set_ylabel("count")
    _suptitle(fig, "Figure 4: one latent dimension over the test set", dataset)
    return save_figure(fig, out / "fig4_histograms.png")


# --------------------------------------------------------------------------- Figure 5


@register_figure("fig5")
def latent_grid(
    runs, out: Path, grid=20, device="cpu", guide=None, notes=None, dataset=PAPER_DATASET, **_
) -> Path:
    """Decoded 2-D latent spaces: Logit-normal over (0, 1)², Gaussian through Φ⁻¹ of the grid."""
    from .evaluation import load_run

    ln = find_run(runs, "logitnormal", 2, 1.78) or find_run(runs, "logitnormal", 2)
    pair = [ln, find_run(runs, "gaussian", 2)]
    u = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid  # cell centres in (0, 1)
    fig, axes = figure(1, 2, figsize=(12, 6))
    for ax, r, what in zip(axes, pair, ("Logit-normal", "Gaussian"), strict=True):
        ax.set_axis_off()
        if r is None:
            _missing(ax, f"no 2-D {what} in the sweep", notes)
            continue
        vae = load_run(r.path, device, guide).vae
        h, w = IMAGE_SHAPES[r.config.dataset]
        z1, z2 = torch.meshgrid(u, u.flip(0), indexing="xy")  # z2 grows upwards
        z = vae.family.from_unit_interval(torch.stack([z1.reshape(-1), z2.reshape(-1)], 1))
        images = vae.decode(z.to(device)).cpu().reshape(grid, grid, h, w)
        canvas = images.permute(0, 2, 1, 3).reshape(grid * h, grid * w).numpy()
        ax.imshow(canvas, cmap="gray", extent=(0, 1, 0, 1))
        ax.set_axis_on()
        ax.set_xlabel(vae.family.axis_label("z₁"))
        ax.set_ylabel(vae.family.axis_label("z₂"))
        ax.set_title(f"{_label(r)} (epoch {r.epochs})")
    _suptitle(fig, "Figure 5: decoded 2-D latent space", dataset)
    return save_figure(fig, out / "fig5_latent_grid.png")


# --------------------------------------------------------------------------- Table 3 curves


def _test_curve(r: RunResult) -> tuple[list[int], list[float]]:
    records = [m for m in r.run_dir_metrics() if m.get("test_loss") is not None]
    return [m["epoch"] for m in records], [m["test_loss"] for m in records]


@register_figure("curves")
def table3_curves(runs, out: Path, notes=None, **_) -> Path:
    """Test −ELBO per epoch of Table 3's MNIST runs, one column per size: the best Logit-normal
    and the Gaussian above, the Concrete models (tens of nats higher) on their own axes below."""
    columns = {s: table3_cells(runs, s) for s in PAPER_SIZES}
    columns = {s: cells for s, cells in columns.items() if any(c.runs for c in cells.values())}
    if not columns:
        fig, ax = figure(figsize=(6, 3))
        ax.set_axis_off()
        _missing(ax, "no MNIST run of Table 3 (Logit-normal, Gaussian, Concrete)", notes)
        return save_figure(fig, out / "curves_table3.png")
    fig, axes = figure(
        2, len(columns), figsize=(4 * len(columns), 7), squeeze=False, layout="constrained"
    )
    for col, (size, cells) in enumerate(columns.items()):
        names = list(cells)
        for row, ax in enumerate(axes[:, col]):
            kind = "Logit-normal and Gaussian" if row == 0 else "Concrete"
            tails: list[float] = []
            for name in names[2 * row : 2 * row + 2]:
                for r in cells[name].runs:
                    epochs, losses = _test_curve(r)
                    seed = f", seed {r.config.seed}" if len(cells[name].runs) > 1 else ""
                    marker = point_marker(len(epochs))
                    ax.plot(epochs, losses, label=f"{_label(r)}{seed}", lw=1, marker=marker, ms=4)
                    tails += losses[len(losses) // 20 :]  # the first twentieth falls off the top
            if tails:
                span = max(tails) - min(tails)
                ax.set_ylim(min(tails) - 0.05 * span - 0.5, max(tails) + 0.05 * span + 0.5)
                ax.legend(fontsize=7)
            else:
                _missing(ax, f"size {size}: no {kind} runs", notes)
            ax.set_title(f"size {size}: {kind}", fontsize=10)
            epoch_axis(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("test −ELBO (nats)")
    span = epochs_span([r for t in columns.values() for c in t.values() for r in c.runs])
    fig.suptitle(f"Table 3's models: test −ELBO per epoch (epochs reached: {span})")
    return save_figure(fig, out / "curves_table3.png")


# --------------------------------------------------------------------------- Figure 6


def logit_normal_pdf(z: np.ndarray, mu: float, variance: float) -> np.ndarray:
    """The paper's density: exp(−(logit z − μ)² / 2σ²) / (σ √(2π) z (1 − z))."""
    sigma = math.sqrt(variance)
    logit = np.log(z) - np.log1p(-z)
    return np.exp(-((logit - mu) ** 2) / (2 * variance)) / (
        sigma * math.sqrt(2 * math.pi) * z * (1 - z)
    )


@register_figure("fig6")
def logit_normal_densities(runs, out: Path, **_) -> Path:
    """Logit-normal densities for the paper's α at μ = 0 and μ = 1 (no runs needed)."""
    z = np.linspace(1e-4, 1 - 1e-4, 2000)
    # one z axis, labelled under the lower panel: no label between the panels to run into
    # the lower one's title
    fig, axes = figure(2, 1, figsize=(7, 7), sharex=True, layout="constrained")
    for ax, mu in zip(axes, (0.0, 1.0), strict=True):
        for a in PAPER_ALPHAS:
            ax.plot(z, logit_normal_pdf(z, mu, a), label=f"α = σ² = {a:g}")
        ax.set_title(f"μ = {mu:g}")
        ax.set_ylabel("density")
        ax.set_ylim(0, 4)
        ax.legend()
    axes[-1].set_xlabel("z")
    fig.suptitle("Figure 6: Logit-normal densities")
    return save_figure(fig, out / "fig6_logitnormal_densities.png")


def figure_dataset(runs: list[RunResult], dataset: str | None, where: str | Path = "") -> str:
    """The one dataset a figure's runs come from (panels never mix datasets): ``dataset`` if
    given, else the only one in the folder, else the paper's (MNIST) if the folder has it."""
    present = sorted({r.config.dataset for r in runs})
    if dataset is not None:
        if runs and dataset not in present:
            raise ConfigError(f"{where} holds no {dataset} runs, only {', '.join(present)}")
        return dataset
    if len(present) > 1 and PAPER_DATASET not in present:
        raise ConfigError(f"{where} holds runs of {', '.join(present)}: choose one with --dataset")
    return PAPER_DATASET if PAPER_DATASET in present or not present else present[0]


def make_figures(
    sweep_dir: str | Path,
    out: str | Path,
    names: list[str] | None = None,
    notes: dict[Path, list[str]] | None = None,
    dataset: str | None = None,
    log: Callable[[str], None] | None = None,
    **options,
) -> list[Path]:
    """Draw the figures ``names`` (default: all) from the runs of ``sweep_dir`` on one
    ``dataset`` (see :func:`figure_dataset`; ``log`` hears of the datasets left out).
    ``notes``, if given, gets each figure's path → its panels drawn empty for want of a run;
    ``log`` also hears of a count cut to what there is (``--images`` above the test set's)."""
    runs = collect(sweep_dir)
    names = names or list(FIGURES)  # the paper's order, then ours
    if any(n != "fig6" for n in names):  # Figure 6 draws densities, no runs
        if not runs:
            raise RunDirError(f"{sweep_dir} holds no runs")
        dataset = figure_dataset(runs, dataset, sweep_dir)
        others = sorted({r.config.dataset for r in runs} - {dataset})
        if others and log is not None:
            log(f"drawing the {dataset} runs; {sweep_dir} also holds {', '.join(others)} runs")
        runs = [r for r in runs if r.config.dataset == dataset]
    options["dataset"] = dataset or PAPER_DATASET
    paths = []
    for name in names:
        missing: list[str] = []
        paths.append(FIGURES[name](runs, Path(out), notes=missing, log=log, **options))
        if notes is not None and missing:
            notes[paths[-1]] = missing
    return paths
