"""ELBO estimators at fixed parameters: agreement in expectation, variance, IWAE, the command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyro_dvae.config import FitConfig
from pyro_dvae.data import load_dataset
from pyro_dvae.estimator_comparison import IWAE, compare, default_estimators
from pyro_dvae.families import make_family
from pyro_dvae.iwae_bound import importance_weighted
from pyro_dvae.train import Trainer
from pyro_dvae.vae import VAE

from .helpers import assert_one_error_line, fit_args, invoke, run_ok, stderr_lines

REPEATS = 300


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trained(digits, family, epochs):
    own = {"alpha": 1.78} if family == "logitnormal" else {}
    cfg = FitConfig(
        family=family,
        latent_dim=4,
        dataset="digits",
        hidden=32,
        epochs=epochs,
        eval_every=epochs,
        lr=3e-3,
        **own,
    )
    trainer = Trainer(cfg, digits, "cpu", progress=False, log=lambda m: None)
    trainer.fit()
    return trainer.vae


@pytest.mark.slow
@pytest.mark.parametrize("family,epochs", [("gaussian", 20), ("logitnormal", 1)])
def test_analytic_kl_agrees_in_expectation_and_has_lower_gradient_variance(digits, family, epochs):
    vae = _trained(digits, family, epochs)
    ests = [e for e in default_estimators(vae) if e.name in ("trace", "analytic")]
    trace, analytic = compare(vae, digits.test[:50], ests, repeats=REPEATS, seed=0)
    assert trace["kl"] == {"z": "monte-carlo"} and analytic["kl"] == {"z": "analytic"}
    # the same expectation: the difference of the means is within 4 standard errors
    se = math.sqrt((trace["loss_sd"] ** 2 + analytic["loss_sd"] ** 2) / REPEATS)
    assert abs(trace["loss_mean"] - analytic["loss_mean"]) < 4 * se
    # the KL estimator touches the encoder's gradient only; the same draws give the same decoder
    assert analytic["grad_var_decoder"] == pytest.approx(trace["grad_var_decoder"], rel=1e-6)
    assert analytic["grad_var_encoder"] < trace["grad_var_encoder"] / 1.5
    assert analytic["grad_snr_encoder"] > trace["grad_snr_encoder"]


def test_more_particles_divide_the_variance(digits):
    vae = _trained(digits, "gaussian", 1)
    ests = [e for e in default_estimators(vae, num_particles=10) if e.name.startswith("trace")]
    one, ten = compare(vae, digits.test[:50], ests, repeats=200, seed=1)
    assert ten["estimator"] == "trace-10"
    ratio = one["grad_var_all"] / ten["grad_var_all"]
    assert 6 < ratio < 16  # 10 in theory, within the sampling error of 200 repeats


def test_iwae_loss_is_the_evaluation_bound_and_is_differentiable(digits):
    cfg = FitConfig(family="logitnormal", latent_dim=3)
    vae = VAE(make_family(cfg), input_dim=64, hidden=16)
    x = digits.test[:20]
    torch.manual_seed(5)
    loss = IWAE(30).differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(5)
    ll = importance_weighted(vae.model, vae.guide, x, k=30)["log_likelihood"]
    assert loss.item() == pytest.approx(-float(ll.sum()), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in vae.encoder.parameters())


def test_concrete_gets_the_discrete_kl_estimator(digits):
    cfg = FitConfig(family="concrete", latent_dim=2, categories=4)
    vae = VAE(make_family(cfg), input_dim=64, hidden=16)
    names = [e.name for e in default_estimators(vae, iwae_k=(5,))]
    assert names == ["trace", "trace-10", "analytic", "discrete-kl", "iwae-5"]
    rows = {r["estimator"]: r for r in compare(vae, digits.test[:10], repeats=5)}
    assert rows["analytic"]["kl"] == {"z": "monte-carlo"}  # no relaxed KL is registered
    assert rows["discrete-kl"]["kl"] == {"z": "analytic"}


def test_compare_estimators_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run_ok(fit_args(run, family="gaussian", latent_dim=3))
    result = run_ok(
        ["compare-estimators", str(run), "--repeats", "5", "--iwae", "3", "--batch-size", "10"]
    )
    out = run / "estimators"
    rows = json.loads((out / "estimators.json").read_text())
    assert [r["estimator"] for r in rows] == ["trace", "trace-10", "analytic", "iwae-3"]
    assert "| analytic | z: analytic |" in result.stdout
    assert (out / "estimators.csv").read_text().count("\n") == 5
    assert (out / "estimators.png").read_bytes()[:4] == b"\x89PNG"
    # a bar of the 4 estimators x 5 estimates, as fit's and evaluate's; --no-progress: none
    assert "0/20 [" in result.stderr and "estimate" in result.stderr
    quiet = run_ok(["compare-estimators", str(run), "--repeats", "5", "--no-progress"])
    assert stderr_lines(quiet) == [
        "5 estimators x 5 estimates on 50 test images",
        f"written: {out}",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_compare_estimators_on_a_missing_device_fails_in_one_line_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    run_ok(fit_args(run, family="gaussian", latent_dim=3))
    result = invoke(["compare-estimators", str(run), "--repeats", "2", "--device", "cuda"])
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert "no CUDA device is available" in result.stderr
    assert not (run / "estimators").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["gaussian", "concrete", "categorical"])
def test_compare_estimators_on_cuda_agrees_with_the_cpu(tmp_path, family):
    """The same run on both devices: every estimator's loss within Monte Carlo error."""
    run = tmp_path / "run"
    own = {"categories": 3} if family in ("concrete", "categorical") else {}
    run_ok(fit_args(run, family=family, latent_dim=2, **own))
    rows = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        base = ["compare-estimators", str(run), "--repeats", "40", "--iwae", "3"]
        run_ok([*base, "--batch-size", "20", "--device", device, "--out", str(out)])
        rows[device] = json.loads((out / "estimators.json").read_text())
    assert [r["estimator"] for r in rows["cuda"]] == [r["estimator"] for r in rows["cpu"]]
    for cpu, gpu in zip(rows["cpu"], rows["cuda"], strict=True):
        if family == "categorical":  # the MSE to the exact gradient, from 40 draws each
            assert gpu["relative_mse"] == pytest.approx(cpu["relative_mse"], rel=0.5, abs=1e-6)
        else:
            spread = 5 * cpu["loss_sd"] / math.sqrt(40) + 1e-3
            assert gpu["loss_mean"] == pytest.approx(cpu["loss_mean"], abs=spread), cpu["estimator"]


