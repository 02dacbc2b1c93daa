"""The Beta latent: the Logit-normal's rival on the unit cube (the paper did not try it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch

from ..params import Param
from .base import LatentFamily, filled, register_family

if TYPE_CHECKING:
    from ..config import FitConfig


@register_family
class BetaFamily(LatentFamily):
    """q = Beta(a(x), b(x)) per unit, p = Beta(b₀, b₀) (b₀ = 1: uniform on the unit cube).

    The Logit-normal's rival on (0, 1)^d: Pyro's Beta samples with implicit
    reparameterisation, and torch registers the Beta-Beta KL, so ``--elbo analytic``
    works.
    """

    name = "beta"
    params = (
        Param(
            "beta_prior",
            float,
            1.0,
            "Beta: the prior's concentrations, p(z) = Beta(b0, b0) (1: uniform).",
            positive=True,
            short="b",
            axis=True,
        ),
    )
    slug_params = ("beta_prior",)
    member_params = ("beta_prior",)

    def __init__(self, config: FitConfig):
        super().__init__(config)
        self.beta_prior = config.beta_prior

    @classmethod
    def label(cls, config):
        return f"Beta b₀={config.beta_prior:g}"

    @property
    def head_size(self) -> int:
        return 2 * self.latent_dim

    def posterior(self, head):
        a, b = torch.nn.functional.softplus(head).chunk(2, dim=-1)
        return dist.Beta(a + BETA_FLOOR, b + BETA_FLOOR).to_event(1)

    def prior(self, like):
        shape = (*like.shape[:-1], self.latent_dim)
        b0 = filled(like, *shape, value=self.beta_prior)
        return dist.Beta(b0, b0).to_event(1)

    def describe(self) -> str:
        return f"beta(b0={self.beta_prior:g})"


#: smallest posterior concentration: keeps Beta samples off exact 0 and 1 in float32
BETA_FLOOR = 1e-2
