"""The categorical latent without relaxation: exact enumeration and score-function gradients.

The expectations are written out here: the ELBO as a hand-written sum over every code
(Σ_c q(c|x) [log p(x|c) + log p(c) − log q(c|x)]), its gradient by autograd of that sum,
and the mean of many score-function gradients against it within Monte Carlo error.
"""

from __future__ import annotations

import itertools
import json
import math

import pyro
import pytest
import torch

from pyro_dvae.config import FitConfig
from pyro_dvae.families import make_family
from pyro_dvae.inference import make_elbo
from pyro_dvae.vae import VAE

from .helpers import assert_one_error_line, error_message, fit_args, invoke, read_json, run_ok


def _vae(m: int, k: int, elbo: str = "enum", d: int = 6, hidden: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    config = FitConfig(family="categorical", latent_dim=m, categories=k, elbo=elbo)
    return VAE(make_family(config), d, hidden).double()


def _data(n: int = 7, d: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.4, dtype=torch.float64), generator=g)


def hand_written_elbo(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Mean ELBO per image, summed over all K^M codes by hand."""
    m, k = vae.family.latent_dim, vae.family.categories
    log_q = vae.encoder(x).reshape(len(x), m, k).log_softmax(-1)
    total = 0.0
    for code in itertools.product(range(k), repeat=m):
        onehot = torch.nn.functional.one_hot(torch.tensor(code), k).to(x.dtype).flatten()
        logits = vae.decoder(onehot.expand(len(x), -1))
        log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
        log_qc = log_q[:, torch.arange(m), torch.tensor(code)].sum(-1)
        total = total + log_qc.exp() * (log_px - m * math.log(k) - log_qc)
    return total.mean()


def _grads(vae: VAE) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in vae.parameters()])


@pytest.mark.parametrize("m,k", [(1, 5), (2, 3), (3, 2)])
def test_the_enumerated_elbo_and_gradient_are_the_sum_over_codes(m, k):
    vae, x = _vae(m, k), _data()
    elbo = make_elbo("enum")
    loss = elbo.loss_and_grads(vae.model, vae.guide, x)
    exact = _grads(vae)
    vae.zero_grad()
    want = hand_written_elbo(vae, x)
    assert loss == pytest.approx(-want.item(), rel=1e-10)
    (-want).backward()
    torch.testing.assert_close(exact, _grads(vae), rtol=1e-8, atol=1e-10)
    # the reconstruction part it reports is the exact expectation too
    assert 0 < float(elbo.last_recon) < loss + 1e-9


def test_the_joint_site_is_the_product_of_the_variables():
    vae, x = _vae(2, 3), _data()
    q = vae.family.posterior(vae.encoder(x))  # over the 9 joint codes
    per = vae.encoder(x).reshape(len(x), 2, 3).softmax(-1)
    product = per[:, 0, :, None] * per[:, 1, None, :]  # q(c1) q(c2), code = 3 c1 + c2
    torch.testing.assert_close(q.probs, product.reshape(len(x), 9))
    codes = torch.eye(9, dtype=x.dtype)
    flat = vae.family.decoder_input(codes)
    want = [
        [1.0 * (i == c1) for i in range(3)] + [1.0 * (i == c2) for i in range(3)]
        for c1 in range(3)
        for c2 in range(3)
    ]
    torch.testing.assert_close(flat, torch.tensor(want, dtype=x.dtype))


@pytest.mark.slow
@pytest.mark.parametrize(
    "elbo,baseline", [("tracegraph", "none"), ("tracegraph", "decaying"), ("trace", None)]
)
def test_score_function_gradients_average_to_the_exact_one(elbo, baseline):
    vae, x = _vae(1, 3, elbo="tracegraph"), _data(n=4)
    twin = vae.with_family(_vae(1, 3).family)  # the same networks, enumerated
    make_elbo("enum").loss_and_grads(twin.model, twin.guide, x)
    exact = _grads(vae)
    est = make_elbo(elbo, baseline=baseline or "decaying")
    pyro.set_rng_seed(3)
    # ten independent draws per call: the batch ten times over, each copy with its own codes
    # (the gradient is the mean over images, so a call's is the mean of ten draws); the
    # standard error comes from the spread of the calls' means
    per_call, means = 10, []
    for _ in range((3000 if elbo == "trace" else 800) // per_call):  # TraceGraph is slower
        vae.zero_grad()
        est.loss_and_grads(vae.model, vae.guide, x.repeat(per_call, 1))
        means.append(_grads(vae))
    g = torch.stack(means)
    se = g.std(0) / len(g) ** 0.5
    assert ((g.mean(0) - exact).abs() <= 5 * se + 1e-9).all()
    assert (g.std(0) > 0).any()  # really sampled


def test_enum_refuses_relaxed_families_and_too_many_codes(tmp_path):
    result = invoke(fit_args(tmp_path / "a", family="concrete", elbo="enum"))
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert "--family categorical" in error_message(result)
    result = invoke(fit_args(tmp_path / "b", family="categorical", latent_dim=20, elbo="enum"))
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert "10^20" in error_message(result) and "tracegraph" in error_message(result)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    for bad in (
        dict(family="categorical", baseline="none"),  # no score function to baseline
        dict(family="gaussian", elbo="tracegraph", baseline="neural"),
        dict(family="categorical", latent_dim=1, elbo="enum", num_particles=3),  # exact anyway
        dict(family="categorical", elbo="analytic"),  # TraceMeanField_ELBO needs rsample
    ):
        result = invoke(fit_args(tmp_path / "c", **bad))
        assert result.exit_code != 0, bad
        assert_one_error_line(result)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("elbo", ["enum", "tracegraph"])
def test_a_categorical_run_trains_and_reports_its_parts(tmp_path, elbo):
    run_ok(fit_args(tmp_path / "r", family="categorical", latent_dim=1, categories=4, elbo=elbo))
    summary = read_json(tmp_path / "r" / "summary.json")
    final = summary["final"]
    assert final["train_recon"] + final["train_kl"] == pytest.approx(final["train_loss"])
    assert 0 <= summary["final_test"]["test_kl"] <= math.log(4) + 1e-6  # KL ≤ log K


def test_a_resumed_tracegraph_run_equals_an_uninterrupted_one(tmp_path):
    opts = dict(family="categorical", latent_dim=2, categories=3, elbo="tracegraph")
    run_ok(fit_args(tmp_path / "whole", epochs=3, baseline="neural", **opts))
    run_ok(fit_args(tmp_path / "parts", epochs=2, baseline="neural", **opts))
    run_ok(["fit", "--resume", str(tmp_path / "parts"), "--epochs", "3", "--no-progress"])
    whole = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    parts = (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in whole + parts]
    assert strip[:3] == strip[3:]


@pytest.mark.slow
def test_estimators_against_the_exact_gradient():
    from pyro_dvae.discrete_gradients import compare_to_exact, discrete_estimators

    vae, x = _vae(1, 3, elbo="tracegraph"), _data(n=5)
    repeats = 300
    rows = {r["estimator"]: r for r in compare_to_exact(
        vae, x, discrete_estimators(vae, (0.1, 3.0)), repeats=repeats, warmup=10)}  # fmt: skip
    assert rows["enum (exact)"]["mse_all"] == 0
    for name, r in rows.items():
        assert r["mse_all"] == pytest.approx(r["bias2_all"] + r["var_all"], rel=1e-9, abs=1e-12)
        noise = 2**0.5 * r["var_all"] / repeats  # sd of the corrected bias² when unbiased
        if name in ("score-function", "reinforce", "nvil"):
            assert abs(r["bias2_all"]) < 5 * noise + 1e-12, name  # unbiased
    hot = rows["concrete-3"]
    assert hot["bias2_all"] > 5 * 2**0.5 * hot["var_all"] / repeats  # the relaxation is biased
    assert hot["bias2_all"] > rows["concrete-0.1"]["bias2_all"]  # more so at a high τ


def test_the_clipped_share_counts_the_elements_beyond_the_clamp():
    from pyro_dvae.discrete_gradients import clipped_share

    draws = torch.tensor([[0.5, -11.0, 10.0, 12.0], [0.0, -10.0, 3.0, -9.99]])
    assert clipped_share(draws, 10.0) == {"clipped": 2 / 8}  # -11 and 12; ±10 is kept as is
    assert clipped_share(draws, 0.0) == {"clipped": 7 / 8}  # every non-zero element
    assert clipped_share(draws, None) == {}


def test_the_exact_table_says_a_negative_bias2_within_noise_is_zero():
    from pyro_dvae.discrete_gradients import exact_table

    def row(name, bias2, var, repeats=50):
        parts = {f"{k}_{g}": 0.0 for k in ("mse", "var", "bias2") for g in ("encoder", "decoder")}
        return dict(
            parts, estimator=name, mse_all=bias2 + var, bias2_all=bias2, var_all=var,
            relative_mse=0.1, seconds=0.001, repeats=repeats, exact_norm2=10.0,
        )  # fmt: skip

    # the bias² of 50 draws at zero bias has sd at most √2 · variance / 50: 0.283 for 10
    rows = [
        row("below, within", -0.2, 10.0),
        row("below, beyond", -0.3, 10.0),
        row("above", 0.2, 10.0),
        row("zero", 0.0, 0.0),
    ]
    cells = {name: c[2] for name, c in exact_table(rows, "t").rows}
    assert cells == {
        "below, within": "≈ 0 (within noise)",
        "below, beyond": "-0.3",
        "above": "0.2",
        "zero": "0",
    }
    assert "≈ 0 (within noise)" in exact_table(rows, "t").note


def test_compare_estimators_on_a_categorical_run(tmp_path):
    run_ok(fit_args(tmp_path / "r", family="categorical", latent_dim=1, categories=3, elbo="enum"))
    out = tmp_path / "est"
    args = ["compare-estimators", str(tmp_path / "r"), "--repeats", "20", "--batch-size", "5"]
    run_ok([*args, "--temperatures", "0.5,2", "--out", str(out)])
    rows = json.loads((out / "estimators.json").read_text())
    assert [r["estimator"] for r in rows] == [
        "enum (exact)",
        "score-function",
        "concrete-0.5",
        "concrete-2",
        "straight-through-0.5",
        "straight-through-2",
        "reinforce",
        "nvil",
        "vimco-5",
    ]
    assert (out / "gradient_mse.png").stat().st_size > 0
    assert all(0 <= r["clipped"] <= 1 for r in rows)
    assert "| clipped |" in (out / "estimators.md").read_text()
    # the share is of the run's own --clip-norm: a clamp at 1e-9 would change nearly every
    # element of the score function's noisy gradient
    run_ok(fit_args(tmp_path / "tight", family="categorical", latent_dim=1, categories=3,
                    elbo="enum", clip_norm=1e-9))  # fmt: skip
    tight = tmp_path / "tight-est"
    run_ok(["compare-estimators", str(tmp_path / "tight"), "--repeats", "20", "--batch-size", "5",
            "--out", str(tight)])  # fmt: skip
    shares = {
        r["estimator"]: r["clipped"] for r in json.loads((tight / "estimators.json").read_text())
    }
    assert shares["score-function"] > 0.5 > max(r["clipped"] for r in rows)
    result = invoke([*args, "--temperatures", "0,1"])
    assert result.exit_code != 0
    assert_one_error_line(result)


@pytest.mark.parametrize("elbo", ["enum", "tracegraph"])
def test_the_exact_test_elbo_is_the_sum_over_codes(elbo):
    from pyro_dvae.families.enumeration import enumerated_parts

    vae, x = _vae(2, 3, elbo=elbo), _data()
    parts = enumerated_parts(vae, x, batch_size=3)  # batches: the same sums
    with torch.no_grad():
        assert parts["loss"] == pytest.approx(-hand_written_elbo(vae, x).item(), rel=1e-10)
    assert parts["loss"] == pytest.approx(parts["recon"] + parts["kl"], rel=1e-12)
    assert 0 <= parts["kl"] <= 2 * math.log(3)


@pytest.mark.parametrize("elbo", ["enum", "tracegraph"])
def test_a_categorical_traversal_sets_each_category_of_one_variable(elbo):
    family = _vae(3, 4, elbo=elbo).family
    z, labels = family.traversal(1, 99, torch.zeros(1, dtype=torch.float64))
    code = family.decoder_input(z).reshape(4, 3, 4)  # what the decoder reads, either way
    torch.testing.assert_close(code[:, 1, :], torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(code[:, [0, 2], :], torch.full((4, 2, 4), 0.25, dtype=torch.float64))
    assert labels == ["k=1", "k=2", "k=3", "k=4"]


@pytest.mark.parametrize("m,k", [(2, 3), (3, 2)])
def test_categorical_reconstructions_are_the_posterior_mean_image(m, k):
    from pyro_dvae.families.enumeration import enumerated_reconstructions

    vae, x = _vae(m, k, elbo="tracegraph"), _data()
    with torch.no_grad():
        log_q = vae.encoder(x).reshape(len(x), m, k).log_softmax(-1)
        want = 0.0
        for code in itertools.product(range(k), repeat=m):
            onehot = torch.nn.functional.one_hot(torch.tensor(code), k).to(x.dtype).flatten()
            q = log_q[:, torch.arange(m), torch.tensor(code)].sum(-1).exp()
            want = want + q[:, None] * torch.sigmoid(vae.decoder(onehot))
    torch.testing.assert_close(enumerated_reconstructions(vae, x), want)
