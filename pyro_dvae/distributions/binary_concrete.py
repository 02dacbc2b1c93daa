"""The binary Concrete (relaxed Bernoulli) and its straight-through twin, with Jang et al.'s
discrete KL registered between them.

A sample is ``z = σ((logits + L) / τ)`` with ``L ~ Logistic(0, 1)`` (Maddison et al., 2016;
Jang et al., 2016); as τ → 0 it becomes ``1[logits + L > 0]``, a Bernoulli(σ(logits)) draw.
The KL registered for a pair is the KL of those underlying Bernoullis, which is the objective
Jang et al. train their Bernoulli VAE with (the relaxed densities' KL is not used), so an
ELBO that takes analytic KLs (``TraceMeanField_ELBO``) trains that objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.kl import register_kl
from torch.distributions.utils import broadcast_all

_SCALAR = torch.Size()


class BinaryConcrete(TorchDistribution):
    """Relaxed Bernoulli values in (0, 1) at ``temperature``; ``logits`` are the locations.

    ``temperature`` broadcasts against ``logits`` (a scalar, or one per group member).
    """

    arg_constraints = {"logits": constraints.real, "temperature": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, temperature, logits, validate_args=None):
        self.logits, self.temperature = broadcast_all(logits, temperature)
        super().__init__(self.logits.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape)
        new.temperature = self.temperature.expand(batch_shape)
        super(BinaryConcrete, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def probs(self) -> torch.Tensor:
        """q(b = 1) of the Bernoulli it relaxes."""
        return torch.sigmoid(self.logits)

    def relaxed_logits(self, sample_shape=_SCALAR) -> torch.Tensor:
        """(logits + L) / τ: the logit of a sample, with its reparameterised gradient."""
        shape = self._extended_shape(sample_shape)
        tiny = torch.finfo(self.logits.dtype).tiny
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        u = u.clamp(tiny, 1.0 - torch.finfo(self.logits.dtype).eps)
        return (self.logits + u.log() - (-u).log1p()) / self.temperature

    def rsample(self, sample_shape=_SCALAR) -> torch.Tensor:
        return torch.sigmoid(self.relaxed_logits(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The relaxed density (Maddison et al., eq. 24), in the chart of z itself."""
        if self._validate_args:
            self._validate_sample(value)
        tiny = torch.finfo(value.dtype).tiny
        z = value.clamp(tiny, 1.0 - torch.finfo(value.dtype).eps)
        y = z.log() - (-z).log1p()  # logit(z)
        t = self.temperature
        shifted = self.logits - t * y
        return t.log() + shifted - 2 * F.softplus(shifted) - z.log() - (-z).log1p()


class StraightThroughBinaryConcrete(BinaryConcrete):
    """Hard codes forward, the binary Concrete's gradient backward (straight-through
    Gumbel-softmax, Jang et al.): a sample is ``1[logits + L > 0]`` (a Bernoulli(σ(logits))
    draw), and its gradient is that of ``σ((logits + L) / τ)``. ``log_prob`` is the
    Bernoulli's, the distribution of the forward values."""

    support = constraints.boolean

    def rsample(self, sample_shape=_SCALAR) -> torch.Tensor:
        soft = torch.sigmoid(self.relaxed_logits(sample_shape))
        hard = (soft > 0.5).to(soft.dtype)
        return hard + (soft - soft.detach())  # exactly 0 or 1 forward

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -F.binary_cross_entropy_with_logits(
            self.logits, value.expand_as(self.logits), reduction="none"
        )


@register_kl(BinaryConcrete, BinaryConcrete)
def _kl_underlying_bernoullis(q: BinaryConcrete, p: BinaryConcrete) -> torch.Tensor:
    """KL(Bernoulli(σ(q.logits)) ‖ Bernoulli(σ(p.logits))), whatever the temperatures."""
    return bernoulli_kl(q.logits, p.logits)


def bernoulli_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(σ(q_logits)) ‖ Bernoulli(σ(p_logits))), stable at large logits."""
    q1, q0 = F.logsigmoid(q_logits), F.logsigmoid(-q_logits)
    p1, p0 = F.logsigmoid(p_logits), F.logsigmoid(-p_logits)
    return q1.exp() * (q1 - p1) + q0.exp() * (q0 - p0)
