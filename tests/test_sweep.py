"""``pyro-dvae sweep``: the paper grid, skipping, resuming, interruption and failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pyro_dvae as pd
from pyro_dvae.config import FitConfig
from pyro_dvae.rundir import RunDir
from pyro_dvae.sweep import PAPER_ALPHAS, PAPER_SIZES, grid, named_grid, paper_grid, run_name
from pyro_dvae.sweep.launchers import LocalLauncher

from .helpers import invoke, load_checkpoint, read_json, read_metrics, run_ok

TINY = ["--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--threads", "1"]


def sweep_args(out: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        "sweep",
        "--family",
        "gaussian",
        "--family",
        "logitnormal",
        "--alpha",
        "1.78",
        "--epochs",
        str(epochs),
        "--out",
        str(out),
        *TINY,
        *extra,
    ]


def run_files(sweep: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(sweep)): p.read_bytes()
        for p in sorted((sweep / "runs").rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_DVAE_DATA", str(tmp_path / "no-data"))


@pytest.fixture(scope="module")
def one_epoch_sweep(tmp_path_factory) -> Path:
    """The three runs of ``group_sweep_args`` (a Gaussian, Logit-normals at α 0.5 and 1.78)
    trained alone for one epoch, two at a time: trained once, copied by each test that uses
    it (:func:`one_epoch`)."""
    sweep = tmp_path_factory.mktemp("one-epoch") / "sw"
    run_ok(group_sweep_args(sweep, "--jobs", "2", epochs=1))
    return sweep


@pytest.fixture
def one_epoch(one_epoch_sweep, tmp_path) -> Path:
    """A copy of the one-epoch sweep, this test's to change."""
    return Path(shutil.copytree(one_epoch_sweep, tmp_path / "sw"))


def test_paper_preset_is_the_papers_grid():
    configs = paper_grid()
    assert len(configs) == len(PAPER_SIZES) * (len(PAPER_ALPHAS) + 2) == 30
    assert all(c.epochs == 200 and c.batch_size == 50 and c.dataset == "mnist" for c in configs)
    ln = {(c.latent_dim, c.alpha) for c in configs if c.family == "logitnormal"}
    assert ln == {(d, a) for d in (2, 4, 8, 20, 40) for a in (0.32, 0.56, 1.0, 1.78)}
    assert {c.latent_dim for c in configs if c.family == "gaussian"} == {2, 4, 8, 20, 40}
    concrete = [c for c in configs if c.family == "concrete"]
    assert {(c.latent_dim, c.categories) for c in concrete} == {(1, k) for k in (2, 4, 8, 20, 40)}
    assert all(c.temperature == 0.5 and c.prior_temperature == 1.0 for c in concrete)
    assert len(named_grid(configs)) == 30  # every run gets its own folder


def test_run_names_show_what_varies():
    configs = grid({"family": ["concrete"], "latent_dim": [20], "categories": [10]})
    configs.append(FitConfig(family="concrete", latent_dim=20, categories=10, temperature=1.0))
    names = sorted(named_grid(configs))
    assert names == ["concrete-20x10", "concrete-20x10-tq1"]  # defaults are not spelled out
    both = [
        FitConfig(family="concrete", latent_dim=20, kl=kl, elbo="analytic")
        for kl in ("relaxed", "discrete")
    ]
    assert sorted(named_grid(both)) == [
        "concrete-20x10-elbo-analytic",
        "concrete-20x10-elbo-analytic-kl-discrete",
    ]
    assert run_name(FitConfig(family="logitnormal", latent_dim=8, alpha=0.32)) == (
        "logitnormal-d8-a0.32"
    )


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path):
    result = run_ok(["sweep", "--preset", "paper", "--out", "sw", "--dry-run"])
    *lines, total = result.stdout.strip().splitlines()
    assert len(lines) == 30 and all(line.startswith("new") for line in lines)
    assert total == "30 runs in sw: 30 new; 6000 epochs to train"  # the paper's 200 each
    assert not (tmp_path / "sw").exists()


