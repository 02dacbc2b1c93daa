"""Bernoulli latents: M binary codes, q(b | x) = Π Bernoulli(σ(logits(x))), p(b) = Bernoulli(½)^M,
the decoder reading the bits; and the estimators of its gradient (``--estimator``).

The family owns how each estimator draws the code the decoder reads:

- ``logitnormal``: the paper's relaxation. y ~ N(μ, σ²) reparameterised, the decoder reads
  z = σ(y / τ), prior LN(0, α) on σ(y) (so LN(0, α/τ²) on z); it stands for b = 1[y > 0],
  q(b = 1 | x) = Φ(μ / σ).
- ``logitnormal-discrete-kl``: the same relaxed codes, with the KL of the bits they stand
  for, KL(Bernoulli(Φ(μ / σ)) ‖ Bernoulli(½)), in place of the Logit-normals' (as Jang et
  al. pair the binary Concrete with the Bernoullis' KL).
- ``concrete``: a binary Concrete at τ (Maddison et al.; Jang et al.), the discrete KL of
  the underlying Bernoullis (Jang et al.'s objective); it stands for Bernoulli(σ(logits)).
- ``straight-through``: hard codes forward, the binary Concrete's gradient backward.
- ``reinforce``, ``nvil``, ``vimco``, ``disarm``: the codes themselves, with an unbiased
  gradient estimator (an ELBO of :mod:`pyro_dvae.inference`).
- ``enum``: the exact ELBO, a sum over all 2^M codes (M ≤ 10).

Whatever the estimator, :meth:`BernoulliFamily.discrete` is the Bernoulli model it stands for,
which evaluation scores (hard codes, the analytic KL to Bernoulli(½)).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ..distributions import (
    BinaryConcrete,
    LogitNormal,
    LogitNormalDiscreteKL,
    StraightThroughBinaryConcrete,
)
from ..errors import ConfigError
from .annealing import (
    ANNEAL_RATE,
    MIN_TEMPERATURE,
    TAU,
    AnnealedTemperature,
    as_tensor_like,
    check_schedule,
)
from .base import (
    ESTIMATOR,
    LatentFamily,
    estimator_name,
    filled,
    loc_scale,
    member_sqrt,
    register_family,
)
from .categorical import ENUM_LIMIT
from .continuous import ALPHA

if TYPE_CHECKING:
    from ..config import FitConfig

#: each estimator of the Bernoulli family → the objective it trains (an ``--elbo``)
ESTIMATOR_ELBOS = {
    "logitnormal": "trace",
    "logitnormal-discrete-kl": "analytic",
    "concrete": "analytic",
    "straight-through": "analytic",
    "reinforce": "tracegraph",
    "nvil": "nvil",
    "vimco": "vimco",
    "disarm": "disarm",
    "enum": "enum",
}
#: the estimators whose decoder reads relaxed codes (biased for the discrete model)
RELAXED = ("logitnormal", "logitnormal-discrete-kl", "concrete", "straight-through")
#: the estimators whose encoder gives y ~ N(μ, σ²) (a head of 2M), standing for b = 1[y > 0]
LOGIT_NORMAL = ("logitnormal", "logitnormal-discrete-kl")


@register_family
class BernoulliFamily(AnnealedTemperature, LatentFamily):
    """``latent_dim`` binary latents and the estimator that trains them (``estimator``)."""

    name = "bernoulli"
    title = "Bernoulli"
    params = (ESTIMATOR, TAU, ANNEAL_RATE, MIN_TEMPERATURE, ALPHA)
    estimators = ESTIMATOR_ELBOS
    slug_params = ("estimator", "elbo")  # the slug names the estimator
    enumerable = True
    groupable = False  # its score-function ELBOs are not per-image particle losses

    def __init__(self, config: FitConfig):
        super().__init__(config)
        self.estimator = config.estimator or _estimator_of(config.elbo)
        self.joint = config.elbo == "enum"
        self.alpha = config.alpha
        self.set_schedule(config)
        self._bits: dict = {}

    @classmethod
    def slug(cls, config):
        return f"{cls.name}-d{config.latent_dim}-{config.estimator or config.elbo}"

    @classmethod
    def label(cls, config):
        return f"Bernoulli {config.latent_dim} ({estimator_name(config)})"

    @classmethod
    def validate_config(cls, config, new=False):
        estimator = config.estimator or _estimator_of(config.elbo)
        if config.elbo == "analytic" and estimator not in RELAXED:
            raise ConfigError(
                "--elbo analytic needs reparameterised samples: give --estimator concrete, "
                "straight-through or logitnormal-discrete-kl (relaxed codes, analytic KL of "
                "the Bernoullis)"
            )
        if new and estimator != "logitnormal" and config.alpha != ALPHA.default:
            raise ConfigError(
                "--alpha is the Logit-normal prior's: use it with --estimator logitnormal"
            )
        check_schedule(
            config, estimator in RELAXED, new, "a relaxation (logitnormal, concrete, ...)"
        )
        if config.elbo == "enum" and 2**config.latent_dim > ENUM_LIMIT:
            raise ConfigError(
                f"--estimator enum sums over all 2^{config.latent_dim} codes, decoding each for "
                f"every image; at most {ENUM_LIMIT} codes fit a step (--latent-dim "
                f"{int(math.log2(ENUM_LIMIT))} or fewer): use another --estimator for this size"
            )

    # ------------------------------------------------------------------ shapes
    @property
    def head_size(self) -> int:
        return 2 * self.latent_dim if self.estimator in LOGIT_NORMAL else self.latent_dim

    @property
    def codes(self) -> int:
        """Joint codes: 2^M."""
        return 2**self.latent_dim

    @property
    def summable(self) -> bool:
        return self.codes <= ENUM_LIMIT

    def bits(self, like: torch.Tensor) -> torch.Tensor:
        """Every joint code's bits, (2^M, M), most significant first, like ``like``."""
        key = (like.device, like.dtype)
        if key not in self._bits:
            m = self.latent_dim
            shifts = torch.arange(m - 1, -1, -1, device=like.device)
            codes = torch.arange(self.codes, device=like.device).unsqueeze(-1)
            self._bits[key] = ((codes >> shifts) & 1).to(like.dtype)
        return self._bits[key]

    # ------------------------------------------------------------------ q and p
    def posterior(self, head):
        tau = self.temperature_tensor(head)
        if self.estimator in LOGIT_NORMAL:
            loc, scale = loc_scale(head)
            return self._logit_normal(loc / tau, scale / tau).to_event(1)
        if self.estimator == "concrete":
            return BinaryConcrete(tau, head).to_event(1)
        if self.estimator == "straight-through":
            return StraightThroughBinaryConcrete(tau, head).to_event(1)
        if self.joint:
            bits, on, off = self.bits(head), F.logsigmoid(head), F.logsigmoid(-head)
            return dist.OneHotCategorical(logits=on @ bits.T + off @ (1 - bits).T)
        return dist.Bernoulli(logits=head).to_event(1)

    def prior(self, like):
        shape = (*like.shape[:-1], self.latent_dim)
        zeros = filled(like, *shape)
        if self.estimator in LOGIT_NORMAL:
            tau = self.temperature_tensor(like)
            scale = filled(like, *shape, value=member_sqrt(self.alpha)) / tau
            return self._logit_normal(zeros, scale).to_event(1)
        if self.estimator in ("concrete", "straight-through"):
            relaxed = (
                BinaryConcrete if self.estimator == "concrete" else StraightThroughBinaryConcrete
            )
            return relaxed(as_tensor_like(like, 1.0), zeros).to_event(1)
        if self.joint:
            return dist.OneHotCategorical(logits=filled(like, *like.shape[:-1], self.codes))
        return dist.Bernoulli(logits=zeros).to_event(1)

    @property
    def _logit_normal(self) -> type[LogitNormal]:
        """The Logit-normal class whose registered KL the estimator trains with."""
        return LogitNormalDiscreteKL if self.estimator == "logitnormal-discrete-kl" else LogitNormal

    def decoder_input(self, z):
        """The bits; in the joint form (``enum``), a joint code's bits (bit vectors, as
        pictures give them, pass as they are)."""
        return z @ self.bits(z) if self.joint and z.shape[-1] == self.codes else z

    def traversal(self, unit, steps, like):
        """Relaxed codes sweep the unit over (0, 1); hard codes (straight-through's too) set it to
        0, then 1; every other unit at ½ (the prior's mean)."""
        if self.relaxed and self.estimator != "straight-through":  # ST decodes hard codes
            return super().traversal(unit, steps, like)
        z = torch.full((2, self.latent_dim), 0.5, dtype=like.dtype, device=like.device)
        z[:, unit] = torch.tensor([0.0, 1.0], dtype=like.dtype, device=like.device)
        return z, ["b=0", "b=1"]

    def traversal_axis(self):
        if self.relaxed and self.estimator != "straight-through":
            return super().traversal_axis()
        return "the swept bit b"

    # ------------------------------------------------------------------ the discrete model
    def discrete(self) -> BitsFamily:
        return BitsFamily(self.latent_dim, probit=self.estimator in LOGIT_NORMAL)

    @property
    def relaxed(self) -> bool:
        return self.estimator in RELAXED

    def code_mean(self, q, num_samples: int = 200):
        if self.joint:
            return q.probs @ self.bits(q.probs)
        if isinstance(q.base_dist, dist.Bernoulli):
            return q.base_dist.probs
        return super().code_mean(q, num_samples)

    def describe(self) -> str:
        how = estimator_name(self.config)
        if self.relaxed:
            how += f", tau={self.initial_temperature:g}"
            how += f"->{self.min_temperature:g}" if self.anneal_rate else ""
        if self.estimator == "logitnormal":
            how += f", alpha={self.alpha:g}"
        return f"bernoulli({self.latent_dim}, {how})"


