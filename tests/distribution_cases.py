"""The distributions the generic suite (``test_distribution_suite.py``) checks, one entry each.

A distribution added to the package is covered by adding a :class:`Case` to ``CASES``:
how to draw valid parameters for a batch shape, parameters at the edges of their range,
parameters validation must refuse, and a chart (a map of the support onto R^D in which
``log_prob`` is a Lebesgue density) for the goodness-of-fit test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyro.distributions as pdist
import torch

from pyro_dvae.distributions import (
    ExpRelaxedCategorical,
    ExpRelaxedCategoricalDiscreteKL,
    LogitNormal,
    MultivariateLogitNormal,
)

Params = dict[str, torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _scalar_chart(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1)


def _scalar_unchart(u: torch.Tensor) -> torch.Tensor:
    return u.squeeze(-1)


def _log_ratios(y: torch.Tensor) -> torch.Tensor:
    """ExpConcrete point -> its K−1 log-ratios y_k − y_K, where log_prob is Lebesgue."""
    return y[..., :-1] - y[..., -1:]


def _from_log_ratios(r: torch.Tensor) -> torch.Tensor:
    return torch.cat([r, torch.zeros_like(r[..., :1])], -1).log_softmax(-1)


@dataclass(frozen=True)
class Case:
    """One distribution class and what the generic tests need to know about it."""

    name: str
    cls: type
    #: valid parameters for a batch shape (the generator makes them reproducible)
    params: Callable[[torch.Size, torch.dtype, torch.Generator], Params]
    #: parameter values at the edges of their range (batch shape ()), as nested lists
    extremes: tuple[dict, ...]
    #: parameter values that validation must refuse
    invalid: tuple[dict, ...]
    #: parameters of the goodness-of-fit test, and its chart (event -> R^D) with its inverse
    gof: dict
    chart: Callable[[torch.Tensor], torch.Tensor] = _scalar_chart
    unchart: Callable[[torch.Tensor], torch.Tensor] = _scalar_unchart
    #: "explicit": z = g(θ, ε), gradcheck applies; "implicit" (Pyro's Beta): only E[∂z/∂θ] is exact
    pathwise: str = "explicit"
    #: whether mean, variance and entropy exist (else they raise NotImplementedError)
    statistics: bool = True
    #: event values on the edge of the support's closure, which validation must refuse
    boundary: tuple = ()
    #: a value outside the support of an event, for the validation checks
    outside: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda x: x + 2.0)

    def make(self, params: dict, dtype=torch.float64, validate_args=None):
        params = {k: torch.as_tensor(v, dtype=dtype) for k, v in params.items()}
        return self.cls(**params, validate_args=validate_args)


def _tril(batch, n, dtype, g):
    off = 0.3 * torch.randn((*batch, n, n), dtype=dtype, generator=g)
    diag = 0.5 + torch.rand((*batch, n), dtype=dtype, generator=g)
    return off.tril(-1) + torch.diag_embed(diag)


def _concrete_params(batch, dtype, g):
    return {
        "temperature": 0.4 + torch.rand((), dtype=dtype, generator=g),
        "logits": torch.randn((*batch, 4), dtype=dtype, generator=g),
    }


def _concrete(name, cls):
    return Case(
        name=name,
        cls=cls,
        params=_concrete_params,
        extremes=(
            {"temperature": 0.05, "logits": [30.0, -30.0, 0.0, 0.0]},
            {"temperature": 0.01, "logits": [-50.0, 50.0, -50.0, 0.0]},
            {"temperature": 5.0, "logits": [0.0, 0.0, 0.0, 0.0]},
        ),
        invalid=(
            {"temperature": -1.0, "logits": [0.0, 0.0]},
            {"temperature": 0.0, "logits": [0.0, 1.0]},
        ),
        boundary=([0.0] + [-float("inf")] * 3, [-float("inf"), -1.0, -1.0, -1.0]),
        gof={"temperature": 0.7, "logits": [0.5, -0.3, 0.1]},
        chart=_log_ratios,
        unchart=_from_log_ratios,
        statistics=False,
    )


CASES: list[Case] = [
    Case(
        name="LogitNormal",
        cls=LogitNormal,
        params=lambda batch, dtype, g: {
            "loc": torch.randn(batch, dtype=dtype, generator=g),
            "scale": 0.5 + torch.rand(batch, dtype=dtype, generator=g),
        },
        extremes=(
            {"loc": 40.0, "scale": 1.0},
            {"loc": -40.0, "scale": 1.0},
            {"loc": 0.0, "scale": 30.0},
            {"loc": 5.0, "scale": 1e-4},
        ),
        invalid=(
            {"loc": 0.0, "scale": -1.0},
            {"loc": 0.0, "scale": 0.0},
        ),
        boundary=(0.0, 1.0),
        gof={"loc": 0.3, "scale": 0.8},
    ),
    Case(
        name="MultivariateLogitNormal",
        cls=MultivariateLogitNormal,
        params=lambda batch, dtype, g: {
            "loc": torch.randn((*batch, 3), dtype=dtype, generator=g),
            "scale_tril": _tril(batch, 3, dtype, g),
        },
        extremes=(
            {"loc": [40.0, -40.0, 0.0], "scale_tril": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 30.0]]},
            {"loc": [0.0, 5.0, -5.0], "scale_tril": [[1e-4, 0, 0], [1.0, 1e-4, 0], [0, 0, 1.0]]},
        ),
        invalid=({"loc": [0.0, 0.0], "scale_tril": [[1.0, 0.5], [0.0, 1.0]]},),
        boundary=([0.0, 0.5, 0.5], [0.5, 1.0, 0.5]),
        gof={"loc": [0.2, -0.5], "scale_tril": [[0.8, 0.0], [0.5, 0.6]]},
        chart=_identity,
        unchart=_identity,
    ),
    _concrete("ExpRelaxedCategorical", ExpRelaxedCategorical),
    _concrete("ExpRelaxedCategoricalDiscreteKL", ExpRelaxedCategoricalDiscreteKL),
    # Pyro's own Beta, as the Beta family uses it (softplus heads + a floor of 1e-2); torch
    # declares its support closed, [0, 1], so no boundary case: that is torch's to change
    Case(
        name="Beta",
        cls=pdist.Beta,
        params=lambda batch, dtype, g: {
            "concentration1": 0.5 + 2 * torch.rand(batch, dtype=dtype, generator=g),
            "concentration0": 0.5 + 2 * torch.rand(batch, dtype=dtype, generator=g),
        },
        extremes=(
            {"concentration1": 1e-2, "concentration0": 1e-2},
            {"concentration1": 1e3, "concentration0": 1e-2},
            {"concentration1": 1e-2, "concentration0": 1e3},
        ),
        invalid=({"concentration1": -1.0, "concentration0": 1.0},),
        gof={"concentration1": 2.5, "concentration0": 1.5},
        pathwise="implicit",
    ),
]