@pytest.mark.slow
def test_raising_epochs_resumes_every_run_to_the_uninterrupted_result(tmp_path, one_epoch):
    sweep = one_epoch  # the grid's two runs at epoch 1 (and a third, of another grid)
    # the dry run's estimate: epochs to go × the runs' mean seconds per epoch / runs at a time
    grid = ("gaussian-d2-digits", "logitnormal-d2-a1.78-digits")
    rates = [read_json(sweep / "runs" / n / "summary.json")["seconds_per_epoch"] for n in grid]
    total = run_ok([*sweep_args(sweep, epochs=3), "--jobs", "2", "--dry-run"]).stdout.splitlines()
    hours = 4 * sum(rates) / len(rates) / 2 / 3600
    assert total[-1] == (
        f"2 runs in {sweep}: 2 resume; 4 epochs to train, about {hours:.1f} h at 2 at a time "
        f"({sum(rates) / len(rates):.1f} s per epoch so far)"
    )
    wider = run_ok([*sweep_args(sweep, epochs=3), "--jobs", "4", "--dry-run"]).stdout
    assert f"about {hours:.1f} h at 2 at a time" in wider  # two runs left: two at once
    doc = read_json(sweep / "sweep.json")  # the grid of the one-epoch sweep
    cfg = FitConfig.from_dict(doc["runs"]["logitnormal-d2-a1.78-digits"])
    assert cfg.alpha == 1.78 and cfg.dataset == "digits" and cfg.epochs == 1
    assert [g["options"]["family"] for g in doc["grids"]] == [["gaussian", "logitnormal"]]
    result = run_ok(sweep_args(sweep, "--jobs", "2", epochs=3))
    assert result.stderr.count("resume from epoch 1") == 2
    # a second grid into the folder joins it: both grids and all runs are recorded
    doc = read_json(sweep / "sweep.json")
    assert [g["options"]["epochs"] for g in doc["grids"]] == [1, 3]
    assert set(doc["runs"]) == {*grid, "logitnormal-d2-a0.5-digits"}  # not in the second
    assert doc["runs"]["logitnormal-d2-a1.78-digits"]["epochs"] == 3
    # the same configuration trained in one go
    direct = tmp_path / "direct"
    run_ok(
        [
            "fit",
            "--family",
            "gaussian",
            "--epochs",
            "3",
            "--out",
            str(direct),
            "--no-progress",
            *TINY,
        ]
    )
    resumed = sweep / "runs" / "gaussian-d2-digits"
    assert [r["epoch"] for r in read_metrics(resumed)] == [1, 2, 3]
    a, b = load_checkpoint(direct)["model"], load_checkpoint(resumed)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_interrupted_sweep_continues_where_it_stopped(tmp_path):
    sweep = tmp_path / "sw"
    # 100 short epochs (300 images each): more than it reaches before the stop (which comes
    # once it has two), few to resume
    args = ["--family", "gaussian", "--latent-dim", "2", "--epochs", "100", "--out", str(sweep)]
    args += ["--subset", "300"]
    cmd = [sys.executable, "-m", "pyro_dvae", "sweep", *args, *TINY[:4], "--threads", "1"]
    env = {**os.environ, "PYRO_DVAE_DATA": str(tmp_path)}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        # as from a terminal: a suite started in the background (``&``) passes SIGINT on ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    run = sweep / "runs" / "gaussian-d2-digits"
    deadline = time.time() + 120
    while time.time() < deadline and len(RunDir(run).read_metrics()) < 2:  # lines may be cut
        time.sleep(0.1)
    assert len(RunDir(run).read_metrics()) >= 2, "the run never got going"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    summary = read_json(run / "summary.json")
    done = summary["epochs_completed"]
    assert summary["status"] == "interrupted" and 2 <= done < 100
    assert load_checkpoint(run)["epoch"] == done
    assert "run the same command again" in err.decode()

    result = run_ok(["sweep", *args, *TINY])
    assert f"resume from epoch {done}" in result.stderr
    assert read_json(run / "summary.json")["epochs_completed"] == 100
    assert [r["epoch"] for r in read_metrics(run)] == list(range(1, 101))


