"""Experiment tracking: what TensorBoard and MLflow were given, read back with their own
readers, equals the run folder's ``metrics.jsonl``; resumed runs and group members go on in
their own place; a missing package is one error line naming the extra."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

import pyro_dvae as pd
from pyro_dvae.tracking import MLFLOW_FILE, TENSORBOARD_FOLDER, numbers

from .helpers import assert_one_error_line, error_message, fit_args, invoke, run_ok

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

SMALL = dict(dataset="digits", hidden=16, latent_dim=2, subset=200, batch_size=50)
PICTURES = {"samples", "reconstructions", "traversals", "curves"}


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _expected(path) -> dict[str, list[tuple[int, float]]]:
    """Every numeric metric of ``metrics.jsonl`` as (epoch, value) pairs."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in _rows(path):
        for key, value in numbers(row).items():
            out.setdefault(key, []).append((row["epoch"], value))
    return out


def _tensorboard(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path / TENSORBOARD_FOLDER), size_guidance={"images": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_tensorboard_holds_every_metric_row_the_config_and_the_pictures(tmp_path):
    out = tmp_path / "run"
    run_ok(fit_args(out, epochs=2, subset=200, batch_size=4, log="tensorboard"))
    acc = _tensorboard(out)
    expected = _expected(out)
    for key, pairs in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in pairs], key
        assert [v for _, v in got] == pytest.approx([v for _, v in pairs], rel=1e-6), key
    assert {"train_loss", "test_loss", "train_kl"} <= set(expected)
    steps = acc.Scalars("step/train_loss")
    assert [e.step for e in steps] == [50, 100] and all(math.isfinite(e.value) for e in steps)
    assert PICTURES <= set(acc.Tags()["images"])
    assert (out / "pictures" / "samples.png").is_file()  # as pyro-dvae show draws them
    # the config as hyperparameters (the hparams plugin's session start)
    plugin = acc.PluginTagToContent("hparams")
    assert plugin, "no hyperparameters were written"

    # resumed: the same folder goes on at epoch 3
    run_ok(["fit", "--resume", str(out), "--epochs", "3", "--no-progress", "--threads", "1"])
    acc = _tensorboard(out)
    logged = {e.step: e.value for e in acc.Scalars("train_loss")}  # the last value per epoch
    assert list(logged) == [1, 2, 3]
    assert list(logged.values()) == pytest.approx([r["train_loss"] for r in _rows(out)], rel=1e-6)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the artifacts' default root is relative to the cwd
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _mlflow_matches(client, run_id, path) -> None:
    for key, pairs in _expected(path).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [s for s, _ in history] == [s for s, _ in pairs], key
        assert [v for _, v in history] == pytest.approx([v for _, v in pairs], rel=1e-9), key


@pytest.mark.slow
def test_mlflow_holds_the_params_every_metric_row_and_the_run_folder(tmp_path, mlflow_store):
    client, out = mlflow_store, tmp_path / "run"
    run_ok(fit_args(out, epochs=2, subset=200, log="mlflow"))
    run_id = json.loads((out / MLFLOW_FILE).read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    config = json.loads((out / "config.json").read_text())
    assert run.data.params == {k: str(v) for k, v in config.items()}
    _mlflow_matches(client, run_id, out)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "summary.json", "metrics.jsonl", "pictures"} <= artifacts
    pictures = {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "pictures")}
    assert {f"{p}.png" for p in PICTURES} <= pictures

    # resumed: the same MLflow run goes on
    run_ok(["fit", "--resume", str(out), "--epochs", "3", "--no-progress", "--threads", "1"])
    assert json.loads((out / MLFLOW_FILE).read_text())["run_id"] == run_id
    _mlflow_matches(client, run_id, out)
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_each_group_member_is_its_own_mlflow_run(tmp_path, mlflow_store):
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"seed{seed}"
        pd.fit(pd.FitConfig(**SMALL, epochs=1, seed=seed), path, device="cpu", progress=False)
        paths.append(path)
    logger = pd.MLflowLogger()  # one logger watching both members
    pd.resume_group(paths, device="cpu", progress=False, epochs=2, callbacks=[logger])
    ids = [json.loads((p / MLFLOW_FILE).read_text())["run_id"] for p in paths]
    assert len(set(ids)) == 2
    for run_id, path in zip(ids, paths, strict=True):
        assert mlflow_store.get_run(run_id).info.run_name == path.name
        # epoch 1 was trained before logging was asked for: the resumed run logs it too
        _mlflow_matches(mlflow_store, run_id, path)


def test_a_missing_tracker_package_is_one_error_line_naming_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    out = tmp_path / "run"
    result = invoke(fit_args(out, log="tensorboard,mlflow"))
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert 'pip install "pyro-dvae[mlflow]"' in error_message(result)
    assert not out.exists()


def test_an_unknown_tracker_is_refused(tmp_path):
    result = invoke(fit_args(tmp_path / "run", log="wandb"))
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert "tensorboard, mlflow" in error_message(result)
