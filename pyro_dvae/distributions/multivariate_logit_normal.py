"""A Logit-normal with a full-covariance base: a MultivariateNormal under the sigmoid."""

from __future__ import annotations

import torch
from pyro.distributions import MultivariateNormal, TransformedDistribution
from pyro.distributions.torch import Independent
from torch.distributions import constraints
from torch.distributions.kl import register_kl

from .logit_normal import (
    _SIGMOID,
    LogitNormal,
    SigmoidMoments,
    _rebuild,
    open_unit_interval,
)


class MultivariateLogitNormal(SigmoidMoments, TransformedDistribution):
    """``z = sigmoid(y)``, ``y ~ MultivariateNormal(loc, scale_tril)``; event dimension 1.

    ``loc``: (..., n), the mean of ``y``; ``scale_tril``: (..., n, n), the lower-triangular
    Cholesky factor L (positive diagonal) of its covariance L Lᵀ; their batch shapes
    broadcast. ``validate_args``: as for :class:`LogitNormal`. Its KL to a diagonal
    Logit-normal prior, ``LogitNormal(m, s).to_event(1)``, is analytic; its mean and
    variance are per coordinate, by quadrature.
    """

    arg_constraints = {"loc": constraints.real_vector, "scale_tril": constraints.lower_cholesky}
    support = constraints.independent(open_unit_interval, 1)
    has_rsample = True

    def __init__(self, loc, scale_tril, validate_args=None):
        base = MultivariateNormal(loc, scale_tril=scale_tril, validate_args=validate_args)
        super().__init__(base, _SIGMOID, validate_args=validate_args)

    def __reduce__(self):
        """Pickle and copy by parameters, without the shared sigmoid's cache."""
        base = self.base_dist
        return _rebuild, (type(self), base.loc, base.scale_tril, self._validate_args)

    @classmethod
    def infer_shapes(cls, loc, scale_tril):
        batch_shape = torch.broadcast_shapes(loc[:-1], scale_tril[:-2])
        return torch.Size(batch_shape), torch.Size(loc[-1:])

    def expand(self, batch_shape, _instance=None):
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self
        new = self._get_checked_instance(MultivariateLogitNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    def _marginal(self) -> tuple[torch.Tensor, torch.Tensor]:
        """z_i is a Logit-normal of the base's marginal N(μ_i, Σ_ii)."""
        return self.base_dist.loc, self.base_dist.scale_tril.square().sum(-1).sqrt()

    @property
    def loc(self) -> torch.Tensor:
        """The mean of ``y = logit z``."""
        return self.base_dist.loc

    @property
    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor of the covariance of ``y = logit z``."""
        return self.base_dist.scale_tril


@register_kl(MultivariateLogitNormal, Independent)
def _kl_mvln_independent(q: MultivariateLogitNormal, p: Independent) -> torch.Tensor:
    """Analytic against a diagonal Logit-normal prior (``LogitNormal(...).to_event(1)``)."""
    if not isinstance(p.base_dist, LogitNormal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    base = p.base_dist.base_dist  # the prior's Normal N(m, diag(s²))
    tril, diff = q.scale_tril, q.loc - base.loc
    # KL(N(μ, LLᵀ) ‖ N(m, diag s²)) = Σ log s − Σ log L_ii + ½ (‖L / s‖²_F + ‖(μ − m) / s‖² − n),
    # written out: torch's MultivariateNormal KL cannot be traced (it calls _infer_size on shapes)
    # and would solve a triangular system against a diagonal.
    trace = (tril / base.scale.unsqueeze(-1)).square().sum((-2, -1))
    mahalanobis = (diff / base.scale).square().sum(-1)
    log_det = base.scale.log().sum(-1) - tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return log_det + 0.5 * (trace + mahalanobis - diff.shape[-1])
