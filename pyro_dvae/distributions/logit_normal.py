"""The Logit-normal distribution: a Normal pushed through the sigmoid."""

from __future__ import annotations

import numpy as np
import torch
from pyro.distributions import Normal, TransformedDistribution
from pyro.distributions.kl import register_kl
from torch.distributions import constraints
from torch.distributions.constraint_registry import biject_to, transform_to
from torch.distributions.kl import kl_divergence
from torch.distributions.transforms import SigmoidTransform

from .binary_concrete import bernoulli_kl
from .sigmoid_normal import sigmoid_log_jacobian, sigmoid_mean, sigmoid_variance


class _OpenUnitInterval(constraints.Constraint):
    """(0, 1) without its ends, where a Logit-normal's density is positive."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value > 0) & (value < 1)

    def __repr__(self) -> str:
        return "OpenUnitInterval()"


open_unit_interval = _OpenUnitInterval()
biject_to.register(_OpenUnitInterval)(lambda constraint: SigmoidTransform())
transform_to.register(_OpenUnitInterval)(lambda constraint: SigmoidTransform())


class _VersionedSigmoid(SigmoidTransform):
    """A sigmoid with a one-entry cache that notices in-place changes of its output.

    The cache is why one sigmoid is shared: a sample drawn by any Logit-normal
    remembers its pre-image y, so scoring that same tensor under another one (the
    prior, in a Monte Carlo KL) reuses the exact y instead of recomputing logit(z),
    which loses precision where float32 z is close to 1. A sample changed in place
    afterwards (its version counter moved) is recomputed, not served from the cache.
    """

    def __init__(self):
        super().__init__(cache_size=1)
        self._y_version = -1

    def __call__(self, x):
        y = super().__call__(x)
        self._y_version = y._version
        return y

    def _inv_call(self, y):
        x_old, y_old = self._cached_x_y
        if y is y_old and y._version == self._y_version:
            return x_old
        x = self._inverse(y)
        self._cached_x_y, self._y_version = (x, y), y._version
        return x

    def with_cache(self, cache_size=1):
        return self if cache_size == 1 else SigmoidTransform(cache_size=cache_size)


_SIGMOID = _VersionedSigmoid()

_LOG_SQRT_2PI = 0.5 * float(np.log(2 * np.pi))


class SigmoidMoments:
    """Mean, variance and entropy of z = sigmoid(y), none in closed form: per coordinate,
    by quadrature over the marginal Normal of y_i that ``_marginal()`` gives (loc, scale)."""

    def _marginal(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def mean(self) -> torch.Tensor:
        return sigmoid_mean(*self._marginal())

    @property
    def variance(self) -> torch.Tensor:
        """Per coordinate (for a multivariate z, the marginal variances)."""
        return sigmoid_variance(*self._marginal())

    def entropy(self) -> torch.Tensor:
        """H(z) = H(y) + Σ_i E[log z_i(1 − z_i)] (the sigmoid's log-Jacobian)."""
        jacobian = sigmoid_log_jacobian(*self._marginal())
        event_dims = tuple(range(-len(self.event_shape), 0))
        return self.base_dist.entropy() + (jacobian.sum(event_dims) if event_dims else jacobian)


class LogitNormal(SigmoidMoments, TransformedDistribution):
    r"""``z = sigmoid(y)`` with ``y ~ Normal(loc, scale)``.

    ``loc`` and ``scale`` (positive) are the mean and standard deviation of ``y = logit z``,
    tensors (or floats) that broadcast to the batch shape; the event shape is ``()``, so a
    latent vector is ``LogitNormal(loc, scale).to_event(1)``. ``validate_args``: check
    arguments and values as torch distributions do (``None``: the global default, which
    ``pyro.enable_validation`` sets).

    Its density is ``Normal(logit z; loc, scale) / (z (1 - z))``. Samples are
    clipped by the transform to ``[tiny, 1 - eps]``, so they stay strictly
    inside (0, 1) in float32.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = open_unit_interval
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        base_dist = Normal(loc, scale, validate_args=validate_args)
        super().__init__(base_dist, _SIGMOID, validate_args=validate_args)

    def __reduce__(self):
        """Pickle and copy by parameters: the shared sigmoid's cache (the last sample any
        instance drew, perhaps with its autograd graph) is not part of a distribution."""
        return _rebuild, (type(self), self.base_dist.loc, self.base_dist.scale, self._validate_args)

    def expand(self, batch_shape, _instance=None):
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self  # distributions are immutable; plates expand to the same shape every step
        new = self._get_checked_instance(LogitNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log N(y; loc, scale) - log z - log(1 - z)`` with ``y = logit(z)``."""
        if self._validate_args:
            self._validate_sample(value)
        y = self.transforms[0].inv(value)  # the exact pre-image when ``value`` was sampled here
        loc, scale = self.base_dist.loc, self.base_dist.scale
        u = (y - loc) / scale
        # -log z - log(1 - z) = -log sigmoid(y) - log sigmoid(-y) = softplus(-y) + softplus(y);
        # written out (not base_dist.log_prob) to keep the compiled step's graph short
        softplus = torch.nn.functional.softplus
        log_normal = -0.5 * u.square() - (scale.log() + _LOG_SQRT_2PI)
        return log_normal + softplus(-y) + softplus(y)

    def _marginal(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base_dist.loc, self.base_dist.scale

    @property
    def loc(self) -> torch.Tensor:
        """The mean of ``y = logit z``."""
        return self.base_dist.loc

    @property
    def scale(self) -> torch.Tensor:
        """The standard deviation of ``y = logit z``."""
        return self.base_dist.scale


def _rebuild(cls, *args):
    return cls(*args)


@register_kl(LogitNormal, LogitNormal)
def _kl_logitnormal_logitnormal(p: LogitNormal, q: LogitNormal) -> torch.Tensor:
    # KL is invariant under the shared bijection, so it is the KL of the bases.
    return kl_divergence(p.base_dist, q.base_dist)


class LogitNormalDiscreteKL(LogitNormal):
    """A :class:`LogitNormal` whose KL to another is that of the bits it stands for,
    ``b = 1[y > 0]``: KL(Bernoulli(Φ(μ_q / σ_q)) ‖ Bernoulli(Φ(μ_p / σ_p))), not the
    Logit-normals' KL.

    Samples and densities are the Logit-normal's; only ``kl_divergence`` differs, so
    ``TraceMeanField_ELBO`` trains the relaxation with the discrete model's KL, as Jang et al.
    pair the binary Concrete with the Bernoullis' KL. A temperature that divides both ``loc``
    and ``scale`` leaves the KL unchanged. Takes ``loc``, ``scale`` and ``validate_args`` as
    :class:`LogitNormal` does.
    """

    def expand(self, batch_shape, _instance=None):
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self
        new = self._get_checked_instance(LogitNormalDiscreteKL, _instance)
        return super().expand(batch_shape, _instance=new)

    def bit_logits(self) -> torch.Tensor:
        """logit P(b = 1) = log Φ(μ / σ) − log Φ(−μ / σ), stable in both tails."""
        u = self.loc / self.scale
        return torch.special.log_ndtr(u) - torch.special.log_ndtr(-u)


@register_kl(LogitNormalDiscreteKL, LogitNormalDiscreteKL)
def _kl_bits(q: LogitNormalDiscreteKL, p: LogitNormalDiscreteKL) -> torch.Tensor:
    return bernoulli_kl(q.bit_logits(), p.bit_logits())
