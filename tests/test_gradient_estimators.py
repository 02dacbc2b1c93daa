"""Every unbiased gradient estimator of the discrete families against the exact gradient
(enumerated over all codes), VIMCO against the exact gradient of its K-sample bound, and the
relaxations' bias seen by the same test. Small models: 3 bits, or 2 three-way variables."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pyro
import pytest
import torch
import torch.nn.functional as F

from pyro_dvae.config import FitConfig
from pyro_dvae.families import make_family
from pyro_dvae.inference import make_elbo
from pyro_dvae.vae import VAE

PIXELS, HIDDEN, BATCH = 6, 8, 4
SHAPES = {"bernoulli": {"latent_dim": 3}, "categorical": {"latent_dim": 2, "categories": 3}}


def _vae(family: str, estimator: str, particles: int = 1) -> tuple[VAE, FitConfig]:
    config = FitConfig(
        family=family,
        hidden=HIDDEN,
        estimator=estimator,
        num_particles=particles,
        **SHAPES[family],
    )
    torch.manual_seed(0)
    return VAE(make_family(config), PIXELS, HIDDEN), config


def _batch() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.bernoulli(torch.full((BATCH, PIXELS), 0.4), generator=gen)


def _gradient(vae: VAE, elbo, x: torch.Tensor) -> torch.Tensor:
    for p in vae.parameters():
        p.grad = None
    elbo.loss_and_grads(vae.model, vae.guide, x)
    return torch.cat([p.grad.flatten() for p in vae.parameters()])


#: independent draws per pass: the batch repeated, each copy with its own latent draws
PER_PASS = 25


def _repeated(x: torch.Tensor) -> torch.Tensor:
    """``PER_PASS`` copies of the batch in one: the loss and gradient are means over images,
    so one pass over it gives the mean of ``PER_PASS`` independent draws, in one call."""
    return x.repeat(PER_PASS, 1)


def _z_scores(vae: VAE, elbo, x: torch.Tensor, exact: torch.Tensor, draws: int) -> torch.Tensor:
    """(mean of ``draws`` gradient draws − ``exact``) / its Monte Carlo standard error, per
    coordinate; drawn ``PER_PASS`` at a time, the error from the spread of the passes' means."""
    pyro.clear_param_store()
    torch.manual_seed(4)
    passes = draws // PER_PASS
    grads = torch.stack([_gradient(vae, elbo, _repeated(x)) for _ in range(passes)]).double()
    se = grads.std(0) / math.sqrt(passes)
    moving = se > 0
    return ((grads.mean(0) - exact.double()) / se)[moving]


def _exact_gradient(family: str, estimator: str) -> tuple[VAE, FitConfig, torch.Tensor]:
    """The exact gradient of the mean −ELBO (TraceEnum_ELBO over every code) at the weights
    of ``estimator``'s model (the same encoder head for every estimator but logitnormal)."""
    enum_vae, _ = _vae(family, "enum")
    vae, config = _vae(family, estimator)
    vae.load_state_dict(enum_vae.state_dict())
    pyro.clear_param_store()
    return vae, config, _gradient(enum_vae, make_elbo("enum"), _batch())


UNBIASED = [
    ("bernoulli", "reinforce"),
    ("bernoulli", "nvil"),
    ("bernoulli", "disarm"),
    ("categorical", "reinforce"),
    ("categorical", "nvil"),
]


@pytest.mark.slow
@pytest.mark.parametrize("family, estimator", UNBIASED)
def test_unbiased_estimators_match_the_exact_gradient(family, estimator):
    vae, config, exact = _exact_gradient(family, estimator)
    z = _z_scores(vae, make_elbo(config.elbo), _batch(), exact, draws=1500)
    # unbiased: the z-scores of the mean gradient are standard normal (coordinates correlate,
    # so allow a wide band around E[z²] = 1 and no coordinate far out)
    assert float((z**2).mean()) < 2.0, float((z**2).mean())
    assert float(z.abs().max()) < 6.0


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SHAPES))
def test_the_relaxation_is_biased_and_the_same_test_sees_it(family):
    """The Concrete's gradient at τ = 1 is not the discrete model's: the test above, run on
    it, fails by far (so that test has the power to see a bias of this size)."""
    vae, config, exact = _exact_gradient(family, "concrete")
    z = _z_scores(vae, make_elbo(config.elbo), _batch(), exact, draws=1500)
    assert float((z**2).mean()) > 20.0


