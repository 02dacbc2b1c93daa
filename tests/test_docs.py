"""The documentation that is generated from the code stays equal to it, and every number the
README and docs/ quote from results/ stays equal to the file it comes from."""

import json
import math
import re
import statistics
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import torch

from pyro_dvae.cli.options import markdown_table
from pyro_dvae.config import PARAMS
from pyro_dvae.paper import PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3
from pyro_dvae.report import report_tables
from pyro_dvae.results import best_alpha, collect, find_seeds, table3_cells
from pyro_dvae.sweep import PAPER_ALPHAS, PAPER_SIZES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_options_table_of_the_docs_is_the_generated_one():
    text = (DOCS / "cli.md").read_text()
    table = text.split("<!-- options:start -->\n")[1].split("<!-- options:end -->")[0]
    assert table == markdown_table()
    assert all(p.flag in table for p in PARAMS.values())


def test_every_docs_page_is_linked_from_the_readme():
    readme = (DOCS.parent / "README.md").read_text()
    assert sorted(f"docs/{p.name}" for p in DOCS.glob("*.md") if f"docs/{p.name}" in readme) == (
        sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))
    )


def test_the_commands_page_is_every_commands_help():
    from pyro_dvae.cli.help import commands_markdown

    assert (DOCS / "commands.md").read_text() == commands_markdown()


def _recipes() -> dict[str, str]:
    """The code of each ``<!-- recipe: NAME -->`` block of docs/development.md."""
    text = (DOCS / "development.md").read_text()
    found = re.findall(r"<!-- recipe: (\S+) -->\n```python\n(.*?)```", text, flags=re.S)
    return dict(found)


