"""Tests for ``pyro_dvae.distributions``: LogitNormal and ExpRelaxedCategorical.

Every expectation below is computed independently of the code under test: a
density written out from the papers (Atchison & Shen 1980 for the logit-normal,
Maddison, Mnih & Teh 2016 for the (Exp)Concrete), a closed-form Gaussian KL,
a numerical integral (scipy), a reference implementation (torch), or a
statistical property checked with a tolerance derived from its standard error.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from scipy import integrate, stats
from torch.distributions.kl import kl_divergence
from torch.distributions.relaxed_categorical import (
    ExpRelaxedCategorical as TorchExpRelaxedCategorical,
)

from pyro_dvae.distributions import (
    ExpRelaxedCategorical,
    ExpRelaxedCategoricalDiscreteKL,
    LogitNormal,
    MultivariateLogitNormal,
    log_simplex,
)

# Number of Monte Carlo standard errors allowed in statistical checks. With a
# fixed seed the tests are deterministic; 5 SE would be exceeded by chance with
# probability < 1e-6 for a correct implementation.
N_SE = 5.0


# ----------------------------------------------------------------------------
# independent reference formulas
# ----------------------------------------------------------------------------
def logit_normal_logpdf_np(z, mu, sigma):
    """Logit-normal log density written out (per dimension), numpy float64."""
    z = np.asarray(z, dtype=np.float64)
    y = np.log(z) - np.log1p(-z)
    return (
        -0.5 * np.log(2.0 * np.pi * sigma**2)
        - np.log(z)
        - np.log1p(-z)
        - (y - mu) ** 2 / (2.0 * sigma**2)
    )


def gaussian_kl(m1, s1, m2, s2):
    """KL(N(m1, s1^2) || N(m2, s2^2)), closed form."""
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2.0 * s2**2) - 0.5


def exp_concrete_logpdf(y, logits, lam):
    """ExpConcrete log density, Maddison et al. (2016), appendix C.

    log p(y) = log((n-1)!) + (n-1) log λ + Σ_k (log α_k − λ y_k)
               − n log Σ_k exp(log α_k − λ y_k)
    with α the normalised location probabilities.
    """
    y = torch.as_tensor(y, dtype=torch.float64)
    logits = torch.as_tensor(logits, dtype=torch.float64)
    n = y.shape[-1]
    log_alpha = logits - torch.logsumexp(logits, -1, keepdim=True)
    log_alpha, y = torch.broadcast_tensors(log_alpha, y)
    terms = log_alpha - lam * y
    return (
        math.log(math.factorial(n - 1))
        + (n - 1) * math.log(lam)
        + terms.sum(-1)
        - n * torch.logsumexp(terms, -1)
    )


def concrete_logpdf(x, logits, lam):
    """Concrete density of Maddison et al. (2016), eq. (1)/(9), for x on the simplex.

    P(x) = Γ(n) λ^{n-1} Π_k α_k x_k^{-(λ+1)} / (Σ_i α_i x_i^{-λ})^n,
    a density with respect to Lebesgue measure on (x_1, ..., x_{n-1}).
    """
    x = np.asarray(x, dtype=np.float64)
    alpha = np.exp(np.asarray(logits, dtype=np.float64))
    alpha = alpha / alpha.sum(-1, keepdims=True)
    n = x.shape[-1]
    return (
        math.lgamma(n)
        + (n - 1) * math.log(lam)
        + np.sum(np.log(alpha) - (lam + 1.0) * np.log(x), -1)
        - n * np.log(np.sum(alpha * x ** (-lam), -1))
    )


# ============================================================================
# LogitNormal
# ============================================================================
@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (1.3, 0.4), (-2.0, 2.5), (0.5, 0.05)])
def test_logit_normal_log_prob_matches_formula(mu, sigma):
    z = torch.linspace(1e-4, 1 - 1e-4, 257, dtype=torch.float64)
    d = LogitNormal(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
    expected = logit_normal_logpdf_np(z.numpy(), mu, sigma)
    np.testing.assert_allclose(d.log_prob(z).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_logit_normal_to_event_is_multivariate_diagonal_density():
    torch.manual_seed(1)
    mu = torch.tensor([0.2, -1.0, 2.0], dtype=torch.float64)
    sigma = torch.tensor([0.7, 1.5, 0.3], dtype=torch.float64)
    d = LogitNormal(mu, sigma).to_event(1)
    assert d.event_shape == (3,) and d.batch_shape == ()
    z = torch.rand(50, 3, dtype=torch.float64) * 0.98 + 0.01  # fresh points, not samples
    # -0.5 log|2πC| - Σ log z_i(1-z_i) - 0.5 (y-μ)^T C^{-1} (y-μ),  C = diag(σ²)
    C = torch.diag(sigma**2)
    y = torch.log(z / (1 - z))
    r = (y - mu).unsqueeze(-1)
    maha = (r.transpose(-1, -2) @ torch.linalg.solve(C, r)).squeeze(-1).squeeze(-1)
    expected = -0.5 * torch.logdet(2 * math.pi * C) - torch.log(z * (1 - z)).sum(-1) - 0.5 * maha
    torch.testing.assert_close(d.log_prob(z), expected, rtol=1e-10, atol=1e-10)
    # and it is the sum of the per-dimension densities written out above
    per_dim = logit_normal_logpdf_np(z.numpy(), mu.numpy(), sigma.numpy()).sum(-1)
    np.testing.assert_allclose(d.log_prob(z).numpy(), per_dim, rtol=1e-10)


def test_logit_normal_support_is_the_open_unit_interval():
    """0 and 1 have density zero (log density -inf): validation refuses them."""
    d = LogitNormal(torch.zeros(2), torch.ones(2))
    check = d.support.check(torch.tensor([-0.1, 0.0, 0.3, 1.0, 1.2]))
    assert check.tolist() == [False, False, True, False, False]
    strict = LogitNormal(torch.zeros(()), torch.ones(()), validate_args=True)
    for end in (0.0, 1.0):
        with pytest.raises(ValueError):
            strict.log_prob(torch.tensor(end))
    from torch.distributions import biject_to

    y = torch.tensor([-3.0, 0.0, 3.0])
    assert d.support.check(biject_to(d.support)(y)).all()


@pytest.mark.parametrize("loc", [40.0, -40.0, 15.0, -15.0])
def test_logit_normal_extreme_samples_stay_inside_open_interval_float32(loc):
    torch.manual_seed(2)
    d = LogitNormal(torch.full((8,), loc), torch.full((8,), 0.1))
    z = d.rsample((500,))
    assert z.dtype == torch.float32
    assert (z > 0).all() and (z < 1).all()
    assert torch.isfinite(d.log_prob(z)).all()


def test_logit_normal_ordinary_samples_in_open_interval():
    torch.manual_seed(3)
    d = LogitNormal(torch.randn(5, 4), torch.rand(5, 4) + 0.2)
    z = d.sample((1000,))
    assert z.shape == (1000, 5, 4)
    assert (z > 0).all() and (z < 1).all()


def _numeric_moments(mu, sigma):
    """Mean, variance and 4th central moment by quadrature of the written-out density."""

    def pdf(z):
        return math.exp(logit_normal_logpdf_np(z, mu, sigma))

    opts = dict(limit=500, epsabs=1e-13, epsrel=1e-11)
    mass = integrate.quad(pdf, 0.0, 1.0, **opts)[0]
    m1 = integrate.quad(lambda z: z * pdf(z), 0.0, 1.0, **opts)[0]
    var = integrate.quad(lambda z: (z - m1) ** 2 * pdf(z), 0.0, 1.0, **opts)[0]
    mu4 = integrate.quad(lambda z: (z - m1) ** 4 * pdf(z), 0.0, 1.0, **opts)[0]
    return mass, m1, var, mu4


@pytest.mark.parametrize("mu,sigma", [(0.7, 1.3), (-1.5, 0.5), (2.0, 2.0)])
def test_logit_normal_sample_moments_match_numerical_integration(mu, sigma):
    mass, mean, var, mu4 = _numeric_moments(mu, sigma)
    assert mass == pytest.approx(1.0, abs=1e-8)
    n = 200_000
    torch.manual_seed(4)
    d = LogitNormal(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
    z = d.sample((n,)).numpy()
    # SE(mean) = sqrt(var/n); SE(sample variance) ≈ sqrt((μ4 − σ⁴)/n)
    se_mean = math.sqrt(var / n)
    se_var = math.sqrt((mu4 - var**2) / n)
    assert abs(z.mean() - mean) < N_SE * se_mean
    assert abs(z.var(ddof=1) - var) < N_SE * se_var


@pytest.mark.parametrize("mu,sigma", [(0.7, 1.3), (-1.5, 0.5), (2.0, 2.0), (0.0, 0.05)])
def test_logit_normal_mean_and_variance_match_numerical_integration(mu, sigma):
    _, mean, var, _ = _numeric_moments(mu, sigma)
    d = LogitNormal(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
    assert d.mean.item() == pytest.approx(mean, rel=1e-9)
    assert d.variance.item() == pytest.approx(var, rel=1e-6)
    batched = LogitNormal(torch.tensor([[mu, 0.0]]), torch.tensor([[sigma, 1.0]])).to_event(1)
    assert batched.mean.shape == (1, 2)
    assert batched.mean[0, 0].item() == pytest.approx(mean, rel=1e-5)
    assert batched.mean[0, 1].item() == pytest.approx(0.5, abs=1e-7)  # symmetric about 1/2


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (3.0, 0.3), (-0.5, 3.0)])
def test_logit_normal_density_integrates_to_one(mu, sigma):
    d = LogitNormal(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))

    def pdf(z):
        return math.exp(d.log_prob(torch.tensor(z, dtype=torch.float64)).item())

    # split at the mode region so quad resolves narrow densities
    centre = 1.0 / (1.0 + math.exp(-mu))
    total = sum(
        integrate.quad(pdf, a, b, limit=500, epsabs=1e-12)[0]
        for a, b in [(1e-300, centre), (centre, 1.0 - 1e-16)]
    )
    assert total == pytest.approx(1.0, abs=1e-6)


KL_CASES = [
    (0.0, 1.0, 0.0, 1.0),
    (0.5, 0.8, -0.3, 1.4),
    (2.0, 0.3, 0.0, 1.0),
    (-1.0, 2.0, 1.0, 0.7),
]


@pytest.mark.parametrize("m1,s1,m2,s2", KL_CASES)
def test_logit_normal_kl_closed_form_and_monte_carlo(m1, s1, m2, s2):
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    q, p = LogitNormal(t(m1), t(s1)), LogitNormal(t(m2), t(s2))
    expected = gaussian_kl(m1, s1, m2, s2)
    assert kl_divergence(q, p).item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # Monte Carlo: fresh (non-cached) points, so the estimate uses logit(z) too
    torch.manual_seed(5)
    z = q.sample((200_000,)).clone()
    diff = (q.log_prob(z) - p.log_prob(z)).numpy()
    se = diff.std(ddof=1) / math.sqrt(diff.size)
    assert abs(diff.mean() - expected) < N_SE * se + 1e-12


def test_logit_normal_kl_through_to_event_and_expand():
    m1 = torch.tensor([0.1, -0.7, 1.2], dtype=torch.float64)
    s1 = torch.tensor([0.5, 1.1, 0.9], dtype=torch.float64)
    m2 = torch.tensor([0.0, 0.3, -0.4], dtype=torch.float64)
    s2 = torch.tensor([1.0, 0.6, 2.0], dtype=torch.float64)
    expected = [gaussian_kl(*map(float, v)) for v in zip(m1, s1, m2, s2, strict=True)]
    kl_vec = kl_divergence(LogitNormal(m1, s1), LogitNormal(m2, s2))
    np.testing.assert_allclose(kl_vec.numpy(), expected, rtol=1e-12)
    kl_ev = kl_divergence(LogitNormal(m1, s1).to_event(1), LogitNormal(m2, s2).to_event(1))
    assert kl_ev.shape == ()
    assert kl_ev.item() == pytest.approx(sum(expected), rel=1e-12)
    # expand a scalar prior to the posterior's batch shape (as a VAE prior would be)
    prior = LogitNormal(
        torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    )
    prior_b = prior.expand([4, 3])
    q = LogitNormal(m1, s1).expand([4, 3])
    kl_b = kl_divergence(q, prior_b)
    assert kl_b.shape == (4, 3)
    exp_row = [gaussian_kl(float(a), float(b), 0.0, 1.0) for a, b in zip(m1, s1, strict=True)]
    np.testing.assert_allclose(kl_b.numpy(), np.tile(exp_row, (4, 1)), rtol=1e-12)
    kl_b_ev = kl_divergence(q.to_event(1), prior_b.to_event(1))
    np.testing.assert_allclose(kl_b_ev.numpy(), np.full(4, sum(exp_row)), rtol=1e-12)


def _mean_field_model_guide(N, D):
    x_obs = torch.linspace(-2.0, 2.0, N * 2, dtype=torch.float64).reshape(N, 2)
    q_loc = torch.linspace(-1.0, 1.5, N * D, dtype=torch.float64).reshape(N, D)
    q_scale = torch.linspace(0.3, 1.2, N * D, dtype=torch.float64).reshape(N, D)
    p_loc, p_scale = 0.2, 1.7

    def model():
        with pyro.plate("data", N):
            pyro.sample(
                "z",
                LogitNormal(
                    torch.full((N, D), p_loc, dtype=torch.float64),
                    torch.full((N, D), p_scale, dtype=torch.float64),
                ).to_event(1),
            )
            # observed site whose likelihood does not depend on z
            pyro.sample(
                "x",
                pdist.Normal(torch.zeros(N, 2, dtype=torch.float64), 1.0).to_event(1),
                obs=x_obs,
            )

    def guide():
        with pyro.plate("data", N):
            pyro.sample("z", LogitNormal(q_loc, q_scale).to_event(1))

    loglik = (-0.5 * math.log(2 * math.pi) - 0.5 * x_obs**2).sum().item()
    kl = sum(
        gaussian_kl(float(m), float(s), p_loc, p_scale)
        for m, s in zip(q_loc.flatten(), q_scale.flatten(), strict=True)
    )
    return model, guide, -loglik + kl


def test_mean_field_elbo_uses_analytic_logit_normal_kl():
    pyro.clear_param_store()
    model, guide, expected = _mean_field_model_guide(N=6, D=3)
    elbo = TraceMeanField_ELBO()
    losses = []
    for seed in range(4):
        torch.manual_seed(seed)
        losses.append(elbo.loss(model, guide))
    assert all(loss == pytest.approx(expected, rel=1e-12, abs=1e-10) for loss in losses)
    # the Monte Carlo estimator of the same quantity is noisy
    mc = []
    for seed in range(4):
        torch.manual_seed(seed)
        mc.append(Trace_ELBO().loss(model, guide))
    assert len(set(mc)) == len(mc)
    assert np.std(mc) > 1e-3


def test_logit_normal_expand_and_rsample_gradients():
    loc = torch.tensor([0.3, -0.2])
    scale = torch.tensor([1.0, 0.5])
    d = LogitNormal(loc, scale)
    e = d.expand([3, 2])
    assert isinstance(e, LogitNormal)
    assert e.batch_shape == (3, 2) and e.event_shape == ()
    torch.testing.assert_close(e.loc, loc.expand(3, 2))
    torch.testing.assert_close(e.scale, scale.expand(3, 2))
    assert e.sample().shape == (3, 2)
    assert LogitNormal.has_rsample and d.has_rsample and e.has_rsample

    # reparameterised gradients, checked against finite differences with the
    # same noise (seed reset inside the function)
    def f(loc, scale):
        torch.manual_seed(7)
        return LogitNormal(loc, scale).rsample((5,))

    loc64 = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    scale64 = torch.tensor([0.8, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (loc64, scale64))
    z = f(loc64, scale64)
    z.sum().backward()
    assert loc64.grad.abs().min() > 0 and scale64.grad.abs().min() > 0
    # z = σ(loc + scale ε): dz/dloc = z(1-z), summed over the 5 draws
    torch.testing.assert_close(loc64.grad, (z * (1 - z)).sum(0).detach())


def test_logit_normal_precision_of_sample_scored_under_another_instance():
    """Monte Carlo KL term at a sample near 1 in float32 (the shared-cache design)."""
    loc = torch.tensor([12.0, 13.0, 14.0, 15.0, 13.5, 14.5])
    scale = torch.full_like(loc, 0.5)
    q = LogitNormal(loc, scale)
    p = LogitNormal(torch.zeros_like(loc), torch.ones_like(loc))  # a prior-like instance
    torch.manual_seed(0)
    y = pdist.Normal(loc, scale).rsample()
    torch.manual_seed(0)
    z = q.rsample()
    # same RNG stream: z is the (clipped) sigmoid of y
    one_minus_eps = 1.0 - torch.finfo(torch.float32).eps
    torch.testing.assert_close(z, torch.sigmoid(y).clamp(max=one_minus_eps), rtol=0, atol=0)
    assert (z > 0.999).all()

    y64 = y.double()
    expected = pdist.Normal(loc.double(), scale.double()).log_prob(y64) - pdist.Normal(
        0.0, 1.0
    ).log_prob(y64)
    got = q.log_prob(z) - p.log_prob(z)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-4)

    # the check is discriminating: a copy of z (pre-image must be recomputed by
    # logit in float32) gives a visibly different answer
    zc = z.detach().clone()
    got_copy = q.log_prob(zc) - p.log_prob(zc)
    assert (got_copy.double() - expected).abs().max() > 1e-2


# ============================================================================
# ExpRelaxedCategorical (ExpConcrete)
# ============================================================================
@pytest.mark.parametrize("lam", [0.1, 0.5, 1.0, 2.3])
@pytest.mark.parametrize("batch", [(), (3,), (2, 4)])
def test_exp_concrete_log_prob_matches_paper_formula(lam, batch):
    n = 5
    g = torch.Generator().manual_seed(11)
    logits = 2.0 * torch.randn(*batch, n, generator=g, dtype=torch.float64) + 0.7  # unnormalised
    d = ExpRelaxedCategorical(lam, logits=logits)
    assert d.batch_shape == batch and d.event_shape == (n,)
    torch.manual_seed(12)
    y_samp = d.sample((7,))
    torch.testing.assert_close(d.log_prob(y_samp), exp_concrete_logpdf(y_samp, logits, lam))
    # arbitrary points on the log simplex (not samples)
    y_any = torch.log_softmax(3.0 * torch.randn(7, *batch, n, generator=g, dtype=torch.float64), -1)
    torch.testing.assert_close(d.log_prob(y_any), exp_concrete_logpdf(y_any, logits, lam))


@pytest.mark.parametrize("lam", [0.3, 1.0, 1.7])
def test_exp_concrete_vs_concrete_change_of_variables_and_torch_reference(lam):
    """Relate ExpConcrete to the Concrete density of x = exp(y).

    The free coordinates are y_{1:n-1} (y_n = log(1 − Σ_{k<n} e^{y_k})), and
    x_k = e^{y_k} has Jacobian Π_{k<n} x_k, so the Lebesgue density of
    y_{1:n-1} is  log P_X(e^y) + Σ_{k=1}^{n-1} y_k.

    Algebra on the two formulas of the paper gives
        log p_ExpConcrete(y) = log P_X(e^y) + Σ_{k=1}^{n} y_k,
    i.e. the paper's ExpConcrete density (and this package's log_prob, and
    torch's) is the Lebesgue density of the free coordinates times x_n: a
    density w.r.t. the permutation-symmetric measure dy_{1:n-1}/x_n. Both the
    identity and the Lebesgue density are checked here; the normalisation of
    the latter is checked by integration in the next test.
    """
    n = 4
    g = torch.Generator().manual_seed(21)
    logits = torch.randn(3, n, generator=g, dtype=torch.float64)
    d = ExpRelaxedCategorical(lam, logits=logits)
    torch.manual_seed(22)
    y = d.sample((10,))
    lp = d.log_prob(y).numpy()
    log_px = concrete_logpdf(np.exp(y.numpy()), logits.numpy(), lam)
    yn = y.numpy()
    np.testing.assert_allclose(lp, log_px + yn.sum(-1), rtol=1e-9, atol=1e-9)
    lebesgue_free = log_px + yn[..., : n - 1].sum(-1)
    np.testing.assert_allclose(lp - yn[..., -1], lebesgue_free, rtol=1e-9, atol=1e-9)

    # torch's implementation as a reference: same log_prob ...
    ref = TorchExpRelaxedCategorical(torch.tensor(lam, dtype=torch.float64), logits=logits)
    torch.testing.assert_close(d.log_prob(y), ref.log_prob(y))
    # ... and the same samples from the same uniforms (float64, clamping never binds)
    torch.manual_seed(23)
    ys = d.rsample((50,))
    torch.manual_seed(23)
    yr = ref.rsample((50,))
    torch.testing.assert_close(ys, yr)


@pytest.mark.parametrize("lam", [0.3, 1.0, 2.0])
def test_exp_concrete_n2_normalisation_and_cdf(lam):
    """n = 2: one free coordinate.

    With the measure identified above, exp(log_prob(y) − y_2) is the Lebesgue
    density of y_1 (and, by symmetry, exp(log_prob(y) − y_1) that of y_2); it
    must integrate to one and reproduce the empirical CDF of rsample.
    """
    logits = torch.tensor([0.4, -0.9], dtype=torch.float64)
    d = ExpRelaxedCategorical(lam, logits=logits)

    def point(free, which):
        other = math.log(-math.expm1(free))
        return torch.tensor([free, other] if which == 0 else [other, free], dtype=torch.float64)

    def dens(free, which):
        if free >= 0.0:
            return 0.0
        y = point(free, which)
        return math.exp(d.log_prob(y).item() - y[1 - which].item())

    opts = dict(limit=500, epsabs=1e-12, points=[-5.0, -1.0, -0.1])
    for which in (0, 1):
        total = integrate.quad(dens, -200.0, 0.0, args=(which,), **opts)[0]
        assert total == pytest.approx(1.0, abs=1e-6)

    n_samp = 100_000
    torch.manual_seed(31)
    y1 = d.sample((n_samp,))[:, 0].numpy()
    for t in [-3.0, -1.0, -0.5, -0.1]:
        cdf = integrate.quad(dens, -200.0, t, args=(0,), limit=500, epsabs=1e-12)[0]
        emp = (y1 <= t).mean()
        se = math.sqrt(max(cdf * (1 - cdf), 1e-12) / n_samp)
        assert abs(emp - cdf) < N_SE * se


def test_exp_concrete_rsample_on_log_simplex_with_gradients():
    torch.manual_seed(41)
    logits = torch.randn(6, 4, requires_grad=True)
    d = ExpRelaxedCategorical(0.5, logits=logits)
    y = d.rsample((3,))
    assert y.shape == (3, 6, 4)
    torch.testing.assert_close(y.logsumexp(-1), torch.zeros(3, 6), atol=1e-5, rtol=0)
    w = torch.linspace(-1.0, 2.0, 4)
    loss = (y.exp() * w).sum()
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(-1) > 0).all()

    # reparameterised gradient against finite differences (same noise)
    def f(lg):
        torch.manual_seed(42)
        return ExpRelaxedCategorical(0.7, logits=lg).rsample((4,)).exp()

    lg64 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (lg64,))


def test_exp_concrete_low_temperature_extreme_logits_stay_finite():
    torch.manual_seed(43)
    logits = torch.tensor([[50.0, -50.0, 0.0], [-50.0, -50.0, 50.0], [50.0, 50.0, -50.0]])
    d = ExpRelaxedCategorical(0.05, logits=logits)
    y = d.rsample((20_000,))
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    # exp(y) would underflow to 0 for the losing categories; y itself must not be -inf
    assert (y.exp() == 0).any()
    assert torch.isfinite(d.log_prob(y)).all()
    assert torch.isfinite(y.logsumexp(-1)).all()


def test_exp_concrete_temperature_handling():
    logits = torch.zeros(3, dtype=torch.float64)
    d = ExpRelaxedCategorical(0.5, logits=logits)
    assert isinstance(d.temperature, torch.Tensor)
    assert d.temperature.dim() == 0
    assert d.temperature.dtype == torch.float64
    assert d.temperature.item() == 0.5
    with pytest.raises(ValueError):
        ExpRelaxedCategorical(torch.tensor([0.5, 0.5]), logits=logits)
    # probs= is the same distribution as logits=log(probs)
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    y = torch.log_softmax(torch.tensor([0.1, -2.0, 0.4], dtype=torch.float64), -1)
    torch.testing.assert_close(
        ExpRelaxedCategorical(0.5, probs=probs).log_prob(y),
        exp_concrete_logpdf(y, probs.log(), 0.5),
    )


@pytest.mark.parametrize("lam", [0.01, 1.0])
def test_exp_concrete_argmax_is_categorical(lam):
    """Gumbel-max (Maddison et al. Prop. 1a): P(argmax = k) = α_k for every λ."""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    d = ExpRelaxedCategorical(lam, logits=probs.log() + 3.0)
    n = 40_000
    torch.manual_seed(51)
    counts = torch.bincount(d.sample((n,)).argmax(-1), minlength=4).double()
    expected = n * probs
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    # df = 3; the 0.999 quantile makes a false failure a 1-in-1000 event for a
    # fixed seed, while a wrong distribution (e.g. uniform) gives chi2 ≫ 1000
    assert chi2 < stats.chi2.ppf(0.999, df=3)
    if lam == 0.01:
        # at low temperature exp(y) is nearly one-hot
        x = d.sample((2000,)).exp()
        assert (x.max(-1).values > 0.9).double().mean() > 0.9


def test_exp_concrete_expand_to_event_and_log_simplex_constraint():
    logits = torch.randn(3, 5)
    d = ExpRelaxedCategorical(0.5, logits=logits)
    e = d.expand([4, 3])
    assert isinstance(e, ExpRelaxedCategorical)
    assert e.batch_shape == (4, 3) and e.event_shape == (5,)
    assert e.temperature.dim() == 0
    torch.manual_seed(61)
    ys = e.sample()
    assert ys.shape == (4, 3, 5)
    assert e.log_prob(ys).shape == (4, 3)
    torch.testing.assert_close(e.log_prob(ys), d.log_prob(ys))
    ev = d.to_event(1)
    assert ev.batch_shape == () and ev.event_shape == (3, 5)
    y2 = ev.sample((2,))
    assert y2.shape == (2, 3, 5)
    torch.testing.assert_close(ev.log_prob(y2), d.log_prob(y2).sum(-1))

    assert d.support is log_simplex
    assert log_simplex.event_dim == 1
    assert log_simplex.check(ys).all()
    assert log_simplex.check(y2).all()
    bad = torch.stack([ys[0, 0] + 0.1, ys[0, 0] - 0.1, torch.zeros(5), torch.full((5,), -0.5)])
    assert not log_simplex.check(bad).any()
    good64 = torch.log_softmax(torch.randn(10, 5, dtype=torch.float64), -1)
    assert log_simplex.check(good64).all()
    assert not log_simplex.check(good64 + 1e-6).any()
    with pytest.raises(ValueError):
        ExpRelaxedCategorical(0.5, logits=logits, validate_args=True).log_prob(torch.zeros(3, 5))


def test_discrete_kl_is_the_kl_of_the_underlying_categoricals():
    torch.manual_seed(0)
    q_logits, p_logits = torch.randn(6, 3, 5), torch.randn(5)
    q = ExpRelaxedCategoricalDiscreteKL(torch.tensor(0.5), logits=q_logits)
    p = ExpRelaxedCategoricalDiscreteKL(torch.tensor(1.0), logits=p_logits.expand(6, 3, 5))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=q_logits),
        torch.distributions.Categorical(logits=p_logits),
    )
    assert torch.allclose(kl_divergence(q, p), expected, atol=1e-6)
    # through .to_event(1), as the model and guide use it: summed over the variables
    kl_event = kl_divergence(q.to_event(1), p.to_event(1))
    assert torch.allclose(kl_event, expected.sum(-1), atol=1e-5)
    # the temperatures do not enter it, and it vanishes for identical logits
    same = ExpRelaxedCategoricalDiscreteKL(torch.tensor(0.1), logits=q_logits)
    assert torch.allclose(kl_divergence(q, same), torch.zeros(6, 3), atol=1e-6)
    # samples and densities stay the ExpConcrete's
    y = q.rsample()
    plain = ExpRelaxedCategorical(torch.tensor(0.5), logits=q_logits)
    assert torch.allclose(q.log_prob(y), plain.log_prob(y))
    # the plain ExpConcrete has no analytic KL: Pyro falls back to Monte Carlo
    with pytest.raises(NotImplementedError):
        kl_divergence(plain, ExpRelaxedCategorical(torch.tensor(1.0), logits=p_logits))


def _mc_check(stat, samples, tol_se=5.0):
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert (abs(samples.mean(0) - stat) < tol_se * se + 1e-4).all(), (stat, samples.mean(0))


def test_logit_normal_entropy_is_minus_the_mean_log_density():
    torch.manual_seed(0)
    d = LogitNormal(torch.tensor([0.3, -1.0, 2.5]).double(), torch.tensor([0.7, 1.5, 0.2]).double())
    z = d.sample((200_000,))
    _mc_check(d.entropy(), -d.log_prob(z))


def test_multivariate_logit_normal_statistics_match_samples():
    torch.manual_seed(1)
    tril = torch.tensor([[0.8, 0.0, 0.0], [0.3, 0.5, 0.0], [-0.2, 0.4, 1.1]]).double()
    d = MultivariateLogitNormal(torch.tensor([0.2, -0.4, 1.0]).double(), tril)
    z = d.sample((200_000,))
    _mc_check(d.entropy(), -d.log_prob(z))
    _mc_check(d.mean, z)
    _mc_check(d.variance, (z - z.mean(0)).square())


# The grid of issue 28: every scale from about 1.12 up gave a NaN entropy in float32, from
# about 2.5 up -inf in float64, and LN(−4, 6) a mean 1.4e−4 and a variance 2.2e−3 off.
STAT_LOCS = (-6.0, -4.0, -1.5, 0.0, 2.5, 6.0)
STAT_SCALES = (0.05, 0.4, 1.12, 2.5, 3.0, 6.0, 10.0)


@functools.cache
def logit_normal_statistics_reference(loc: float, scale: float) -> tuple[float, float, float]:
    """Mean, variance and entropy of LN(loc, scale) by mpmath's tanh-sinh quadrature in y at
    20 digits: E[g(Y)] = ∫ N(y; loc, scale²) g(y) dy over loc ± 40 scale, with z = 1 / (1 + e^{−y})
    and 1 − z = 1 / (1 + e^y) written out, and H = ½ log(2πe scale²) + E[log z + log(1 − z)]
    (the change of variables z = σ(y))."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(20):
        m, s = mp.mpf(loc), mp.mpf(scale)

        def expect(g):
            # break points where the integrand changes: the Normal's centre and flanks, z's step
            lo, hi = m - 40 * s, m + 40 * s  # the Normal's mass outside is e^{−800}
            inner = {m + k * s for k in (-12, -4, 0, 4, 12)} | {mp.mpf(0)}
            points = [lo, *sorted(p for p in inner if lo < p < hi), hi]
            return mp.quad(lambda y: mp.npdf(y, m, s) * g(y), points)

        def z(y):
            return 1 / (1 + mp.exp(-y))

        def one_minus_z(y):  # not 1 − z(y), which is 0 at 20 digits for y over 46
            return 1 / (1 + mp.exp(y))

        mean = expect(z)
        variance = expect(lambda y: (z(y) - mean) ** 2)
        jacobian = expect(lambda y: mp.log(z(y)) + mp.log(one_minus_z(y)))
        entropy = mp.log(2 * mp.pi * mp.e * s**2) / 2 + jacobian
        return float(mean), float(variance), float(entropy)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_logit_normal_statistics_match_high_precision_quadrature(dtype):
    # float64: the quadrature's own error is near 1e−15; float32 rounds its inputs and nodes
    rel = 1e-12 if dtype == torch.float64 else 2e-5
    worst = {"mean": 0.0, "variance": 0.0, "entropy": 0.0}
    for loc in STAT_LOCS:
        for scale in STAT_SCALES:
            d = LogitNormal(torch.tensor(loc, dtype=dtype), torch.tensor(scale, dtype=dtype))
            got = {"mean": d.mean, "variance": d.variance, "entropy": d.entropy()}
            want = dict(zip(worst, logit_normal_statistics_reference(loc, scale), strict=True))
            for name, value in got.items():
                assert value.dtype == dtype and torch.isfinite(value), (name, loc, scale)
                error = abs(value.item() - want[name]) / abs(want[name])
                worst[name] = max(worst[name], error)
                assert error < rel, (name, loc, scale, value.item(), want[name])
    assert max(worst.values()) > 0  # the comparison was made


