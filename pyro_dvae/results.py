"""A sweep's runs read back: their latest numbers, and the runs behind each cell of the paper's
tables (the seeds of one configuration, the best α, Table 3's columns).

:mod:`pyro_dvae.report` lays them out as tables, :mod:`pyro_dvae.scorecard` against the
paper's numbers, and :mod:`pyro_dvae.paper_figures` draws them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import FitConfig
from .evaluation import read_evaluation
from .paper import PAPER_DATASET
from .rundir import RunDir, find_runs
from .sweep import PAPER_ALPHAS, PAPER_SIZES, SWEEP
from .table import fmt as _fmt


@dataclass
class RunResult:
    name: str
    config: FitConfig
    epochs: int
    status: str
    path: Path
    last: dict[str, Any] = field(default_factory=dict)  # the last metrics record
    last_test: dict[str, Any] = field(default_factory=dict)  # the last record with a test score
    evaluation: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0  # the training epochs' time, summed (no test passes)
    planned: int = 0  # the epochs it is to reach: its sweep's plan (sweep.json) or its config's
    device: str = "cpu"  # where it trained (its summary's; the last piece, if resumed elsewhere)
    error: str = ""  # a failed run's error line (its summary's)

    def run_dir_metrics(self) -> list[dict[str, Any]]:
        return RunDir(self.path).read_metrics()

    @property
    def short(self) -> bool:
        """Short of its planned epochs: a sweep in progress (its numbers will still move),
        or a failed run."""
        return self.epochs < self.planned

    def progress(self) -> str:
        """``epoch 84 of 200``, or ``failed at epoch 50 of 200``."""
        text = f"epoch {self.epochs} of {self.planned}"
        return f"failed at {text}" if self.status == "failed" else text

    @property
    def size(self) -> int | None:
        """The paper's 'latent dimension': the vector size, or K for one K-way Concrete."""
        c = self.config
        if c.family == "concrete":
            return c.categories if c.latent_dim == 1 else None
        return c.latent_dim

    def value(self, split: str, part: str) -> float | None:
        """``split`` train|test, ``part`` loss|recon|kl|nll."""
        if part == "nll":
            ll = self.evaluation.get("test_log_likelihood")
            return None if ll is None or split != "test" else -ll
        source = self.last if split == "train" else self.last_test
        return source.get(f"{split}_{part}")


def _planned_epochs(root: Path) -> dict[str, int]:
    """The epochs the sweep's ``sweep.json`` plans for each run: raised when a sweep is
    started again with more epochs, before the run itself is resumed."""
    try:
        runs = json.loads((root / SWEEP).read_text()).get("runs", {})
        return {name: int(c["epochs"]) for name, c in runs.items() if "epochs" in c}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}


def collect(sweep_dir: str | Path) -> list[RunResult]:
    """Every run below ``sweep_dir`` (``runs/*`` or directly below) with its latest numbers."""
    root = Path(sweep_dir)
    paths = find_runs(root)
    planned = _planned_epochs(root)
    results = []
    for path in paths:
        run = RunDir(path)
        try:
            config = run.read_config()
        except Exception:
            continue
        metrics = run.read_metrics()
        summary = run.read_summary()
        tests = [r for r in metrics if "test_loss" in r]
        evaluation = read_evaluation(path)
        epochs = metrics[-1]["epoch"] if metrics else 0
        if evaluation.get("epoch") != epochs:
            evaluation = {}  # stale: made at another epoch
        results.append(
            RunResult(
                path.name,
                config,
                epochs,
                summary.get("status", "unknown"),
                path,
                metrics[-1] if metrics else {},
                tests[-1] if tests else {},
                evaluation,
                sum(r.get("seconds", 0.0) for r in metrics),
                max(planned.get(path.name, 0), config.epochs),
                summary.get("device", "cpu"),
                summary.get("error", ""),
            )
        )
    return results


def epochs_span(runs: list[RunResult]) -> str:
    """The epochs the runs reached: ``200``, or ``10–200`` where they differ."""
    reached = sorted({r.epochs for r in runs})
    return f"{reached[0]}" if len(reached) == 1 else f"{reached[0]}–{reached[-1]}"


def paper_runs(runs: list[RunResult]) -> list[RunResult]:
    """The runs the paper's tables and scorecard take: those on its dataset, MNIST."""
    return [r for r in runs if r.config.dataset == PAPER_DATASET]


def _matches(r: RunResult, family: str, size: int, alpha: float | None) -> bool:
    return (
        r.config.family == family
        and r.size == size
        and (alpha is None or abs(r.config.alpha - alpha) < 1e-9)
    )


def _seeds(runs: list[RunResult], family: str, size: int, alpha: float | None):
    found = [r for r in runs if _matches(r, family, size, alpha)]
    if not found:
        return []
    first = sorted(found, key=lambda r: r.config.seed)[0]
    return [r for r in found if r.config.differences(first.config) in ([], ["seed"])]


def find_seeds(
    runs: list[RunResult], family: str, size: int, alpha: float | None = None
) -> list[RunResult]:
    """Every seed of the first MNIST configuration of ``family`` at ``size`` (and ``alpha``):
    the runs of one cell of the paper's tables."""
    return _seeds(paper_runs(runs), family, size, alpha)