@pytest.mark.slow
def test_a_failing_run_is_reported_and_leaves_the_others_whole(one_epoch):
    sweep = one_epoch
    # damage one run's checkpoint; put a run of another configuration in a third run's place
    broken = sweep / "runs" / "logitnormal-d2-a1.78-digits"
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    clash = sweep / "runs" / "logitnormal-d2-a0.5-digits"
    shutil.rmtree(clash)
    run_ok(
        [
            "fit",
            "--family",
            "logitnormal",
            "--alpha",
            "3",
            "--epochs",
            "1",
            "--out",
            str(clash),
            "--no-progress",
            *TINY,
        ]
    )
    broken_before, clash_before = run_files(sweep), None
    clash_before = {
        k: v for k, v in broken_before.items() if k.startswith("runs/logitnormal-d2-a0.5-digits")
    }
    broken_before = {k: v for k, v in broken_before.items() if k.startswith(f"runs/{broken.name}")}

    result = invoke(sweep_args(sweep, "--alpha", "0.5", "--jobs", "2", epochs=2))
    assert result.exit_code == 1
    assert "logitnormal-d2-a1.78-digits: failed" in result.stderr and "damaged" in result.stderr
    assert "logitnormal-d2-a0.5-digits: failed" in result.stderr
    assert "another configuration" in result.stderr
    # the healthy run went on to 2 epochs
    assert (
        read_json(sweep / "runs" / "gaussian-d2-digits" / "summary.json")["epochs_completed"] == 2
    )
    # the failing ones are untouched
    after = run_files(sweep)
    for k, v in {**broken_before, **clash_before}.items():
        assert after[k] == v, f"{k} was changed"
    assert "1 of 3 runs finished" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--preset", "paper", "--family", "gaussian"],
        ["--family", "gaussian"],
        ["--preset", "paper", "--epochs", "0"],
        ["--preset", "paper", "--jobs", "0"],
        ["--preset", "nope"],
        ["--preset", "paper", "--discrete-k", "100"],  # nothing is evaluated
        ["--preset", "paper", "--evaluate", "10", "--discrete-k", "0"],
    ],
)
def test_bad_sweep_options_are_one_error_line(tmp_path, args):
    result = invoke(["sweep", "--out", "sw", "--dry-run", *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert not (tmp_path / "sw").exists()


def test_concrete_preset_covers_the_investigation():
    from pyro_dvae.sweep import PRESETS

    configs = PRESETS["concrete"][0]()
    named = named_grid([c.validate() for c in configs])
    assert len(named) == len(configs)
    shapes = {(c.latent_dim, c.categories) for c in configs}
    assert shapes == {(1, 20), (20, 10)}
    kinds = {(c.latent_dim, c.kl, c.anneal_rate > 0) for c in configs}
    # relaxed and discrete KL for 20 x 10, with and without annealing; the paper's 1 x 20
    assert {(20, "relaxed", False), (20, "discrete", False), (20, "discrete", True)} <= kinds
    assert (20, "relaxed", True) in kinds and (1, "relaxed", False) in kinds
    assert all(c.elbo == "analytic" for c in configs if c.kl == "discrete")
    paper = [c for c in configs if c.latent_dim == 1 and c.kl == "relaxed"]
    assert any(c.temperature == 0.5 and c.prior_temperature == 1.0 for c in paper)


def test_concrete_working_preset_is_in_the_investigation_and_plans(tmp_path, monkeypatch):
    from pyro_dvae.sweep import PRESETS

    working = PRESETS["concrete-working"][0]()
    investigated = {run_name(c) for c in PRESETS["concrete"][0]()}
    # the working setting is one the investigation measured, under the same run name
    assert {run_name(c) for c in working} <= investigated
    jang = [c for c in working if c.kl == "discrete"]
    assert len(jang) == 1 and jang[0].anneal_rate > 0 and jang[0].elbo == "analytic"
    assert (jang[0].latent_dim, jang[0].categories) == (20, 10)
    monkeypatch.chdir(tmp_path)
    result = run_ok(["sweep", "--preset", "concrete-working", "--out", "sw", "--dry-run"])
    assert all(run_name(c) in result.output for c in working)


def test_progress_line_counts_epochs_and_estimates_the_time_left(tmp_path, monkeypatch):
    from pyro_dvae.config import FitConfig
    from pyro_dvae.rundir import RunDir
    from pyro_dvae.sweep import scheduler
    from pyro_dvae.sweep.plan import PlannedRun

    epochs = {"a": 4, "b": 0}  # checkpoints: run a at epoch 4, b not started
    monkeypatch.setattr(RunDir, "checkpoint_epoch", lambda self: epochs[self.path.name])
    clock = iter([1000.0, 1000.0 + 3600.0])
    monkeypatch.setattr(scheduler.time, "monotonic", lambda: next(clock))
    planned = [
        PlannedRun(n, FitConfig(epochs=10), tmp_path / n, "resume" if n == "a" else "new")
        for n in "ab"
    ]
    progress = scheduler._Progress(planned)  # 4 of 20 epochs done when the sweep starts
    epochs.update(a=10, b=2)  # an hour later: 8 more epochs, 8 an hour; 8 left
    lines = []
    progress.log({"a": "finished"}, ["b-job"], lines.append)
    assert lines == [
        "[progress] 1/2 runs finished, 1 running, 0 failed; epochs 12/20 (60%); ETA 1h00m"
    ]


def group_sweep_args(out: Path, *extra: str, epochs: int = 2) -> list[str]:
    alphas = ["--alpha", "0.5", "--alpha", "1.78"]
    return [*sweep_args(out, *extra, epochs=epochs), *alphas]


@pytest.mark.slow
def test_a_sweep_runs_the_grid_grouped_then_skips_finished_runs(tmp_path):
    """The Gaussian trains alone, the two Logit-normals together as a group; each is an
    ordinary run, and a second sweep finds them all finished."""
    sweep = tmp_path / "sw"
    result = run_ok(group_sweep_args(sweep, "--group-size", "2", "--jobs", "2"))
    assert "1 groups of up to 2" in result.stderr
    assert "3 of 3 runs finished" in result.stderr
    grouped = {"logitnormal-d2-a0.5-digits", "logitnormal-d2-a1.78-digits"}
    names = {*grouped, "gaussian-d2-digits"}
    assert {p.name for p in (sweep / "runs").iterdir()} == names
    for name in names:
        summary = read_json(sweep / "runs" / name / "summary.json")
        assert summary["status"] == "finished" and summary["epochs_completed"] == 2
        assert summary.get("group") == (2 if name in grouped else None)
        assert load_checkpoint(sweep / "runs" / name)["epoch"] == 2
    assert set(read_json(sweep / "sweep.json")["runs"]) == names
    progress = [line for line in result.stderr.splitlines() if line.startswith("[progress]")]
    assert progress[-1].startswith(
        "[progress] 3/3 runs finished, 0 running, 0 failed; epochs 6/6 (100%)"
    )  # one line as each run (or group) ends, counted from the checkpoints
    logs = sorted((sweep / "logs" / f"{name}.log").read_text() for name in grouped)
    assert "--resume" in logs[0] and "trained in a group of 2: see" in logs[1]

    before = run_files(sweep)
    again = run_ok(group_sweep_args(sweep, "--group-size", "2"))
    assert "3 already finished, 0 to run" in again.stderr
    assert run_files(sweep) == before
    # a member continues alone, or with its group, to a longer length
    longer = run_ok(group_sweep_args(sweep, "--group-size", "2", "--jobs", "2", epochs=3))
    assert longer.stderr.count("resume from epoch 2 as a group of 2") == 2
    assert (
        read_json(sweep / "runs" / "gaussian-d2-digits" / "summary.json")["epochs_completed"] == 3
    )


@pytest.mark.slow
def test_a_group_member_with_a_damaged_checkpoint_fails_alone(one_epoch):
    sweep = one_epoch  # trained alone (a group size of 1)
    broken = sweep / "runs" / "logitnormal-d2-a0.5-digits"
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    # the two Logit-normals, which would train as a group (the Gaussian trains alone anyway)
    args = ["sweep", "--family", "logitnormal", "--alpha", "0.5", "--alpha", "1.78"]
    args += ["--epochs", "2", "--out", str(sweep), *TINY, "--group-size", "4", "--jobs", "2"]
    result = invoke(args)
    assert result.exit_code == 1
    assert "logitnormal-d2-a0.5-digits: failed" in result.stderr and "damaged" in result.stderr
    assert "1 of 2 runs finished" in result.stderr
    healthy = sweep / "runs" / "logitnormal-d2-a1.78-digits" / "summary.json"
    assert read_json(healthy)["epochs_completed"] == 2


def test_groups_are_even_and_follow_the_grid_not_the_jobs(tmp_path):
    from pyro_dvae.sweep.plan import PlannedRun, grouped

    configs = [FitConfig(alpha=a) for a in (0.32, 0.56, 1.0, 1.78)] + [FitConfig(family="gaussian")]
    configs.insert(2, FitConfig(family="categorical", elbo="enum", categories=4, latent_dim=1))
    runs = [PlannedRun(f"r{i}", c, tmp_path / f"r{i}", "new") for i, c in enumerate(configs)]

    def names(size):
        return [[r.name for r in g] for g in grouped(runs, size)]

    # the Logit-normals group; the categorical (enumerated) and the Gaussian train alone
    assert names(4) == [["r0", "r1", "r3", "r4"], ["r2"], ["r5"]]
    assert names(3) == [["r0", "r1"], ["r3", "r4"], ["r2"], ["r5"]]
    assert names(1) == [["r0"], ["r1"], ["r2"], ["r3"], ["r4"], ["r5"]]
    runs[1].epochs_done = 3  # a run at another epoch is not grouped with the others
    assert names(4) == [["r0", "r3", "r4"], ["r1"], ["r2"], ["r5"]]


def test_the_costliest_runs_start_first(tmp_path):
    """Runs waiting only for their evaluation start first, then seed by seed, epochs left ×
    particles ranks the jobs (a group counts each member), plan order among equals; a sweep
    starts them in that order (its launcher sees the commands)."""
    from pyro_dvae.sweep import SweepSettings, run_sweep
    from pyro_dvae.sweep.plan import PlannedRun, costliest_first, work

    configs = {
        "elbo": FitConfig(),
        "iwae5": FitConfig(elbo="iwae", num_particles=5),
        "iwae50": FitConfig(elbo="iwae", num_particles=50),
        "elbo-b": FitConfig(seed=1),
    }
    runs = {n: PlannedRun(n, c, tmp_path / n, "new") for n, c in configs.items()}
    assert work([runs["iwae5"]]) == 5 * FitConfig().epochs
    runs["iwae50"].epochs_done = FitConfig().epochs - 5  # 5 epochs of 50 particles left: 250
    order = costliest_first([[runs["elbo"]], [runs["iwae5"]], [runs["iwae50"]], [runs["elbo-b"]]])
    assert [[r.name for r in job] for job in order] == [["iwae5"], ["iwae50"], ["elbo"], ["elbo-b"]]
    pair = [runs["elbo"], runs["elbo-b"]]  # a group of two ELBO runs: 2 × 200 epochs
    assert costliest_first([[runs["iwae50"]], pair, [runs["iwae5"]]]) == [
        [runs["iwae5"]],
        pair,
        [runs["iwae50"]],
    ]
    # seed by seed: a costly run of a later seed waits for every run of an earlier one
    later = PlannedRun(
        "iwae50-seed2", FitConfig(elbo="iwae", num_particles=50, seed=2), tmp_path, "new"
    )
    assert costliest_first([[later], [runs["elbo"]], [runs["elbo-b"]]]) == [
        [runs["elbo"]],
        [runs["elbo-b"]],
        [later],
    ]
    runs["elbo"].state = "evaluate"  # trained, waiting for its evaluation: no work, first
    assert work([runs["elbo"]]) == 0
    assert costliest_first([[runs["iwae5"]], [runs["elbo"]]]) == [[runs["elbo"]], [runs["iwae5"]]]

    class Recording(LocalLauncher):
        started: list[str] = []

        def start(self, cmd, log_path):
            self.started.append(Path(cmd[cmd.index("--resume") + 1]).name)
            return super().start([sys.executable, "-c", "pass"], log_path)

    grid = [
        FitConfig(dataset="digits", hidden=8, epochs=2, elbo=e, num_particles=k)
        for e, k in (("trace", 1), ("iwae", 5), ("iwae", 2))
    ]
    run_sweep(
        tmp_path / "sw",
        grid,
        SweepSettings(jobs=1, poll=0.01),
        launcher=Recording(),
        log=lambda m: None,
    )
    names = list(named_grid(grid))
    assert Recording.started == [names[i] for i in (1, 2, 0)]


@pytest.mark.slow
def test_a_launcher_opens_only_once_the_sweep_holds_its_folder(tmp_path):
    """A busy folder is refused before the launcher connects (Ray would start a cluster);
    a free one opens the launcher once, takes its slots as --jobs and closes it."""
    from pyro_dvae.errors import LockError
    from pyro_dvae.fileio import FolderLock
    from pyro_dvae.sweep import SweepSettings, run_sweep

    class Counting(LocalLauncher):
        calls: list[str] = []

        def open(self):
            self.calls.append("open")

        def slots(self):
            self.calls.append("slots")
            return 3

        def close(self):
            self.calls.append("close")

    sweep, config = tmp_path / "sw", FitConfig(dataset="digits", hidden=8, epochs=1, latent_dim=2)
    # the run trained already, here (the sweep has nothing to start: no process to wait for)
    (name,) = named_grid([config])
    pd.fit(config, out=sweep / "runs" / name, progress=False, log=lambda m: None)
    with FolderLock(sweep, "held"), pytest.raises(LockError):
        run_sweep(sweep, [config], SweepSettings(jobs=None), launcher=Counting(), log=len)
    assert Counting.calls == ["close"]
    lines: list[str] = []
    run_sweep(sweep, [config], SweepSettings(jobs=None), launcher=Counting(), log=lines.append)
    assert Counting.calls == ["close", "open", "slots", "close"]
    assert "(3 at a time" in lines[0] and "1 already finished, 0 to run" in lines[0]


def test_sweep_json_of_an_older_version_keeps_its_grid_and_runs(tmp_path):
    from pyro_dvae.sweep.folder import SWEEP, write_sweep_json

    old = {"preset": "paper", "options": {"epochs": 200}, "runs": {"a": {"seed": 0}}}
    (tmp_path / SWEEP).write_text(json.dumps(old))
    new = {"preset": None, "options": {"family": ["gaussian"]}}
    write_sweep_json(tmp_path, {"b": FitConfig()}, new)
    doc = json.loads((tmp_path / SWEEP).read_text())
    assert doc["grids"] == [{"preset": "paper", "options": {"epochs": 200}}, new]
    assert doc["runs"]["a"] == {"seed": 0} and doc["runs"]["b"] == FitConfig().to_dict()


class _Remembering(LocalLauncher):
    """The local launcher, keeping its processes for the test to end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd, log_path):
        self.procs.append(super().start(cmd, log_path))
        return self.procs[-1]


@pytest.mark.slow
def test_a_stopped_sweep_returns_once_its_runs_let_go_and_settles_those_killed(tmp_path):
    """Two ways a launcher's stop can leave a run, one for each of the sweep's two runs.
    The Gaussian's command ends before its run does (a Ray task whose worker or node is
    lost, while its run stops on the SIGTERM it got): the sweep waits for the run's lock,
    so when it returns the run has written its last summary (before: still 'running').
    The Logit-normal's run is killed outright (past the grace; Ray ends a job's workers
    and, with them, their children): the sweep writes its last summary for it (before,
    'running', though nobody trains it), at its checkpoint's epoch. The stop is a SIGHUP,
    which the sweep takes as it takes SIGTERM (exit 129; tests/test_reliability.py stops a
    sweep process by SIGTERM, and a fit process by each signal)."""
    import threading

    from pyro_dvae.signals import Stopped
    from pyro_dvae.sweep import SweepSettings, run_sweep

    class Stopping(_Remembering):
        def stop(self, handles, grace=0.0):
            for proc in handles:
                if any("gaussian" in arg for arg in proc.args):  # SIGTERM after it "ended"
                    threading.Timer(1.0, proc.send_signal, [signal.SIGTERM]).start()
                else:
                    proc.kill()
                    proc.wait()

    sweep = tmp_path / "sw"
    runs = [sweep / "runs" / n for n in ("gaussian-d2-digits", "logitnormal-d2-a1-digits")]
    # not about the compiled step: the runs train at once, without compiling first
    tiny = dict(dataset="digits", hidden=16, latent_dim=2, epochs=100_000, compile="off")
    configs = [FitConfig(family=family, **tiny) for family in ("gaussian", "logitnormal")]

    def stop_once_training():
        deadline = time.time() + 120
        while time.time() < deadline and not all(
            (RunDir(run).checkpoint_epoch() or 0) >= 1 and (run / "summary.json").exists()
            for run in runs
        ):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGHUP)  # to the sweep, which runs in this process

    threading.Thread(target=stop_once_training, daemon=True).start()
    launcher = Stopping()
    # at its default, as in a terminal: under nohup the sweep would rightly keep it ignored
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        with pytest.raises(Stopped) as stopped:
            settings = SweepSettings(jobs=2, threads=1)
            run_sweep(sweep, configs, settings, launcher=launcher, log=lambda m: None)
        assert stopped.value.exit_code == 128 + signal.SIGHUP
        for run in runs:
            assert RunDir(run).holder() is None
            summary = read_json(run / "summary.json")
            assert summary["status"] == "interrupted", run.name
            assert summary["epochs_completed"] == RunDir(run).checkpoint_epoch() >= 1
    finally:
        signal.signal(signal.SIGHUP, hangup)
        for proc in launcher.procs:
            proc.kill()
            proc.wait()


_CHILD = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(*_):
    time.sleep(1.0)  # saving its checkpoint
    out.write_text("stopped")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
out.write_text("ready")
time.sleep(60)
"""


