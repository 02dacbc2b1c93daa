"""The discrete-estimator leaderboard: a sweep over estimators, evaluated, read back as one
row per estimator whose numbers are the means of its runs' evaluation.json."""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from types import SimpleNamespace

import pytest

from pyro_dvae.config import FitConfig
from pyro_dvae.leaderboard import (
    COLUMNS,
    PUBLISHED,
    Row,
    curve,
    draw,
    estimator_name,
    leaderboard,
    markdown,
    model_name,
)

from .helpers import invoke, run_ok


@pytest.mark.slow
def test_a_sweep_of_estimators_becomes_one_row_each(tmp_path):
    sweep = tmp_path / "sweep"
    grid = [
        "sweep",
        "--family",
        "bernoulli",
        "--latent-dim",
        "4",
        "--estimator",
        "concrete",
        "--estimator",
        "nvil",
        "--seeds",
        "2",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--threads",
        "1",
        "--out",
        str(sweep),
        "--evaluate",
        "10",
    ]
    # four runs, each trained then evaluated (the hard codes' IWAE with more draws than
    # the relaxed pass's), two at a time
    run_ok([*grid, "--discrete-k", "20", "--jobs", "2"])
    evaluations = [json.loads(p.read_text()) for p in sweep.glob("runs/*/evaluation.json")]
    assert len(evaluations) == 4
    assert {(e["k"], e["discrete"]["k"]) for e in evaluations} == {(10, 20)}
    # the same sweep asked for more hard-code draws has every run to evaluate again
    assert run_ok([*grid, "--discrete-k", "20", "--dry-run"]).stdout.count("finished ") == 4
    assert run_ok([*grid, "--discrete-k", "40", "--dry-run"]).stdout.count("evaluate ") == 4
    out = tmp_path / "board"
    result = run_ok(["leaderboard", str(sweep), "--out", str(out)])
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert tuple(rows[0]) == COLUMNS
    by_estimator = {r["estimator"]: r for r in rows}
    assert set(by_estimator) == {"concrete", "nvil"}
    for name, row in by_estimator.items():
        runs = sorted((sweep / "runs").glob(f"bernoulli-d4-{name}*"))
        blocks = [json.loads((r / "evaluation.json").read_text())["discrete"] for r in runs]
        assert row["seeds"] == "2" and row["epochs"] == "1" and row["test_images"] == "300"
        losses = [b["test_loss"] for b in blocks]
        assert float(row["discrete_neg_elbo_mean"]) == round(statistics.fmean(losses), 4)
        assert float(row["discrete_neg_elbo_sd"]) == round(statistics.stdev(losses), 4)
        nll = statistics.fmean(-b["test_log_likelihood"] for b in blocks)
        assert float(row["discrete_neg_log_px_mean"]) == round(nll, 4)
    # the relaxation has a relaxed objective and a gap; the score function has neither
    assert by_estimator["concrete"]["relaxed_neg_elbo_mean"] != ""
    assert by_estimator["nvil"]["relaxed_neg_elbo_mean"] == ""
    assert by_estimator["nvil"]["relaxation_gap_mean"] == ""
    assert (out / "leaderboard.png").stat().st_size > 10_000
    assert "| bernoulli 4 | nvil |" in result.stdout
    # other jobs on the machine slow a run's epochs: a row's seconds per epoch is the median
    # epoch of its least-slowed seed, and the plot's hours are epochs × that
    first, second = sorted((sweep / "runs").glob("bernoulli-d4-nvil*"))
    _slow_down(second, 10.0)
    quick = statistics.median(_slow_down(first, 1.0))
    (row,) = [row for row in leaderboard([sweep]) if row.estimator == "nvil"]
    assert row.values()["seconds_per_epoch"] == pytest.approx(quick)
    for r in row.scored:
        hours, losses = curve(r, row.seconds_per_epoch())
        assert hours == pytest.approx([quick / 3600]) and len(losses) == 1


