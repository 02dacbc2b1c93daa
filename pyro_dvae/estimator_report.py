"""What ``compare-estimators`` writes: its tables (Markdown, CSV, JSON) and plots.

The measurements are :mod:`.estimator_comparison`'s and :mod:`.discrete_gradients`'; this
module turns them into files in one folder, so the command only parses and prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .fileio import atomic_write_text
from .plotting import epoch_axis, figure, save_figure
from .table import Table

#: (heading, row key, format) of the estimator table's columns
COLUMNS = [
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


def device_note(device: torch.device) -> str:
    """A title's note of the device, off the CPU (the times are that device's)."""
    return "" if device.type == "cpu" else f", on {device}"


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row[key]
    if key == "kl":
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if key == "seconds":
        value = 1000 * value
    return fmt.format(value)


def estimator_table(rows: list[dict], title: str) -> Table:
    """The rows of :func:`~pyro_dvae.estimator_comparison.compare` as a table."""
    cells = [(r["estimator"], [_cell(r, k, f) for _, k, f in COLUMNS[1:]]) for r in rows]
    return Table(title, [c[0] for c in COLUMNS[1:]], cells, first="estimator")


def _write_table(out: Path, stem: str, table: Table, rows: list[dict], markdown: str) -> None:
    atomic_write_text(out / f"{stem}.md", markdown)
    atomic_write_text(out / f"{stem}.csv", table.csv())
    atomic_write_text(out / f"{stem}.json", json.dumps(rows, indent=2) + "\n")


def write_comparison(rows: list[dict], out: Path, title: str, family: str) -> str:
    """``estimators.{md,csv,json,png}`` in ``out``; returns the Markdown. ``family``: the
    model's description, named where the analytic KL fell back to Monte Carlo."""
    table = estimator_table(rows, title)
    md = table.markdown()
    for r in rows:
        fallback = [site for site, kind in r["kl"].items() if kind == "monte-carlo"]
        if r["estimator"] == "analytic" and fallback:
            md += (
                f"\nNote: no analytic KL is registered for site {', '.join(fallback)} "
                f"({family}): TraceMeanField_ELBO fell back to Monte Carlo, "
                "so 'analytic' is the same estimator as 'trace' here.\n"
            )
    _write_table(out, "estimators", table, rows, md)
    plot_estimators(rows, out / "estimators.png", title)
    return md


def plot_estimators(rows: list[dict], path: Path, title: str) -> None:
    """Gradient variance (encoder, decoder) and SNR of each estimator, as bars."""
    names = [r["estimator"] for r in rows]
    fig, axes = figure(1, 3, figsize=(14, 4), layout="tight")
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
    save_figure(fig, path)


def write_training_curves(curves: dict[str, list[float]], out: Path, title: str) -> None:
    """``training.{json,png}``: each objective's test −ELBO per epoch."""
    atomic_write_text(out / "training.json", json.dumps(curves, indent=2) + "\n")
    fig, ax = figure(figsize=(7, 4), layout="tight")
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    epoch_axis(ax)
    ax.set_ylabel("test −ELBO (one-sample Monte Carlo, nats)")
    ax.set_title(f"training objectives side by side: {title}", fontsize=9)
    ax.legend()
    save_figure(fig, out / "training.png")


def write_discrete_comparison(
    vae,
    x,
    ests,
    repeats: int,
    seed: int,
    out: Path,
    head: str,
    note: str = "",
    progress=False,
    clip: float | None = None,
) -> str:
    """A discrete model's estimators against its exact, enumerated gradient (past
    ``ENUM_LIMIT`` codes: their variance, SNR and time): ``estimators.{md,csv,json}`` and
    ``gradient_mse.png``; returns the Markdown. ``head`` and ``note`` frame the title;
    ``progress``: a bar of the draws; ``clip``: the run's ``clip_norm`` (the share of
    gradient elements its training would clamp)."""
    from . import discrete_gradients as dg

    if not vae.family.summable:
        rows = dg.compare_spread(vae, x, ests, repeats, seed=seed, progress=progress, clip=clip)
        table = dg.spread_table(rows, f"{head}, their spread{note}")
    else:
        rows = dg.compare_to_exact(vae, x, ests, repeats, seed=seed, progress=progress, clip=clip)
        table = dg.exact_table(rows, f"{head} against the exact gradient{note}")
        dg.plot_mse(rows, out / "gradient_mse.png", table.title)
    md = table.markdown()
    _write_table(out, "estimators", table, rows, md)
    return md


def write_iwae_snr(
    vae, x, ks, repeats: int, seed: int, out: Path, title: str, progress: bool = False
) -> str:
    """The IWAE gradients' SNR against K: ``iwae_snr.{md,csv,json,png}``; the Markdown.
    ``progress``: a bar of the estimates."""
    from .estimator_comparison import iwae_gradient_snr

    rows = iwae_gradient_snr(vae, x, ks, repeats=repeats, seed=seed, progress=progress)
    cells = [
        (
            r["gradient"],
            [str(r["k"]), f"{r['snr_encoder']:.4g}", f"{r['snr_decoder']:.4g}"]
            + [f"{r['ess']:.3g}", f"{1000 * r['seconds']:.1f}"],
        )
        for r in rows
    ]
    columns = ["K", "encoder SNR", "decoder SNR", "ESS of the K weights", "ms / estimate"]
    table = Table(f"IWAE gradient SNR |E g| / sd(g): {title}", columns, cells, first="gradient")
    md = table.markdown()
    _write_table(out, "iwae_snr", table, rows, md)
    plot_snr(rows, out / "iwae_snr.png", title)
    return md


def _two_and_five(v: float, _pos) -> str:
    """A log axis's minor label, written plainly, at 2 and 5 times a power of ten only."""
    return f"{v:g}" if f"{v:.0e}"[0] in "25" else ""


def plot_snr(rows: list[dict], path: Path, title: str) -> None:
    """SNR against K, encoder and decoder, one line per gradient (Rainforth et al., Fig. 1);
    gradients whose SNRs are the same (the decoder's: DReG and STL leave it standard) are
    drawn once, named together, so that no line hides under another."""
    from matplotlib.ticker import FuncFormatter

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
        ks = sorted({r["k"] for r in rows})  # the Ks measured, not a log axis's own labels
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xticks([], minor=True)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_two_and_five))
        ax.set_xlabel("K (particles)")
        ax.set_ylabel(f"{side} gradient SNR, mean |E g| / sd(g)")
        ax.legend()
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