def find_run(runs: list[RunResult], family: str, size: int, alpha: float | None = None):
    """One run of ``family`` at ``size`` (and ``alpha``), the lowest seed, for a figure:
    on MNIST if there is one, else on any dataset; or ``None``."""
    seeds = find_seeds(runs, family, size, alpha) or _seeds(runs, family, size, alpha)
    return min(seeds, key=lambda r: r.config.seed) if seeds else None


@dataclass
class Cell:
    """The runs (one per seed) behind one table cell, and their mean ± sd."""

    runs: list[RunResult]
    #: why the cell's value may still change beyond its own runs' progress (Table 3's best
    #: α while its competitors are short or missing), as short texts
    pending: list[str] = field(default_factory=list)

    def values(self, split: str, part: str) -> list[float]:
        return [v for r in self.runs if (v := r.value(split, part)) is not None]

    def mean(self, split: str, part: str) -> float | None:
        vals = self.values(split, part)
        return sum(vals) / len(vals) if vals else None

    @property
    def short(self) -> bool:
        """Not final: a run short of its planned epochs, or a pending choice."""
        return any(r.short for r in self.runs) or bool(self.pending)

    def least_progress(self) -> str:
        """The progress of the least advanced run short of its epochs (``""``: none is)."""
        short = [r for r in self.runs if r.short]
        return min(short, key=lambda r: r.epochs).progress() if short else ""

    def short_mark(self) -> str:
        """`` [epoch 84 of 200]`` (one run) or `` [1 of 3 seeds short: epoch 84 of 200]``
        where runs of the cell are short of their planned epochs (the least advanced)."""
        if not (least := self.least_progress()):
            return ""
        if len(self.runs) == 1:
            return f" [{least}]"
        short = sum(r.short for r in self.runs)
        return f" [{short} of {len(self.runs)} seeds short: {least}]"

    def text(self, split: str, part: str, paper: float | None = None) -> str:
        vals = self.values(split, part)
        if len(vals) < 2:
            text = _fmt(vals[0] if vals else None, paper)
        else:
            mean = sum(vals) / len(vals)
            sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
            text = f"{mean:.2f} ± {sd:.2f} (n={len(vals)})"
            text = f"{text} ({paper:.2f})" if paper is not None else text
        return text + (self.short_mark() if vals else "")


def working_concrete(runs: list[RunResult]) -> Cell:
    """Jang et al.'s Concrete VAE (20 ten-way variables, discrete KL) on MNIST: the one that
    trains."""
    return Cell(
        [
            r
            for r in paper_runs(runs)
            if r.config.family == "concrete"
            and r.config.kl == "discrete"
            and (r.config.latent_dim, r.config.categories) == (20, 10)
        ]
    )


def best_alpha(runs: list[RunResult], size: int, split: str = "train") -> Cell | None:
    """The Logit-normal prior with the lowest mean −ELBO on ``split`` at ``size``.

    The paper's "best α" is chosen here on the training set: choosing on the test
    set would select on the numbers it then reports. The α are compared on the seeds
    they all have (the grid's), so that the extra seeds of the chosen α, still training
    or not, cannot move the choice. While other α of the row are missing or short of
    their epochs, the choice may still change: the cell's :attr:`Cell.pending` says why.
    """
    cells = {a: Cell(find_seeds(runs, "logitnormal", size, a)) for a in PAPER_ALPHAS}
    cells = {a: c for a, c in cells.items() if c.mean(split, "loss") is not None}
    if not cells:
        return None
    shared = set.intersection(*({r.config.seed for r in c.runs} for c in cells.values()))

    def score(cell: Cell) -> float:
        alike = Cell([r for r in cell.runs if r.config.seed in shared]).mean(split, "loss")
        return alike if alike is not None else cell.mean(split, "loss")

    best = min(cells.values(), key=score)
    missing = [f"{a:g}" for a in PAPER_ALPHAS if a not in cells]
    pending = [f"α = {', '.join(missing)} not run"] if missing else []
    for a, cell in cells.items():
        if cell is not best and (least := cell.least_progress()):
            pending.append(f"α={a:g} at {least}")
    return Cell(best.runs, pending)


def burda_runs(runs: list[RunResult]) -> list[RunResult]:
    """The runs Burda et al.'s protocol (k = 5000 on every test image) is spent on: Table 3's
    best Logit-normal and Gaussian at every size, every seed, once final (a best α whose
    choice is still open waits for its row)."""
    chosen = []
    for size in PAPER_SIZES:
        best = best_alpha(runs, size, "train")
        cells = [Cell(find_seeds(runs, "gaussian", size))] + ([best] if best else [])
        chosen += [r for c in cells if not c.pending for r in c.runs if not r.short]
    return chosen


#: Table 3's columns: the paper's three, then Jang et al.'s working Concrete
TABLE3_COLUMNS = ("best Logit-normal", "Gaussian", "Concrete", "working Concrete")


def table3_cells(runs: list[RunResult], size: int) -> dict[str, Cell]:
    """Table 3's columns at ``size``: the best Logit-normal (α by train −ELBO), the Gaussian,
    the Concrete (one K-way variable) and, at size 20 only, Jang et al.'s working Concrete."""
    cells = (
        best_alpha(runs, size, "train") or Cell([]),
        Cell(find_seeds(runs, "gaussian", size)),
        Cell(find_seeds(runs, "concrete", size)),
        working_concrete(runs) if size == 20 else Cell([]),
    )
    return dict(zip(TABLE3_COLUMNS, cells, strict=True))
