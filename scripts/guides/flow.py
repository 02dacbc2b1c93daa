"""A normalising-flow guide on top of the Logit-normal.

The encoder gives a diagonal Normal in the logit space, as the default guide;
two affine autoregressive transforms (Pyro's ``AffineAutoregressive`` on an
``AutoRegressiveNN``), conditioned on nothing but shared by all images, reshape it
before the sigmoid. No KL is registered for such a posterior, so the KL is
estimated by Monte Carlo, and the run says so in ``summary.json`` (and prints a
note under ``--elbo analytic``). Train with

    pyro-dvae fit --family logitnormal --alpha 1.78 --guide scripts/guides/flow.py:make_guide
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.nn import AutoRegressiveNN
from torch import nn

from pyro_dvae.families import LatentFamily
from pyro_dvae.networks import MLP


class FlowGuide(nn.Module):
    def __init__(self, input_dim: int, hidden: int, latent_dim: int, layers: int = 2):
        super().__init__()
        self.d = latent_dim
        self.net = MLP(input_dim, hidden, 2 * latent_dim)
        self.flows = nn.ModuleList(
            T.AffineAutoregressive(AutoRegressiveNN(latent_dim, [4 * latent_dim]))
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> None:
        loc, log_var = self.net(x).chunk(2, dim=-1)
        base = dist.Normal(loc, torch.exp(0.5 * log_var)).to_event(1)
        # cached: log q(z) then reads the flows' input back, not an autoregressive inversion
        q = dist.TransformedDistribution(base, [*self.flows, T.SigmoidTransform(cache_size=1)])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)


def make_guide(family: LatentFamily, input_dim: int, hidden: int) -> nn.Module:
    if family.name != "logitnormal":
        raise ValueError("the flow guide is for --family logitnormal")
    return FlowGuide(input_dim, hidden, family.latent_dim)
