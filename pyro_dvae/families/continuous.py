"""Vector latents: the Gaussian (Kingma & Welling) and the Logit-normal (the paper's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch

from ..distributions import LogitNormal
from ..params import Param
from .base import LatentFamily, filled, loc_scale, member_sqrt, register_family

if TYPE_CHECKING:
    from ..config import FitConfig


ALPHA = Param(
    "alpha",
    float,
    1.0,
    "Logit-normal prior variance: p(z) = LN(0, alpha I); the paper tries 0.32, 0.56, 1, 1.78.",
    positive=True,
    short="a",
    axis=True,
)


@register_family
class GaussianFamily(LatentFamily):
    """q = N(μ, σ²I), p = N(0, I) (Kingma & Welling)."""

    name = "gaussian"
    title = "Gaussian"

    @property
    def head_size(self) -> int:
        return 2 * self.latent_dim

    def posterior(self, head):
        loc, scale = loc_scale(head)
        return dist.Normal(loc, scale).to_event(1)

    def prior(self, like):
        shape = (*like.shape[:-1], self.latent_dim)
        return dist.Normal(filled(like, *shape), filled(like, *shape, value=1.0)).to_event(1)

    def from_unit_interval(self, u):
        return (2.0**0.5) * torch.erfinv(2 * u - 1)  # Φ⁻¹(u): the prior's quantiles

    def axis_label(self, name):
        return f"Φ({name})"


@register_family
class LogitNormalFamily(LatentFamily):
    """q = LN(μ, σ²I), p = LN(0, αI) with α the prior variance."""

    name = "logitnormal"
    params = (ALPHA,)
    slug_params = ("alpha",)
    member_params = ("alpha",)

    def __init__(self, config: FitConfig):
        super().__init__(config)
        self.alpha = config.alpha

    @classmethod
    def label(cls, config):
        return f"Logit-normal α={config.alpha:g}"

    @property
    def head_size(self) -> int:
        return 2 * self.latent_dim

    def posterior(self, head):
        loc, scale = loc_scale(head)
        return LogitNormal(loc, scale).to_event(1)

    def prior(self, like):
        shape = (*like.shape[:-1], self.latent_dim)
        scale = filled(like, *shape, value=member_sqrt(self.alpha))
        return LogitNormal(filled(like, *shape), scale).to_event(1)

    def discrete(self) -> LatentFamily:
        """The binary model it stands for (the paper's claim): b = 1[y > 0], q(b = 1) = Φ(μ/σ)."""
        from .bernoulli import BitsFamily

        return BitsFamily(self.latent_dim, probit=True)

    def describe(self) -> str:
        return f"logitnormal(alpha={self.alpha:g})"
