"""``pyro-dvae sweep --backend ray`` on a two-node Ray cluster started on this machine."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_dvae.rundir import RunDir

from .helpers import invoke, load_checkpoint, read_json, run_ok

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

TINY = ["--dataset", "digits", "--hidden", "16", "--latent-dim", "2"]
GRID = ["--family", "gaussian", "--family", "logitnormal", "--alpha", "1.78", *TINY]
#: a third run, which groups with the grid's Logit-normal
GROUPED = ["--alpha", "0.5", "--group-size", "2"]
EAGER = ["--compile", "off"]
RUNS = ("gaussian-d2-digits", "logitnormal-d2-a0.5-digits", "logitnormal-d2-a1.78-digits")


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node of one CPU each, for every test here; shut down after.
    The worker declares one GPU (Ray counts it; no run here asks CUDA for it)."""
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def sweep(out: Path, *extra: str, epochs: int = 2, backend: str = "ray") -> list[str]:
    more = ["--backend", "ray"] if backend == "ray" else ["--jobs", "2", "--threads", "1"]
    return ["sweep", *GRID, "--epochs", str(epochs), "--out", str(out), *more, *extra]


@pytest.fixture(scope="module")
def ray_sweep(cluster, tmp_path_factory) -> Path:
    """The grid's runs and a second Logit-normal (α 0.5) trained for two epochs on the
    cluster, the two Logit-normals as a group: once, for the tests that read it; a test
    that changes it works on a copy."""
    out = tmp_path_factory.mktemp("ray-sweep") / "ray"
    result = run_ok(sweep(out, *GROUPED))
    assert "as a group of 2" in result.stderr and "3 of 3 runs finished" in result.stderr
    return out


def _nodes(sweep_dir: Path) -> set[str]:
    text = "".join(p.read_text() for p in (sweep_dir / "logs").glob("*.log"))
    return set(re.findall(r"\(Ray task on node (\w+)\)", text))


@pytest.mark.slow
def test_a_ray_sweep_equals_the_local_one_and_uses_both_nodes(ray_sweep, tmp_path):
    """The Gaussian trains alone and the Logit-normals as a group, on Ray as locally."""
    run_ok(sweep(tmp_path / "local", *GROUPED, backend="local"))
    for name in RUNS:
        a = load_checkpoint(ray_sweep / "runs" / name)["model"]
        b = load_checkpoint(tmp_path / "local" / "runs" / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
        group = read_json(ray_sweep / "runs" / name / "summary.json").get("group")
        assert group == (None if name.startswith("gaussian") else 2), name
    assert len(_nodes(ray_sweep)) == 2  # one CPU per node: the run and the group, one on each
    again = run_ok(sweep(ray_sweep, *GROUPED))
    assert "3 already finished, 0 to run" in again.stderr


@pytest.mark.slow
def test_runs_that_take_a_gpu_go_one_per_gpu_to_the_node_that_has_it(
    cluster, tmp_path, monkeypatch
):
    """Also: a relative sweep folder is the same folder on every node (the runs go to the
    worker node, whose processes' working directory is elsewhere)."""
    gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}
    assert len(gpu_nodes) == 1
    monkeypatch.chdir(tmp_path)
    result = run_ok(sweep(Path("sw"), "--gpus-per-run", "1", epochs=1))
    assert "(1 at a time" in result.stderr  # the cluster's one GPU, not its two CPUs
    assert "2 of 2 runs finished" in result.stderr
    assert _nodes(tmp_path / "sw") == gpu_nodes
    for name in ("gaussian-d2-digits", "logitnormal-d2-a1.78-digits"):
        assert RunDir(tmp_path / "sw" / "runs" / name).checkpoint_epoch() == 1
    refused = invoke(sweep(Path("sw"), "--threads", "2"))
    assert refused.exit_code != 0 and "--cpus-per-run sets each run's threads" in refused.stderr


