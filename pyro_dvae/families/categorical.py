"""Categorical latents: one-hot codes, and the estimators of their gradient (``--estimator``):
exact enumeration (``enum``: Pyro's ``TraceEnum_ELBO`` sums over every code), score-function
gradients (``reinforce``: ``TraceGraph_ELBO`` with a baseline; ``nvil``; ``vimco``; with no
estimator, ``--elbo trace`` is ``Trace_ELBO``'s, without a baseline) and the relaxations
(``concrete``: Jang et al.'s Gumbel-softmax with the categoricals' KL; ``straight-through``:
one-hot codes forward, its gradient backward). The paper's Concrete VAE stands in for this
model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch

from ..distributions import ExpRelaxedCategoricalDiscreteKL, StraightThroughCategorical
from ..errors import ConfigError
from .annealing import (
    ANNEAL_RATE,
    MIN_TEMPERATURE,
    TAU,
    AnnealedTemperature,
    as_tensor_like,
    check_schedule,
)
from .base import ESTIMATOR, LatentFamily, estimator_name, filled, register_family
from .concrete import CATEGORIES, CategoricalShape, OneHotFamily

if TYPE_CHECKING:
    from ..config import FitConfig

#: the estimators whose decoder reads relaxed codes (biased for the categorical model)
RELAXED = ("concrete", "straight-through")
#: the most codes ``--elbo enum`` sums over: every step decodes each code for every image
ENUM_LIMIT = 1024


@register_family
class CategoricalFamily(CategoricalShape, AnnealedTemperature, LatentFamily):
    """``latent_dim`` categorical variables of ``categories`` classes: q(c | x) a product of
    categoricals with the encoder's logits, p(c) uniform, the decoder fed the one-hot codes.

    Under ``--elbo enum`` the M variables are one site over their K^M joint codes (Pyro
    enumerates one site's support, not a product of variables inside one event), with q the
    same product distribution written as joint logits; otherwise ``z`` is M one-hot vectors.
    """

    name = "categorical"
    title = "Categorical"
    params = (CATEGORIES, ESTIMATOR, TAU, ANNEAL_RATE, MIN_TEMPERATURE)
    estimators = {
        "concrete": "analytic",
        "straight-through": "analytic",
        "reinforce": "tracegraph",
        "nvil": "nvil",
        "vimco": "vimco",
        "enum": "enum",
    }
    enumerable = True
    groupable = False  # its exact and score-function ELBOs are not per-image particle losses

    def __init__(self, config: FitConfig):
        super().__init__(config)
        self.categories = config.categories
        self.joint = config.elbo == "enum"
        self.estimator = config.estimator
        self.set_schedule(config)
        self._tables: dict = {}

    @classmethod
    def slug(cls, config):
        """``categorical-20x10``, and the estimator if one is named: ``categorical-20x10-nvil``."""
        base = super().slug(config)
        return f"{base}-{config.estimator}" if config.estimator else base

    @classmethod
    def slug_fields(cls, config):
        named = {"estimator", "elbo"} if config.estimator else set()
        return super().slug_fields(config) | named

    @classmethod
    def validate_config(cls, config, new=False):
        relaxed = config.estimator in RELAXED
        if config.elbo == "analytic" and not relaxed:
            raise ConfigError(
                "--elbo analytic (TraceMeanField_ELBO) needs reparameterised samples; a "
                "categorical latent trains with an --estimator (concrete and straight-through "
                "relax it), or --elbo enum, tracegraph or trace"
            )
        check_schedule(config, relaxed, new, "concrete or straight-through")
        if config.elbo == "enum" and config.num_particles != 1:
            raise ConfigError("--elbo enum is exact: it takes no --num-particles")
        codes = config.categories**config.latent_dim if config.elbo == "enum" else 0
        if codes > ENUM_LIMIT:
            raise ConfigError(
                f"--elbo enum sums over all {config.categories}^{config.latent_dim} codes of the "
                f"latent, decoding each for every image; at most {ENUM_LIMIT} codes fit a step: "
                "use --elbo tracegraph (score-function gradients) for this size"
            )

    @property
    def codes(self) -> int:
        """Joint codes: K^M."""
        return self.categories**self.latent_dim

    @property
    def summable(self) -> bool:
        """Whether its ELBO can be summed over every code (at most ``ENUM_LIMIT``)."""
        return self.codes <= ENUM_LIMIT

    def _table(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each joint code's digits (K^M, M) and its one-hot codes, flattened (K^M, M·K)."""
        key = (like.device, like.dtype)
        if key not in self._tables:
            m, k = self.latent_dim, self.categories
            powers = k ** torch.arange(m - 1, -1, -1, device=like.device)
            digits = torch.arange(self.codes, device=like.device).unsqueeze(-1) // powers % k
            onehot = torch.nn.functional.one_hot(digits, k).to(like.dtype).flatten(-2)
            self._tables[key] = (digits, onehot)
        return self._tables[key]

    @property
    def relaxed(self) -> bool:
        return self.estimator in RELAXED

    def state(self):
        return super().state() if self.relaxed else {}

    def discrete(self) -> OneHotFamily:
        """The categorical model with one-hot codes (itself, when it is not relaxed)."""
        return OneHotFamily(self)

    def posterior(self, head):
        logits = head.reshape(head.shape[0], self.latent_dim, self.categories)
        if self.relaxed:
            tau = self.temperature_tensor(head)
            return self._relaxation(tau, logits).to_event(1)
        if not self.joint:
            return dist.OneHotCategorical(logits=logits).to_event(1)
        digits, _ = self._table(head)
        per_variable = logits.log_softmax(-1)  # (B, M, K) -> (B, K^M): Σ_m log q_m(digit_m)
        variables = torch.arange(self.latent_dim, device=head.device)
        joint = per_variable[:, variables, digits].sum(-1)
        return dist.OneHotCategorical(logits=joint)

    @property
    def _relaxation(self) -> type[ExpRelaxedCategoricalDiscreteKL]:
        st = self.estimator == "straight-through"
        return StraightThroughCategorical if st else ExpRelaxedCategoricalDiscreteKL

    def prior(self, like):
        if self.relaxed:  # only its logits matter: the KL is the categoricals'
            logits = filled(like, like.shape[0], self.latent_dim, self.categories)
            return self._relaxation(as_tensor_like(like, 1.0), logits=logits).to_event(1)
        if not self.joint:
            logits = filled(like, like.shape[0], self.latent_dim, self.categories)
            return dist.OneHotCategorical(logits=logits).to_event(1)
        return dist.OneHotCategorical(logits=filled(like, like.shape[0], self.codes))

    def decoder_input(self, z):
        if self.estimator == "concrete":  # ExpConcrete values are in log space
            return z.exp().flatten(-2)
        return z @ self._table(z)[1] if self.joint else z.flatten(-2)

    def code_mean(self, q, num_samples: int = 200):
        """Exact: the decoder input is linear in the one-hot code, so E_q[code] is q's probs
        (a relaxation: its Monte Carlo mean)."""
        if self.relaxed:
            return self.decoder_input(q.sample((num_samples,))).mean(0)
        probs = q.probs if self.joint else q.base_dist.probs
        return self.decoder_input(probs)

    def traversal(self, unit, steps, like):
        """As the Concrete's: each category of variable ``unit`` in turn, every other
        variable at the centre of its simplex (probabilities 1/K, as a mean code)."""
        m, k = self.latent_dim, self.categories
        per_variable = torch.full((k, m, k), 1.0 / k, dtype=like.dtype, device=like.device)
        per_variable[:, unit, :] = torch.eye(k, dtype=like.dtype, device=like.device)
        if not self.joint:
            return per_variable, [f"k={c + 1}" for c in range(k)]
        digits, _ = self._table(like)  # the same mean code as a distribution over joint codes
        chosen = digits[:, unit] == torch.arange(k, device=like.device).unsqueeze(-1)
        return chosen.to(like.dtype) / k ** (m - 1), [f"k={c + 1}" for c in range(k)]

    def describe(self) -> str:
        how = ", enumerated" if self.joint else ""
        if not self.joint and (self.estimator or self.config.elbo in ("trace", "tracegraph")):
            how = f", {estimator_name(self.config)}"
        if self.relaxed:
            how += f", tau={self.initial_temperature:g}"
            how += f"->{self.min_temperature:g}" if self.anneal_rate else ""
        return f"categorical({self.latent_dim}x{self.categories}{how})"