def test_published_numbers_sit_beside_the_rows_of_their_model_and_estimator():
    """Each published number's key is a row the leaderboard makes (its model and estimator
    names, from the configurations that train them); a row of another model or estimator
    has none, in the CSV's values and in the markdown table."""
    made = {}
    for family, size, categories in (("bernoulli", 200, 2), ("categorical", 20, 10)):
        for estimator in ("concrete", "straight-through", "reinforce", "nvil"):
            c = FitConfig(
                family=family, latent_dim=size, categories=categories, estimator=estimator
            )
            run = SimpleNamespace(config=c)
            made[model_name(run), estimator_name(run)] = c
    assert set(PUBLISHED) <= set(made)
    rows = [Row(model, name, "") for model, name in made] + [Row("bernoulli 4", "concrete", "")]
    values = [row.values() for row in rows]
    table = markdown(rows, values, "pyro-dvae leaderboard sweep").splitlines()
    for row, v in zip(rows, values, strict=True):
        number = PUBLISHED.get((row.model, row.estimator))
        assert v["published_neg_elbo"] == (number if number is not None else "")
        (line,) = [x for x in table if x.startswith(f"| {row.model} | {row.estimator} |")]
        assert line.endswith(f"| {number:.1f} |" if number is not None else "| – |")


def _slow_down(run, factor: float) -> list[float]:
    """Each epoch of ``run`` made ``factor`` times slower, as another job would; the times."""
    path = run / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in records:
        r["seconds"] *= factor
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return [r["seconds"] for r in records]


def test_a_run_folder_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    run_ok(
        [
            "fit",
            "--dataset",
            "digits",
            "--family",
            "bernoulli",
            "--latent-dim",
            "3",
            "--estimator",
            "disarm",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--no-progress",
            "--out",
            str(run),
        ]
    )
    result = invoke(["leaderboard", str(run)])
    assert result.exit_code != 0 and "Error:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_plot_draws_runs_still_training_and_says_when_a_model_has_none(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["fit", "--dataset", "digits", "--family", "bernoulli", "--latent-dim", "3"]
    args += ["--estimator", "nvil", "--epochs", "2", "--hidden", "8", "--compile", "off"]
    run_ok([*args, "--no-progress", "--out", str(sweep / "runs" / "nvil")])
    (row,) = leaderboard([sweep])  # trained, not evaluated: no value in the table
    assert row.scored == [] and row.values()["discrete_neg_elbo_mean"] == ""
    (run,) = row.runs
    never = dataclasses.replace(run, path=tmp_path / "never-started")  # no metrics.jsonl
    fig = draw([row, Row("categorical 2x3", "reinforce", "", [never])])
    bits, categorical = fig.axes
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["test_loss"] for r in records if "test_loss" in r]  # nvil: the discrete model's
    (line,) = bits.get_lines()
    assert list(line.get_ydata()) == pytest.approx(losses) and len(losses) == 2
    (label,) = [t.get_text() for t in bits.get_legend().get_texts()]
    assert label == f"nvil {losses[-1]:.1f}"  # unevaluated: its last epoch's score
    assert categorical.get_lines() == [] and categorical.get_legend() is None
    assert [t.get_text() for t in categorical.texts] == ["no run has finished an epoch yet"]
    # a run still training is pending; one that failed says why, and is not "not yet"
    (row,) = leaderboard([sweep])
    assert "Not yet in the table (no evaluation of their last epoch): nvil (epoch 2 of 2)" in (
        markdown([row], [row.values()], "c")
    )
    summary = json.loads((run.path / "summary.json").read_text())
    summary.update(status="failed", error="the loss became nan at epoch 3, step 9")
    (run.path / "summary.json").write_text(json.dumps(summary))
    (row,) = leaderboard([sweep])
    notes = markdown([row], [row.values()], "c")
    assert "Not yet" not in notes
    assert "Failed, so not in the table: nvil (failed at epoch 2 of 2: the loss became nan at " \
        "epoch 3, step 9)." in notes  # fmt: skip
