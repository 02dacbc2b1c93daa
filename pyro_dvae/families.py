"""Latent families: what the encoder emits, the posterior, the prior, and the decoder's input.

A family owns everything about itself: its name, its configuration fields (``params``:
type, default, check, help, run-name part, whether a sweep varies it), its run-name
slug and its label in tables and figures, its per-step state (an annealed
temperature), the training variants it supports and its discrete twin. Generic code
asks the family; adding one is adding a class decorated with :func:`register_family`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import pyro.distributions as dist
import torch

from .distributions import ExpRelaxedCategorical, ExpRelaxedCategoricalDiscreteKL, LogitNormal
from .errors import ConfigError
from .params import Param

if TYPE_CHECKING:
    from .config import FitConfig

FAMILIES: dict[str, type[LatentFamily]] = {}


def register_family(cls: type[LatentFamily]) -> type[LatentFamily]:
    FAMILIES[cls.name] = cls
    return cls


def make_family(config: FitConfig) -> LatentFamily:
    return FAMILIES[config.family](config)


class LatentFamily:
    """One latent site ``z``; subclasses set ``name`` and the four methods."""

    name: ClassVar[str]
    #: what tables and figures call it
    title: ClassVar[str] = ""
    #: the configuration fields this family takes (beyond the common ones)
    params: ClassVar[tuple[Param, ...]] = ()
    #: of those, the ones always in a run's name (the others show when off their default)
    slug_params: ClassVar[tuple[str, ...]] = ()
    #: other training objectives of the same model: name → config changes
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    #: event dimensions of ``z`` (1 for a vector, 2 for M categorical variables)
    event_dim: ClassVar[int] = 1

    def __init__(self, config: FitConfig):
        self.config = config
        self.latent_dim = config.latent_dim

    # ------------------------------------------------------------------ identity
    @classmethod
    def slug(cls, config: FitConfig) -> str:
        """The start of a run's folder name: ``logitnormal-d20-a1.78``."""
        by_name = {p.name: p for p in cls.params}
        parts = "".join(by_name[n].name_part(getattr(config, n)) for n in cls.slug_params)
        return f"{cls.name}-d{config.latent_dim}{parts}"

    @classmethod
    def label(cls, config: FitConfig) -> str:
        """A run's family in a table or a figure legend: ``Logit-normal α=1.78``."""
        return cls.title or cls.name

    @classmethod
    def validate_config(cls, config: FitConfig) -> None:
        """Checks across fields (each field's own check has run); raise ConfigError."""

    # ------------------------------------------------------------------ per-step state
    def state(self) -> dict[str, float]:
        """What changes during training besides the weights (saved in checkpoints, logged)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint."""

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


#: Concrete objectives: relaxed densities (Maddison et al.) or discrete KL (Jang et al.)
KL_OBJECTIVES = {
    "relaxed": "KL of the relaxed ExpConcrete densities, by Monte Carlo",
    "discrete": "KL of the underlying categoricals, analytic",
}

CATEGORIES = Param(
    "categories", int, 10, "Concrete: classes per categorical variable.", low=2, axis=True
)


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
    title = "Gaussian"

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
    params = (
        Param(
            "alpha",
            float,
            1.0,
            "Logit-normal prior variance: p(z) = LN(0, alpha I).",
            positive=True,
            short="a",
            axis=True,
        ),
    )
    slug_params = ("alpha",)

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
        loc, scale = _loc_scale(head)
        return LogitNormal(loc, scale).to_event(1)

    def prior(self, like):
        shape = (like.shape[0], self.latent_dim)
        scale = _filled(like, *shape, value=math.sqrt(self.alpha))
        return LogitNormal(_filled(like, *shape), scale).to_event(1)

    def describe(self) -> str:
        return f"logitnormal(alpha={self.alpha:g})"


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
        shape = (like.shape[0], self.latent_dim)
        b0 = _filled(like, *shape, value=self.beta_prior)
        return dist.Beta(b0, b0).to_event(1)

    def describe(self) -> str:
        return f"beta(b0={self.beta_prior:g})"


#: smallest posterior concentration: keeps Beta samples off exact 0 and 1 in float32
BETA_FLOOR = 1e-2


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
    params = (
        CATEGORIES,
        Param(
            "temperature",
            float,
            0.5,
            "Concrete: posterior temperature (initial value when annealed).",
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
        Param(
            "anneal_rate",
            float,
            0.0,
            "Concrete: temperature = max(min, initial * exp(-rate * step)); 0 keeps it fixed.",
            low=0.0,
            short="anneal",
        ),
        Param(
            "min_temperature",
            float,
            0.5,
            "Concrete: floor of the annealed temperature.",
            positive=True,
            short="tmin",
        ),
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
    slug_params = ("categories",)

    @classmethod
    def slug(cls, config):
        return f"{cls.name}-{config.latent_dim}x{config.categories}"

    @classmethod
    def label(cls, config):
        return f"Concrete {config.latent_dim}×{config.categories}"

    @classmethod
    def validate_config(cls, config):
        if config.kl == "discrete" and config.elbo != "analytic":
            raise ConfigError(
                "--kl discrete is the analytic KL of the underlying categoricals; "
                "use it with --elbo analytic"
            )

    def state(self):
        return {"temperature": self.temperature}

    def load_state(self, state):
        temperature = float(state.get("temperature", math.nan))
        if math.isfinite(temperature):
            self.temperature = temperature

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
