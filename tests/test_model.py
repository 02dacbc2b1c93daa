"""Model/guide structure, ELBO parts against Pyro's own estimators, and training on digits."""

import math
import warnings
from dataclasses import replace

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import prune_subsample_sites

from pyro_dvae.config import FitConfig
from pyro_dvae.data import load_dataset
from pyro_dvae.families import FAMILIES, make_family
from pyro_dvae.inference import ANALYTIC, MONTE_CARLO, elbo_parts, kl_kinds, make_elbo
from pyro_dvae.train import Trainer
from pyro_dvae.vae import VAE

from .helpers import assert_steps_agree

CASES = {
    "gaussian": (FitConfig(family="gaussian", latent_dim=3), (3,)),
    "logitnormal": (FitConfig(family="logitnormal", latent_dim=3, alpha=1.78), (3,)),
    "concrete": (FitConfig(family="concrete", latent_dim=2, categories=5), (2, 5)),
    "beta": (FitConfig(family="beta", latent_dim=3, beta_prior=0.7), (3,)),
    "categorical": (FitConfig(family="categorical", latent_dim=2, categories=5), (2, 5)),
    "bernoulli": (FitConfig(family="bernoulli", latent_dim=3, estimator="reinforce"), (3,)),
}
#: families whose latent has no rsample (score-function gradients)
DISCRETE = {"categorical", "bernoulli"}


def test_every_registered_family_has_a_case():
    assert set(CASES) == set(FAMILIES)


def _vae(name, dtype=torch.float32, input_dim=12):
    cfg, _ = CASES[name]
    return VAE(make_family(cfg), input_dim=input_dim, hidden=8).to(dtype)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_and_guide_sites(name, dtype):
    _, z_shape = CASES[name]
    vae = _vae(name, dtype)
    x = torch.bernoulli(torch.full((7, 12), 0.3, dtype=dtype))
    guide_tr = prune_subsample_sites(poutine.trace(vae.guide).get_trace(x))
    model_tr = prune_subsample_sites(
        poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    )
    z_q, z_p, obs = guide_tr.nodes["z"], model_tr.nodes["z"], model_tr.nodes["x"]
    assert z_q["value"].shape == (7, *z_shape)
    assert z_q["value"].dtype == dtype
    for site in (z_q, z_p):
        assert site["fn"].batch_shape == (7,)
        assert site["fn"].event_shape == z_shape
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
        assert site["fn"].has_rsample == (name not in DISCRETE)
    # the prior is built on the input's dtype and batch
    assert z_p["fn"].sample().dtype == dtype
    assert obs["is_observed"] and torch.equal(obs["value"], x)
    assert obs["fn"].batch_shape == (7,) and obs["fn"].event_shape == (12,)
    assert [f.name for f in obs["cond_indep_stack"]] == ["data"]
    # parameters of both networks are registered with Pyro
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith(f"{vae.name}.encoder$$$") for n in names)
    assert any(n.startswith(f"{vae.name}.decoder$$$") for n in names)


def test_two_models_in_one_process_keep_their_own_parameters():
    first, second = _vae("gaussian"), _vae("gaussian")
    assert first.name != second.name
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    for vae in (first, second, first):
        poutine.trace(vae.guide).get_trace(x)
    store = pyro.get_param_store()
    assert store[f"{first.name}.encoder$$$net.0.weight"] is first.encoder.net[0].weight
    assert store[f"{second.name}.encoder$$$net.0.weight"] is second.encoder.net[0].weight


@pytest.mark.parametrize("name", sorted(CASES))
def test_latent_values_lie_in_the_support(name):
    vae = _vae(name)
    x = torch.bernoulli(torch.full((50, 12), 0.5))
    q = vae.encode(x)
    z = q.rsample() if q.has_rsample else q.sample()
    if name == "logitnormal":
        assert ((z > 0) & (z < 1)).all()
    if name == "categorical":
        assert ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    if name == "concrete":
        assert torch.allclose(z.logsumexp(-1), torch.zeros(50, 2), atol=1e-5)
        assert torch.allclose(
            vae.family.decoder_input(z).reshape(50, 2, 5).sum(-1), torch.ones(50, 2)
        )
    assert vae.decode(z).shape == (50, 12)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("analytic", [False, True])