@pytest.mark.parametrize("when", ["while it starts", "again while it stops"])
def test_a_cancelled_ray_task_ends_only_once_its_run_has_stopped(tmp_path, monkeypatch, when):
    """``ray.cancel`` interrupts the task's main thread. One that comes while the run is being
    started stops the run once started (before, the run was left going), and one that comes
    again while the run stops does not cut the wait short (before, the task ended first)."""
    import _thread
    import threading
    import types

    from pyro_dvae.sweep import launchers

    fake_ray = types.SimpleNamespace(
        get_runtime_context=lambda: types.SimpleNamespace(get_node_id=lambda: "node")
    )
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    out, spawned = tmp_path / "state", []
    real_spawn = launchers._spawn

    def spawn(cmd, log):
        spawned.append(real_spawn(cmd, log))
        deadline = time.time() + 60
        while time.time() < deadline and not out.exists():  # its SIGTERM handler is set
            time.sleep(0.02)
        if when == "while it starts":
            _thread.interrupt_main()  # the cancel, before the task holds the process
            time.sleep(0.5)
        return spawned[-1]

    monkeypatch.setattr(launchers, "_spawn", spawn)
    if when == "again while it stops":

        def cancel_twice():
            while not out.exists():
                time.sleep(0.02)
            for _ in range(2):
                _thread.interrupt_main()
                time.sleep(0.3)

        threading.Thread(target=cancel_twice, daemon=True).start()
    _cancelled_task_stops_its_run(launchers, out, tmp_path, spawned)


