"""A full-covariance Logit-normal guide: q(z|x) = sigmoid of a MultivariateNormal.

The encoder emits a mean and a Cholesky factor (positive diagonal through exp);
against the diagonal LN(0, αI) prior the KL stays analytic (a MultivariateNormal
against a diagonal Normal), so ``--elbo analytic`` uses it. Train with

    pyro-dvae fit --family logitnormal --alpha 1.78 \\
        --guide scripts/guides/full_covariance.py:make_guide --elbo analytic
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyro_dvae.distributions import MultivariateLogitNormal
from pyro_dvae.families import LatentFamily
from pyro_dvae.networks import MLP

OFF_DIAGONAL_SCALE = 0.01


class FullCovarianceGuide(nn.Module):
    def __init__(self, input_dim: int, hidden: int, latent_dim: int):
        super().__init__()
        self.d = latent_dim
        self.rows, self.cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        n_off = self.rows.numel()
        self.net = MLP(input_dim, hidden, 2 * latent_dim + n_off)
        # start from the diagonal guide: with the default initialisation the 190 off-diagonal
        # entries (d = 20) come out at about ±0.5 each, a very noisy posterior to unlearn
        last = self.net.net[-1]
        with torch.no_grad():
            last.weight[2 * latent_dim :].zero_()
            last.bias[2 * latent_dim :].zero_()

    def forward(self, x: torch.Tensor) -> None:
        out = self.net(x)
        loc, log_var, off = out.split([self.d, self.d, out.shape[-1] - 2 * self.d], dim=-1)
        # the diagonal as the default guide's scale, exp(log_var / 2)
        tril = torch.diag_embed(torch.exp(0.5 * log_var))
        # The strictly lower entries, scaled down (in effect a smaller learning rate for this
        # block). Unscaled, the 190 off-diagonal outputs (d = 20) stalled training: 188.7 test
        # -ELBO after 2 epochs on 10,000 images against 160-165 for the diagonal guide, and
        # 161.7 with the entries forced to 0; with the factor 0.01, 156.1. Why the unscaled
        # block hurts so much is not established yet.
        tril[:, self.rows, self.cols] = OFF_DIAGONAL_SCALE * off
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", MultivariateLogitNormal(loc, tril))


def make_guide(family: LatentFamily, input_dim: int, hidden: int) -> nn.Module:
    if family.name != "logitnormal":
        raise ValueError("the full-covariance guide is for --family logitnormal")
    return FullCovarianceGuide(input_dim, hidden, family.latent_dim)