def test_train_epochs_trains_every_objective_from_one_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run_ok(fit_args(run, family="concrete", latent_dim=2, categories=3))
    result = run_ok(
        [
            "compare-estimators",
            str(run),
            "--repeats",
            "3",
            "--iwae",
            "2",
            "--train-epochs",
            "2",
            "--num-particles",
            "2",
        ]
    )
    curves = json.loads((run / "estimators" / "training.json").read_text())
    assert list(curves) == ["trace", "trace-2", "analytic", "discrete-kl"]
    assert all(len(c) == 2 and all(math.isfinite(v) and v > 0 for v in c) for c in curves.values())
    # the relaxed analytic ELBO falls back to Monte Carlo: the same objective as trace, same seed
    assert curves["analytic"] == pytest.approx(curves["trace"], rel=1e-4)
    assert (run / "estimators" / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert "discrete-kl: test -ELBO after 2 epochs" in result.stdout
    assert "fell back to Monte Carlo" in result.stdout


def test_compare_estimators_on_a_new_model_takes_the_familys_own_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["compare-estimators", "--repeats", "2", "--iwae", "2", "--batch-size", "4"]
    new = ["--family", "beta", "--beta-prior", "0.5", "--latent-dim", "3", "--hidden", "8"]
    # an untrained model is sized to the --dataset's images (8x8 digits: 64 pixels)
    run_ok([*base, *new, "--dataset", "digits", "--out", str(tmp_path / "est")])
    rows = {
        r["estimator"]: r for r in json.loads((tmp_path / "est" / "estimators.json").read_text())
    }
    assert {"trace", "analytic", "iwae-2"} <= set(rows)
    result = invoke([*base, "--family", "gaussian", "--alpha", "2", "--dataset", "digits"])
    assert result.exit_code != 0
    assert "--alpha applies to --family logitnormal or --family bernoulli only" in result.stderr
    # Concrete's --kl chooses an estimator, which the comparison covers (discrete-kl): no option
    result = invoke([*base, "--family", "concrete", "--kl", "discrete", "--dataset", "digits"])
    assert result.exit_code == 2 and "No such option '--kl'" in result.stderr
    run = tmp_path / "run"
    run_ok(fit_args(run, family="gaussian"))
    result = invoke(["compare-estimators", str(run), "--dataset", "digits"])  # it has its own
    assert result.exit_code == 2 and "either RUN_DIR or --family" in result.stderr