@pytest.mark.slow
def test_a_run_with_a_damaged_checkpoint_fails_alone_on_ray(ray_sweep, tmp_path):
    shutil.copytree(ray_sweep, tmp_path / "sw")  # runs at epoch 2; the grid's two alone
    broken = tmp_path / "sw" / "runs" / "logitnormal-d2-a1.78-digits"
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = invoke(sweep(tmp_path / "sw", epochs=3))
    assert result.exit_code == 1
    assert "logitnormal-d2-a1.78-digits: failed" in result.stderr and "damaged" in result.stderr
    healthy = read_json(tmp_path / "sw" / "runs" / "gaussian-d2-digits" / "summary.json")
    assert healthy["epochs_completed"] == 3
    assert (broken / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_a_folder_the_workers_cannot_see_is_one_error_line(cluster, tmp_path, monkeypatch):
    from pyro_dvae.sweep import launchers

    def blind(path: str, token: str) -> bool:  # sent to the workers by value
        return False

    monkeypatch.setattr(launchers, "_sees", blind)
    result = invoke(sweep(tmp_path / "sw"))
    assert result.exit_code != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "not visible from the Ray node" in lines[0]
    assert not list((tmp_path / "sw" / "runs").glob("*/checkpoint.pt"))


def _fits_of(sweep_dir: Path) -> list[int]:
    """Processes training a run of ``sweep_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "fit" in cmd and str(sweep_dir) in cmd:
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stopping_a_ray_sweep_leaves_resumable_runs_and_nothing_running(cluster, tmp_path):
    out = tmp_path / "sw"
    # more epochs than any run can reach before the stop, however late its Ray worker starts;
    # not about the compiled step: the runs train at once, without compiling first
    args = sweep(out, "--address", cluster.address, *EAGER, epochs=100_000)
    env = {**os.environ, "PYRO_DVAE_DATA": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro_dvae", *args],
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    runs = [out / "runs" / n for n in ("gaussian-d2-digits", "logitnormal-d2-a1.78-digits")]
    deadline = time.time() + 180
    while time.time() < deadline and not all(
        (RunDir(r).checkpoint_epoch() or 0) >= 1 for r in runs
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    for run in runs:
        summary = read_json(run / "summary.json")
        assert summary["status"] == "interrupted"
        assert summary["epochs_completed"] == RunDir(run).checkpoint_epoch() >= 1
    gone = time.time() + 1  # every run's process ends within a second of the sweep
    while _fits_of(out) and time.time() < gone:
        time.sleep(0.05)
    assert _fits_of(out) == []
    # the sweep run again (to fewer epochs than planned) resumes every run where it stopped
    done = {r.name: RunDir(r).checkpoint_epoch() for r in runs}
    target = max(done.values()) + 2
    result = run_ok(sweep(out, *EAGER, epochs=target))
    for run in runs:
        assert f"{run.name}: resume from epoch {done[run.name]}" in result.stderr
        assert read_json(run / "summary.json")["epochs_completed"] == target


@pytest.mark.slow
def test_a_tune_search_finishes_and_its_trials_are_runs(cluster, tmp_path):
    pytest.importorskip("ray.tune")
    from ray import tune

    from pyro_dvae.config import FitConfig
    from pyro_dvae.data import load_dataset
    from pyro_dvae.train import Trainer
    from pyro_dvae.tune import load_state, trainable

    fields = {"dataset": "digits", "hidden": 16, "latent_dim": 2, "epochs": 2}
    tuner = tune.Tuner(
        trainable,
        # two trials, one on each of the cluster's CPUs: a search, with a best to pick
        param_space={**fields, "alpha": tune.grid_search([0.5, 2.0]), "threads": 1},
        tune_config=tune.TuneConfig(metric="test_loss", mode="min"),
        run_config=tune.RunConfig(name="t", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 2 and not results.errors
    best = results.get_best_result()
    state = load_state(best.checkpoint)  # a run's checkpoint, as torch.load(weights_only) reads
    assert state["epoch"] == best.metrics["epoch"] == 2
    assert state["config"]["alpha"] == best.config["alpha"]
    # a trial is the run `fit` trains from the same fields: the same numbers
    solo = Trainer(
        FitConfig(**fields, alpha=best.config["alpha"]),
        load_dataset("digits"),
        "cpu",
        progress=False,
        log=lambda msg: None,
    )
    solo.fit()
    assert solo.history[-1]["test_loss"] == best.metrics["test_loss"]


@pytest.mark.slow
def test_an_errored_trial_resumes_from_its_checkpoint_on_restore(cluster, tmp_path):
    """``Tuner.restore`` picks a trial up at its last checkpoint, and it ends where an
    uninterrupted run ends."""
    pytest.importorskip("ray.tune")
    from ray import tune

    from pyro_dvae.config import FitConfig
    from pyro_dvae.data import load_dataset
    from pyro_dvae.train import Trainer
    from pyro_dvae.tune import trainable

    marker = tmp_path / "failed-once"

    def flaky(config):  # the first attempt stops right after its first checkpoint
        import ray.tune

        real = getattr(ray.tune, "_pyro_dvae_report", ray.tune.report)
        ray.tune._pyro_dvae_report = real
        ray.tune.report = real
        if not marker.exists():
            marker.write_text("")

            def report_then_stop(metrics, checkpoint=None):
                real(metrics, checkpoint=checkpoint)
                raise RuntimeError("stopped after epoch 1")

            ray.tune.report = report_then_stop
        trainable(config)

    fields = {"dataset": "digits", "hidden": 16, "latent_dim": 2, "epochs": 2, "alpha": 1.5}
    run_config = tune.RunConfig(name="r", storage_path=str(tmp_path), verbose=0)
    results = tune.Tuner(flaky, param_space={**fields, "threads": 1}, run_config=run_config).fit()
    assert len(results.errors) == 1
    assert results[0].metrics["epoch"] == 1
    restored = tune.Tuner.restore(str(tmp_path / "r"), flaky, resume_errored=True)
    results = restored.fit()
    assert not results.errors
    solo = Trainer(FitConfig(**fields), load_dataset("digits"), "cpu", progress=False, log=print)
    solo.fit()
    # one more report, from the checkpoint of epoch 1 (a restart from scratch would make three)
    assert results[0].metrics["epoch"] == results[0].metrics["training_iteration"] == 2
    assert results[0].metrics["test_loss"] == solo.history[-1]["test_loss"]


def test_a_trials_checkpoint_reads_back_as_a_runs_checkpoint(tmp_path):
    """What a trial reports (torch.save of the trainer's state in a folder) is what
    ``load_state`` gives back, read with ``weights_only=True`` (no Ray cluster needed)."""
    from contextlib import contextmanager

    from pyro_dvae.config import FitConfig
    from pyro_dvae.data import load_dataset
    from pyro_dvae.train import Trainer
    from pyro_dvae.tune import CHECKPOINT, load_state

    config = FitConfig(dataset="digits", hidden=8, latent_dim=2, epochs=1)
    trainer = Trainer(config, load_dataset("digits"), "cpu", progress=False, log=lambda m: None)
    trainer.fit()
    torch.save(trainer.state_dict(), tmp_path / CHECKPOINT)

    class Checkpoint:  # the part of ray.tune.Checkpoint that load_state uses
        @contextmanager
        def as_directory(self):
            yield str(tmp_path)

    state = load_state(Checkpoint())
    assert state["epoch"] == 1 and state["config"] == config.to_dict()
    for name, value in trainer.vae.state_dict().items():
        assert torch.equal(state["model"][name], value)
