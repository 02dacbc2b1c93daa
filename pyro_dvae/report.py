"""A sweep's MNIST runs in the paper's layout (Tables 1-3), and every run, as Markdown and CSV."""

from __future__ import annotations

import json
from pathlib import Path

from .fileio import atomic_write_text
from .paper import PAPER_DATASET, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, setting_note
from .results import (
    Cell,
    RunResult,
    best_alpha,
    collect,
    epochs_span,
    find_seeds,
    paper_runs,
    table3_cells,
    working_concrete,
)
from .schedules import remedies
from .sweep import PAPER_ALPHAS, PAPER_SIZES
from .table import Table
from .table import fmt as _fmt
from .wording import duration

# --------------------------------------------------------------------------- tables


def _epochs_note(runs: list[RunResult], planned: int | None = None) -> str:
    if not runs:
        return "no runs"
    target = max(r.config.epochs for r in runs) if planned is None else planned
    text = f"epochs reached: {epochs_span(runs)} (of {target} planned)"
    if min(r.epochs for r in runs) < 200:
        text += "; the paper trained 200 epochs"
    return text


def _paper_note(used: list[RunResult]) -> str:
    return _epochs_note(used) + setting_note(r.config for r in used)


def paper_tables(runs: list[RunResult], split: str) -> list[Table]:
    """Tables 1-3 for ``split`` (train or test), cells 'ours (paper)'; and the IWAE tables.

    A cell with several seeds shows their mean ± sd. Table 3's Logit-normal column
    is the α with the lowest train −ELBO (see :func:`best_alpha`); where the test
    −ELBO would choose another α, the cell says so. In a sweep in progress, a cell
    whose runs are short of their planned epochs says how far they are, and the best-α
    cell names the α that could still change the choice.
    """
    alpha_cols = [f"α = {a:g}" for a in PAPER_ALPHAS]
    used: list[RunResult] = []

    def ln_table(part: str, paper: dict, title: str) -> Table:
        rows = []
        for size in PAPER_SIZES:
            cells = []
            for i, a in enumerate(PAPER_ALPHAS):
                cell = Cell(find_seeds(runs, "logitnormal", size, a))
                used.extend(cell.runs)
                cells.append(cell.text(split, part, paper[size][i]))
            rows.append((str(size), cells))
        return Table(title, alpha_cols, rows)

    t1 = ln_table("loss", PAPER_TABLE1, f"Table 1 ({split}): −ELBO of the Logit-normal VAE")
    t2 = ln_table("kl", PAPER_TABLE2, f"Table 2 ({split}): KL of the Logit-normal VAE")
    rows3 = []
    for size in PAPER_SIZES:
        best, g, c, working = table3_cells(runs, size).values()
        by_test = best_alpha(runs, size, "test")
        best_cell = best.text(split, "loss", PAPER_TABLE3[size][0])
        if best.runs:
            chosen = best.runs[0].config.alpha
            why = [f"α={chosen:g}"]
            if by_test and by_test.runs[0].config.alpha != chosen:
                why.append(f"by test −ELBO: α={by_test.runs[0].config.alpha:g}")
            best_cell += f" [{'; '.join(why + best.pending)}]"
        used.extend(best.runs + g.runs + c.runs + working.runs)
        rows3.append(
            (
                str(size),
                [
                    best_cell,
                    g.text(split, "loss", PAPER_TABLE3[size][1]),
                    c.text(split, "loss", PAPER_TABLE3[size][2]),
                    working.text(split, "loss"),
                ],
            )
        )
    working = working_concrete(runs)
    t3 = Table(
        f"Table 3 ({split}): −ELBO of the best Logit-normal, the Gaussian and the Concrete VAE",
        [
            "best Logit-normal (α by train −ELBO)",
            "Gaussian",
            "Concrete (1 × K)",
            "working Concrete (20 × 10, Jang et al.)" + (" *" if working.runs else ""),
        ],
        rows3,
    )
    note = _paper_note(used) + (
        ". Cells: ours (the paper's); several seeds: mean ± sd; –: no run of the cell."
    )
    for t in (t1, t2, t3):
        t.note = note
    if working.runs:
        t3.note += " " + _working_caveat(working, split)
    return [t1, t2, t3]


