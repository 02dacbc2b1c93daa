"""``pyro-dvae report`` and ``pyro-dvae plot`` on a small sweep folder of real (tiny) runs."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

import pyro_dvae as pd
from pyro_dvae.evaluation import evaluate_run
from pyro_dvae.paper import PAPER_TABLE1, PAPER_TABLE3
from pyro_dvae.paper_figures import logit_normal_pdf
from pyro_dvae.report import likelihood_tables, paper_tables
from pyro_dvae.results import collect
from pyro_dvae.scorecard import scorecard_tables
from pyro_dvae.sweep import run_name

from .conftest import mnist_root
from .helpers import invoke, read_json, run_ok

ROOT = mnist_root()
# the paper's dataset, cut to its first 500 training and 500 test images, small networks
TINY = dict(dataset="mnist", subset=500, hidden=16, epochs=2)


def _fit_all(configs, root):
    for cfg in configs:
        out = root / "runs" / run_name(cfg)
        pd.fit(cfg, out=out, data_dir=ROOT, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Logit-normal (two α), Gaussian and Concrete runs of sizes 2 and 4 on MNIST."""
    if ROOT is None:
        pytest.skip("MNIST raw files not found (set PYRO_DVAE_DATA)")
    root = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    configs = []
    for size in (2, 4):
        configs += [
            pd.FitConfig(family="logitnormal", latent_dim=size, alpha=a, **TINY)
            for a in (0.32, 1.78)
        ]
        configs.append(pd.FitConfig(family="gaussian", latent_dim=size, **TINY))
        configs.append(pd.FitConfig(family="concrete", latent_dim=1, categories=size, **TINY))
    try:
        _fit_all(configs, root)
        for name in ("gaussian-d2", "logitnormal-d2-a0.32"):
            evaluate_run(root / "runs" / name, data_dir=ROOT, k=5, progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Runs on digits that would fill empty cells of the paper's tables: Logit-normal α = 0.56
    at size 2, and a Gaussian at size 8."""
    root = tmp_path_factory.mktemp("digits")
    tiny = dict(dataset="digits", hidden=16, epochs=2)
    configs = [
        pd.FitConfig(family="logitnormal", latent_dim=2, alpha=0.56, **tiny),
        pd.FitConfig(family="gaussian", latent_dim=8, **tiny),
    ]
    _fit_all(configs, root)
    return root


def _csv(path):
    with open(path) as fh:
        return list(csv.reader(fh))


@pytest.mark.slow
def test_report_builds_the_papers_tables(sweep, tmp_path):
    out = tmp_path / "report"
    result = run_ok(["report", str(sweep), "--out", str(out)])
    runs = {r.name: r for r in collect(sweep)}
    assert len(runs) == 8

    t1 = _csv(out / "table1_test.csv")
    assert t1[0] == ["size", "α = 0.32", "α = 0.56", "α = 1", "α = 1.78"]
    assert [row[0] for row in t1[1:]] == ["2", "4", "8", "20", "40"]
    test_loss = runs["logitnormal-d2-a0.32"].last_test["test_loss"]
    assert t1[1][1] == f"{test_loss:.2f} ({PAPER_TABLE1[2][0]:.2f})"
    assert t1[1][2] == f"– ({PAPER_TABLE1[2][1]:.2f})"  # α = 0.56 was not run
    assert t1[3][1].startswith("–")  # size 8 was not run

    t2 = _csv(out / "table2_train.csv")
    assert t2[2][4].startswith(f"{runs['logitnormal-d4-a1.78'].last['train_kl']:.2f} (")

    t3 = _csv(out / "table3_test.csv")
    ln = [runs[f"logitnormal-d4-a{a}"].last_test["test_loss"] for a in ("0.32", "1.78")]
    assert t3[2][1].startswith(f"{min(ln):.2f} ({PAPER_TABLE3[4][0]:.2f})")
    assert (
        t3[2][3] == f"{runs['concrete-1x4'].last_test['test_loss']:.2f} ({PAPER_TABLE3[4][2]:.2f})"
    )

    iwae = _csv(out / "table1_iwae.csv")
    nll = -read_json(sweep / "runs" / "gaussian-d2" / "evaluation.json")["test_log_likelihood"]
    assert _csv(out / "table3_iwae.csv")[1][2] == f"{nll:.2f}"
    assert iwae[1][4] == "–"  # logitnormal-d2-a1.78 has no evaluation

    md = (out / "report.md").read_text()
    assert "epochs reached: 2 (of 2 planned); the paper trained 200 epochs" in md
    images = read_json(sweep / "runs" / "gaussian-d2" / "evaluation.json")["test_images"]
    assert f"IWAE bound, k = 5 on {images} test images;" in md
    assert "Table 3 (test)" in result.stdout
    assert "No paper tables" not in md and "only the runs on mnist" not in md
    runs_csv = _csv(out / "runs.csv")
    assert runs_csv[0][:2] == ["run", "dataset"] and {row[1] for row in runs_csv[1:]} == {"mnist"}
    # each run's training time: its epochs' seconds, summed; the evaluation's from its file
    row = {r[0]: dict(zip(runs_csv[0], r, strict=True)) for r in runs_csv[1:]}["gaussian-d2"]
    metrics = [
        json.loads(line)
        for line in (sweep / "runs" / "gaussian-d2" / "metrics.jsonl").read_text().splitlines()
    ]

    def seconds(t: float) -> str:  # these tiny runs take under a minute
        assert t < 60
        return f"{t:.1f} s" if t < 10 else f"{t:.0f} s"

    assert row["training time"] == seconds(sum(m["seconds"] for m in metrics))
    ev_seconds = read_json(sweep / "runs" / "gaussian-d2" / "evaluation.json")["seconds"]
    assert row["evaluation time"] == seconds(ev_seconds)
    total = sum(r.train_seconds for r in collect(sweep))
    assert f"{seconds(total)} over all runs" in md


def test_the_notes_name_the_fields_that_differ_from_the_papers_setting(sweep):
    runs = collect(sweep)
    # the fixture's runs differ from the paper's grid (the `paper` preset) in these two only;
    # their epochs (2 of the paper's 200) are in the note of their own
    fields = f"hidden={TINY['hidden']}, subset={TINY['subset']}"
    differ = f"the runs differ from the paper's setting in {fields}"
    tables = [*paper_tables(runs, "test"), *likelihood_tables(runs), scorecard_tables(runs)[0]]
    assert len(tables) == 6
    for table in tables:
        assert f"; {differ}." in table.note, table.title


def test_runs_of_another_dataset_stay_out_of_the_papers_tables(sweep, digits_runs, tmp_path):
    run_ok(["report", str(sweep), "--out", str(tmp_path / "mnist")])
    mixed = tmp_path / "mixed"
    shutil.copytree(sweep / "runs", mixed / "runs")
    for run in (digits_runs / "runs").iterdir():
        shutil.copytree(run, mixed / "runs" / run.name)
    result = run_ok(["report", str(mixed), "--out", str(tmp_path / "both")])

    papers = sorted(p.name for p in (tmp_path / "mnist").glob("*.csv") if p.name != "runs.csv")
    assert "scorecard.csv" in papers and "table3_iwae.csv" in papers
    assert papers == sorted(
        p.name for p in (tmp_path / "both").glob("*.csv") if p.name != "runs.csv"
    )
    for name in papers:  # every cell and count, train and test, as without the digits runs
        assert (tmp_path / "both" / name).read_text() == (tmp_path / "mnist" / name).read_text()
    # the cells the digits runs would fill: size 2, α = 0.56; size 8, Gaussian
    assert _csv(tmp_path / "both" / "table1_test.csv")[1][2].startswith("– (")
    assert _csv(tmp_path / "both" / "table3_test.csv")[3][2].startswith("– (")

    listed = {row[0]: row[1] for row in _csv(tmp_path / "both" / "runs.csv")[1:]}
    digits = {p.name for p in (digits_runs / "runs").iterdir()}
    assert listed == {r.name: r.config.dataset for r in collect(mixed)}
    assert {n for n, d in listed.items() if d == "digits"} == digits and len(listed) == 10
    assert f"; {len(digits)} runs are on digits, in All runs only." in result.stdout


def test_a_folder_of_other_datasets_gets_every_run_and_one_sentence(sweep, digits_runs, tmp_path):
    out = tmp_path / "report"
    run_ok(["report", str(sweep), "--out", str(out)])  # its tables must not outlive it here
    assert (out / "table3_test.csv").exists()
    result = run_ok(["report", str(digits_runs), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "runs.csv", "runs.json"]
    md = (out / "report.md").read_text()
    assert result.stdout.strip() == md.strip()
    sentence = "No paper tables: they need runs on mnist, the paper's dataset, and these runs"
    assert md.count(sentence) == 1 and "Table 1" not in md and "Scorecard" not in md
    rows = _csv(out / "runs.csv")[1:]
    assert sorted(row[0] for row in rows) == sorted(
        p.name for p in (digits_runs / "runs").iterdir()
    )
    assert all(row[1] == "digits" for row in rows)
    assert {r["dataset"] for r in read_json(out / "runs.json")} == {"digits"}


def test_report_of_a_folder_without_runs_is_one_error_line(tmp_path):
    result = invoke(["report", str(tmp_path)])
    assert result.exit_code != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")


@pytest.mark.slow
@pytest.mark.parametrize(
    "figure,options",
    [
        ("fig2", ["--sizes", "2,4"]),
        ("fig3", ["--tsne-size", "4", "--images", "120"]),
        ("fig4", ["--hist-size", "4"]),
        ("fig5", []),
        ("fig6", []),
        ("curves", []),
    ],
)
def test_every_figure_writes_a_png(sweep, tmp_path, figure, options):
    out = tmp_path / "figs"
    args = ["plot", str(sweep), "--out", str(out), "--figure", figure, "--threads", "1"]
    run_ok([*args, "--data-dir", str(ROOT), *options])
    pngs = list(out.glob(f"{figure}_*.png"))
    assert len(pngs) == 1
    data = pngs[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(out.glob(".*"))  # no temporary left behind


def test_plot_names_the_panels_it_drew_empty(sweep, tmp_path):
    args = ["plot", str(sweep), "--out", str(tmp_path), "--threads", "1", "--data-dir", str(ROOT)]
    empty = run_ok([*args, "--figure", "fig4", "--hist-size", "8"]).stderr
    assert "fig4_histograms.png (empty panels: no Gaussian of size 8 in the sweep; " in empty
    assert "no Logit-normal α=1.78 of size 8 in the sweep)" in empty
    full = run_ok([*args, "--figure", "fig5"]).stderr  # both 2-D runs are in the sweep
    assert "fig5_latent_grid.png" in full and "empty panels" not in full


def test_curves_of_a_sweep_without_mnist_runs_is_an_empty_figure_not_an_error(
    digits_runs, tmp_path
):
    result = run_ok(["plot", str(digits_runs), "--out", str(tmp_path), "--figure", "curves"])
    assert "curves_table3.png (empty panels: no MNIST run of Table 3" in result.stderr
    assert (tmp_path / "curves_table3.png").exists()


def test_figures_draw_one_datasets_runs_never_a_mix(sweep, digits_runs, tmp_path, monkeypatch):
    import pyro_dvae.paper_figures as paper_figures

    mixed = tmp_path / "mixed"
    shutil.copytree(sweep / "runs", mixed / "runs")
    shutil.copytree(digits_runs / "runs", mixed / "runs", dirs_exist_ok=True)
    drawn = []
    save = paper_figures.save_figure

    def capture(fig, path):
        lines = {(ax.get_title(), ln.get_label()) for ax in fig.axes for ln in ax.get_lines()}
        drawn.append((fig._suptitle.get_text(), lines))
        return save(fig, path)

    monkeypatch.setattr(paper_figures, "save_figure", capture)
    args = ["plot", str(mixed), "--out", str(tmp_path / "f"), "--figure", "fig2", "--sizes", "2,8"]
    result = run_ok(args)  # MNIST, the paper's: digits' Gaussian of size 8 is not drawn
    assert f"drawing the mnist runs; {mixed} also holds digits runs" in result.stderr
    assert "empty panels: no runs of size 8" in result.stderr
    title, lines = drawn[-1]
    assert title == "Figure 2: reconstruction loss per epoch (epochs reached: 2)"
    size2 = {label for t, label in lines if t == "latent dimension 2"}
    assert size2 == {"Logit-normal α=0.32", "Logit-normal α=1.78", "Gaussian", "Concrete 1×2"}
    # two runs that one label would name alike are told apart by their run names
    shutil.copytree(mixed / "runs" / "gaussian-d2", mixed / "runs" / "gaussian-d2-s1")
    seeded = mixed / "runs" / "gaussian-d2-s1" / "config.json"
    seeded.write_text(json.dumps({**json.loads(seeded.read_text()), "seed": 1}))
    run_ok(args)
    size2 = {label for t, label in drawn[-1][1] if t == "latent dimension 2"}
    assert {"gaussian-d2", "gaussian-d2-s1"} <= size2 and "Gaussian" not in size2
    run_ok([*args, "--dataset", "digits"])
    title, lines = drawn[-1]
    assert title == "Figure 2: reconstruction loss per epoch (epochs reached: 2) · digits"
    assert lines == {
        ("latent dimension 2", "Logit-normal α=0.56"),
        ("latent dimension 8", "Gaussian"),
    }
    # two datasets, neither the paper's: the user chooses
    other = mixed / "runs" / "gaussian-d8-digits" / "config.json"
    shutil.rmtree(mixed / "runs" / "gaussian-d2")
    for name in [p.name for p in (mixed / "runs").iterdir()]:
        if json.loads((mixed / "runs" / name / "config.json").read_text())["dataset"] == "mnist":
            shutil.rmtree(mixed / "runs" / name)
    config = json.loads(other.read_text())
    other.write_text(json.dumps({**config, "dataset": "kmnist"}))
    result = invoke(args)
    assert result.exit_code != 0
    assert "holds runs of digits, kmnist: choose one with --dataset" in result.stderr
    run_ok(["plot", str(mixed), "--out", str(tmp_path / "f"), "--figure", "fig6"])  # no runs
    monkeypatch.chdir(tmp_path)  # without --out: into the folder, as report, not ./figures
    run_ok(["plot", str(mixed), "--figure", "fig6"])
    assert (mixed / "figures" / "fig6_logitnormal_densities.png").is_file()
    assert not (tmp_path / "figures").exists()


def test_table3_curves_draw_each_models_test_elbo_per_epoch(sweep, tmp_path, monkeypatch):
    import pyro_dvae.paper_figures as paper_figures

    drawn = {}
    save = paper_figures.save_figure

    def capture(fig, path):
        for ax in fig.axes:
            for line in ax.get_lines():
                drawn[(ax.get_title(), line.get_label())] = line.get_ydata().tolist()
        return save(fig, path)

    monkeypatch.setattr(paper_figures, "save_figure", capture)
    paper_figures.make_figures(sweep, tmp_path, ["curves"])
    runs = {r.name: r for r in collect(sweep)}

    def test_losses(name):
        return [m["test_loss"] for m in runs[name].run_dir_metrics() if "test_loss" in m]

    for size in (2, 4):
        # Table 3's Logit-normal is the α with the lowest final train −ELBO, not test −ELBO
        by_train = min(
            (runs[f"logitnormal-d{size}-a{a}"] for a in ("0.32", "1.78")),
            key=lambda r: r.last["train_loss"],
        )
        top = f"size {size}: Logit-normal and Gaussian"
        assert drawn[(top, f"Logit-normal α={by_train.config.alpha:g}")] == test_losses(
            by_train.name
        )
        assert drawn[(top, "Gaussian")] == test_losses(f"gaussian-d{size}")
        assert drawn[(f"size {size}: Concrete", f"Concrete 1×{size}")] == test_losses(
            f"concrete-1x{size}"
        )
    assert len(drawn) == 6  # one Logit-normal α per size, no size without runs


@pytest.mark.slow
def test_figure_3_names_the_number_of_test_images_it_encoded(
    sweep, digits_runs, tmp_path, monkeypatch
):
    import pyro_dvae.paper_figures as paper_figures
    from pyro_dvae.data import load_dataset

    titles = []
    save = paper_figures.save_figure

    def capture(fig, path):
        titles.append(fig._suptitle.get_text())
        return save(fig, path)

    monkeypatch.setattr(paper_figures, "save_figure", capture)
    paper_figures.make_figures(sweep, tmp_path, ["fig3"], tsne_size=4, images=120, data_dir=ROOT)
    paper_figures.make_figures(digits_runs, tmp_path, ["fig3"], tsne_size=8)  # all: --images 10000
    encoded = [120, len(load_dataset("digits").test)]  # digits has fewer test images
    assert encoded[1] < 10000
    head = "Figure 3: encodings of {} test images, coloured by digit"
    assert titles == [head.format(encoded[0]), head.format(encoded[1]) + " · digits"]


def test_logit_normal_pdf_of_figure_6_is_the_distribution_density():
    z = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    for mu, alpha in [(0.0, 0.32), (1.0, 1.78)]:
        expected = pd.LogitNormal(torch.tensor(mu), torch.tensor(alpha).sqrt()).log_prob(z).exp()
        assert torch.allclose(torch.as_tensor(logit_normal_pdf(z.numpy(), mu, alpha)), expected)


def test_figure_6s_texts_do_not_overlap(tmp_path, monkeypatch):
    """Every title, axis label and tick label of Figure 6 has its own place on the canvas (its
    top panel's z label once ran into the lower panel's title, "μ = 1" reading "μ ≠ 1")."""
    from pyro_dvae import paper_figures

    boxes = {}

    def capture(fig, path):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        texts = [fig._suptitle]
        for ax in fig.axes:
            texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
            texts += ax.get_xticklabels() + ax.get_yticklabels()
        for i, t in enumerate(texts):
            if t is not None and t.get_visible() and t.get_text():
                boxes[(i, t.get_text())] = t.get_window_extent(renderer)
        return path

    monkeypatch.setattr(paper_figures, "save_figure", capture)
    paper_figures.logit_normal_densities([], tmp_path)
    assert {"μ = 0", "μ = 1", "z"} <= {text for _, text in boxes}
    items = list(boxes.items())
    clashes = [
        (a, b)
        for n, (a, box) in enumerate(items)
        for b, other in items[n + 1 :]
        if box.overlaps(other)
    ]
    assert clashes == []
