"""Training with the importance-weighted bound: the per-image bound, DReG and STL gradients.

A conjugate model, z ~ N(0, 1) and x | z ~ N(w z, σ²) per data point, with the amortised
guide q(z | x) = N(a x + b, s²), whose exact posterior is known in closed form.
"""

from __future__ import annotations

import json
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO
from torch.distributions import constraints

from pyro_dvae.config import FitConfig
from pyro_dvae.errors import ConfigError
from pyro_dvae.inference import make_elbo
from pyro_dvae.iwae_bound import vectorized
from pyro_dvae.iwae_objective import IWAEELBO, STLTraceELBO
from pyro_dvae.train import train_parts

from .helpers import (
    assert_one_error_line,
    assert_steps_agree,
    fit_args,
    invoke,
    read_json,
    read_metrics,
    run_ok,
)

SIGMA = 0.8
W = 1.2
OFF = {"a": 0.3, "b": 0.2, "s": 0.7}  # a guide away from the posterior


def posterior(w: float = W) -> dict[str, float]:
    """The exact posterior's a, b, s: precision 1 + w²/σ², mean (w/σ²) x / precision."""
    precision = 1 + w**2 / SIGMA**2
    return {"a": w / SIGMA**2 / precision, "b": 0.0, "s": math.sqrt(1 / precision)}


def model(x):
    w = pyro.param("w", torch.tensor(W))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(w * z, SIGMA), obs=x)


def make_guide(a: float, b: float, s: float):
    def guide(x):
        loc_a = pyro.param("a", torch.tensor(a))
        loc_b = pyro.param("b", torch.tensor(b))
        scale = pyro.param("s", torch.tensor(s), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc_a * x + loc_b, scale))

    return guide


def normal_log_pdf(v, loc, scale):
    return -0.5 * ((v - loc) / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)


def hand_log_weights(x, z, a, b, s):
    """log p(x, z) − log q(z | x) written out, (K, batch)."""
    return (
        normal_log_pdf(z, 0.0, 1.0)
        + normal_log_pdf(x, W * z, SIGMA)
        - normal_log_pdf(z, a * x + b, s)
    )


