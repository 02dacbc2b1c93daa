"""Latent families: what the encoder emits, the posterior, the prior, and the decoder's input.

Adding a family is adding a class decorated with :func:`register_family`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pyro.distributions as dist
import torch

from .config import FitConfig
from .distributions import ExpRelaxedCategorical, ExpRelaxedCategoricalDiscreteKL, LogitNormal

FAMILIES: dict[str, type[LatentFamily]] = {}


def register_family(cls: type[LatentFamily]) -> type[LatentFamily]:
    FAMILIES[cls.name] = cls
    return cls


def make_family(config: FitConfig) -> LatentFamily:
    return FAMILIES[config.family](config)


class LatentFamily:
    """One latent site ``z``; subclasses set ``name`` and the four methods."""

    name: ClassVar[str]
    #: event dimensions of ``z`` (1 for a vector, 2 for M categorical variables)
    event_dim: ClassVar[int] = 1

    def __init__(self, config: FitConfig):
        self.latent_dim = config.latent_dim

    @property
    def head_size(self) -> int:
        """Number of encoder outputs the posterior needs."""
        raise NotImplementedError

    @property
    def code_size(self) -> int:
        """Width of the decoder's input."""
        return self.latent_dim

    def posterior(self, head: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder output ``head`` of shape (batch, head_size)."""
        raise NotImplementedError

    def prior(self, like: torch.Tensor) -> dist.TorchDistribution:
        """p(z) for a batch like ``like`` (same batch size, device and dtype)."""
        raise NotImplementedError

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def describe(self) -> str:
        return self.name

    def discrete(self) -> LatentFamily | None:
        """The discrete model a relaxed family stands for (scored at evaluation), if any."""
        return None

    def code_mean(self, q: dist.Distribution, num_samples: int = 200) -> torch.Tensor:
        """E_q[decoder_input(z)] per image: exact where ``q.mean`` is, else Monte Carlo.

        The Monte Carlo mean of a code in [0, 1] has variance at most 0.25 / num_samples
        (0.00125 at 200), well under the active-unit threshold of 0.01.
        """
        if self.code_is_z:
            try:
                return q.mean
            except NotImplementedError:
                pass
        return self.decoder_input(q.sample((num_samples,))).mean(0)

    #: whether the decoder receives z itself (so E[code] is E[z])
    code_is_z: ClassVar[bool] = True

    # temperature hooks; only relaxed families use them
    def set_step(self, step: int) -> None:
        """Called before every training step with the global step count."""

    def step_inputs(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Values that may change per step, as tensors like ``like``, for a compiled ELBO."""
        return ()

    def use_step_inputs(self, inputs: tuple[torch.Tensor, ...] | None) -> None:
        """Read those values from ``inputs`` (a compiled graph's inputs); None: from self."""


def _filled(like: torch.Tensor, *shape: int, value: float = 0.0) -> torch.Tensor:
    """A constant on ``like``'s device and dtype; a traced graph folds it and what follows."""
    return torch.full(shape, value, dtype=like.dtype, device=like.device)


def _loc_scale(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loc, log_var = head.chunk(2, dim=-1)
    return loc, torch.exp(0.5 * log_var)


@register_family
class GaussianFamily(LatentFamily):
    """q = N(μ, σ²I), p = N(0, I) (Kingma & Welling)."""

    name = "gaussian"

    @property
    def head_size(self) -> int:
        return 2 * self.latent_dim

    def posterior(self, head):
        loc, scale = _loc_scale(head)
        return dist.Normal(loc, scale).to_event(1)

    def prior(self, like):
        shape = (like.shape[0], self.latent_dim)
        return dist.Normal(_filled(like, *shape), _filled(like, *shape, value=1.0)).to_event(1)


@register_family
class LogitNormalFamily(LatentFamily):
    """q = LN(μ, σ²I), p = LN(0, αI) with α the prior variance."""

    name = "logitnormal"

    def __init__(self, config: FitConfig):
        super().__init__(config)
        self.alpha = config.alpha

    @property
    def head_size(self) -> int:
        return 2 * self.latent_dim

    def posterior(self, head):
        loc, scale = _loc_scale(head)
        return LogitNormal(loc, scale).to_event(1)

    def prior(self, like):
        shape = (like.shape[0], self.latent_dim)
        scale = _filled(like, *shape, value=math.sqrt(self.alpha))
        return LogitNormal(_filled(like, *shape), scale).to_event(1)

    def describe(self) -> str:
        return f"logitnormal(alpha={self.alpha:g})"


@register_family
class ConcreteFamily(LatentFamily):
    """``latent_dim`` ExpConcrete variables of ``categories`` classes each.

    The posterior has learned logits and temperature ``τ_q`` (optionally annealed
    per step as ``max(min_temperature, temperature · exp(-anneal_rate · step))``);
    the prior is uniform with temperature ``τ_p``. The decoder receives ``exp(z)``.
    """

    name = "concrete"
    event_dim = 2
    _temperature_input: torch.Tensor | None = None

    def __init__(self, config: FitConfig):
        super().__init__(config)
        self.categories = config.categories
        self.initial_temperature = config.temperature
        self.prior_temperature = config.prior_temperature
        self.anneal_rate = config.anneal_rate
        self.min_temperature = config.min_temperature
        self.temperature = self.temperature_at(0)
        self.kl = config.kl

    @property
    def _dist(self) -> type[ExpRelaxedCategorical]:
        """The ExpConcrete class whose registered KL is the one ``kl`` asks for."""
        return ExpRelaxedCategoricalDiscreteKL if self.kl == "discrete" else ExpRelaxedCategorical

    def discrete(self) -> OneHotFamily:
        """This family's zero-temperature limit: the categorical VAE the relaxation stands for."""
        return OneHotFamily(self)

    def temperature_at(self, step: int) -> float:
        if self.anneal_rate == 0.0:
            return self.initial_temperature
        decayed = self.initial_temperature * math.exp(-self.anneal_rate * step)
        return max(self.min_temperature, decayed)

    def set_step(self, step: int) -> None:
        self.temperature = self.temperature_at(step)

    def step_inputs(self, like):
        return (like.new_tensor(self.temperature),)

    def use_step_inputs(self, inputs):
        self._temperature_input = inputs[0] if inputs else None

    def _temperature(self, like: torch.Tensor) -> torch.Tensor:
        if self._temperature_input is not None:  # inside a compiled step: an input
            return self._temperature_input
        return like.new_tensor(self.temperature)

    @property
    def head_size(self) -> int:
        return self.latent_dim * self.categories

    @property
    def code_size(self) -> int:
        return self.latent_dim * self.categories

    def posterior(self, head):
        logits = head.reshape(head.shape[0], self.latent_dim, self.categories)
        return self._dist(self._temperature(head), logits=logits).to_event(1)

    def prior(self, like):
        logits = _filled(like, like.shape[0], self.latent_dim, self.categories)
        return self._dist(_filled(like, value=self.prior_temperature), logits=logits).to_event(1)

    code_is_z = False

    def decoder_input(self, z):
        return z.exp().flatten(-2)

    def describe(self) -> str:
        return (
            f"concrete({self.latent_dim}x{self.categories}, "
            f"tau_q={self.initial_temperature:g}"
            + (f"->{self.min_temperature:g}" if self.anneal_rate else "")
            + f", tau_p={self.prior_temperature:g}"
            + (", discrete KL)" if self.kl == "discrete" else ")")
        )


class OneHotFamily(LatentFamily):
    """The categorical VAE behind a Concrete family, for evaluation (not registered: no rsample).

    The same encoder head and decoder input: z is one-hot, drawn from the encoder's
    categoricals; the prior is uniform; the decoder gets the one-hot code, so
    E[code] is q's class probabilities, exactly.
    """

    name = "one-hot"
    event_dim = 2

    def __init__(self, relaxed: ConcreteFamily):
        self.latent_dim, self.categories = relaxed.latent_dim, relaxed.categories
        self._relaxed = relaxed.describe()

    @property
    def head_size(self) -> int:
        return self.latent_dim * self.categories

    code_size = head_size

    def posterior(self, head):
        logits = head.reshape(head.shape[0], self.latent_dim, self.categories)
        return dist.OneHotCategorical(logits=logits).to_event(1)

    def prior(self, like):
        logits = like.new_zeros(like.shape[0], self.latent_dim, self.categories)
        return dist.OneHotCategorical(logits=logits).to_event(1)

    def decoder_input(self, z):
        return z.flatten(-2)

    def describe(self) -> str:
        return self._relaxed[:-1] + ", one-hot)"
