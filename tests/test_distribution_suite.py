"""Generic distribution checks, in the spirit of Pyro's ``tests/distributions`` (written here).

Every case of ``distribution_cases.CASES`` goes through the same checks: shapes and dtypes,
``expand`` (plain, into a given instance, under plates, keeping ``_validate_args``),
``infer_shapes``, ``to_event`` and ``mask``, samples inside the support and finite mean,
variance and entropy at extreme parameters in float32 and float64, refusal of invalid
parameters and of values outside the support, a chi-square goodness of fit of samples against
``log_prob`` (with a control showing the test can fail), moments against samples, ``rsample``
gradients (``gradcheck`` for explicit reparameterisations, unbiasedness for implicit ones),
pickle / deepcopy / ``torch.save`` after sampling, and ``log_prob`` of a sample changed in
place.
"""

from __future__ import annotations

import copy
import io
import pickle

import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

from .distribution_cases import CASES, Case

BATCHES = [(), (3,), (2, 3)]
DTYPES = [torch.float32, torch.float64]
N_SE = 5.0  # Monte Carlo standard errors allowed (seeded; a correct code fails w.p. < 1e-6)

by_case = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
by_batch = pytest.mark.parametrize("batch", BATCHES, ids=str)


def _dist(case: Case, batch=(), dtype=torch.float64, validate_args=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return case.cls(**case.params(torch.Size(batch), dtype, g), validate_args=validate_args)


def _params(d, case: Case) -> dict:
    g = torch.Generator().manual_seed(0)
    return {k: getattr(d, k) for k in case.params(torch.Size(), torch.float64, g)}


@by_case
@by_batch
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_shapes_and_dtypes(case, batch, dtype):
    d = _dist(case, batch, dtype)
    x = d.sample((4,))
    assert d.batch_shape == batch
    assert x.shape == (4, *batch, *d.event_shape) and x.dtype == dtype
    assert d.rsample().shape == d.shape()
    lp = d.log_prob(x)
    assert lp.shape == (4, *batch) and lp.dtype == dtype
    assert d.has_rsample


@by_case
@by_batch
def test_expand(case, batch):
    d = _dist(case, batch)
    big = d.expand((5, *batch))
    assert type(big) is type(d) and big.batch_shape == (5, *batch)
    assert big.event_shape == d.event_shape
    x = big.sample()
    torch.testing.assert_close(big.log_prob(x), d.log_prob(x))
    # into an instance made by the caller (Pyro's subclasses do this), type kept
    new = type(d).__new__(type(d))
    assert d.expand((2, *batch), _instance=new) is new
    assert new.batch_shape == (2, *batch)
    torch.testing.assert_close(new.log_prob(x[:2]), d.log_prob(x[:2]))


@by_case
@pytest.mark.parametrize("validate", [True, False])
def test_expand_keeps_validation(case, validate):
    d = _dist(case, (3,), validate_args=validate)
    big = d.expand((4, 3))
    assert big._validate_args is validate
    bad = case.outside(big.sample())
    if validate:
        with pytest.raises(ValueError):
            big.log_prob(bad)
    else:
        big.log_prob(bad)  # no check asked for: no error


@by_case
@by_batch
@pytest.mark.parametrize("subsample", [None, 5], ids=["full", "subsampled"])
def test_under_plates(case, batch, subsample):
    d = _dist(case, batch, validate_args=True)

    def model():
        with pyro.plate(
            "outer", 5 if subsample is None else 100, subsample_size=subsample, dim=-len(batch) - 1
        ):
            return pyro.sample("z", d)

    tr = poutine.trace(model).get_trace()
    tr.compute_log_prob()
    site = tr.nodes["z"]
    assert site["fn"].batch_shape == (5, *batch)
    assert site["fn"]._validate_args is True
    assert site["value"].shape == (5, *batch, *d.event_shape)
    assert site["log_prob"].shape == (5, *batch)
    scale = 1.0 if subsample is None else 100 / 5  # a subsample stands for the whole plate
    torch.testing.assert_close(site["log_prob"], scale * d.log_prob(site["value"]))


@by_case
@by_batch
def test_infer_shapes(case, batch):
    d = _dist(case, batch)
    shapes = {k: tuple(v.shape) for k, v in _params(d, case).items()}
    assert type(d).infer_shapes(**shapes) == (d.batch_shape, d.event_shape)


@by_case
@by_batch
def test_to_event_and_mask(case, batch):
    d = _dist(case, batch)
    x = d.sample((2,))
    lp = d.log_prob(x)
    joint = d.to_event(len(batch))
    assert joint.event_shape == (*batch, *d.event_shape) and joint.batch_shape == ()
    torch.testing.assert_close(joint.log_prob(x), lp.reshape(2, -1).sum(-1))
    mask = torch.arange(torch.Size(batch).numel()).reshape(batch) % 2 == 0
    torch.testing.assert_close(d.mask(mask).log_prob(x), torch.where(mask, lp, 0.0))
    assert (d.mask(False).log_prob(x) == 0).all()


@by_case
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_samples_stay_in_the_support_at_extreme_parameters(case, dtype):
    torch.manual_seed(0)
    for params in case.extremes:
        d = case.make(params, dtype, validate_args=True)
        x = d.rsample((2000,))
        assert d.support.check(x).all(), params
        lp = d.log_prob(x)  # validation on: a value outside the support would raise
        assert torch.isfinite(lp).all(), params
        assert torch.isfinite(d.log_prob(x.clone())).all(), params  # without any cache


@by_case
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_statistics_are_finite_at_extreme_parameters(case, dtype):
    if not case.statistics:
        return  # they raise (test_mean_variance_entropy_against_samples)
    for params in case.extremes:
        d = case.make(params, dtype)
        for name, value in (("mean", d.mean), ("variance", d.variance), ("entropy", d.entropy())):
            assert value.dtype == dtype and torch.isfinite(value).all(), (name, params)
        assert (d.variance >= 0).all(), params


@by_case
def test_invalid_parameters_and_values_are_refused(case):
    for params in case.invalid:
        with pytest.raises(ValueError):
            case.make(params, validate_args=True)
    d = _dist(case, (3,), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(case.outside(d.sample()))
    assert not d.support.check(case.outside(d.sample())).any()
    for edge in case.boundary:  # on the edge of the closed set, where the density is zero
        edge = torch.tensor(edge, dtype=torch.float64)
        assert not d.support.check(edge).any(), edge
        with pytest.raises(ValueError):
            d.log_prob(edge)


def _chi_square_p(case: Case, d, x: torch.Tensor) -> float:
    """p-value of a chi-square test of samples ``x`` (in the chart) against ``log_prob``.

    The cells are a grid over the central mass of a pilot sample plus one "outside" cell;
    each cell's probability integrates exp(log_prob) by the midpoint rule on a fine grid.
    """
    pilot = case.chart(d.sample((4000,)))
    dim = pilot.shape[-1]
    lo, hi = pilot.quantile(0.002, dim=0), pilot.quantile(0.998, dim=0)
    coarse, fine = (12, 60) if dim == 1 else (5, 24)
    m = coarse * fine
    width = (hi - lo) / m
    axes = [lo[i] + width[i] * (torch.arange(m, dtype=x.dtype) + 0.5) for i in range(dim)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    mass = d.log_prob(case.unchart(grid)).exp() * width.prod()
    mass = mass.reshape([coarse, fine] * dim).sum(tuple(range(1, 2 * dim, 2))).flatten()
    expected = torch.cat([mass, (1 - mass.sum()).clamp_min(1e-12).reshape(1)]) * len(x)
    cell = ((x - lo) / (hi - lo) * coarse).floor().long()
    inside = ((cell >= 0) & (cell < coarse)).all(-1)
    flat = torch.zeros(len(x), dtype=torch.long)
    for i in range(dim):
        flat = flat * coarse + cell[:, i].clamp(0, coarse - 1)
    flat = torch.where(inside, flat, coarse**dim)
    observed = torch.bincount(flat, minlength=coarse**dim + 1).to(x.dtype)
    statistic = ((observed - expected) ** 2 / expected).sum().item()
    return float(stats.chi2.sf(statistic, df=len(expected) - 1))


@by_case
def test_goodness_of_fit(case):
    torch.manual_seed(1)
    d = case.make(case.gof)
    x = case.chart(d.sample((20000,)))
    assert _chi_square_p(case, d, x) > 1e-4
    # control: the same test sees samples moved by a tenth of a standard deviation
    moved = x.clone()
    moved[:, 0] += 0.1 * x[:, 0].std()
    assert _chi_square_p(case, d, moved) < 1e-6


@by_case
def test_mean_variance_entropy_against_samples(case):
    d = _dist(case, (3,))
    if not case.statistics:
        for stat in (lambda: d.mean, lambda: d.variance, d.entropy):
            with pytest.raises(NotImplementedError):
                stat()
        return
    torch.manual_seed(2)
    n = 40000
    x = d.sample((n,))
    se = x.std(0) / n**0.5
    assert ((x.mean(0) - d.mean).abs() < N_SE * se).all()
    sq = (x - x.mean(0)) ** 2
    assert ((sq.mean(0) - d.variance).abs() < N_SE * sq.std(0) / n**0.5).all()
    neg_lp = -d.log_prob(x)
    assert ((neg_lp.mean(0) - d.entropy()).abs() < N_SE * neg_lp.std(0) / n**0.5).all()


@by_case
@pytest.mark.parametrize("batch", [(), (2,)], ids=str)
def test_rsample_gradients(case, batch):
    g = torch.Generator().manual_seed(3)
    params = case.params(torch.Size(batch), torch.float64, g)
    keys = list(params)
    leaves = [params[k].clone().requires_grad_() for k in keys]
    if case.pathwise == "explicit":

        def draw(*values):
            torch.manual_seed(0)
            return case.cls(**dict(zip(keys, values, strict=True)), validate_args=False).rsample(
                (3,)
            )

        assert torch.autograd.gradcheck(draw, leaves)
        return
    # implicit reparameterisation: the per-sample gradient is not that of a fixed-noise map,
    # but its average is the gradient of the mean
    torch.manual_seed(0)
    d = case.cls(**dict(zip(keys, leaves, strict=True)))
    n = 100000
    grads = torch.autograd.grad(d.rsample((n,)).sum() / n, leaves)
    exact = torch.autograd.grad(d.mean.sum(), leaves)
    for got, want in zip(grads, exact, strict=True):
        torch.testing.assert_close(got, want, rtol=0.03, atol=2e-3)


def _round_trip(method, d):
    if method == "pickle":
        return pickle.loads(pickle.dumps(d))
    if method == "deepcopy":
        return copy.deepcopy(d)
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)  # a whole object, not a checkpoint


@by_case
@pytest.mark.parametrize("method", ["pickle", "deepcopy", "torch.save"])
def test_round_trips_after_sampling(case, method):
    d = _dist(case, (3,))
    x = d.sample((2,))
    g = torch.Generator().manual_seed(4)
    leaves = {k: v.requires_grad_() for k, v in case.params((1000,), torch.float64, g).items()}
    case.cls(**leaves).rsample()  # then another instance draws a sample with a graph
    size = len(pickle.dumps(d))
    assert size < 2 * len(pickle.dumps(_params(d, case))) + 2000  # its parameters, no samples
    twin = _round_trip(method, d)
    assert type(twin) is type(d) and twin.batch_shape == d.batch_shape
    torch.testing.assert_close(twin.log_prob(x), d.log_prob(x))


@by_case
@by_batch
def test_a_sample_changed_in_place_is_scored_as_its_new_value(case, batch):
    torch.manual_seed(5)
    d = _dist(case, batch)
    replacement = d.sample()
    x = d.rsample()  # the last sample drawn: what a cache would hold
    before = d.log_prob(x)
    x.copy_(replacement)
    torch.testing.assert_close(d.log_prob(x), d.log_prob(x.clone()))
    assert not torch.allclose(d.log_prob(x), before)