def test_logit_normal_statistics_batched_and_differentiable():
    """A batch gives the scalar results elementwise, mixing scales whose quadrature windows
    differ (one over 40 / 9 takes the cut-window form), and gradients match finite ones."""
    pairs = [(-4.0, 6.0), (0.0, 3.0), (2.5, 0.05), (-1.5, 1.12)]
    loc = torch.tensor([p[0] for p in pairs], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([p[1] for p in pairs], dtype=torch.float64, requires_grad=True)
    d = LogitNormal(loc, scale)
    for i, pair in enumerate(pairs):
        mean, variance, entropy = logit_normal_statistics_reference(*pair)
        assert d.mean[i].item() == pytest.approx(mean, rel=1e-12)
        assert d.variance[i].item() == pytest.approx(variance, rel=1e-12)
        assert d.entropy()[i].item() == pytest.approx(entropy, rel=1e-12)
    for stat in (
        lambda a, b: LogitNormal(a, b).mean,
        lambda a, b: LogitNormal(a, b).variance,
        lambda a, b: LogitNormal(a, b).entropy(),
    ):
        assert torch.autograd.gradcheck(stat, (loc, scale))


def test_multivariate_logit_normal_statistics_are_its_marginals():
    """Marginal scales 3, 1.2 and 6.5 (a NaN or −inf entropy before): mean and variance are
    the marginal Logit-normals', the entropy the base's plus their E[log z_i(1 − z_i)]."""
    tril = [[3.0, 0.0, 0.0], [0.72, 0.96, 0.0], [2.5, -5.0, math.sqrt(11.0)]]
    tril = torch.tensor(tril, dtype=torch.float64)  # rows of norm 3, 1.2 and 6.5
    loc = torch.tensor([-1.5, 0.5, 2.5], dtype=torch.float64)
    scales = [3.0, 1.2, 6.5]
    ref = [
        logit_normal_statistics_reference(m, s)
        for m, s in zip([-1.5, 0.5, 2.5], scales, strict=True)
    ]
    # H(z) = H(y) + Σ_i E[log z_i(1 − z_i)], and each E[...] is H(z_i) − H(y_i)
    jacobians = sum(
        h - 0.5 * math.log(2 * math.pi * math.e * s**2)
        for (_, _, h), s in zip(ref, scales, strict=True)
    )
    entropy = 0.5 * torch.logdet(2 * math.pi * math.e * tril @ tril.T).item() + jacobians
    for dtype, rel in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        d = MultivariateLogitNormal(loc.to(dtype), tril.to(dtype))
        np.testing.assert_allclose(d.mean.double().numpy(), [r[0] for r in ref], rtol=rel)
        np.testing.assert_allclose(d.variance.double().numpy(), [r[1] for r in ref], rtol=rel)
        assert d.entropy().item() == pytest.approx(entropy, rel=rel)


def test_concrete_statistics_without_closed_form_say_so():
    d = ExpRelaxedCategorical(torch.tensor(0.5), logits=torch.zeros(4))
    for stat in ("mean", "variance"):
        with pytest.raises(NotImplementedError, match="no closed form"):
            getattr(d, stat)
    with pytest.raises(NotImplementedError, match="no closed form"):
        d.entropy()