def test_a_ray_cancel_whose_interrupt_a_finalizer_drops_still_stops_the_run(tmp_path, monkeypatch):
    """``ray.cancel`` interrupts the task's main thread through its SIGINT handler, which may
    run inside a weakref callback or a ``__del__``, where Python drops what it raises. The
    task still stops its run and ends once the run has (before, the task waited on while its
    run trained, until the sweep's grace ran out and Ray killed both, the summary 'running')."""
    import types
    import weakref

    from pyro_dvae.sweep import launchers

    fake_ray = types.SimpleNamespace(
        get_runtime_context=lambda: types.SimpleNamespace(get_node_id=lambda: "node")
    )
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    out, turns, fired = tmp_path / "state", [], []

    class Thing:
        pass

    def sleep(seconds):  # the task's wait for its run: the cancel comes once the run is up
        turns.append(seconds)
        assert len(turns) < 100, "the cancel was lost: the task waits on"
        if out.exists() and not fired:
            thing = Thing()
            ref = weakref.ref(
                thing, lambda _: (fired.append(1), signal.raise_signal(signal.SIGINT))
            )
            del thing  # the callback runs here, and what the handler raises is dropped
            assert ref() is None and fired
        time.sleep(seconds)

    monkeypatch.setattr(launchers, "time", types.SimpleNamespace(sleep=sleep))
    procs, real_spawn = [], launchers._spawn

    def spawn(cmd, log):
        procs.append(real_spawn(cmd, log))
        return procs[-1]

    monkeypatch.setattr(launchers, "_spawn", spawn)
    _cancelled_task_stops_its_run(launchers, out, tmp_path, procs)