def _exact_k_sample_bound(vae: VAE, config: FitConfig, x: torch.Tensor, k: int) -> torch.Tensor:
    """−E[log (1/K) Σ_k p(x, c_k) / q(c_k | x)], summed over every K-tuple of joint codes."""
    joint = make_family(replace(config, estimator="enum", elbo="enum", num_particles=1))
    log_q = joint.posterior(vae.encoder(x)).logits.T  # (codes, B)
    codes = torch.eye(joint.codes)
    dec = vae.decoder(joint.decoder_input(codes))  # (codes, pixels)
    log_px = -F.binary_cross_entropy_with_logits(
        dec.unsqueeze(1).expand(-1, len(x), -1), x.expand(len(codes), -1, -1), reduction="none"
    ).sum(-1)
    log_w = log_px - math.log(joint.codes) - log_q  # (codes, B)
    tuples = torch.tensor(list(itertools.product(range(len(codes)), repeat=k)))
    weight = log_q[tuples].sum(1).exp()  # (codes^K, B)
    bound = log_w[tuples].logsumexp(1) - math.log(k)
    return -(weight * bound).sum(0).mean()


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SHAPES))
def test_vimco_matches_the_exact_gradient_of_its_k_sample_bound(family):
    k = 3
    vae, config = _vae(family, "vimco", particles=k)
    x = _batch()
    for p in vae.parameters():
        p.grad = None
    loss = _exact_k_sample_bound(vae, config, x, k)
    loss.backward()
    exact = torch.cat([p.grad.flatten() for p in vae.parameters()])
    elbo = make_elbo("vimco", k)
    pyro.clear_param_store()
    values = [elbo.loss(vae.model, vae.guide, _repeated(x)) for _ in range(2000 // PER_PASS)]
    mean = sum(values) / len(values)
    se = torch.tensor(values).std().item() / math.sqrt(len(values))
    assert mean == pytest.approx(loss.item(), abs=5 * se)  # the value is the bound's
    z = _z_scores(vae, elbo, x, exact, draws=1500)
    assert float((z**2).mean()) < 2.0, float((z**2).mean())
    assert float(z.abs().max()) < 6.0


@pytest.mark.slow
@pytest.mark.parametrize("family, estimator", UNBIASED)
def test_each_estimators_loss_estimates_the_exact_elbo(family, estimator):
    """Every unbiased estimator's loss value averages to the exact −ELBO (enumerated)."""
    enum_vae, _ = _vae(family, "enum")
    x = _batch()
    exact = make_elbo("enum").loss(enum_vae.model, enum_vae.guide, x)
    vae, config = _vae(family, estimator)
    vae.load_state_dict(enum_vae.state_dict())
    elbo = make_elbo(config.elbo)
    pyro.clear_param_store()
    passes = 1000 // PER_PASS  # more draws than one at a time could afford: a stricter test
    values = torch.tensor([elbo.loss(vae.model, vae.guide, _repeated(x)) for _ in range(passes)])
    se = values.std().item() / math.sqrt(len(values))
    assert values.mean().item() == pytest.approx(exact, abs=5 * se + 1e-4)


@pytest.mark.slow
def test_nvil_divides_the_encoders_gradient_by_its_running_sd_and_leaves_the_decoders():
    """With its running statistics held (decay 1) at a variance of 9, NVIL's encoder gradient
    is the exact one / 3 and its decoder gradient the exact one."""
    from pyro_dvae.score_function import NVILELBO

    vae, _, exact = _exact_gradient("bernoulli", "nvil")
    elbo = NVILELBO(decay=1.0)
    elbo.mean, elbo.var = -4.0, 9.0
    n_enc = sum(p.numel() for p in vae.encoder.parameters())
    scaled = torch.cat([exact[:n_enc] / 3, exact[n_enc:]])
    z = _z_scores(vae, elbo, _batch(), scaled, draws=1500)
    assert float((z**2).mean()) < 2.0, float((z**2).mean())
    # and the same draws are far from the unscaled encoder gradient
    z_unscaled = _z_scores(vae, elbo, _batch(), exact, draws=1500)
    assert float((z_unscaled**2).mean()) > 5.0