def _off_objective(r: RunResult) -> bool:
    """A Concrete run trained on Jang et al.'s objective (``--kl discrete``): relaxed codes for
    the decoder, the KL of the underlying categoricals. That objective bounds no likelihood,
    and the relaxed model that the IWAE pass scores is not the one it was trained as."""
    return r.config.family == "concrete" and r.config.kl == "discrete"


def _working_caveat(working: Cell, split: str) -> str:
    """The note on the working Concrete's column: its −ELBO is Jang et al.'s objective, no
    bound on −log p(x), so not comparable with the other columns; on the test set, the
    −ELBO of its strictly discrete model (one-hot codes) where it was evaluated."""
    text = (
        "*: the working Concrete's −ELBO is its own training objective (Jang et al.'s: relaxed"
        " codes for the decoder, the analytic KL of the underlying categoricals), which is no"
        " bound on −log p(x) of either the relaxed or the discrete model and does not compare"
        " with the other columns"
    )
    scored = [r for r in working.runs if "discrete" in r.evaluation]
    if split == "test" and scored:
        values = [r.evaluation["discrete"]["test_loss"] for r in scored]
        images = sorted({r.evaluation["test_images"] for r in scored})
        where = " or ".join(f"{n}" for n in images)
        seeds = f" (mean of {len(values)} seeds)" if len(values) > 1 else ""
        text += (
            f"; scored as a strictly discrete model (one-hot codes, uniform categorical prior)"
            f" its test −ELBO is {_fmt(sum(values) / len(values))}{seeds}, on the first"
            f" {where} test images"
        )
    return text + "."


def _protocol(r: RunResult) -> tuple[int, int]:
    return r.evaluation["k"], r.evaluation["test_images"]


def _protocols(grid: list[list[tuple[Cell, int]]]) -> list[tuple[int, int]]:
    return sorted({_protocol(r) for row in grid for c, _ in row for r in c.runs})


def _thorough(cell: Cell) -> tuple[Cell, int]:
    """The cell's evaluated runs of its most thorough protocol (most draws in all), and how
    many evaluated runs of another protocol that leaves out: their bounds do not average."""
    evaluated = [r for r in cell.runs if r.evaluation]
    if not evaluated:
        return Cell([], cell.pending), 0
    top = max((_protocol(r) for r in evaluated), key=lambda p: (p[0] * p[1], p))
    kept = [r for r in evaluated if _protocol(r) == top]
    return Cell(kept, cell.pending), len(evaluated) - len(kept)


def likelihood_tables(runs: list[RunResult]) -> list[Table]:
    """The Table 1 and Table 3 layouts for the IWAE estimate of −log p(x) on the test set.

    Bounds of different k or numbers of test images are not comparable: a cell averages
    its seeds of one protocol (the most thorough), and where the table's cells differ in
    protocol, each cell names its own.
    """
    grid1, grid3 = [], []
    for size in PAPER_SIZES:
        grid1.append(
            [_thorough(Cell(find_seeds(runs, "logitnormal", size, a))) for a in PAPER_ALPHAS]
        )
        table3 = list(table3_cells(runs, size).values())[:3]  # Table 3's runs, as evaluated
        grid3.append([_thorough(c) for c in table3])
    if not any(c.runs for row in grid1 + grid3 for c, _ in row):
        return []

    def text(cell: Cell, left_out: int, protocols: list) -> str:
        tags = [f"k={k}, {n} images" for k, n in {_protocol(r) for r in cell.runs}]
        tags = tags if len(protocols) > 1 or left_out else []
        if left_out:
            tags.append(
                f"{left_out} seed{'s' if left_out > 1 else ''} scored with fewer draws left out"
            )
        return cell.text("test", "nll") + (f" [{'; '.join(tags)}]" if tags else "")

    def rows(grid: list[list[tuple[Cell, int]]]) -> list[tuple[str, list[str]]]:
        protocols = _protocols(grid)
        return [
            (str(size), [text(*c, protocols) for c in row])
            for size, row in zip(PAPER_SIZES, grid, strict=True)
        ]

    def note(grid: list[list[tuple[Cell, int]]]) -> str:
        """The protocols of this table's cells (each table its own), and its runs' epochs."""
        used = [r for row in grid for c, _ in row for r in c.runs]
        listed = "; ".join(f"k = {k} on {n} test images" for k, n in _protocols(grid))
        return f"IWAE bound, {listed or 'no run evaluated'}; {_paper_note(used)}."

    return [
        Table(
            "Test −log p(x) (IWAE) of the Logit-normal VAE",
            [f"α = {a:g}" for a in PAPER_ALPHAS],
            rows(grid1),
            note(grid1),
        ),
        Table(
            "Test −log p(x) (IWAE): best Logit-normal, Gaussian, Concrete",
            ["best Logit-normal (α by train −ELBO)", "Gaussian", "Concrete (1 × K)"],
            rows(grid3),
            note(grid3),
        ),
    ]