def _cancelled_task_stops_its_run(launchers, out, tmp_path, spawned: list) -> None:
    """A Ray task's run of ``_CHILD``, cancelled as the test arranged: the task raises
    KeyboardInterrupt only once its run has stopped at its checkpoint (exit 143). SIGINT
    raises as in a Ray worker (a handler an earlier test left behind, Ray Tune's, would
    swallow the interrupt); the run's processes are killed whatever happens."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            launchers._run_command(["python", "-c", _CHILD, str(out)], str(tmp_path / "log"))
        assert spawned[0].poll() == 143 and out.read_text() == "stopped"
    finally:
        signal.signal(signal.SIGINT, previous)
        for proc in spawned:
            proc.kill()
            proc.wait()


def test_a_second_signal_while_a_ray_sweep_stops_does_not_end_its_wait():
    """Ray's wait runs our signal handler and, if it raises, raises a bare KeyboardInterrupt
    of its own. A second signal while the stopped runs are waited for must not end the
    wait (before, it left the sweep at once: Ray then ended the job's workers and, with
    them, the runs still writing their last summary, which stayed 'running')."""
    from pyro_dvae.signals import stop_on_signals
    from pyro_dvae.sweep.launchers import RayLauncher

    class Ray:  # the parts of ray that RayLauncher.stop uses
        def __init__(self):
            self.cancels, self.waits = [], 0

        def cancel(self, ref, force=False):
            self.cancels.append((ref, force))

        def wait(self, refs, timeout=None):
            self.waits += 1
            if self.waits == 1:
                try:  # a signal lands in the wait, as Ray's C++ wait checks for them
                    signal.raise_signal(signal.SIGTERM)
                except KeyboardInterrupt:
                    raise KeyboardInterrupt from None
            return refs, []

    launcher = RayLauncher.__new__(RayLauncher)  # no cluster: the fake above
    launcher.ray = Ray()
    with stop_on_signals():  # the sweep's
        try:
            launcher.stop([("a", None), ("b", None)], grace=60)
        except KeyboardInterrupt:
            pytest.fail("the second signal ended the wait for the runs")
    assert launcher.ray.cancels == [("a", False), ("b", False)]  # no kill: each run stops
    assert launcher.ray.waits == 2
