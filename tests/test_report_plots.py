"""``pyro-dvae report`` and ``pyro-dvae plot`` on a small sweep folder of real (tiny) runs."""

from __future__ import annotations

import csv

import pytest
import torch

import pyro_dvae as pd
from pyro_dvae.evaluation import evaluate_run
from pyro_dvae.plots import logit_normal_pdf
from pyro_dvae.report import PAPER_TABLE1, PAPER_TABLE3, collect
from pyro_dvae.sweep import run_name

from .helpers import invoke, read_json, run_ok

TINY = dict(dataset="digits", hidden=16, epochs=2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Logit-normal (two α), Gaussian and Concrete runs of sizes 2 and 4 on digits."""
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
        for cfg in configs:
            name = run_name(cfg)
            pd.fit(cfg, out=root / "runs" / name, progress=False, log=lambda m: None)
        evaluate_run(root / "runs" / "gaussian-d2", k=5, progress=False)
        evaluate_run(root / "runs" / "logitnormal-d2-a0.32", k=5, progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


def _csv(path):
    with open(path) as fh:
        return list(csv.reader(fh))


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
    assert "k = 5 samples on 300 test images" in md
    assert "Table 3 (test)" in result.stdout


def test_report_of_a_folder_without_runs_is_one_error_line(tmp_path):
    result = invoke(["report", str(tmp_path)])
    assert result.exit_code != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")


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
    run_ok(["plot", str(sweep), "--out", str(out), "--figure", figure, "--threads", "1", *options])
    pngs = list(out.glob(f"{figure}_*.png"))
    assert len(pngs) == 1
    data = pngs[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(out.glob(".*"))  # no temporary left behind


def test_table3_curves_draw_each_models_test_elbo_per_epoch(sweep, tmp_path, monkeypatch):
    import pyro_dvae.plots as plots

    drawn = {}
    save = plots.save_figure

    def capture(fig, path):
        for ax in fig.axes:
            for line in ax.get_lines():
                drawn[(ax.get_title(), line.get_label())] = line.get_ydata().tolist()
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    plots.make_figures(sweep, tmp_path, ["curves"])
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


def test_logit_normal_pdf_of_figure_6_is_the_distribution_density():
    z = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    for mu, alpha in [(0.0, 0.32), (1.0, 1.78)]:
        expected = pd.LogitNormal(torch.tensor(mu), torch.tensor(alpha).sqrt()).log_prob(z).exp()
        assert torch.allclose(torch.as_tensor(logit_normal_pdf(z.numpy(), mu, alpha)), expected)
