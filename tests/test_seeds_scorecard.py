"""Seeds in a sweep, mean ± sd in the report, the best-α rule and the paper scorecard."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from pyro_dvae.config import FitConfig
from pyro_dvae.naming import named_grid, with_seeds
from pyro_dvae.paper import PAPER_TABLE1, PAPER_TABLE3
from pyro_dvae.report import paper_tables, runs_table
from pyro_dvae.results import collect
from pyro_dvae.scorecard import CLOSE, difference_tables, score_cells, scorecard_tables

from .helpers import load_checkpoint, read_metrics, run_ok


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_DVAE_DATA", str(tmp_path / "no-data"))


def test_seed_axis_names_runs_by_seed_and_keeps_seed_zero_plain():
    grid = with_seeds([FitConfig(family="gaussian"), FitConfig(alpha=1.78)], [0, 1, 2])
    names = named_grid(grid)
    assert list(names) == [
        "gaussian-d20",
        "gaussian-d20-seed1",
        "gaussian-d20-seed2",
        "logitnormal-d20-a1.78",
        "logitnormal-d20-a1.78-seed1",
        "logitnormal-d20-a1.78-seed2",
    ]
    assert [c.seed for c in names.values()] == [0, 1, 2, 0, 1, 2]


@pytest.mark.slow
def test_sweep_seeds_train_independent_runs(tmp_path):
    sweep = tmp_path / "sw"
    args = ["sweep", "--family", "gaussian", "--latent-dim", "2", "--out", str(sweep)]
    args += ["--dataset", "digits", "--hidden", "16", "--threads", "1", "--epochs", "1"]
    run_ok([*args, "--seeds", "2", "--jobs", "2"])
    runs = sorted(p.name for p in (sweep / "runs").iterdir())
    assert runs == ["gaussian-d2-digits", "gaussian-d2-digits-seed1"]
    a, b = (load_checkpoint(sweep / "runs" / n) for n in runs)
    assert (a["config"]["seed"], b["config"]["seed"]) == (0, 1)
    assert read_metrics(sweep / "runs" / runs[0]) != read_metrics(sweep / "runs" / runs[1])
    # the same seeds given one by one are the same runs: nothing is left to do
    result = run_ok([*args, "--seed", "0", "--seed", "1"])
    assert "2 already finished, 0 to run" in result.stderr


def _fake_run(
    root: Path, name: str, config: FitConfig, train: float, test: float, kl=20.0, status=None
):
    """A run folder holding only its config and metrics (30 epochs): what the report reads."""
    path = root / "runs" / name
    path.mkdir(parents=True)
    config.save(path / "config.json")
    if status is not None:
        (path / "summary.json").write_text(json.dumps({"status": status}))
    rows = [
        {"epoch": e, "train_loss": train + 30 - e, "seconds": 1.0, "test_loss": test + 30 - e}
        for e in range(1, 31)
    ]
    rows[-1].update(test_kl=kl, test_recon=test - kl)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_shows_seed_mean_and_sd_and_picks_alpha_on_training_data(tmp_path):
    ln = dict(family="logitnormal", latent_dim=20, epochs=30)
    for seed, test in enumerate([96.0, 97.0, 98.0]):  # α = 1.78: mean 97, sd 1
        cfg = FitConfig(alpha=1.78, seed=seed, **ln)
        _fake_run(tmp_path, f"ln178-{seed}", cfg, train=95.0, test=test)
    # α = 1: the lowest test −ELBO, but a higher train −ELBO than α = 1.78
    _fake_run(tmp_path, "ln1", FitConfig(alpha=1.0, **ln), train=95.5, test=95.0)
    runs = collect(tmp_path)
    t1, _, t3 = paper_tables(runs, "test")
    row20 = dict(t1.rows)["20"]
    assert row20[3] == f"97.00 ± 1.00 (n=3) ({PAPER_TABLE1[20][3]:.2f})"
    assert row20[2] == f"95.00 ({PAPER_TABLE1[20][2]:.2f})"
    best = dict(t3.rows)["20"][0]
    assert best.startswith("97.00 ± 1.00 (n=3)")
    assert best.endswith("[α=1.78; by test −ELBO: α=1; α = 0.32, 0.56 not run]")
    assert statistics.stdev([96.0, 97.0, 98.0]) == 1.0  # the sd is the sample sd
    assert "differ" not in t1.note  # the paper's setting, but for seeds and epochs


def test_scorecard_counts_cells_within_one_and_a_half_nats(tmp_path):
    paper_g = {size: PAPER_TABLE3[size][1] for size in (20, 40)}
    g = dict(family="gaussian", epochs=30)
    _fake_run(tmp_path, "g20", FitConfig(latent_dim=20, **g), train=95.0, test=paper_g[20] + 1.0)
    _fake_run(tmp_path, "g40", FitConfig(latent_dim=40, **g), train=95.0, test=paper_g[40] + 3.0)
    runs = collect(tmp_path)
    cells = {s.label: s for s in score_cells(runs)}
    assert cells["size 20, Gaussian"].diff == pytest.approx(1.0)
    assert cells["size 20, Gaussian"].close and not cells["size 40, Gaussian"].close
    summary, detail = scorecard_tables(runs)
    assert dict(summary.rows)["Table 3"] == ["1 of 2", "1", "0"]
    (label, row), *_ = detail.rows
    assert label == "Table 3: size 40, Gaussian" and row[2] == "+3.00"
    # test −ELBO fell by 1 nat per epoch: over the last 20 epochs, by 20
    assert row[3] == "-20.00" and CLOSE == 1.5
    # every cell as ours − the paper's, in Table 3's layout; no runs: a dash
    t3 = dict(difference_tables(score_cells(runs))[2].rows)
    assert t3["20"] == ["–", "+1.00", "–"] and t3["40"] == ["–", "+3.00", "–"]
    assert t3["2"] == ["–", "–", "–"]


def test_the_papers_tables_and_scorecard_take_only_mnist_runs(tmp_path):
    g = dict(family="gaussian", epochs=30)
    mnist = FitConfig(latent_dim=20, **g)
    _fake_run(tmp_path, "g20", mnist, train=95.0, test=PAPER_TABLE3[20][1] + 1.0)
    # the review's case: a digits Gaussian of size 8, 26.29 against the paper's 100.54
    _fake_run(tmp_path, "g8", FitConfig(latent_dim=8, dataset="digits", **g), 25.0, 26.29)
    _fake_run(tmp_path, "g20-digits", FitConfig(latent_dim=20, dataset="digits", **g), 25.0, 26.0)
    ln = FitConfig(family="logitnormal", latent_dim=8, alpha=0.32, dataset="digits", epochs=30)
    _fake_run(tmp_path, "ln8", ln, train=25.0, test=26.0)
    runs = collect(tmp_path)
    assert [s.label for s in score_cells(runs)] == ["size 20, Gaussian"]
    summary, detail = scorecard_tables(runs)
    assert dict(summary.rows) == {
        "Table 1": ["0 of 0", "0", "0"],
        "Table 2": ["0 of 0", "0", "0"],
        "Table 3": ["1 of 1", "0", "0"],
    }
    assert detail.rows == []
    t1, _, t3 = paper_tables(runs, "test")
    assert dict(t1.rows)["8"][0] == f"– ({PAPER_TABLE1[8][0]:.2f})"
    g20 = next(r for r in runs if r.name == "g20").value("test", "loss")
    assert dict(t3.rows)["8"][1].startswith("– (")
    assert dict(t3.rows)["20"][1] == f"{g20:.2f} ({PAPER_TABLE3[20][1]:.2f})"
    every = runs_table(runs)
    assert every.columns[0] == "dataset"
    assert {name: row[0] for name, row in every.rows} == {r.name: r.config.dataset for r in runs}


def test_the_runs_table_says_where_a_run_trained_and_was_evaluated_when_not_on_a_cpu(tmp_path):
    """A GPU's hours are not comparable with a CPU's: the device is named."""
    cfg = FitConfig(family="gaussian", latent_dim=20, epochs=30)
    scored = {"gpu": dict(seconds=9.0, device="cuda"), "cpu": dict(seconds=5400.0, device="cpu")}
    for name, ev in scored.items():
        _fake_run(tmp_path, name, cfg, train=95.0, test=96.0)
        ev.update(epoch=30, k=5000, active_units=20, latent_units=20, knn_accuracy=0.9)
        (tmp_path / "runs" / name / "evaluation.json").write_text(json.dumps(ev))
    _fake_run(tmp_path, "unscored", cfg, train=95.0, test=96.0)
    (tmp_path / "runs" / "gpu" / "summary.json").write_text(json.dumps({"device": "cuda:0"}))
    table = runs_table(collect(tmp_path))
    times = {name: row[table.columns.index("evaluation time")] for name, row in table.rows}
    assert times == {"gpu": "9.0 s on cuda", "cpu": "1.50 h", "unscored": "–"}
    # training too: 30 epochs of 1 s each (the fake runs' metrics)
    trained = {name: row[table.columns.index("training time")] for name, row in table.rows}
    assert trained == {"gpu": "30 s on cuda:0", "cpu": "30 s", "unscored": "30 s"}


def test_the_note_names_the_fields_that_differ_from_the_papers_setting(tmp_path):
    from dataclasses import replace

    from pyro_dvae.sweep.presets import concrete_working_grid

    ln = FitConfig(family="logitnormal", latent_dim=20, alpha=1.78, epochs=30, seed=3)
    _fake_run(tmp_path, "ln", replace(ln, batch_size=100, lr=0.003), train=95.0, test=97.0)
    g = FitConfig(family="gaussian", latent_dim=20, epochs=30)
    _fake_run(tmp_path, "g", replace(g, lr=0.01), train=95.0, test=97.0)
    # Jang et al.'s Concrete at the concrete-working preset's setting: nothing to name
    _fake_run(tmp_path, "jang", replace(concrete_working_grid()[0], epochs=30), 99.0, 101.0)
    runs = collect(tmp_path)
    notes = [t.note for t in paper_tables(runs, "test")] + [scorecard_tables(runs)[0].note]
    for note in notes:
        assert (
            "; some runs differ from the paper's setting in batch_size=100, lr=0.003 or 0.01"
            in note
        )
    # the working Concrete alone is at its setting
    _, _, t3 = paper_tables([r for r in runs if r.name == "jang"], "test")
    assert dict(t3.rows)["20"][3] == "101.00" and "differ" not in t3.note
    # where every run differs in every field named: "the runs"
    _, _, t3 = paper_tables([r for r in runs if r.name == "g"], "test")
    assert "; the runs differ from the paper's setting in lr=0.01." in t3.note


def test_table3_has_the_working_concrete_run_at_size_20(tmp_path):
    jang = FitConfig(
        family="concrete", latent_dim=20, categories=10, kl="discrete", elbo="analytic", epochs=30
    )
    _fake_run(tmp_path, "jang", jang, train=99.0, test=101.0)
    _, _, t3 = paper_tables(collect(tmp_path), "test")
    assert t3.columns[3].startswith("working Concrete")
    rows = dict(t3.rows)
    assert rows["20"][3] == "101.00" and all(rows[s][3] == "–" for s in ("2", "4", "8", "40"))
    assert rows["20"][2].startswith("–")  # not the paper's failed 1 × K column


def test_the_working_concretes_objective_and_relaxed_bound_carry_their_caveat(tmp_path):
    """Jang et al.'s objective is no bound on −log p(x): Table 3 marks its column and says so
    (with the one-hot model's −ELBO on the test set), and All runs marks its relaxed IWAE."""
    jang = FitConfig(
        family="concrete", latent_dim=20, categories=10, kl="discrete", elbo="analytic", epochs=30
    )
    _fake_run(tmp_path, "jang", jang, train=99.0, test=101.0)
    relaxed = FitConfig(family="concrete", latent_dim=1, categories=20, epochs=30)
    _fake_run(tmp_path, "relaxed", relaxed, train=215.0, test=216.0)
    for name, nll in (("jang", 9000.0), ("relaxed", 200.0)):
        evaluation = {"epoch": 30, "k": 1000, "test_images": 1000, "test_log_likelihood": -nll}
        evaluation |= {"active_units": 1, "latent_units": 20, "knn_accuracy": 0.5}
        evaluation["discrete"] = {"test_loss": 98.5, "test_log_likelihood": -88.0}
        (tmp_path / "runs" / name / "evaluation.json").write_text(json.dumps(evaluation))
    runs = collect(tmp_path)
    for split in ("train", "test"):
        t3 = paper_tables(runs, split)[2]
        objective = "99.00" if split == "train" else "101.00"
        assert t3.columns[3].endswith("Jang et al.) *") and dict(t3.rows)["20"][3] == objective
        assert "*: the working Concrete's −ELBO is its own training objective" in t3.note
        one_hot = "its test −ELBO is 98.50, on the first 1000 test images."
        assert (one_hot in t3.note) == (split == "test")
    table = runs_table(runs)
    nll = {name: row[table.columns.index("test −log p(x)")] for name, row in table.rows}
    assert nll == {"jang": "9000.00 *", "relaxed": "200.00"}
    assert "*: the relaxed model's IWAE bound of a run trained with the discrete KL" in table.note
    # without a run of Jang et al.'s objective, no mark and no note
    plain = [r for r in runs if r.name == "relaxed"]
    assert "*" not in paper_tables(plain, "test")[2].columns[3]
    assert "*" not in paper_tables(plain, "test")[2].note + runs_table(plain).note


def test_a_field_of_another_family_is_refused_for_new_runs_only(tmp_path):
    from pyro_dvae.errors import ConfigError
    from pyro_dvae.rundir import RunDir

    from .helpers import error_message, fit_args, invoke

    result = invoke(fit_args(tmp_path / "new", family="gaussian", alpha=2.0))
    message = error_message(result)
    assert "--alpha applies to --family logitnormal or --family bernoulli only" in message
    with pytest.raises(ConfigError, match="applies to"):
        FitConfig(family="gaussian", alpha=2.0).validate(new=True)
    # a run folder of the old code (which accepted it) still reads
    old = tmp_path / "old"
    old.mkdir()
    FitConfig(family="gaussian", alpha=2.0).save(old / "config.json")
    assert RunDir(old).read_config().alpha == 2.0


def test_a_family_option_of_a_sweep_applies_to_that_familys_runs(tmp_path):
    from .helpers import invoke

    args = ["sweep", "--family", "gaussian", "--family", "concrete", "--latent-dim", "2"]
    result = invoke([*args, "--temperature", "1.0", "--dry-run", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    names = [line.split()[1] for line in result.stdout.splitlines()[:-1]]  # then a total line
    assert sorted(names) == ["concrete-2x10-tq1", "gaussian-d2"]
    result = invoke(["sweep", "--family", "gaussian", "--latent-dim", "2", "--alpha", "2"])
    assert result.exit_code != 0 and "--alpha applies to none" in result.stderr


def test_a_sweep_in_progress_marks_short_cells_and_scores_only_finished_ones(tmp_path):
    ln = dict(family="logitnormal", latent_dim=20)
    # α = 0.32 at epoch 30 of 60 planned; α = 0.56 finished; α = 1 and 1.78 not started
    _fake_run(tmp_path, "ln032", FitConfig(alpha=0.32, epochs=60, **ln), train=95.0, test=96.0)
    _fake_run(tmp_path, "ln056", FitConfig(alpha=0.56, epochs=30, **ln), train=96.0, test=97.0)
    runs = collect(tmp_path)
    t1, _, t3 = paper_tables(runs, "test")
    row = dict(t1.rows)["20"]
    assert row[0] == f"96.00 ({PAPER_TABLE1[20][0]:.2f}) [epoch 30 of 60]"
    assert row[1] == f"97.00 ({PAPER_TABLE1[20][1]:.2f})"  # at its planned epochs: unmarked
    assert row[2] == f"– ({PAPER_TABLE1[20][2]:.2f})"
    best = dict(t3.rows)["20"][0]
    assert best.endswith("[epoch 30 of 60] [α=0.32; α = 1, 1.78 not run]")
    summary, detail = scorecard_tables(runs)
    # two cells per Logit-normal table and one of Table 3 have runs; the short ones not scored
    assert [row[0] for _, row in summary.rows] == ["1 of 1", "1 of 1", "0 of 0"]
    assert "; 3 cells not final (runs short of their planned epochs" in summary.note
    assert all("α = 0.32" not in label and "Table 3" not in label for label, _ in detail.rows)
    diff_row = dict(difference_tables(score_cells(runs))[0].rows)["20"]
    assert diff_row[0] == f"{96.0 - PAPER_TABLE1[20][0]:+.2f} [not final]"
    assert diff_row[1] == f"{97.0 - PAPER_TABLE1[20][1]:+.2f}" and diff_row[2] == "–"


def test_a_finished_best_alpha_is_pending_while_a_rival_alpha_is_short(tmp_path):
    ln = dict(family="logitnormal", latent_dim=20)
    for a, train in ((0.32, 97.0), (0.56, 96.5), (1.0, 96.0)):  # short of 60: may still win
        _fake_run(tmp_path, f"ln{a}", FitConfig(alpha=a, epochs=60, **ln), train, 98.0)
    _fake_run(tmp_path, "ln1.78", FitConfig(alpha=1.78, epochs=30, **ln), 95.0, 97.0)
    runs = collect(tmp_path)
    best = dict(paper_tables(runs, "test")[2].rows)["20"][0]
    assert best == (
        f"97.00 ({PAPER_TABLE3[20][0]:.2f}) [α=1.78; α=0.32 at epoch 30 of 60; "
        "α=0.56 at epoch 30 of 60; α=1 at epoch 30 of 60]"
    )
    labels = [s.label for s in score_cells(runs) if s.table == "Table 3"]
    assert labels == ["size 20, best Logit-normal"]
    summary = scorecard_tables(runs)[0]
    assert dict(summary.rows)["Table 3"][0] == "0 of 0"  # not final: unscored
    assert "; 7 cells not final (runs short of their planned epochs, or a best α" in summary.note


def test_short_marks_count_seeds_and_name_failed_runs_and_the_sweeps_plan(tmp_path):
    g = dict(family="gaussian", latent_dim=20)
    _fake_run(tmp_path, "g", FitConfig(epochs=30, **g), 95.0, 96.0)
    _fake_run(tmp_path, "g-seed1", FitConfig(seed=1, epochs=50, **g), 95.0, 98.0)
    _fake_run(
        tmp_path,
        "g4",
        FitConfig(family="gaussian", latent_dim=4, epochs=50),
        115,
        119,
        11,
        "failed",
    )
    # the sweep was started again for 200 epochs: runs not yet resumed still plan 30 in
    # their own config, but are short of the sweep's plan
    _fake_run(tmp_path, "g8", FitConfig(family="gaussian", latent_dim=8, epochs=30), 97, 101)
    plan = {"runs": {"g8": {"epochs": 200}}}
    (tmp_path / "sweep.json").write_text(json.dumps(plan))
    rows = dict(paper_tables(collect(tmp_path), "test")[2].rows)
    assert rows["20"][1].endswith("(n=2) (96.52) [1 of 2 seeds short: epoch 30 of 50]")
    assert rows["4"][1].endswith("[failed at epoch 30 of 50]")
    assert rows["8"][1].endswith("[epoch 30 of 200]")


def _evaluated(tmp_path: Path, name: str, k: int, images: int, nll: float):
    """An evaluation.json of the run's last epoch (30), holding what the IWAE tables read."""
    path = tmp_path / "runs" / name
    record = {"epoch": 30, "k": k, "test_images": images, "test_log_likelihood": -nll}
    (path / "evaluation.json").write_text(json.dumps(record))


def test_iwae_tables_name_each_cells_protocol_where_protocols_differ(tmp_path):
    from pyro_dvae.report import likelihood_tables

    g = dict(family="gaussian", epochs=30)
    _fake_run(tmp_path, "g2", FitConfig(latent_dim=2, **g), train=135.0, test=137.0)
    _fake_run(tmp_path, "g4", FitConfig(latent_dim=4, **g), train=115.0, test=119.0)
    _evaluated(tmp_path, "g2", 5000, 10000, 133.0)
    _evaluated(tmp_path, "g4", 5000, 10000, 115.0)
    _, t3 = likelihood_tables(collect(tmp_path))
    assert dict(t3.rows)["2"][1] == "133.00"  # one protocol: said once, in the note
    assert "k = 5000 on 10000 test images" in t3.note
    _evaluated(tmp_path, "g4", 1000, 1000, 114.0)
    _, t3 = likelihood_tables(collect(tmp_path))
    rows = dict(t3.rows)
    assert rows["2"][1] == "133.00 [k=5000, 10000 images]"
    assert rows["4"][1] == "114.00 [k=1000, 1000 images]"
    assert "k = 1000 on 1000 test images; k = 5000 on 10000 test images" in t3.note
    t1, _ = likelihood_tables(collect(tmp_path))  # Gaussians only: Table 1 has no run scored
    assert t1.note.startswith("IWAE bound, no run evaluated;")
    ln = FitConfig(latent_dim=2, alpha=0.32, **{**g, "family": "logitnormal"})
    _fake_run(tmp_path, "l2", ln, train=141.0, test=142.0)
    _evaluated(tmp_path, "l2", 5000, 10000, 140.0)
    t1, _ = likelihood_tables(collect(tmp_path))  # each table's note: its own cells' protocols
    assert "IWAE bound, k = 5000 on 10000 test images;" in t1.note
    assert dict(t1.rows)["2"][0] == "140.00"


def test_an_iwae_cell_averages_only_its_seeds_of_one_protocol(tmp_path):
    from pyro_dvae.report import likelihood_tables

    g = dict(family="gaussian", latent_dim=20, epochs=30)
    for seed, name in enumerate(["g", "g-seed1", "g-seed2"]):
        _fake_run(tmp_path, name, FitConfig(seed=seed, **g), train=95.0, test=96.0)
    _evaluated(tmp_path, "g", 5000, 10000, 90.0)
    _evaluated(tmp_path, "g-seed1", 5000, 10000, 92.0)
    _evaluated(tmp_path, "g-seed2", 1000, 1000, 80.0)  # its k = 5000 pass not yet done
    _, t3 = likelihood_tables(collect(tmp_path))
    assert dict(t3.rows)["20"][1] == (
        "91.00 ± 1.41 (n=2) [k=5000, 10000 images; 1 seed scored with fewer draws left out]"
    )


def test_best_alpha_compares_the_seeds_every_alpha_has(tmp_path):
    """The chosen α's extra seeds, early in training (high loss) or not, cannot move the
    choice: the α are compared on the grid's seed, which they all have."""
    from pyro_dvae.results import best_alpha

    ln = dict(family="logitnormal", latent_dim=20, epochs=30)
    for a, train in ((0.32, 97.0), (0.56, 96.5), (1.0, 96.0), (1.78, 95.8)):
        _fake_run(tmp_path, f"ln-{a}", FitConfig(alpha=a, **ln), train, 98.0)
    for seed in (1, 2):  # α = 1.78's seeds, at the start of their training
        cfg = FitConfig(alpha=1.78, seed=seed, **{**ln, "epochs": 200})
        _fake_run(tmp_path, f"ln-1.78-seed{seed}", cfg, 120.0, 121.0)
    best = best_alpha(collect(tmp_path), 20, "train")
    assert {r.config.alpha for r in best.runs} == {1.78} and len(best.runs) == 3
    shutil.rmtree(tmp_path / "runs" / "ln-1.78")  # no seed in common: every run counts
    assert best_alpha(collect(tmp_path), 20, "train").runs[0].config.alpha == 1.0


def test_burdas_protocol_goes_to_final_table3_runs_only(tmp_path):
    from pyro_dvae.results import burda_runs

    ln, g = dict(family="logitnormal", epochs=30), dict(family="gaussian", epochs=30)
    for a, train in ((0.32, 97.0), (0.56, 96.5), (1.0, 96.0), (1.78, 95.0)):
        _fake_run(tmp_path, f"ln4-{a}", FitConfig(latent_dim=4, alpha=a, **ln), train, 98.0)
    _fake_run(tmp_path, "g4", FitConfig(latent_dim=4, **g), 95.0, 97.0)
    for seed in (0, 1):  # size 20: the Gaussian's seeds, one short
        cfg = FitConfig(latent_dim=20, seed=seed, **{**g, "epochs": 30 + 30 * seed})
        _fake_run(tmp_path, f"g20-{seed}", cfg, 95.0, 97.0)
    # size 20's best α is open while α = 0.56 trains on
    _fake_run(tmp_path, "ln20-a", FitConfig(latent_dim=20, alpha=1.78, **ln), 95.0, 97.0)
    _fake_run(
        tmp_path, "ln20-b", FitConfig(latent_dim=20, alpha=0.56, **{**ln, "epochs": 60}), 96, 97
    )
    names = [r.name for r in burda_runs(collect(tmp_path))]
    assert names == ["g4", "ln4-1.78", "g20-0"]