def test_the_callback_recipe_writes_the_runs_epochs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_recipes()["callback"], "development.md:callback", "exec"), {})
    run = tmp_path / "runs" / "csv-example"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lines = (run / "epochs.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,test_loss"
    assert [line.split(",") for line in lines[1:]] == [
        [str(r["epoch"]), repr(r["train_loss"]), repr(r["test_loss"])] for r in rows
    ]


def test_the_family_recipe_trains_a_new_latent(tmp_path, monkeypatch):
    from pyro_dvae.families import FAMILIES

    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    try:
        exec(compile(_recipes()["family"], "development.md:family", "exec"), scope)
    finally:
        FAMILIES.pop("laplace", None)  # the registry as it was, for the other tests
    summary = scope["summary"]
    assert summary["status"] == "finished" and summary["family"] == "laplace"
    assert summary["kl"] == {"z": "monte-carlo"}  # no KL registered for Laplace pairs
    rows = [json.loads(line) for line in (tmp_path / "runs/laplace-example/metrics.jsonl").open()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # the family's posterior is what its guide samples: Laplace, one per unit
    family = scope["LaplaceFamily"](scope["config"])
    q = family.posterior(torch.zeros(3, family.head_size))
    assert type(q.base_dist).__name__ == "Laplace" and q.event_shape == (4,)


def test_the_estimator_recipe_lies_between_the_elbo_and_the_iwae_bound(tmp_path, monkeypatch):
    import pyro_dvae as pd
    from pyro_dvae.iwae_objective import IWAEELBO

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(pd.ELBOS, "renyi", None)  # the recipe sets it; restored afterwards
    scope: dict = {}
    exec(compile(_recipes()["estimator"], "development.md:estimator", "exec"), scope)
    assert scope["summary"]["status"] == "finished"
    assert math.isfinite(scope["summary"]["final_test"]["test_loss"])
    log_w = torch.randn(5, 7, dtype=torch.float64) * 3  # K = 5 particles, 7 images
    renyi = scope["RenyiELBO"].bound(log_w)
    assert torch.all(log_w.mean(0) <= renyi) and torch.all(renyi <= IWAEELBO.bound(log_w))
    one = log_w[:1]  # K = 1: every bound is the one log-weight
    torch.testing.assert_close(scope["RenyiELBO"].bound(one), one[0])


def test_every_relative_link_of_the_markdown_resolves():
    """A moved file or folder leaves no dead link behind (a fresh clone has only tracked files)."""
    import re
    import subprocess

    root = DOCS.parent
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.md"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # an unpacked sdist: no git
        listed = [str(p.relative_to(root)) for p in root.rglob("*.md") if ".venv" not in p.parts]
    dead = []
    for name in listed:
        page = root / name
        if not page.is_file():  # tracked but deleted in this working tree
            continue
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not target.startswith(("http:", "https:", "mailto:")):
                if not (page.parent / target).exists():
                    dead.append(f"{name}: {target}")
    assert listed and dead == []


def test_the_readmes_results_are_the_reports_of_the_committed_runs(tmp_path):
    """README's results block is results/paper/headline.md, which a report of the committed
    runs makes again byte for byte (refresh: see scripts/readme_results.py)."""
    import importlib.util

    from pyro_dvae.report import build_report

    root = DOCS.parent
    results = root / "results" / "paper"
    build_report(results, tmp_path)
    assert (tmp_path / "headline.md").read_text() == (results / "headline.md").read_text()
    path = root / "scripts" / "readme_results.py"
    spec = importlib.util.spec_from_file_location("readme_results", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (root / "README.md").read_text()
    assert script.with_block(readme, (results / "headline.md").read_text()) == readme


# --------------------------------------------------------------------------------------------
# Every number that README and docs/ quote from results/, recomputed from the file it comes
# from (run folders' metrics.jsonl, evaluation.json and summary.json, a report, a table written
# by a script): a number changed by hand, or a result redone without its prose, fails here.

ROOT = DOCS.parent
RESULTS = ROOT / "results"
MINUS = "\N{MINUS SIGN}"


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of ``text``: its header and its body rows, each cell stripped of
    spaces and of bold marks."""
    found, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            block.append([c.strip().replace("**", "") for c in cells])
        elif block:
            found.append((block[0], block[2:]))
            block = []
    return found


def _table(text: str, header: str) -> dict[str, list[str]]:
    """The one table of ``text`` whose header starts with ``header``, by its rows' first cell."""
    tables = [rows for head, rows in _tables(text) if " | ".join(head).startswith(header)]
    assert len(tables) == 1, f"{len(tables)} tables with the header {header!r}"
    table = {row[0]: row[1:] for row in tables[0]}
    assert len(table) == len(tables[0]), f"rows of one first cell in {header!r}"
    return table


class _Run:
    """A run folder of results/: its config, metrics, summary and evaluation."""

    def __init__(self, path: Path):
        self.path = path
        self.config = json.loads((path / "config.json").read_text())
        self.metrics = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
        self.summary = json.loads((path / "summary.json").read_text())
        ev = path / "evaluation.json"
        self.evaluation = json.loads(ev.read_text()) if ev.exists() else {}
        self.test = {m["epoch"]: m for m in self.metrics if "test_loss" in m}
        self.last = self.metrics[-1]
        self.last_test = self.test[max(self.test)]

    def nll(self) -> float:
        return -self.evaluation["test_log_likelihood"]

    def one_hot(self) -> tuple[float, float]:
        """The one-hot model's −ELBO and IWAE −log p(x)."""
        hard = self.evaluation["discrete"]
        return hard["test_loss"], -hard["test_log_likelihood"]

    def active(self, space: str = " ") -> str:
        return f"{self.evaluation['active_units']}{space}/{space}{self.evaluation['latent_units']}"

    def test_range(self, first: int, last: int | None = None) -> tuple[float, float]:
        values = [m["test_loss"] for e, m in self.test.items() if first <= e <= (last or e)]
        return min(values), max(values)


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _two(cell: str) -> str:
    """A cell of three decimals (``21.915 ± 0.022``) to two, half up, as the prose rounds it."""
    return str(Decimal(cell.split(" ± ")[0]).quantize(Decimal("0.01"), ROUND_HALF_UP))


def _signed(x: float, digits: int = 2) -> str:
    """``+2.03`` or ``−3.54`` (the minus sign of the prose)."""
    return f"{x:+.{digits}f}".replace("-", MINUS)


def _prose(text: str) -> str:
    """Markdown text with its line breaks as spaces: a phrase may be broken anywhere."""
    return " ".join(text.split())


def _quoted(text: str, phrases: list[str]) -> None:
    """Every phrase (numbers recomputed from their files) is in ``text``."""
    prose = _prose(text)
    missing = [p for p in phrases if _prose(p) not in prose]
    assert missing == [], "not in the text, or no longer what the results say"


def _paper_runs(folder: str) -> dict:
    return {r.name: r for r in collect(RESULTS / folder)}


def test_the_paper_pages_10_epoch_tables_are_the_report_of_their_runs():
    """docs/paper.md's four 10-epoch tables: each is results/paper-10-epochs/report.md's table
    of that title, row for row, and what the report code makes of those runs today."""
    page = (DOCS / "paper.md").read_text()
    first_pass = page.split("The numbers below are the first pass")[1].split("**Two cells")[0]
    quoted = re.findall(r"\*\*(.+?)\*\*\n\n((?:\|.*\n)+)", first_pass)
    assert [title.split(":")[0] for title, _ in quoted] == [
        "Table 3 (test)",
        "Table 1 (test)",
        "Table 2 (test)",
        "Test −log p(x) (IWAE)",
    ]
    report = (RESULTS / "paper-10-epochs" / "report.md").read_text()
    made = {
        t.title: t.markdown() for t in report_tables(collect(RESULTS / "paper-10-epochs")).values()
    }
    for title, table in quoted:
        assert f"**{title}**\n\n{table}" in report, title
        assert made[title].startswith(f"**{title}**\n\n{table}"), title


def test_the_paper_pages_other_tables_are_their_runs():
    page = (DOCS / "paper.md").read_text()
    ln, g = (_Run(RESULTS / "long-runs" / n) for n in ("logitnormal-d20-a1.78", "gaussian-d20"))
    for run in (ln, g):
        assert (run.last["epoch"], run.evaluation["k"], run.evaluation["test_images"]) == (
            200,
            1000,
            1000,
        )
    assert _table(page, "size 20, 200 epochs") == {
        "Logit-normal, α = 1.78": [
            f"{_f(ln.last_test['test_loss'])} ({_f(PAPER_TABLE3[20][0])})",
            f"{_f(ln.last_test['test_kl'])} ({_f(PAPER_TABLE2[20][3])})",
            _f(ln.nll()),
            ln.active(),
        ],
        "Gaussian": [
            f"{_f(g.last_test['test_loss'])} ({_f(PAPER_TABLE3[20][1])})",
            _f(g.last_test["test_kl"]),
            _f(g.nll()),
            g.active(),
        ],
    }
    ten = RESULTS / "paper-10-epochs" / "runs"
    rows = {
        "Logit-normal, α = 1.78": _Run(ten / "logitnormal-d20-a1.78"),
        "Gaussian": _Run(ten / "gaussian-d20"),
        "Beta, b₀ = 1": _Run(RESULTS / "beta" / "beta-d20"),
    }
    for run in rows.values():
        assert (run.last["epoch"], run.evaluation["k"], run.evaluation["test_images"]) == (
            10,
            1000,
            1000,
        )
    assert _table(page, "size 20, 10 epochs") == {
        label: [
            _f(r.last_test["test_loss"]),
            _f(r.nll()),
            r.active(),
            _f(r.evaluation["knn_accuracy"], 3),
        ]
        for label, r in rows.items()
    }


def test_the_paper_pages_prose_numbers_are_their_runs():
    runs = list(_paper_runs("paper-10-epochs").values())

    def test_value(family: str, size: int, alpha: float | None = None, part="loss") -> float:
        (run,) = find_seeds(runs, family, size, alpha)
        return run.value("test", part)

    t1 = [
        test_value("logitnormal", s, a) - PAPER_TABLE1[s][i]
        for s in PAPER_SIZES
        for i, a in enumerate(PAPER_ALPHAS)
    ]
    t2 = {
        (s, a): test_value("logitnormal", s, a, "kl") - PAPER_TABLE2[s][i]
        for s in PAPER_SIZES
        for i, a in enumerate(PAPER_ALPHAS)
    }
    best = {s: table3_cells(runs, s)["best Logit-normal"].mean("test", "loss") for s in PAPER_SIZES}
    gauss = {s: test_value("gaussian", s) for s in PAPER_SIZES}
    best_diff = [best[s] - PAPER_TABLE3[s][0] for s in PAPER_SIZES]
    g_diff = [gauss[s] - PAPER_TABLE3[s][1] for s in PAPER_SIZES]
    lead = [best[s] - gauss[s] for s in PAPER_SIZES]
    outside = {k: v for k, v in t2.items() if abs(v) > 1.5}
    assert sorted(outside) == [(40, 1.0), (40, 1.78)]  # the sentence names these two
    by_test = {s: best_alpha(runs, s, "test").runs[0].config.alpha for s in PAPER_SIZES}
    assert by_test == {2: 1.78, 4: 1.78, 8: 1.0, 20: 1.0, 40: 1.78}
    falling = [
        s
        for s in PAPER_SIZES
        if all(
            test_value("logitnormal", s, b) < test_value("logitnormal", s, a)
            for a, b in zip(PAPER_ALPHAS, PAPER_ALPHAS[1:], strict=False)
        )
    ]
    assert falling == [40]
    assert not any(d < -1.5 for d in t1)  # "none more than 1.5 below"
    at20 = PAPER_SIZES.index(20)
    ln200, g200 = (
        _Run(RESULTS / "long-runs" / n) for n in ("logitnormal-d20-a1.78", "gaussian-d20")
    )
    sweep_ln = _Run(RESULTS / "paper" / "runs" / "logitnormal-d20-a1.78")
    ln_test, g_test = ln200.last_test["test_loss"], g200.last_test["test_loss"]
    _quoted(
        (DOCS / "paper.md").read_text(),
        [
            f"are from {_f(-min(t1))} nats below to {_f(max(t1))} above the paper's 200-epoch",
            f"(Table 1: {sum(d > 1.5 for d in t1)} of the 20 cells more than 1.5 nats above,"
            " none more than 1.5 below)",
            f"the best Logit-normal is {_f(-min(best_diff))} below to {_f(max(best_diff))} above",
            f"and the Gaussian {_f(min(g_diff))} to {_f(max(g_diff))} above.",
            f"within 1.5 nats of the paper's Table 2 in {20 - len(outside)} of the 20 cells",
            f"(not at size 40: {_signed(outside[40, 1.0])} at α = 1,"
            f" {_signed(outside[40, 1.78])} at α = 1.78)",
            f"at every size, by {_f(min(lead))}–{_f(max(lead))} nats.",
            f"(at K = 40, {_f(test_value('concrete', 40))} against the paper's"
            f" {_f(PAPER_TABLE3[40][2])})",
            f"({_signed(best_diff[at20])} and {_signed(g_diff[at20])} nats for these two cells)",
            f"lands on the paper's number ({_signed(ln_test - PAPER_TABLE3[20][0])})",
            f"the Gaussian ends {_f(ln_test - g_test)} nats ahead of the Logit-normal and"
            f" {_f(PAPER_TABLE3[20][1] - g_test)} below the paper's Gaussian (the paper had the"
            f" two {_f(PAPER_TABLE3[20][0] - PAPER_TABLE3[20][1])} apart)",
            f"ends at the same test −ELBO, {_f(sweep_ln.last_test['test_loss'])}, with train"
            f" −ELBO {_f(sweep_ln.last['train_loss'])} against {_f(ln200.last['train_loss'])}"
            f" here and test KL {_f(sweep_ln.last_test['test_kl'])} against"
            f" {_f(ln200.last_test['test_kl'])}.",
        ],
    )
    assert _f(sweep_ln.last_test["test_loss"]) == _f(ln_test)  # "the same test −ELBO"


#: the `concrete-working` preset's two runs: Jang et al.'s, and the all-relaxed one
JANG = "concrete-20x10-anneal3e-05-elbo-analytic-kl-discrete-tq1"
RELAXED = "concrete-20x10-anneal3e-05-tp0.5-tq1"


def _concrete_row(run: _Run, *parts: str, knn: int = 2) -> list[str]:
    """A row of docs/concrete.md's tables: each part's number, as the page writes it."""
    # the relaxed model's bound of a run trained on the categoricals' KL is marked: no bound
    relaxed_iwae = _f(run.nll()) + (" *" if run.config["kl"] == "discrete" else "")
    one_hot = run.one_hot()
    number = {
        "objective": _f(run.last_test["test_loss"]),
        "kl": _f(run.last_test["test_kl"]),
        "iwae": relaxed_iwae,
        "one-hot elbo": _f(one_hot[0]),
        "one-hot iwae": _f(one_hot[1]),
        "active": run.active(""),
        "knn": _f(run.evaluation["knn_accuracy"], knn),
    }
    return [number[p] for p in parts]


def test_the_concrete_pages_tables_are_their_runs():
    page = (DOCS / "concrete.md").read_text()
    # the KL floor: results/concrete/kl_floor.md (scripts/concrete_kl_floor.py), to 2 decimals
    floor = _table((RESULTS / "concrete" / "kl_floor.md").read_text(), "K | log K | τq=0.5")
    assert {k: [c.split(" ± ")[0] for c in row] for k, row in floor.items() if k in ("2", "8")} == {
        "2": ["0.693", "0.448", "0.053", "0.000", "0.000", "0.265"],
        "8": ["2.079", "3.643", "0.404", "0.000", "0.000", "1.947"],
    }  # the columns read below: log K, (0.5, 1), (0.667, 0.5), (0.5, 0.5), (1, 1)

    assert _table(page, "K | log K") == {
        k: [
            _two(row[0]),
            _two(row[1]),
            _two(row[2]),
            "0" if row[3] == row[4] == "0.000 ± 0.000" else "?",
        ]
        for k, row in floor.items()
        if k in ("2", "8", "20", "40")
    }
    # the `concrete` preset at 10 epochs: results/concrete/runs, IWAE k = 1000 on 1000 images
    ten = RESULTS / "concrete" / "runs"
    rows = {  # the page's first three cells: structure, temperatures, KL
        ("1 × 20 (the paper)", "0.5 → 1", "relaxed"): "concrete-1x20",
        ("1 × 20", "0.5 → 0.5", "relaxed"): "concrete-1x20-tp0.5",
        ("1 × 20", "0.5", "discrete"): "concrete-1x20-elbo-analytic-kl-discrete",
        ("20 × 10", "0.5 → 1", "relaxed"): "concrete-20x10",
        ("20 × 10", "2/3 → 1/2", "relaxed"): "concrete-20x10-tp0.5-tq0.666667",
        ("20 × 10", "0.5 → 0.5", "relaxed"): "concrete-20x10-tp0.5",
        ("20 × 10", "1 ↘ 0.5 → 0.5", "relaxed"): "concrete-20x10-anneal3e-05-tp0.5-tq1",
        ("20 × 10", "0.5", "discrete"): "concrete-20x10-elbo-analytic-kl-discrete",
        ("20 × 10", "1 ↘ 0.5 (Jang et al.)", "discrete"): JANG,
    }
    quoted = [
        row for head, body in _tables(page) if head[:3] == ["run", "τq → τp", "KL"] for row in body
    ]
    assert [tuple(row[:3]) for row in quoted] == list(rows)
    parts = ("objective", "kl", "iwae", "one-hot elbo", "one-hot iwae", "active", "knn")
    for row, name in zip(quoted, rows.values(), strict=True):
        run = _Run(ten / name)
        assert run.config["kl"] == row[2] and run.last["epoch"] == 10, name
        assert (run.evaluation["k"], run.evaluation["test_images"]) == (1000, 1000), name
        assert row[3:] == _concrete_row(run, *parts), name
    # the working setting at 50 epochs (k = 5000) and at 200 (k = 1000), first 1000 images
    parts = ("objective", "one-hot elbo", "one-hot iwae", "iwae", "active", "knn")
    for epochs, folder, k in ((50, "concrete-working/runs", 5000), (200, "paper/runs", 1000)):
        table = _table(page, f"run ({epochs} epochs)")
        assert list(table) == [
            "20 × 10, τ 1 ↘ 0.5, discrete KL (Jang et al.)",
            "20 × 10, τq 1 ↘ 0.5, τp 0.5, relaxed KL",
        ]
        for row, name in zip(table.values(), (JANG, RELAXED), strict=True):
            run = _Run(RESULTS / folder / name)
            assert run.last["epoch"] == epochs
            assert (run.evaluation["k"], run.evaluation["test_images"]) == (k, 1000)
            assert row == _concrete_row(run, *parts, knn=3), (epochs, name)


def test_the_concrete_pages_prose_numbers_are_their_runs():
    (cost,) = [
        rows
        for head, rows in _tables((RESULTS / "concrete" / "kl_floor.md").read_text())
        if head[:3] == ["K", "c", "P(top class)"]
    ]
    relaxed_kl = {(k, c): float(kl.split(" ± ")[0]) for k, c, _, kl, _ in cost}
    uninformed, confident = relaxed_kl["20", "0"], relaxed_kl["20", "8"]
    paper_1x20 = _Run(RESULTS / "concrete" / "runs" / "concrete-1x20")
    jang50, relaxed50 = (_Run(RESULTS / "concrete-working" / "runs" / n) for n in (JANG, RELAXED))
    jang200, relaxed200 = (_Run(RESULTS / "paper" / "runs" / n) for n in (JANG, RELAXED))
    gaussian = _Run(RESULTS / "long-runs" / "gaussian-d20")
    assert gaussian.evaluation["test_images"] == 1000
    kls = sorted(_f(paper_1x20.last[k], 1) for k in ("train_kl", "test_kl"))
    paper_concrete = [PAPER_TABLE3[s][2] for s in PAPER_SIZES]
    paper_others = [v for s in PAPER_SIZES for v in PAPER_TABLE3[s][:2]]
    (top,) = [r[2] for r in cost if r[:2] == ["20", "8"]]
    discrete_kl = [
        _Run(RESULTS / "concrete" / "runs" / n)
        for n in (
            "concrete-20x10-elbo-analytic-kl-discrete",
            JANG,
        )
    ]
    (knn,) = {_f(r.evaluation["knn_accuracy"]) for r in discrete_kl}
    _quoted(
        (DOCS / "concrete.md").read_text(),
        [
            f"reached a −ELBO of {min(paper_concrete):.0f}–{max(paper_concrete):.0f} against"
            f" about {min(paper_others):.0f}–{max(paper_others):.0f} for the others",
            f"from K = 8 ({PAPER_TABLE3[8][2]:.1f}) to K = 40 ({PAPER_TABLE3[40][2]:.1f})",
            f"has a KL of {kls[0]}–{kls[1]} nats: the floor exactly",
            f"so the top class has probability {_f(float(top))} adds",
            f"the most informative of all (kNN {knn})",
            f"run does better: {_f(jang50.last_test['test_loss'])} is Jang et al.'s objective",
            f"above), and {_f(jang50.one_hot()[0])}, the −ELBO of the strictly discrete model",
            f"Neither the {_f(jang200.last_test['test_loss'])} nor the {_f(jang200.one_hot()[0])}"
            f" (on the first {jang200.evaluation['test_images']} test images) is a number",
            f"adds about {confident - uninformed:.0f} nats of relaxed KL (K = 20:"
            f" {_f(uninformed, 1)} → {_f(confident, 1)}) for at most log 20 ="
            f" {_f(math.log(20), 1)} nats",
            f"our 1 × 20 run has {paper_1x20.evaluation['active_units']} of 20 active units and a"
            f" kNN accuracy of {_f(paper_1x20.evaluation['knn_accuracy'])} (chance)",
            f"(reconstruction ≈ {paper_1x20.last_test['test_recon']:.0f} nats)",
            f"(the size-20 Gaussian of [results/long-runs/](../results/long-runs/) at 200 epochs:"
            f" {_f(gaussian.evaluation['test_loss'])} on them,"
            f" {_f(gaussian.last_test['test_loss'])} on all)",
            f"puts −log p(x) at ≤ {_f(jang50.one_hot()[1])} nats.",
            "stalls from epoch 14 on (between {} and {} over epochs 14–50, {} at the last)".format(
                *map(_f, relaxed50.test_range(14)), _f(relaxed50.last_test["test_loss"])
            ),
            f"objective is {jang50.last_test['test_loss'] - jang200.last_test['test_loss']:.1f}"
            f" nats below the 50-epoch run above ({_f(jang50.last_test['test_loss'])} →"
            f" {_f(jang200.last_test['test_loss'])}) and its discrete model"
            f" {jang50.one_hot()[0] - jang200.one_hot()[0]:.1f} ({_f(jang50.one_hot()[0])} →"
            f" {_f(jang200.one_hot()[0])}), still falling"
            f" ({_signed(jang200.test[200]['test_loss'] - jang200.test[180]['test_loss'])} over"
            " the last 20 epochs), with fewer units active"
            f" ({jang200.evaluation['active_units']} against {jang50.evaluation['active_units']}"
            " of 200)",
            "stays where it stalled (between {} and {} over epochs 14–200; {} → {}).".format(
                *map(_f, relaxed200.test_range(14)),
                _f(relaxed50.last_test["test_loss"]),
                _f(relaxed200.last_test["test_loss"]),
            ),
        ],
    )


def test_the_speed_pages_10_epoch_table_is_its_runs():
    folder = RESULTS / "core-10-epochs"
    rows = {
        "gaussian d20": _Run(folder / "gaussian-d20"),
        "logitnormal α = 1.78, d20": _Run(folder / "logitnormal-d20-a1.78"),
        "concrete 1 × 20 (paper's setting)": _Run(folder / "concrete-1x20"),
    }
    page = (DOCS / "speed.md").read_text()
    kl = rows["concrete 1 × 20 (paper's setting)"].last_test["test_kl"]
    _quoted(page, [f"about {_f(kl, 1)} nats, although one 20-way variable can carry at most"])
    assert _table(page, "run | epochs | train −ELBO") == {
        label: [
            str(r.last["epoch"]),
            _f(r.last["train_loss"]),
            _f(r.last_test["test_loss"]),
            _f(r.summary["seconds_per_epoch"], 1),
        ]
        for label, r in rows.items()
    }


def test_the_readmes_prose_numbers_are_their_runs():
    """The README's numbers outside its generated results block."""
    readme = (ROOT / "README.md").read_text()
    outside = readme.split("<!-- results:start -->")[0] + readme.split("<!-- results:end -->")[1]
    runs = list(_paper_runs("paper").values())
    cells = {s: table3_cells(runs, s) for s in PAPER_SIZES}
    best = {s: c["best Logit-normal"].mean("test", "loss") for s, c in cells.items()}
    gauss = {s: c["Gaussian"].mean("test", "loss") for s, c in cells.items()}
    concrete = {s: c["Concrete"].mean("test", "loss") for s, c in cells.items()}
    lead = [best[s] - gauss[s] for s in PAPER_SIZES]
    paper_ahead = [s for s in PAPER_SIZES if PAPER_TABLE3[s][1] < PAPER_TABLE3[s][0]]
    paper_behind = [s for s in PAPER_SIZES if s not in paper_ahead]
    assert all(v > 0 for v in lead)
    row40 = [find_seeds(runs, "logitnormal", 40, a)[0].value("test", "loss") for a in PAPER_ALPHAS]
    paper40 = max(PAPER_TABLE1[40]) - min(PAPER_TABLE1[40])
    above = [concrete[s] - PAPER_TABLE3[s][2] for s in (2, 4, 8)]
    g20 = cells[20]["Gaussian"].values("test", "loss")
    ln20 = cells[20]["best Logit-normal"].values("test", "loss")
    welch = (statistics.variance(g20) / len(g20) + statistics.variance(ln20) / len(ln20)) ** 0.5
    (alpha1,) = find_seeds(runs, "logitnormal", 20, 1.0)
    jang = cells[20]["working Concrete"].runs[0]
    ten = _paper_runs("paper-10-epochs")
    concrete10 = {s: ten[f"concrete-1x{s}"] for s in PAPER_SIZES}
    enum = {
        s: _Run(RESULTS / "discrete" / "runs" / f"categorical-1x{s}-elbo-enum") for s in (8, 20, 40)
    }
    below_relaxed = [
        concrete10[s].value("test", "loss") - enum[s].last_test["test_loss"] for s in enum
    ]
    below_one_hot = [
        concrete10[s].evaluation["discrete"]["test_loss"] - enum[s].last_test["test_loss"]
        for s in enum
    ]
    # the Ray Tune search: its output, quoted in results/tune-alpha/README.md
    tune = (RESULTS / "tune-alpha" / "README.md").read_text()
    trials = [
        (float(a), int(e), float(v))
        for a, e, v in re.findall(r"^\| ([\d.]+) \| (\d+) \| ([\d.]+) \|$", tune, re.M)
    ]
    full = [t for t in trials if t[1] == 10]
    ahead = [t for t in full if t[2] < 125]
    (behind,) = [t for t in full if t[2] >= 125]
    assert len(trials) == 12 and len(full) == 5
    _quoted(
        outside,
        [
            f"All {len(runs)} runs of the sweep reached the paper's 200 epochs",
            f"ahead of the best Logit-normal at every size, by {_f(min(lead))}–{_f(max(lead))}"
            f" nats (the paper has it ahead at sizes {', '.join(map(str, paper_ahead[:-1]))} and"
            f" {paper_ahead[-1]} and behind at {', '.join(map(str, paper_behind))})",
            f"at size 40 the best Logit-normal (α = 1.78) is {PAPER_TABLE3[40][0] - best[40]:.1f}"
            f" nats below the paper's, which had its size-40 row {paper40:.1f} nats wide over α"
            f" against our {max(row40) - min(row40):.1f}.",
            f"The Concrete is {min(above):.1f}–{max(above):.1f} nats above the paper's at K = 2–8"
            f" and {concrete[20] - PAPER_TABLE3[20][2]:.0f} at K = 20",
            f"and agree ({_f(concrete[40])} against {_f(PAPER_TABLE3[40][2])};",
            f"the Gaussian {cells[20]['Gaussian'].text('test', 'loss').split(' (n=')[0]},",
            f"α = 1 would win on the test set, {_f(alpha1.value('test', 'loss'))} with seed 0)"
            f" {cells[20]['best Logit-normal'].text('test', 'loss').split(' (n=')[0]} against the"
            f" paper's {_f(PAPER_TABLE3[20][0])}.",
            f"The Gaussian's lead, {_f(best[20] - gauss[20])} nats with a standard error of"
            f" {_f(welch)} (Welch)",
            f"the paper has the same ordering with a lead of"
            f" {_f(PAPER_TABLE3[20][0] - PAPER_TABLE3[20][1])}, one run each.",
            f"(K = 40: {_f(concrete[40])} against the paper's {_f(PAPER_TABLE3[40][2])} after 200"
            f" epochs, {_f(concrete10[40].value('test', 'loss'))} after 10)",
            f"trains: {_f(jang.value('test', 'loss'))} test −ELBO on its own objective after the"
            " paper's 200 epochs",
            f"and {_f(jang.evaluation['discrete']['test_loss'])} scored as a strictly discrete"
            f" model (one-hot codes, the first {jang.evaluation['test_images']} test images)",
            f"it is {min(below_relaxed):.0f}–{max(below_relaxed):.0f} nats below our 10-epoch run"
            f" of the paper's Concrete setting at K ≥ 8 (K = 40:"
            f" {_f(enum[40].last_test['test_loss'])} against"
            f" {_f(concrete10[40].value('test', 'loss'))}), and"
            f" {min(below_one_hot):.0f}–{max(below_one_hot):.0f} below that run's one-hot model",
            f"epochs: {', '.join(_f(PAPER_TABLE3[s][2]) for s in (8, 20, 40))} at K = 8, 20, 40",
            f"put α ≈ {min(t[0] for t in ahead):.0f}–{max(t[0] for t in ahead):.0f} ahead (test"
            f" −ELBO {min(t[2] for t in ahead):.1f}–{max(t[2] for t in ahead):.1f}) of α ="
            f" {behind[0]:.2f} ({behind[2]:.1f})",
        ],
    )


def test_the_paper_sweeps_readme_is_its_runs():
    """results/paper/README.md: its tables of every run, of the Burda et al. evaluations and of
    the Concrete runs, and the numbers of its K = 40 paragraph."""
    text = (RESULTS / "paper" / "README.md").read_text()
    folder = RESULTS / "paper" / "runs"

    def paper(run: _Run) -> str:
        c = run.config
        size = c["categories"] if c["family"] == "concrete" else c["latent_dim"]
        if c["family"] == "logitnormal":
            return _f(PAPER_TABLE1[size][PAPER_ALPHAS.index(c["alpha"])])
        if c["family"] == "concrete" and c["latent_dim"] > 1:
            return "–"  # the working Concrete: not in the paper
        return _f(PAPER_TABLE3[size][1 if c["family"] == "gaussian" else 2])

    table = _table(text, "run | test −ELBO (paper)")
    assert sorted(table) == sorted(p.name for p in folder.iterdir())
    for name, row in table.items():
        run = _Run(folder / name)
        assert row == [
            f"{_f(run.last_test['test_loss'])} ({paper(run)})",
            _f(run.last["train_loss"]),
            _f(run.summary["seconds_per_epoch"], 1),
        ], name
    for name, row in _table(text, "run | test −log p(x) (IWAE, ± s.e.)").items():
        run = _Run(folder / name)
        assert (run.evaluation["k"], run.evaluation["test_images"]) == (5000, 10000), name
        assert row[:4] == [
            f"{_f(run.nll())} ± {_f(run.evaluation['test_log_likelihood_se'])}",
            _f(run.evaluation["test_loss"]),
            run.active(),
            _f(run.evaluation["knn_accuracy"], 3),
        ], name
    names = {p.name.replace("anneal3e-05-elbo-analytic", "…"): p.name for p in folder.iterdir()}
    names |= {n.replace("anneal3e-05", "…"): p for n, p in names.items()}
    for label, row in _table(text, "run | −ELBO | recon | KL").items():
        run = _Run(folder / names[label.split(" (")[0]])
        assert (run.evaluation["k"], run.evaluation["test_images"]) == (1000, 1000), label
        off = " *" if run.config["kl"] == "discrete" else ""
        ev = run.evaluation
        assert row == [
            _f(ev["test_loss"]) + off,
            _f(ev["test_recon"]),
            _f(ev["test_kl"]) + off,
            _f(run.nll()) + off,
            *map(_f, run.one_hot()),
            run.active(),
            _f(ev["knn_accuracy"], 3),
        ], label
    k40 = _Run(folder / "concrete-1x40")
    floor = _table((RESULTS / "concrete" / "kl_floor.md").read_text(), "K | log K | τq=0.5")
    ours = k40.last_test["test_loss"]
    _quoted(
        text,
        [
            f"concrete-1x40's test −ELBO is {_f(ours)} against the paper's"
            f" {_f(PAPER_TABLE3[40][2])} ({_signed(ours - PAPER_TABLE3[40][2])}),"
            f" its test KL {_f(k40.last_test['test_kl'])} nats, the floor at K = 40"
            f" ({_two(floor['40'][1])} by Monte Carlo)",
            f"({_f(k40.test[1]['test_loss'])} after one epoch, {_f(k40.test[10]['test_loss'])}"
            " after 10, then between {} and {} over epochs 100–200, {} at the last)".format(
                *map(_f, k40.test_range(100, 200)), _f(k40.test[200]["test_loss"])
            ),
        ],
    )


def test_the_guides_pages_numbers_are_their_runs():
    guides = RESULTS / "guides"
    default = _Run(RESULTS / "paper-10-epochs" / "runs" / "logitnormal-d20-a1.78")
    runs = {p.name: _Run(p) for p in guides.iterdir() if p.is_dir()}
    assert {r.last["epoch"] for r in [default, *runs.values()]} == {10}
    test = {name: run.last_test["test_loss"] for name, run in runs.items()}
    _quoted(
        (DOCS / "guides.md").read_text(),
        [
            f"guide {_f(default.last_test['test_loss'])} (Monte Carlo KL) /"
            f" {_f(test['default-analytic'])} (analytic KL), flow guide {_f(test['flow'])},"
            f" full-covariance guide {_f(test['full-covariance'])}.",
            # the same guide without the 0.01: exp diagonal, off-diagonal outputs zeroed at first
            f"unscaled, it stalled training ({_f(test['full-covariance-zeroinit'], 1)} after 10"
            " epochs).",
        ],
    )


def test_the_estimators_pages_snr_numbers_are_their_run():
    rows = json.loads((ROOT / "results/iwae-snr/iwae_snr.json").read_text())
    snr = {(r["gradient"], r["k"]): r["snr_encoder"] for r in rows}
    dreg = [v for (g, _), v in snr.items() if g == "dreg"]
    text = " ".join((ROOT / "docs/estimators.md").read_text().split())
    assert (
        f"the standard encoder SNR fell from {snr['standard', 1]:.2f} at K = 1 to "
        f"{snr['standard', 500]:.2f} at K = 500, DReG's stayed between {min(dreg):.1f} and "
        f"{max(dreg):.1f}, and STL's rose from {snr['stl', 1]:.1f} to {snr['stl', 500]:.0f}"
    ) in text


def test_the_estimators_pages_one_epoch_numbers_are_their_runs():
    runs = ROOT / "results/iwae-training/one-epoch"
    k5 = json.loads((runs / "gaussian-k5-dreg/metrics.jsonl").read_text().splitlines()[-1])
    k50 = json.loads(
        (runs / "gaussian-k50-dreg-subset1000/metrics.jsonl").read_text().splitlines()[-1]
    )
    text = " ".join((ROOT / "docs/estimators.md").read_text().split())
    assert f"(test −ELBO {k5['test_loss']:.2f} after it) in {k5['seconds']:.0f} s" in text
    assert f"K = 50 DReG on 1000 images took {k50['seconds']:.1f} s for its 20 steps" in text


def test_the_estimators_pages_mnist_snr_numbers_are_their_run():
    rows = json.loads((ROOT / "results/iwae-snr/mnist-one-epoch/iwae_snr.json").read_text())
    snr = {(r["gradient"], r["k"]): r["snr_encoder"] for r in rows}
    text = " ".join((ROOT / "docs/estimators.md").read_text().split())
    assert (
        f"standard encoder SNR fell from {snr['standard', 1]:.2f} at K = 1 to "
        f"{snr['standard', 500]:.2f} at K = 500 and DReG's from {snr['dreg', 1]:.2f} to "
        f"{snr['dreg', 500]:.2f}"
    ) in text
    assert f"STL's rose from {snr['stl', 1]:.2f} to {snr['stl', 500]:.2f}" in text
    ess = {r["k"]: r["ess"] for r in rows}
    assert f"(the 500 draws weigh as {ess[500]:.2f})" in text
