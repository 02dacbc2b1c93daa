"""The discrete-estimator leaderboard: a sweep's runs grouped by model and estimator and
scored as the discrete model each stands for (``evaluate``'s ``discrete`` block).

It writes ``leaderboard.csv`` (one row per model and estimator, means and standard
deviations over seeds, and the published number where one exists: :data:`PUBLISHED`),
``leaderboard.md`` (the same table, the runs still missing an evaluation and those that
failed, with their errors) and
``leaderboard.png`` (each estimator's test −ELBO of the discrete model against training
time, the published numbers dotted).

Time is a row's *cost*, not the clock its runs happened to see: on a shared machine other
jobs slow some epochs (3.5× between two seeds of one row of the MNIST leaderboard), so a
row's seconds per epoch is the median epoch of its least-slowed seed, and the plot's time
axis is epochs × that. A row's estimator name says what its settings
change: ``logitnormal-annealed`` (τ annealed), ``logitnormal-bimodal`` (a prior LN(0, α)
with α > 2, bimodal: its mass at the edges).
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .errors import RunDirError, StorageError
from .families.bernoulli import LOGIT_NORMAL, RELAXED
from .fileio import atomic_write_text
from .plotting import point_marker
from .results import RunResult, collect

COLUMNS = (
    "model",
    "estimator",
    "settings",
    "seeds",
    "epochs",
    "test_images",
    "discrete_neg_elbo_mean",
    "discrete_neg_elbo_sd",
    "discrete_neg_log_px_mean",
    "discrete_neg_log_px_sd",
    "relaxed_neg_elbo_mean",
    "relaxation_gap_mean",
    "seconds_per_epoch",
    "published_neg_elbo",
)
#: the published test −ELBO of a row's model and estimator: Jang et al. (2016), their Table 2
#: (MNIST VAEs with their networks, binarisation and training, not this leaderboard's), set
#: beside the rows they correspond to: Gumbel-Softmax (concrete), straight-through
#: Gumbel-Softmax, and the score function (reinforce)
PUBLISHED = {
    ("bernoulli 200", "concrete"): 105.0,
    ("bernoulli 200", "straight-through"): 111.5,
    ("bernoulli 200", "reinforce"): 112.2,
    ("categorical 20x10", "concrete"): 101.5,
}
PUBLISHED_SOURCE = "Jang et al. (2016, Table 2)"
#: LN(0, α) is bimodal for α > 2: its density has its mass at the edges of (0, 1)
BIMODAL_ALPHA = 2.0


def model_name(r: RunResult) -> str:
    c = r.config
    if c.family == "bernoulli":
        return f"bernoulli {c.latent_dim}"
    if c.family in ("categorical", "concrete"):
        return f"categorical {c.latent_dim}x{c.categories}"
    return f"{c.family} {c.latent_dim} (read as bits)"


def estimator_name(r: RunResult) -> str:
    """The row: the estimator, and what its settings change."""
    c = r.config
    name = getattr(c, "estimator", "") or c.elbo
    if c.family in ("logitnormal", "concrete"):
        name = f"{c.family} (trained continuous)"
    if name in LOGIT_NORMAL:
        name += "-annealed" if c.anneal_rate else ""
        name += "-bimodal" if c.alpha > BIMODAL_ALPHA else ""
    return name


def settings(r: RunResult) -> str:
    c = r.config
    parts = []
    if c.family in ("bernoulli", "categorical") and c.estimator in RELAXED:
        tau = f"tau={c.tau:g}" + (f"->{c.min_temperature:g}" if c.anneal_rate else "")
        parts.append(tau + (f" (rate {c.anneal_rate:g})" if c.anneal_rate else ""))
    if c.family == "logitnormal" or getattr(c, "estimator", "") == "logitnormal":
        parts.append(f"alpha={c.alpha:g}")
    if c.num_particles > 1:
        parts.append(f"K={c.num_particles}")
    parts.append(f"lr={c.lr:g}")
    return ", ".join(parts)


@dataclass
class Row:
    """One model and estimator: its runs (one per seed)."""

    model: str
    estimator: str
    settings: str
    runs: list[RunResult] = field(default_factory=list)

    def seconds_per_epoch(self) -> float | str:
        """The cost of an epoch: the median epoch time of the least-slowed seed (evaluated
        or not: the plot draws a run still training)."""
        medians = [s for r in self.runs if (s := median_epoch_seconds(r)) is not None]
        return min(medians) if medians else ""

    @property
    def scored(self) -> list[RunResult]:
        return [r for r in self.runs if "discrete" in r.evaluation]

    def values(self) -> dict[str, Any]:
        scored = self.scored
        blocks = [r.evaluation["discrete"] for r in scored]
        relaxed = [b["relaxed_test_loss"] for b in blocks if b.get("relaxed_test_loss") is not None]
        gaps = [b["relaxation_gap"] for b in blocks if b.get("relaxation_gap") is not None]
        epochs = sorted({r.epochs for r in scored})
        return {
            "model": self.model,
            "estimator": self.estimator,
            "settings": self.settings,
            "seeds": len(scored),
            "epochs": "–".join(str(e) for e in sorted({epochs[0], epochs[-1]})) if epochs else "",
            "test_images": min((b["test_images"] for b in blocks), default=""),
            "discrete_neg_elbo_mean": _mean([b["test_loss"] for b in blocks]),
            "discrete_neg_elbo_sd": _sd([b["test_loss"] for b in blocks]),
            "discrete_neg_log_px_mean": _mean([-b["test_log_likelihood"] for b in blocks]),
            "discrete_neg_log_px_sd": _sd([-b["test_log_likelihood"] for b in blocks]),
            "relaxed_neg_elbo_mean": _mean(relaxed),
            "relaxation_gap_mean": _mean(gaps),
            "seconds_per_epoch": self.seconds_per_epoch(),
            "published_neg_elbo": self.published(),
        }

    def published(self) -> float | str:
        """:data:`PUBLISHED`'s number for this row, or ``""``."""
        return PUBLISHED.get((self.model, self.estimator), "")


