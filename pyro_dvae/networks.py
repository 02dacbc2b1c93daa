"""The paper's MLPs: Linear, Tanh, Linear, Softplus, then an output layer."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """``in → H → H → out`` with Tanh after the first layer and Softplus after the second."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Softplus(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(MLP):
    """x → the latent family's posterior parameters (its 'head')."""


class Decoder(MLP):
    """z (as the family hands it over) → Bernoulli logits of every pixel."""
