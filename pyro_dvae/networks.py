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


class MemberLinear(nn.Module):
    """M independent ``nn.Linear`` layers as one: ``weight`` (M, out, in), ``bias`` (M, out).

    Member ``m``'s slice has the shapes of an ``nn.Linear``, so it copies to and from a
    solo layer as it is; an input (M, B, in) gives (M, B, out) by one batched product.
    """

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 1:  # a group of one: the solo layer's arithmetic, exactly
            return nn.functional.linear(x, self.weight[0], self.bias[0])
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class MemberMLP(nn.Module):
    """M copies of an :class:`MLP` with their own weights, stacked along a leading axis.

    Built from M solo networks (so each member starts from its own seed's weights) and
    read back into one with :meth:`copy_member_to`; its parameter names are the solo
    ones, so a member's slice of each tensor is the solo tensor of the same name.
    """

    def __init__(self, mlps: list[MLP]):
        super().__init__()
        layers = [[m.net[i] for m in mlps] for i in (0, 2, 4)]
        self.net = nn.Sequential(
            MemberLinear(layers[0]), nn.Tanh(), MemberLinear(layers[1]), nn.Softplus(),
            MemberLinear(layers[2]),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def copy_member_to(self, member: int, mlp: MLP) -> None:
        """Write member ``member``'s weights into the solo network ``mlp``."""
        own = dict(self.named_parameters())
        for name, p in mlp.named_parameters():
            p.copy_(own[name][member])