def _mean(xs: list[float]) -> float | str:
    return statistics.fmean(xs) if xs else ""


def _sd(xs: list[float]) -> float | str:
    return statistics.stdev(xs) if len(xs) > 1 else ""


def median_epoch_seconds(r: RunResult) -> float | None:
    """The median training time of the run's epochs (test passes excluded)."""
    seconds = [rec["seconds"] for rec in r.run_dir_metrics() if "seconds" in rec]
    return statistics.median(seconds) if seconds else None


def leaderboard(sweep_dirs: list[Path]) -> list[Row]:
    """Rows of every discrete or relaxed run below ``sweep_dirs``, best discrete −ELBO first."""
    rows: dict[tuple[str, str, str], Row] = {}
    for sweep_dir in sweep_dirs:
        for r in collect(sweep_dir):
            if r.config.family not in ("bernoulli", "categorical", "logitnormal", "concrete"):
                continue
            key = (model_name(r), estimator_name(r), settings(r))
            rows.setdefault(key, Row(*key)).runs.append(r)
    if not rows:
        raise RunDirError(f"no discrete or relaxed runs below {', '.join(map(str, sweep_dirs))}")

    def rank(row: Row) -> tuple:
        v = row.values()["discrete_neg_elbo_mean"]
        return (row.model, v if v != "" else float("inf"))

    return sorted(rows.values(), key=rank)