def grads(elbo, guide, x, seed: int, scaled_model: float = 1.0) -> dict[str, torch.Tensor]:
    """One estimate of every parameter's gradient (the unconstrained ones)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    elbo.loss_and_grads(poutine.scale(model, scaled_model), guide, x)
    store = pyro.get_param_store()
    return {n: store._params[n].grad.clone() for n in ("a", "b", "s", "w")}


def renyi_loss(model_fn, guide, x, k: int, seed: int) -> float:
    torch.manual_seed(seed)
    renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    return renyi.loss(model_fn, guide, x)


def test_per_image_bound_is_log_mean_exp_per_data_point():
    x = torch.linspace(-2.0, 2.0, 6)
    k, guide = 4, make_guide(**OFF)
    torch.manual_seed(0)
    z = poutine.trace(vectorized(guide, k)).get_trace(x).nodes["z"]["value"]
    log_w = hand_log_weights(x, z.detach(), **OFF)  # (K, 6)
    per_image = log_w.logsumexp(0) - math.log(k)
    torch.manual_seed(0)
    ours = IWAEELBO(num_particles=k).loss(model, guide, x)
    assert ours == pytest.approx(-float(per_image.mean()), rel=1e-5)
    # with every site in the data plate, pyro's RenyiELBO(α = 0) is the same bound, summed
    assert renyi_loss(model, guide, x, k, seed=0) == pytest.approx(6 * ours, rel=1e-5)


def test_renyi_weighs_per_batch_once_a_site_is_outside_the_data_plate():
    """A local latent, and one term of the whole batch (a factor outside the plate): Pyro's
    RenyiELBO(α = 0) then takes one weight per batch, which this ELBO refuses to do."""
    x = torch.linspace(-2.0, 2.0, 6)
    k, guide, penalty = 4, make_guide(**OFF), -0.25

    def with_factor(x):
        pyro.factor("penalty", torch.tensor(penalty))
        model(x)

    torch.manual_seed(0)
    z = poutine.trace(vectorized(guide, k)).get_trace(x).nodes["z"]["value"]
    log_w = hand_log_weights(x, z.detach(), **OFF)
    per_batch = (log_w.sum(1) + penalty).logsumexp(0) - math.log(k)
    per_image = (log_w.logsumexp(0) - math.log(k)).sum() + penalty
    theirs = renyi_loss(with_factor, guide, x, k, seed=0)
    assert theirs == pytest.approx(-float(per_batch), rel=1e-5)
    assert abs(theirs + float(per_image)) > 0.5  # not the per-image bound
    with pytest.raises(ConfigError, match="'penalty' is outside"):
        IWAEELBO(num_particles=k).loss(with_factor, guide, x)


def test_one_particle_is_trace_elbo_loss_and_gradient():
    x = torch.linspace(-1.5, 2.5, 8)
    guide = make_guide(**OFF)
    torch.manual_seed(3)
    expected = Trace_ELBO().loss(model, guide, x) / x.shape[0]
    torch.manual_seed(3)
    assert IWAEELBO(num_particles=1).loss(model, guide, x) == pytest.approx(expected, rel=1e-5)

    n = x.shape[0]  # Trace_ELBO sums over the images; the per-image loss is its 1/n
    trace = grads(Trace_ELBO(), poutine.scale(guide, 1 / n), x, seed=4, scaled_model=1 / n)
    iwae = grads(IWAEELBO(num_particles=1), guide, x, seed=4)
    for name in trace:
        assert torch.allclose(iwae[name], trace[name], rtol=1e-5, atol=1e-7), name


def test_dreg_and_stl_leave_the_decoder_gradient_exactly_standard():
    x = torch.linspace(-2.0, 2.0, 10)
    guide = make_guide(**OFF)
    standard = grads(IWAEELBO(num_particles=5), guide, x, seed=7)
    for gradient in ("dreg", "stl"):
        other = grads(IWAEELBO(num_particles=5, gradient=gradient), guide, x, seed=7)
        assert torch.allclose(other["w"], standard["w"], rtol=1e-6), gradient
        assert not torch.allclose(other["a"], standard["a"])  # the encoder's differs


def test_dreg_estimates_the_standard_gradient():
    """The mean DReG gradient equals the mean standard IWAE gradient within Monte Carlo
    error, for every parameter (z-scores), and it is not a vacuous agreement at zero."""
    x = torch.linspace(-2.0, 2.0, 10).repeat(5)  # 50 images: each estimate averages 50
    guide, repeats = make_guide(**OFF), 300
    draws = {}
    for gradient in ("standard", "dreg"):
        elbo = IWAEELBO(num_particles=5, gradient=gradient)
        rows = [grads(elbo, guide, x, seed=1000 * (gradient == "dreg") + r) for r in range(repeats)]
        draws[gradient] = {n: torch.stack([r[n] for r in rows]).double() for n in rows[0]}
    for name in ("a", "b", "s", "w"):
        s, d = draws["standard"][name], draws["dreg"][name]
        se = math.sqrt((s.var() + d.var()) / repeats)
        assert abs(float(s.mean() - d.mean())) < 4.5 * se, name
    signal = draws["standard"]["a"]
    assert abs(float(signal.mean())) > 5 * float(signal.std()) / math.sqrt(repeats)
    # DReG's encoder gradient is the less noisy one (Tucker et al.)
    assert draws["dreg"]["a"].var() < draws["standard"]["a"].var()


def test_effective_sample_size_is_k_at_the_exact_posterior_and_the_formula_elsewhere():
    from pyro_dvae.iwae_bound import effective_sample_size

    x = torch.linspace(-2.0, 2.0, 6)
    ess = effective_sample_size(model, make_guide(**posterior()), x, 7)
    assert torch.allclose(ess, torch.full((6,), 7.0, dtype=ess.dtype))  # every log w = log p(x)
    pyro.clear_param_store()  # the guide's parameters at OFF, not at the posterior
    guide = make_guide(**OFF)
    torch.manual_seed(0)
    ess = effective_sample_size(model, guide, x, 7)
    torch.manual_seed(0)
    z = poutine.trace(vectorized(guide, 7)).get_trace(x).nodes["z"]["value"]
    w = torch.softmax(hand_log_weights(x, z.detach(), **OFF).double(), 0)
    assert torch.allclose(ess, w.sum(0) ** 2 / (w**2).sum(0))
    assert bool((ess >= 1).all() and (ess < 7).all())


@pytest.mark.slow
def test_dregs_encoder_snr_rises_with_k_where_the_standard_one_falls():
    """Rainforth et al. (2018): the standard estimator's encoder SNR falls as O(1/√K);
    Tucker et al. (2019): DReG's rises. On the conjugate model, away from the posterior,
    from K = 5 to K = 500 (the SNR per parameter, |mean| / sd of 200 estimates)."""
    x = torch.linspace(-3.0, 3.0, 20)
    guide, repeats = make_guide(**OFF), 200
    snr = {}
    for gradient in ("standard", "dreg"):
        for k in (5, 500):
            elbo = IWAEELBO(num_particles=k, gradient=gradient)
            rows = [grads(elbo, guide, x, seed=r) for r in range(repeats)]
            for name in ("a", "b", "s"):
                g = torch.stack([r[name] for r in rows]).double()
                snr[gradient, k, name] = float(g.mean().abs() / g.std())
    for name in ("a", "b", "s"):  # about 1/3 and 6-8 times here
        assert snr["standard", 500, name] < snr["standard", 5, name] / 2, name
        assert snr["dreg", 500, name] > 2 * snr["dreg", 5, name], name
        assert snr["dreg", 500, name] > 10 * snr["standard", 500, name], name


@pytest.mark.parametrize(
    "elbo",
    [IWAEELBO(num_particles=5, gradient="stl"), IWAEELBO(num_particles=5, gradient="dreg")]
    + [STLTraceELBO(num_particles=3)],
    ids=["iwae-stl", "iwae-dreg", "trace-stl"],
)
def test_stopped_gradients_vanish_at_the_exact_posterior(elbo):
    x = torch.linspace(-2.0, 2.0, 10)
    exact = make_guide(**posterior())
    for seed in range(5):
        g = grads(elbo, exact, x, seed)
        for name in ("a", "b", "s"):
            assert abs(float(g[name])) < 1e-5, (name, float(g[name]))
    standard = [grads(IWAEELBO(num_particles=5), exact, x, seed)["a"] for seed in range(5)]
    assert float(torch.stack(standard).std()) > 1e-2  # the score term's noise, which they drop


def test_a_discrete_site_is_refused():
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(0.5))

    def bernoulli_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ConfigError, match="'z'.*no rsample"):
        IWAEELBO(num_particles=2, gradient="dreg").loss(bernoulli_model, guide, torch.zeros(3))
    with pytest.raises(ConfigError, match="--gradient"):
        IWAEELBO(num_particles=2, gradient="nope")


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"elbo": "tracegraph", "gradient": "stl"}, "--gradient stl applies to"),
        ({"gradient": "dreg"}, "--gradient dreg applies to --elbo iwae"),
        ({"family": "categorical", "elbo": "iwae"}, "discrete"),
    ],
)
def test_config_refusals(fields, match):
    with pytest.raises(ConfigError, match=match):
        FitConfig(**fields).validate(new=True)


def test_make_elbo_picks_the_gradient_class():
    assert type(make_elbo("trace", 2, gradient="stl")) is STLTraceELBO
    elbo = make_elbo("iwae", 5, gradient="dreg")
    assert type(elbo) is IWAEELBO and elbo.gradient == "dreg" and elbo.num_particles == 5


@pytest.mark.parametrize("gradient", ["standard", "stl", "dreg"])
@pytest.mark.parametrize("family", ["gaussian", "logitnormal", "beta", "concrete"])
def test_the_compiled_step_is_the_eager_step(family, gradient):
    """The compiled bound, its graph traced through its own backward (DReG's hooks
    included), gives the eager loss, reconstruction and gradients for the same draws, on its
    compiled shape and (eagerly) on another; the Beta, whose draw depends on its
    parameters, steps eagerly after one warning."""
    from pyro_dvae.families import make_family
    from pyro_dvae.vae import VAE

    own = {"alpha": 1.78} if family == "logitnormal" else {}
    own |= {"categories": 3} if family == "concrete" else {}
    torch.manual_seed(0)
    fam = make_family(FitConfig(family=family, latent_dim=3, **own))
    vae = VAE(fam, 12, hidden=8).double()
    results = []
    for compile in (False, True):
        elbo = make_elbo("iwae", 3, compile=compile, step_inputs=fam, gradient=gradient)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for seed, batch in enumerate((6, 4, 6)):  # the first shape compiles, not the 2nd
                pyro.set_rng_seed(seed)
                x = torch.bernoulli(torch.full((batch, 12), 0.4, dtype=torch.float64))
                loss, params = elbo.loss_and_params(vae.model, vae.guide, x)
                assert {id(p) for p in params} == {id(p) for p in vae.parameters()}
                grads = [p.grad.clone() for p in vae.parameters()]
                vae.zero_grad(set_to_none=True)
                results.append((loss, float(elbo.last_recon), grads))
        warned = [w for w in caught if "could not be compiled" in str(w.message)]
        assert len(warned) == (compile and family == "beta")
        assert elbo.graphs == (compile and family != "beta")
    eager, compiled = results[:3], results[3:]
    assert len({loss for loss, _, _ in eager}) == 3  # the steps' draws differ
    assert_steps_agree(eager, compiled)


@pytest.mark.parametrize("gradient", ["standard", "dreg"])
def test_a_flow_guide_compiles_unless_its_stopped_log_q_copies_the_flow(gradient):
    """DReG scores the draws under a frozen copy of a learned transform, which a graph would
    keep as constants: that step stays eager (one warning). Either way, two steps with an
    update between them equal the eager steps (the graph reads the updated weights)."""
    from pathlib import Path

    from pyro_dvae.families import make_family
    from pyro_dvae.guides import build_guide
    from pyro_dvae.vae import VAE

    spec = f"{Path(__file__).resolve().parents[1] / 'scripts' / 'guides' / 'flow.py'}:make_guide"
    fam = make_family(FitConfig(family="logitnormal", latent_dim=3, alpha=1.78))
    torch.manual_seed(0)
    vae = VAE(fam, 12, hidden=8, guide_module=build_guide(spec, fam, 12, 8))
    start = {k: v.clone() for k, v in vae.state_dict().items()}
    x = torch.bernoulli(torch.full((5, 12), 0.4))
    found = []
    for compile in (False, True):
        vae.load_state_dict(start)
        elbo = make_elbo("iwae", 3, compile=compile, gradient=gradient)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(2):
                pyro.set_rng_seed(step)
                loss, params = elbo.loss_and_params(vae.model, vae.guide, x)
                found.append((loss, [p.grad.clone() for p in vae.parameters()]))
                with torch.no_grad():
                    for p in params:
                        p -= 0.05 * p.grad
                vae.zero_grad(set_to_none=True)
        warned = [w for w in caught if "learned transform" in str(w.message)]
        assert len(warned) == (compile and gradient == "dreg")
        assert elbo.graphs == (compile and gradient == "standard")
    for (l0, g0), (l1, g1) in zip(found[:2], found[2:], strict=True):  # float32
        assert l1 == pytest.approx(l0, rel=1e-5)
        for a, b in zip(g0, g1, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fit_trains_with_iwae_dreg(tmp_path):
    out = tmp_path / "run"
    run_ok(fit_args(out, elbo="iwae", num_particles=3, gradient="dreg", epochs=1))
    summary, config = read_json(out / "summary.json"), read_json(out / "config.json")
    assert summary["elbo"] == "iwae" and config["gradient"] == "dreg"
    assert summary["compiled"] is False  # one epoch: --compile auto does not pay
    assert math.isfinite(summary["final"]["test_loss"])


def test_an_iwae_run_reports_its_bound_not_a_kl(tmp_path):
    """The K-particle bound is tighter than the ELBO, so loss − recon is no KL: an IWAE epoch
    records and prints the bound and its reconstruction only, and names the bound."""
    out = tmp_path / "run"
    result = run_ok(fit_args(out, elbo="iwae", num_particles=5, epochs=1))
    record = read_metrics(out)[-1]
    assert "train_kl" not in record and "train_recon" in record
    line = next(x for x in result.stderr.splitlines() if x.startswith("epoch 1/1"))
    bound = f"train -IWAE bound (K=5) {record['train_loss']:.2f} "
    assert bound in line and f"(recon {record['train_recon']:.2f})" in line
    assert "KL" not in line.split("test")[0]
    assert f"test -ELBO {record['test_loss']:.2f}" in line  # the test score is still an ELBO


@pytest.mark.parametrize(
    "name, k, kl",
    [("iwae", 5, False), ("vimco", 5, False), ("iwae", 1, True), ("trace", 5, True)],
)
def test_train_parts_give_a_kl_only_where_the_loss_is_an_elbo(name, k, kl):
    """K > 1 importance-weighted bounds (IWAE, VIMCO) have no KL part; one particle of IWAE
    is the ELBO, and K particles of Trace_ELBO average K ELBOs."""
    parts = train_parts(make_elbo(name, num_particles=k), 100.0, 80.0)
    assert parts["train_loss"] == 100.0 and parts["train_recon"] == 80.0
    assert parts.get("train_kl") == (20.0 if kl else None)


def test_fit_refuses_a_gradient_the_objective_does_not_take(tmp_path):
    result = invoke(fit_args(tmp_path / "run", elbo="analytic", gradient="stl"))
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert not (tmp_path / "run").exists()


def test_snr_against_k_shares_the_decoder_and_dreg_is_stl_at_one_particle(tmp_path):
    """``compare-estimators --iwae-snr``: the rows, the plot, and two identities."""
    args = ["compare-estimators", "--family", "gaussian", "--latent-dim", "2", "--hidden", "16"]
    args += ["--dataset", "digits", "--batch-size", "10", "--repeats", "4", "--iwae", "2"]
    args += ["--iwae-snr", "1,3", "--device", "cpu", "--out", str(tmp_path)]
    run_ok(args)
    rows = json.loads((tmp_path / "iwae_snr.json").read_text())
    assert (tmp_path / "iwae_snr.png").stat().st_size > 0
    by = {(r["gradient"], r["k"]): r for r in rows}
    assert set(by) == {(g, k) for g in ("standard", "dreg", "stl") for k in (1, 3)}
    for k in (1, 3):  # the same draws: the decoder's gradient is the standard one
        assert by["dreg", k]["snr_decoder"] == pytest.approx(by["standard", k]["snr_decoder"])
        assert by["stl", k]["snr_decoder"] == pytest.approx(by["standard", k]["snr_decoder"])
    # one particle: w̃ = 1, so DReG's w̃² weighting is STL's
    assert by["dreg", 1]["snr_encoder"] == pytest.approx(by["stl", 1]["snr_encoder"], rel=1e-4)


def test_iwae_snr_option_is_checked():
    result = invoke(["compare-estimators", "--family", "gaussian", "--iwae-snr", "1,x"])
    assert result.exit_code != 0
    assert_one_error_line(result)


def test_the_iwae_training_preset_is_the_issues_runs():
    from pyro_dvae.sweep.presets import PRESETS

    configs = PRESETS["iwae-training"][0]()
    rows = {(c.family, c.elbo, c.num_particles, c.gradient) for c in configs}
    for family in ("gaussian", "logitnormal"):
        assert {(family, "trace", 1, "standard"), (family, "iwae", 5, "standard")} <= rows
        assert {(family, "iwae", 5, "dreg"), (family, "iwae", 50, "dreg")} <= rows
    assert ("gaussian", "iwae", 50, "standard") in rows and len(configs) == len(rows) == 9
    assert all(c.latent_dim == 20 and c.epochs == 100 and c.seed == 0 for c in configs)
    assert {c.alpha for c in configs if c.family == "logitnormal"} == {1.78}
    for c in configs:
        c.validate(new=True)


def test_a_stopped_gradient_trains_alone():
    from pyro_dvae.group import group_key

    assert group_key(FitConfig(family="gaussian")) is not None
    assert group_key(FitConfig(family="gaussian", gradient="stl")) is None


@pytest.mark.parametrize("family", ["gaussian", "logitnormal", "beta", "concrete"])
def test_dreg_in_one_backward_pass_is_the_two_pass_gradient(family):
    """Weighing each draw's gradient by w̃ once more (one pass) gives the gradient of one pass
    over the guide's parameters with w̃² and one over the model's with w̃."""
    from pyro_dvae.families import make_family
    from pyro_dvae.iwae_bound import vectorized_traces
    from pyro_dvae.iwae_objective import sample_roots
    from pyro_dvae.vae import VAE

    own = {"alpha": 1.78} if family == "logitnormal" else {}
    own |= {"categories": 3} if family == "concrete" else {}
    torch.manual_seed(0)
    vae = VAE(make_family(FitConfig(family=family, latent_dim=3, **own)), 16, hidden=8)
    x = torch.bernoulli(torch.full((7, 16), 0.4))
    params = [*vae.encoder.parameters(), *vae.decoder.parameters()]
    found = []
    for one_pass in (True, False):
        elbo = IWAEELBO(num_particles=4, gradient="dreg")
        elbo.one_pass = one_pass
        for p in params:
            p.grad = None
        torch.manual_seed(1)
        elbo.loss_and_grads(vae.model, vae.guide, x)
        found.append([p.grad.clone() for p in params])
    for fast, slow in zip(*found, strict=True):
        assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-6)
    _, guide_tr = vectorized_traces(vae.model, vae.guide, x, 4)
    assert sample_roots(guide_tr, (4, 7)) is not None  # the one-pass route was the one taken