def _estimator_of(elbo: str) -> str:
    """The estimator an ``--elbo`` alone stands for on discrete codes."""
    return {"tracegraph": "reinforce", "enum": "enum"}.get(elbo, "score-function")


class BitsFamily(LatentFamily):
    """The Bernoulli model a relaxed binary latent stands for, for evaluation (not registered).

    The same encoder head and decoder input: b ~ Bernoulli(q) with q = σ(logits), or, behind a
    Logit-normal head (μ, log σ²), q = P(y > 0) = Φ(μ / σ); p(b) = Bernoulli(½)^M.
    """

    name = "bits"
    title = "Bernoulli"

    def __init__(self, latent_dim: int, probit: bool, joint: bool = False):
        self.latent_dim = latent_dim
        self.probit = probit
        self.joint = joint  # one site over the 2^M joint codes, for TraceEnum_ELBO
        self.enumerable = joint
        self._bits: dict = {}

    codes = BernoulliFamily.codes
    summable = BernoulliFamily.summable
    bits = BernoulliFamily.bits

    @property
    def head_size(self) -> int:
        return 2 * self.latent_dim if self.probit else self.latent_dim

    def logits(self, head: torch.Tensor) -> torch.Tensor:
        """logit q(b = 1 | x); for a Logit-normal head, log Φ(r) − log Φ(−r) at r = μ / σ."""
        if not self.probit:
            return head
        loc, scale = loc_scale(head)
        r = loc / scale
        return torch.special.log_ndtr(r) - torch.special.log_ndtr(-r)

    def posterior(self, head):
        logits = self.logits(head)
        if self.joint:
            bits, on, off = self.bits(head), F.logsigmoid(logits), F.logsigmoid(-logits)
            return dist.OneHotCategorical(logits=on @ bits.T + off @ (1 - bits).T)
        return dist.Bernoulli(logits=logits).to_event(1)

    def prior(self, like):
        if self.joint:
            return dist.OneHotCategorical(logits=filled(like, *like.shape[:-1], self.codes))
        return dist.Bernoulli(logits=filled(like, *like.shape[:-1], self.latent_dim)).to_event(1)

    def decoder_input(self, z):
        return z @ self.bits(z) if self.joint and z.shape[-1] == self.codes else z

    def code_mean(self, q, num_samples: int = 200):
        return q.probs @ self.bits(q.probs) if self.joint else q.base_dist.probs

    def describe(self) -> str:
        source = "1[y > 0] of the Logit-normal" if self.probit else "hard codes"
        return f"bernoulli({self.latent_dim}, {source})"