def runs_table(runs: list[RunResult]) -> Table:
    """Every run, one row, on any dataset: what a sweep outside the paper's grid is read from."""
    cols = [
        "dataset",
        "epochs",
        "status",
        "train −ELBO",
        "test −ELBO, 1 draw",
        "test recon",
        "test KL",
        "test −log p(x)",
        "k",
        "active units",
        "kNN accuracy",
        "hard codes −ELBO",
        "hard codes −log p(x)",
        "training time",
        "evaluation time",
    ]

    def marked(r: RunResult) -> bool:
        return _off_objective(r) and r.value("test", "nll") is not None

    rows = []
    for r in runs:
        ev = r.evaluation
        hard = ev.get("discrete", {})
        rows.append(
            (
                r.name + (" †" if remedies(r.config) else ""),
                [
                    r.config.dataset,
                    str(r.epochs),
                    r.status,
                    _fmt(r.value("train", "loss")),
                    _fmt(r.value("test", "loss")),
                    _fmt(r.value("test", "recon")),
                    _fmt(r.value("test", "kl")),
                    _fmt(r.value("test", "nll")) + (" *" if marked(r) else ""),
                    str(ev.get("k", "–")),
                    f"{ev['active_units']}/{ev['latent_units']}" if ev else "–",
                    f"{ev['knn_accuracy']:.3f}" if ev else "–",
                    _fmt(hard.get("test_loss")),
                    _fmt(-hard["test_log_likelihood"] if hard else None),
                    _time(r.train_seconds, r.device),
                    _time(ev["seconds"], ev.get("device", "cpu")) if "seconds" in ev else "–",
                ],
            )
        )
    total = duration(sum(r.train_seconds for r in runs))
    note = _epochs_note(runs) + (
        ". Test −ELBO, 1 draw: one posterior draw per image, as training scores each epoch "
        "(`evaluate`'s −ELBO is the mean of its k draws). Training time: the training epochs' "
        f"wall time (test passes not counted); {total} over all runs, each counted in full "
        "where runs shared the machine"
    )
    if any("discrete" in r.evaluation for r in runs):
        note += (
            ". Hard codes: the run's networks scoring the discrete model its codes relax (a"
            " Concrete's one-hot codes, a Logit-normal's bits 1[y > 0], a Bernoulli run's bits;"
            " a uniform prior), its IWAE with `evaluate`'s `--discrete-k` samples."
        )
    trained_otherwise = sorted({flag for r in runs for flag in remedies(r.config)})
    if trained_otherwise:
        note += (
            f". †: trained with {', '.join(trained_otherwise)} (KL warm-up, free bits or a "
            "learning-rate schedule, docs/collapse.md), not the paper's objective and constant "
            "rate"
        )
    if any(marked(r) for r in runs):
        note += (
            " *: the relaxed model's IWAE bound of a run trained with the discrete KL (`--kl"
            " discrete`, Jang et al.), whose objective is no bound on it: its confident"
            " posteriors pay a relaxed KL they were never trained on. Its hard-codes columns score"
            " the discrete model it stands for (docs/concrete.md)."
        )
    return Table("All runs", cols, rows, note, first="run")


