"""Relaxed categorical latents (ExpConcrete), and the one-hot model they stand for."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch

from ..distributions import ExpRelaxedCategorical, ExpRelaxedCategoricalDiscreteKL
from ..errors import ConfigError
from ..params import Param
from .annealing import ANNEAL_RATE, MIN_TEMPERATURE, AnnealedTemperature, as_tensor_like
from .base import LatentFamily, filled, register_family

if TYPE_CHECKING:
    from ..config import FitConfig

#: Concrete objectives: relaxed densities (Maddison et al.) or discrete KL (Jang et al.)
KL_OBJECTIVES = {
    "relaxed": "KL of the relaxed ExpConcrete densities, by Monte Carlo",
    "discrete": "KL of the underlying categoricals, analytic",
}

CATEGORIES = Param(
    "categories", int, 10, "Concrete and categorical: classes per variable.", low=2, axis=True
)


class CategoricalShape:
    """What families of ``latent_dim`` variables of ``categories`` classes share: their slug
    and label (``concrete-20x10``, ``Concrete 20×10``), their encoder head and decoder input
    (M·K), and a traversal's unit (a variable) with its activity."""

    name: str
    title: str
    latent_dim: int
    categories: int
    slug_params = ("categories",)
    unit_word = "variable"

    def traversal_axis(self) -> str:
        return "the swept variable's category (one-hot)"

    code_is_z = False

    @classmethod
    def slug(cls, config):
        return f"{cls.name}-{config.latent_dim}x{config.categories}"

    @classmethod
    def label(cls, config):
        return f"{cls.title} {config.latent_dim}×{config.categories}"

    @property
    def head_size(self) -> int:
        return self.latent_dim * self.categories

    @property
    def code_size(self) -> int:
        return self.latent_dim * self.categories

    def unit_activity(self, codes):
        """Per variable: the variances of its K mean category probabilities, summed."""
        per_category = codes.double().reshape(len(codes), self.latent_dim, self.categories)
        return per_category.var(0).sum(-1)


@register_family
class ConcreteFamily(CategoricalShape, AnnealedTemperature, LatentFamily):
    """``latent_dim`` ExpConcrete variables of ``categories`` classes each.

    The posterior has learned logits and temperature ``τ_q`` (optionally annealed
    per step as ``max(min_temperature, temperature · exp(-anneal_rate · step))``);
    the prior is uniform with temperature ``τ_p``. The decoder receives ``exp(z)``.
    """

    name = "concrete"
    title = "Concrete"
    event_dim = 2
    params = (
        CATEGORIES,
        Param(
            "temperature",
            float,
            0.5,
            "Concrete: the posterior's temperature tau_q (initial value when annealed); the "
            "prior's is --prior-temperature. Not --tau: that is the bernoulli and categorical "
            "families' relaxation temperature (its own default).",
            positive=True,
            short="tq",
        ),
        Param(
            "prior_temperature",
            float,
            1.0,
            "Concrete: prior temperature.",
            positive=True,
            short="tp",
        ),
        ANNEAL_RATE,
        MIN_TEMPERATURE,
        Param(
            "kl",
            str,
            "relaxed",
            "Concrete: relaxed (Maddison et al., Monte Carlo) or "
            "discrete (Jang et al.: analytic KL of the underlying categoricals; needs "
            "--elbo analytic).",
            choices=lambda: KL_OBJECTIVES,
            short="kl-",
        ),
    )
    variants = {"discrete-kl": {"elbo": "analytic", "kl": "discrete"}}
    member_params = ("temperature", "prior_temperature", "anneal_rate", "min_temperature")

    @classmethod
    def validate_config(cls, config, new=False):
        if new and config.anneal_rate and config.temperature < config.min_temperature:
            raise ConfigError(
                f"--temperature {config.temperature:g} is below --min-temperature "
                f"{config.min_temperature:g}: annealing would hold it at the floor from step 0"
            )
        if config.kl == "discrete" and config.elbo != "analytic":
            raise ConfigError(
                "--kl discrete is the analytic KL of the underlying categoricals; "
                "use it with --elbo analytic"
            )

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

    def posterior(self, head):
        logits = head.reshape(*head.shape[:-1], self.latent_dim, self.categories)
        return self._dist(self.temperature_tensor(head), logits=logits).to_event(1)

    def prior(self, like):
        logits = filled(like, *like.shape[:-1], self.latent_dim, self.categories)
        return self._dist(as_tensor_like(like, self.prior_temperature), logits=logits).to_event(1)

    def decoder_input(self, z):
        return z.exp().flatten(-2)

    def traversal(self, unit, steps, like):
        """Variable ``unit`` set to each of its categories in turn (one-hot, so ``steps`` is
        not used), every other variable at the centre of its simplex (all categories 1/K)."""
        k = self.categories
        z = torch.full((k, self.latent_dim, k), -math.log(k), dtype=like.dtype, device=like.device)
        z[:, unit, :] = torch.eye(k, dtype=like.dtype, device=like.device).log()
        return z, [f"k={c + 1}" for c in range(k)]

    def describe(self) -> str:
        return (
            f"concrete({self.latent_dim}x{self.categories}, "
            f"tau_q={self.initial_temperature:g}"
            + (f"->{self.min_temperature:g}" if self.anneal_rate else "")
            + f", tau_p={self.prior_temperature:g}"
            + (", discrete KL)" if self.kl == "discrete" else ")")
        )


class OneHotFamily(CategoricalShape, LatentFamily):
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

    def posterior(self, head):
        logits = head.reshape(*head.shape[:-1], self.latent_dim, self.categories)
        return dist.OneHotCategorical(logits=logits).to_event(1)

    def prior(self, like):
        logits = like.new_zeros(like.shape[0], self.latent_dim, self.categories)
        return dist.OneHotCategorical(logits=logits).to_event(1)

    def decoder_input(self, z):
        return z.flatten(-2)

    def describe(self) -> str:
        return self._relaxed[:-1] + ", one-hot)"
