"""How far our Tables 1-3 are from the paper's, cell by cell, and what the runs say about why.

For every cell of the paper's three tables (test split): ours − the paper's. A cell is
*close* when it is within ±1.5 nats. For each cell that is not, the facts a reader
needs to judge it, taken from the runs and never tuned: whether the test −ELBO was
still falling at the last epoch (its change over the last 20 epochs), the train–test
gap, and how much the paper's own row varies against ours (the paper's rows jump by
several nats between neighbouring α where ours move by tenths). Cells whose runs have not
reached their planned epochs (a sweep in progress) are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass

from .paper import PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, setting_note
from .results import TABLE3_COLUMNS, Cell, RunResult, find_seeds, table3_cells
from .sweep import PAPER_ALPHAS, PAPER_SIZES
from .table import Table

CLOSE = 1.5  # nats
WINDOW = 20  # epochs over which "still falling" is measured


@dataclass
class Scored:
    table: str
    size: int
    column: str  # "α = 0.32", "Gaussian", ...
    ours: float
    paper: float
    cell: Cell
    ours_row: list[float]
    paper_row: list[float]

    @property
    def label(self) -> str:
        return f"size {self.size}, {self.column}"

    @property
    def diff(self) -> float:
        return self.ours - self.paper

    @property
    def close(self) -> bool:
        return abs(self.diff) <= CLOSE


def test_change(run: RunResult, window: int = WINDOW) -> float | None:
    """Test −ELBO at the last epoch minus ``window`` epochs before (negative: still falling)."""
    tests = [r for r in run.run_dir_metrics() if "test_loss" in r]
    if len(tests) < 2:
        return None
    last = tests[-1]
    before = [r for r in tests if r["epoch"] <= last["epoch"] - window]
    return last["test_loss"] - (before[-1] if before else tests[0])["test_loss"]


def _spread(values: list[float]) -> float | None:
    return max(values) - min(values) if len(values) > 1 else None


def score_cells(runs: list[RunResult]) -> list[Scored]:
    """Every cell of Tables 1-3 (test) that has runs on MNIST, with the paper's number."""
    scored: list[Scored] = []
    for name, part, paper in (("Table 1", "loss", PAPER_TABLE1), ("Table 2", "kl", PAPER_TABLE2)):
        for size in PAPER_SIZES:
            cells = [Cell(find_seeds(runs, "logitnormal", size, a)) for a in PAPER_ALPHAS]
            means = [c.mean("test", part) for c in cells]
            # the row spread over the final cells only, against the paper's same α
            final = [
                i
                for i, (c, m) in enumerate(zip(cells, means, strict=True))
                if m is not None and not c.short
            ]
            row, paper_row = [means[i] for i in final], [paper[size][i] for i in final]
            for a, cell, mean, p in zip(PAPER_ALPHAS, cells, means, paper[size], strict=True):
                if mean is not None:
                    scored.append(Scored(name, size, f"α = {a:g}", mean, p, cell, row, paper_row))
    for size in PAPER_SIZES:
        cols = list(table3_cells(runs, size).items())[:3]  # the paper's (no working Concrete)
        for (col, cell), p in zip(cols, PAPER_TABLE3[size], strict=True):
            if (mean := cell.mean("test", "loss")) is not None:  # no row spread across families
                scored.append(Scored("Table 3", size, col, mean, p, cell, [], []))
    return scored


def difference_tables(every: list[Scored]) -> list[Table]:
    """Tables 1-3 (test) as ours − the paper's in every cell of :func:`score_cells`, in the
    tables' own layout."""
    alphas = [f"α = {a:g}" for a in PAPER_ALPHAS]
    tables = []
    for name, what, columns in (
        ("Table 1", "−ELBO", alphas),
        ("Table 2", "KL", alphas),
        ("Table 3", "−ELBO", TABLE3_COLUMNS[:3]),  # the paper's (no working Concrete)
    ):
        mine = {(s.size, s.column): s for s in every if s.table == name}
        rows = []
        for size in PAPER_SIZES:
            cells = [mine.get((size, c)) for c in columns]
            rows.append((str(size), [_difference(s) for s in cells]))
        tables.append(
            Table(
                f"{name} (test): ours − the paper's {what}",
                list(columns),
                rows,
                f"Within ±{CLOSE:g} nats counts as close; the report's table 'Cells outside "
                f"±{CLOSE:g} nats' says what the runs show about each of the others. "
                "[not final]: runs short of their planned epochs, or a best α still open.",
                first="size",
            )
        )
    return tables


def _difference(s: Scored | None) -> str:
    if s is None:
        return "–"
    return f"{s.diff:+.2f}" + (" [not final]" if s.cell.short else "")


def _open_note(n: int) -> str:
    if not n:
        return ""
    cells = "cell" if n == 1 else "cells"
    return (
        f"; {n} {cells} not final (runs short of their planned epochs, or a best α still "
        "open) not counted: the tables mark them"
    )


def scorecard_tables(runs: list[RunResult], every: list[Scored] | None = None) -> list[Table]:
    """The counts of close cells per table, and the cells that are not close, with their facts
    (``every``: :func:`score_cells` of ``runs``, when the caller has it)."""
    every = score_cells(runs) if every is None else every
    if not every:
        return []
    scored = [s for s in every if not s.cell.short]  # a sweep in progress: final cells only
    counts = []
    for name in ("Table 1", "Table 2", "Table 3"):
        mine = [s for s in scored if s.table == name]
        close = sum(s.close for s in mine)
        above = sum(s.diff > CLOSE for s in mine)
        counts.append(
            (name, [f"{close} of {len(mine)}", str(above), str(len(mine) - close - above)])
        )
    summary = Table(
        f"Scorecard (test): cells within ±{CLOSE:g} nats of the paper's",
        ["within", f"ours > paper + {CLOSE:g}", f"ours < paper − {CLOSE:g}"],
        counts,
        "Table 1 and 3 cells are −ELBO, Table 2 cells KL; all on the test set"
        + _open_note(len(every) - len(scored))
        + setting_note(r.config for s in every for r in s.cell.runs)
        + ".",
        first="table",
    )
    rows = []
    for s in scored:
        if s.close:
            continue
        changes = [c for r in s.cell.runs if (c := test_change(r)) is not None]
        gaps = [
            t - tr
            for r in s.cell.runs
            if (t := r.value("test", "loss")) is not None
            and (tr := r.value("train", "loss")) is not None
        ]
        ours_spread, paper_spread = _spread(s.ours_row), _spread(s.paper_row)
        rows.append(
            (
                f"{s.table}: {s.label}",
                [
                    f"{s.ours:.2f}",
                    f"{s.paper:.2f}",
                    f"{s.diff:+.2f}",
                    f"{sum(changes) / len(changes):+.2f}" if changes else "–",
                    f"{sum(gaps) / len(gaps):+.2f}" if gaps else "–",
                    f"{ours_spread:.2f} / {paper_spread:.2f}" if ours_spread is not None else "–",
                    str(max(r.epochs for r in s.cell.runs)),
                ],
            )
        )
    detail = Table(
        f"Cells outside ±{CLOSE:g} nats, and what the runs show",
        [
            "ours",
            "paper",
            "ours − paper",
            f"test −ELBO change, last {WINDOW} epochs",
            "test − train −ELBO",
            "row spread: ours / paper",
            "epochs",
        ],
        rows,
        f"A change below about −0.3 nats over the last {WINDOW} epochs means the run was still "
        "improving; a positive test − train gap is overfitting; the row spread is the range "
        "of the table row over α (Tables 1-2), ours against the paper's.",
        first="cell",
    )
    return [summary, detail]