def _time(seconds: float, device: str) -> str:
    """A wall time, and the device where it is not a CPU (a GPU's hour is not a CPU's)."""
    return duration(seconds) + ("" if device.startswith("cpu") else f" on {device}")


def _other_datasets(runs: list[RunResult], paper: list[RunResult]) -> str:
    """The sentence that says which runs the paper's tables leave out, and why."""
    others = ", ".join(sorted({r.config.dataset for r in runs} - {PAPER_DATASET}))
    if not paper:
        return (
            f"No paper tables: they need runs on {PAPER_DATASET}, the paper's dataset, and "
            f"these runs are on {others}."
        )
    n = len(runs) - len(paper)
    return (
        f"The paper's tables take only the runs on {PAPER_DATASET}, its dataset; {n} "
        f"run{'s are' if n > 1 else ' is'} on {others}, in All runs only."
    )


#: every table a report may write, as ``<name>.csv``
REPORT_TABLES = (
    *(f"table{i}_{split}" for i in (1, 2, 3) for split in ("train", "test")),
    *("table1_iwae", "table3_iwae", "scorecard"),
    *(f"table{i}_diff" for i in (1, 2, 3)),
    *("scorecard_cells", "runs"),
)


#: the tables the README shows (``headline.md``): Table 3, its differences, the scorecard, IWAE
HEADLINE = ("table3_test", "table3_diff", "scorecard", "table3_iwae")


def report_tables(runs: list[RunResult]) -> dict[str, Table]:
    """Every table of a report of ``runs``, by name (see :data:`REPORT_TABLES`)."""
    tables: dict[str, Table] = {}
    paper = paper_runs(runs)
    if any(r.size in PAPER_SIZES for r in paper):
        for split in ("train", "test"):
            for i, t in enumerate(paper_tables(runs, split), start=1):
                tables[f"table{i}_{split}"] = t
        for i, t in zip((1, 3), likelihood_tables(runs), strict=False):
            tables[f"table{i}_iwae"] = t
        from .scorecard import difference_tables, score_cells, scorecard_tables

        every = score_cells(runs)
        if card := scorecard_tables(runs, every):
            summary, detail = card
            tables["scorecard"] = summary
            for i, t in enumerate(difference_tables(every), start=1):
                tables[f"table{i}_diff"] = t
            tables["scorecard_cells"] = detail
    tables["runs"] = runs_table(runs)
    return tables


def build_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md``, one CSV per table and ``headline.md`` (the README's tables) into
    ``out`` (default: ``SWEEP_DIR/report``)."""
    runs = collect(sweep_dir)
    if not runs:
        from .errors import RunDirError

        raise RunDirError(f"{sweep_dir} holds no runs")
    out = Path(out) if out is not None else Path(sweep_dir) / "report"
    md = [f"# Report of {Path(sweep_dir).name}", ""]
    paper = paper_runs(runs)
    if len(paper) < len(runs):
        md += [_other_datasets(runs, paper), ""]
    tables = report_tables(runs)
    for name, table in tables.items():
        md += [table.markdown(), f"CSV: `{name}.csv`", ""]
        atomic_write_text(out / f"{name}.csv", table.csv())
    for stale in set(REPORT_TABLES) - set(tables):  # an earlier report's, into the same --out
        (out / f"{stale}.csv").unlink(missing_ok=True)
    headline = [tables[name].markdown() for name in HEADLINE if name in tables]
    if headline:
        atomic_write_text(out / "headline.md", "\n\n".join(headline) + "\n")
    else:
        (out / "headline.md").unlink(missing_ok=True)
    atomic_write_text(out / "report.md", "\n".join(md))
    listed = [
        {"name": r.name, "dataset": r.config.dataset, "epochs": r.epochs, "status": r.status}
        for r in runs
    ]
    atomic_write_text(out / "runs.json", json.dumps(listed, indent=2) + "\n")
    return out / "report.md"