def test_elbo_parts_match_pyro_estimators(name, analytic):
    """Our per-image parts sum to exactly what Pyro's ELBO gives for the same sample."""
    if analytic and name in DISCRETE:
        pytest.skip("TraceMeanField_ELBO needs rsample (refused by the config)")
    vae = _vae(name, torch.float64)
    x = torch.bernoulli(torch.full((9, 12), 0.4, dtype=torch.float64))
    reference = (TraceMeanField_ELBO() if analytic else Trace_ELBO()).loss
    pyro.set_rng_seed(3)
    expected = reference(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    recon, kl = elbo_parts(vae.model, vae.guide, x, analytic=analytic)
    assert recon.shape == kl.shape == (9,)
    assert (recon > 0).all()
    assert float((recon + kl).sum()) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_loss_is_the_per_image_mean(name):
    vae = _vae(name, torch.float64)
    x = torch.bernoulli(torch.full((6, 12), 0.4, dtype=torch.float64))
    elbo = make_elbo("trace")
    pyro.set_rng_seed(5)
    loss = elbo.loss_and_grads(vae.model, vae.guide, x)
    pyro.set_rng_seed(5)
    recon, kl = elbo_parts(vae.model, vae.guide, x)
    assert loss == pytest.approx(float((recon + kl).mean()), rel=1e-9)
    assert float(elbo.last_recon) == pytest.approx(float(recon.mean()), rel=1e-9)


def test_kl_kinds():
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    expected = {"gaussian": ANALYTIC, "logitnormal": ANALYTIC, "concrete": MONTE_CARLO}
    for name, kind in expected.items():
        vae = _vae(name)
        assert kl_kinds(vae.model, vae.guide, x, analytic=True) == {"z": kind}
        assert kl_kinds(vae.model, vae.guide, x, analytic=False) == {"z": MONTE_CARLO}


def test_logitnormal_prior_variance_is_alpha():
    family = make_family(FitConfig(family="logitnormal", latent_dim=2, alpha=1.78))
    prior = family.prior(torch.zeros(3, 5)).base_dist
    assert torch.allclose(prior.scale, torch.full((3, 2), math.sqrt(1.78)))
    assert torch.equal(prior.loc, torch.zeros(3, 2))


def test_concrete_temperature_schedule():
    cfg = FitConfig(family="concrete", temperature=1.0, anneal_rate=1e-3, min_temperature=0.5)
    fam = make_family(cfg)
    for step in (0, 100, 500, 10_000):
        fam.set_step(step)
        assert fam.temperature == pytest.approx(max(0.5, math.exp(-1e-3 * step)))
    fam.set_step(10)
    head = torch.zeros(2, cfg.latent_dim * cfg.categories)
    assert float(fam.posterior(head).base_dist.temperature) == pytest.approx(math.exp(-1e-2))


@pytest.mark.parametrize(
    "config",
    [
        FitConfig(family="gaussian", latent_dim=4),
        FitConfig(family="logitnormal", latent_dim=4, alpha=1.78),
        FitConfig(family="concrete", latent_dim=4, categories=4),
        FitConfig(family="logitnormal", latent_dim=4, elbo="analytic"),
    ],
    ids=["gaussian", "logitnormal", "concrete", "logitnormal-analytic"],
)
def test_paper_reliability_checks_on_digits(config):
    """Section 3 of the paper: the loss is a positive real that decreases over epochs."""
    config = replace(config, dataset="digits", hidden=64, epochs=6, batch_size=50)
    trainer = Trainer(config, load_dataset("digits"), "cpu", progress=False)
    trainer.fit()
    losses = [r["train_loss"] for r in trainer.history]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[-1] < losses[0]
    assert sum(losses[3:]) < sum(losses[:3])
    for r in trainer.history:
        assert r["train_recon"] > 0
        assert r["train_loss"] == pytest.approx(r["train_recon"] + r["train_kl"])
    test = trainer.history[-1]
    assert test["test_loss"] > 0 and math.isfinite(test["test_loss"])
    # the test set is binarised once, deterministically
    assert set(trainer.data.test.unique().tolist()) <= {0.0, 1.0}


#: families whose guide draws its noise from its own parameters (the Beta's Dirichlet
#: sampler): no graph input can stand for it, so they step eagerly
DRAW_FROM_PARAMETERS = {"beta"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("elbo_name", ["trace", "analytic"])
def test_compiled_step_matches_the_eager_step(name, elbo_name):
    """The compiled ELBO gives the eager loss, parts and gradients for the same draws, on
    its one compiled shape and (eagerly) on another; a score-function guide, or one that
    draws from its parameters, falls back to the eager step, warned once."""
    if elbo_name == "analytic" and name in DISCRETE:
        pytest.skip("TraceMeanField_ELBO needs rsample (refused by the config)")
    vae = _vae(name, torch.float64)
    results = []
    fallback = name in DISCRETE | DRAW_FROM_PARAMETERS
    for compile in (False, True):
        elbo = make_elbo(elbo_name, compile=compile)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in (6, 4, 6):  # the first shape compiles; the other steps eagerly
                pyro.set_rng_seed(batch)
                x = torch.bernoulli(torch.full((batch, 12), 0.4, dtype=torch.float64))
                loss = elbo.loss_and_grads(vae.model, vae.guide, x)
                grads = [p.grad.clone() for p in vae.parameters()]
                vae.zero_grad(set_to_none=True)
                results.append((loss, float(elbo.last_recon), grads))
        warned = [w for w in caught if "could not be compiled" in str(w.message)]
        assert len(warned) == (compile and fallback)
        assert elbo.compile == (compile and not fallback)
        assert elbo.graphs == (compile and not fallback)
    eager, compiled = results[:3], results[3:]
    assert_steps_agree(eager, compiled)


@pytest.mark.parametrize("kl", ["relaxed", "discrete"])
def test_compiled_step_follows_an_annealed_temperature(kl):
    """One compiled graph, three temperatures: each step matches the eager step at its τ."""
    cfg = FitConfig(
        family="concrete",
        latent_dim=2,
        categories=5,
        temperature=1.0,
        anneal_rate=0.5,
        kl=kl,
        min_temperature=0.2,
        elbo="analytic" if kl == "discrete" else "trace",
    )
    family = make_family(cfg)
    vae = VAE(family, input_dim=12, hidden=8).double()
    results = []
    for compile in (False, True):
        elbo = make_elbo(cfg.elbo, compile=compile, step_inputs=family)
        for step in (0, 1, 3):  # τ = 1, 0.61, 0.22
            family.set_step(step)
            pyro.set_rng_seed(0)  # the same draws: only τ differs between steps
            x = torch.bernoulli(torch.full((6, 12), 0.4, dtype=torch.float64))
            loss = elbo.loss_and_grads(vae.model, vae.guide, x)
            grads = [p.grad.clone() for p in vae.parameters()]
            vae.zero_grad(set_to_none=True)
            results.append((loss, grads))
        assert elbo.compile == compile and elbo.graphs == compile
        assert family._temperature_input is None  # the eager model reads τ from the family again
    eager, compiled = results[:3], results[3:]
    assert len({round(loss, 6) for loss, _ in eager}) == 3  # τ changes the loss
    for (l0, g0), (l1, g1) in zip(eager, compiled, strict=True):
        assert l1 == pytest.approx(l0, rel=1e-9)
        for a, b in zip(g0, g1, strict=True):
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)


def test_untraceable_guide_falls_back_to_the_eager_step():
    vae = _vae("gaussian")
    hidden = torch.nn.Linear(12, 6)  # not registered with pyro.module: not a graph input

    def guide(x):
        pyro.module(f"{vae.name}.encoder", vae.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = hidden(x).chunk(2, -1)
            pyro.sample("z", pyro.distributions.Normal(loc, log_scale.exp()).to_event(1))

    elbo = make_elbo("trace", compile=True)
    x = torch.bernoulli(torch.full((5, 12), 0.5))
    with pytest.warns(UserWarning, match="could not be compiled.*outside Pyro's param store"):
        loss = elbo.loss_and_grads(vae.model, guide, x)
    assert not elbo.compile and math.isfinite(loss)
    assert hidden.weight.grad is not None


def test_discrete_kl_objective_trains_jang_et_al_elbo():
    """--kl discrete: the KL site is analytic and equals the categorical KL to the uniform."""
    cfg = FitConfig(family="concrete", latent_dim=3, categories=4, kl="discrete", elbo="analytic")
    vae = VAE(make_family(cfg), input_dim=12, hidden=8)
    x = torch.bernoulli(torch.full((5, 12), 0.5))
    assert kl_kinds(vae.model, vae.guide, x, analytic=True) == {"z": ANALYTIC}
    _, kl = elbo_parts(vae.model, vae.guide, x, analytic=True)
    logits = vae.encoder(x).reshape(5, 3, 4).log_softmax(-1)
    expected = (logits.exp() * (logits + math.log(4))).sum((-1, -2))
    assert torch.allclose(kl, expected, atol=1e-5)
    _, kl_again = elbo_parts(vae.model, vae.guide, x, analytic=True)
    assert torch.equal(kl, kl_again)  # deterministic: no sampling in the KL
    assert (expected <= 3 * math.log(4) + 1e-6).all()  # at most log K nats per variable


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"family": "concrete", "kl": "discrete"}, "--elbo analytic"),
        ({"family": "gaussian", "kl": "discrete", "elbo": "analytic"}, "concrete only"),
        ({"kl": "hard"}, "unknown kl"),
    ],
)
def test_discrete_kl_config_errors(changes, match):
    from pyro_dvae.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        FitConfig(**changes).validate(new=True)


def test_a_trainer_keeps_its_configs_subset_and_refuses_another_datasets_data():
    from pyro_dvae.errors import ConfigError
    from pyro_dvae.train import Trainer

    digits = load_dataset("digits")
    trainer = Trainer(FitConfig(dataset="digits", subset=100, hidden=8), digits, "cpu")
    assert trainer.data.train.shape[0] == 100 and trainer.steps_per_epoch() == 2
    assert torch.equal(trainer.data.test, digits.test[:100])
    with pytest.raises(ConfigError, match="the config names mnist; the data is digits"):
        Trainer(FitConfig(hidden=8), digits, "cpu")