def write_leaderboard(sweep_dirs: list[Path], out: Path, command: str) -> list[Path]:
    """``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard.png`` in ``out``."""
    rows = leaderboard(sweep_dirs)
    values = [row.values() for row in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for v in values:
        writer.writerow({k: f"{x:.4f}" if isinstance(x, float) else x for k, x in v.items()})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.csv", buf.getvalue())
    atomic_write_text(out / "leaderboard.md", markdown(rows, values, command))
    return [out / "leaderboard.csv", out / "leaderboard.md", plot(rows, out / "leaderboard.png")]


def markdown(rows: list[Row], values: list[dict[str, Any]], command: str) -> str:
    head = (
        "| model | estimator | settings | seeds | epochs | discrete −ELBO | −log p(x) (IWAE) "
        "| relaxed −ELBO | gap | s / epoch | published |\n" + "| --- " * 11 + "|\n"
    )
    lines = []
    for v in values:
        lines.append(
            f"| {v['model']} | {v['estimator']} | {v['settings']} | {v['seeds']} | {v['epochs']} "
            f"| {_pm(v['discrete_neg_elbo_mean'], v['discrete_neg_elbo_sd'])} "
            f"| {_pm(v['discrete_neg_log_px_mean'], v['discrete_neg_log_px_sd'])} "
            f"| {_num(v['relaxed_neg_elbo_mean'])} | {_num(v['relaxation_gap_mean'])} "
            f"| {_num(v['seconds_per_epoch'], 1)} | {_num(v['published_neg_elbo'], 1)} |"
        )
    unscored = [r for row in rows for r in row.runs if "discrete" not in r.evaluation]
    pending = [r for r in unscored if r.status != "failed"]
    failed = [r for r in unscored if r.status == "failed"]
    notes = [
        "Test set; discrete −ELBO: the decoder at hard codes, the analytic KL of q(b | x) to "
        "the uniform prior; −log p(x): its IWAE bound (the k of each run's evaluation.json); "
        "relaxed −ELBO: the objective the relaxation trains; gap = discrete − relaxed; "
        "mean ± sd over seeds; s / epoch: the median training epoch of the seed that other "
        "jobs slowed least (the plot's time axis is epochs × it); published: the test −ELBO that "
        f"{PUBLISHED_SOURCE} report for the same kind of model and estimator, with their "
        "networks, binarisation and training, not these (dotted in the plot).",
    ]
    if pending:
        names = ", ".join(f"{r.name} ({r.progress()})" for r in pending)
        notes.append(f"Not yet in the table (no evaluation of their last epoch): {names}.")
    if failed:
        names = "; ".join(
            f"{r.name} ({r.progress()}: {r.error or 'no error recorded'})" for r in failed
        )
        notes.append(f"Failed, so not in the table: {names}.")
    return (
        f"# Discrete-estimator leaderboard\n\n```bash\n{command}\n```\n\n"
        + head
        + "\n".join(lines)
        + "\n\n"
        + "\n\n".join(notes)
        + "\n"
    )


def _num(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) else "–"


def _pm(mean: Any, sd: Any) -> str:
    if not isinstance(mean, float):
        return "–"
    return f"{mean:.2f} ± {sd:.2f}" if isinstance(sd, float) else f"{mean:.2f}"


def curve(r: RunResult, seconds_per_epoch: float) -> tuple[list[float], list[float]]:
    """Training hours (epochs × ``seconds_per_epoch``) and the discrete model's test −ELBO
    at each evaluated epoch (a relaxed run's ``test_discrete_loss``; a discrete run's own
    ``test_loss``)."""
    key = "test_discrete_loss" if _relaxed(r) else "test_loss"
    hours, losses = [], []
    for record in r.run_dir_metrics():
        if (loss := record.get(key)) is not None:
            hours.append(record["epoch"] * seconds_per_epoch / 3600)
            losses.append(loss)
    return hours, losses


def _relaxed(r: RunResult) -> bool:
    c = r.config
    return c.family in ("logitnormal", "concrete") or getattr(c, "estimator", "") in RELAXED


def plot(rows: list[Row], path: Path) -> Path:
    """``draw(rows)`` written to ``path``."""
    fig = draw(rows)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err.strerror or err}") from None
    return path


#: the y axis shows this many nats above the best row; a row beyond it is marked ↑ in the legend
Y_RANGE = 100.0


def draw(rows: list[Row]) -> Figure:
    """Per model, each estimator's discrete test −ELBO against training hours at the row's
    cost per epoch (seed 0's curve thick, the others' thin), runs still training included.
    The legend gives each row's value: the table's mean where evaluated, else the last
    epoch's test score of its first seed."""
    models = sorted({row.model for row in rows})
    fig = Figure(figsize=(7 * len(models), 5))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        drawn: list[tuple[Any, str, float, Any]] = []  # line, estimator, value, published
        for row in (row for row in rows if row.model == model):
            color, cost = None, row.seconds_per_epoch()
            if cost == "":
                continue
            for r in sorted(row.runs, key=lambda r: r.config.seed):
                hours, losses = curve(r, cost)
                if not hours:
                    continue
                first = color is None
                (line,) = ax.plot(
                    hours,
                    losses,
                    color=color,
                    lw=1.6 if first else 0.6,
                    marker=point_marker(len(hours)),
                    ms=4 if first else 2,
                )
                if color is None:
                    mean = row.values()["discrete_neg_elbo_mean"]
                    published = row.published()
                    drawn.append(
                        (line, row.estimator, mean if mean != "" else losses[-1], published)
                    )
                    if published != "":
                        ax.axhline(published, color=line.get_color(), ls=":", lw=1.2)
                color = line.get_color()
        ax.set_title(f"{model}: test −ELBO of the discrete model")
        ax.set_xlabel("training time (hours, one CPU thread: epochs × the row's s / epoch)")
        ax.set_ylabel("−ELBO (nats), hard codes")
        ax.grid(alpha=0.3)
        if not drawn:
            ax.text(
                0.5, 0.5, "no run has finished an epoch yet", ha="center", transform=ax.transAxes
            )
            continue
        # the first epochs' losses, and a row far behind, would squash the race at the end
        ends = [value for _, _, value, _ in drawn]
        top = min(max(ends) + 25, min(ends) + Y_RANGE)
        marks = [published for *_, published in drawn if published != ""]
        ax.set_ylim(min(ends + marks) - 5, top)
        drawn.sort(key=lambda d: d[2])
        ax.legend(
            [line for line, *_ in drawn],
            [
                f"{name} {value:.1f}"
                + (" ↑" if value > top else "")
                + (f" (published {published:.1f})" if published != "" else "")
                for _, name, value, published in drawn
            ],
            fontsize=8,
        )
    return fig
