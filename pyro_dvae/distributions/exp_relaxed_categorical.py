"""ExpConcrete (Maddison et al., 2016): a relaxed categorical sampled in log space."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.kl import register_kl
from torch.distributions.utils import broadcast_all


class _LogSimplex(constraints.Constraint):
    """Finite vectors ``y`` with ``logsumexp(y) == 0``: the log of a point inside the simplex.

    A coordinate at −∞ (a face of the simplex, a one-hot corner) is refused: the
    ExpConcrete's density there is zero and its log_prob formula would return nan.
    """

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        tol = 1e-4 if value.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-8
        inside = (value <= tol).all(-1) & value.isfinite().all(-1)
        return inside & (value.logsumexp(-1).abs() < tol)

    def __repr__(self) -> str:
        return "log_simplex"


log_simplex = _LogSimplex()


class ExpRelaxedCategorical(TorchDistribution):
    r"""ExpConcrete with location logits and a temperature ``λ``.

    A sample is ``y = log_softmax((logits + G) / λ)`` with ``G`` i.i.d. Gumbel(0, 1);
    ``exp(y)`` is a Concrete (Gumbel-softmax) sample. Working in log space avoids
    the underflow of small probabilities at low temperature. ``temperature`` is a
    tensor that broadcasts to the batch shape: a scalar, or one per group member
    (:mod:`pyro_dvae.group`).

    Give exactly one of ``logits``, (..., K) log-probabilities of the K categories up to a
    constant (normalised here), or ``probs``, (..., K) probabilities. ``validate_args``:
    check arguments and values as torch distributions do (``None``: the global default,
    which ``pyro.enable_validation`` sets).
    """

    arg_constraints = {"logits": constraints.real_vector, "temperature": constraints.positive}
    support = log_simplex
    has_rsample = True

    def __init__(self, temperature, logits=None, probs=None, validate_args=None):
        if (logits is None) == (probs is None):
            raise ValueError("give exactly one of logits or probs")
        if logits is None:
            logits = (
                torch.as_tensor(probs)
                .clamp_min(torch.finfo(torch.as_tensor(probs).dtype).tiny)
                .log()
            )
        logits = torch.as_tensor(logits)
        if logits.dim() < 1:
            raise ValueError("logits must have at least one dimension (the categories)")
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        temperature = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
        batch_shape, event_shape = logits.shape[:-1], logits.shape[-1:]
        if not _broadcasts_to(temperature.shape, batch_shape):
            raise ValueError(
                f"temperature of shape {tuple(temperature.shape)} does not broadcast to the "
                f"batch shape {tuple(batch_shape)}"
            )
        self.temperature = temperature
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def probs(self) -> torch.Tensor:
        """The categories' probabilities, ``exp(logits)``."""
        return self.logits.exp()

    @property
    def mean(self) -> torch.Tensor:
        """No closed form: E[log softmax((logits + G) / λ)] has none (use samples)."""
        raise NotImplementedError("the ExpConcrete mean has no closed form; average samples")

    @property
    def variance(self) -> torch.Tensor:
        """No closed form (use samples)."""
        raise NotImplementedError("the ExpConcrete variance has no closed form; use samples")

    def entropy(self) -> torch.Tensor:
        """No closed form: estimate −E[log q(y)] from samples."""
        raise NotImplementedError(
            "the ExpConcrete entropy has no closed form; use -log_prob of samples"
        )

    @classmethod
    def infer_shapes(cls, temperature=(), logits=None, probs=None):
        """Batch and event shapes from argument shapes (the temperature broadcasts to them)."""
        shape = logits if logits is not None else probs
        if shape is None or len(shape) < 1:
            raise ValueError("infer_shapes needs the shape of logits or probs")
        return torch.Size(shape[:-1]), torch.Size(shape[-1:])

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if _instance is None and batch_shape == self.batch_shape:
            return self
        new = self._get_checked_instance(ExpRelaxedCategorical, _instance)
        new.logits = self.logits.expand(batch_shape + self.event_shape)
        new.temperature = self.temperature
        super(ExpRelaxedCategorical, new).__init__(
            batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        finfo = torch.finfo(self.logits.dtype)
        # Uniforms kept off 0 and 1 so that both logs below stay finite.
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        u = u.clamp(min=finfo.tiny, max=1.0 - finfo.eps)
        gumbels = -(-u.log()).log()
        scores = (self.logits + gumbels) / self.temperature.unsqueeze(-1)
        return scores - scores.logsumexp(-1, keepdim=True)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        k = self.event_shape[-1]
        lam = self.temperature
        score = logits - lam.unsqueeze(-1) * value
        log_norm = torch.lgamma(lam.new_tensor(float(k))) + (k - 1) * lam.log()
        return (score - score.logsumexp(-1, keepdim=True)).sum(-1) + log_norm


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(reversed(shape), reversed(target), strict=False))


class ExpRelaxedCategoricalDiscreteKL(ExpRelaxedCategorical):
    """An :class:`ExpRelaxedCategorical` whose KL to another is that of the underlying
    categoricals, ``Σ_k q_k log(q_k / p_k)`` (Jang et al., 2017), not the relaxed KL.

    Samples and densities are those of the ExpConcrete; only ``kl_divergence``
    differs, so ``TraceMeanField_ELBO`` trains Jang et al.'s objective while
    ``Trace_ELBO`` would still score the relaxed densities. It takes ``temperature``,
    ``logits`` or ``probs``, and ``validate_args`` as :class:`ExpRelaxedCategorical` does.
    """


@register_kl(ExpRelaxedCategoricalDiscreteKL, ExpRelaxedCategoricalDiscreteKL)
def _kl_discrete(q: ExpRelaxedCategorical, p: ExpRelaxedCategorical) -> torch.Tensor:
    q_logits, p_logits = broadcast_all(q.logits, p.logits)  # both normalised in __init__
    return (q_logits.exp() * (q_logits - p_logits)).sum(-1)


class StraightThroughCategorical(ExpRelaxedCategoricalDiscreteKL):
    """Straight-through Gumbel-softmax (Jang et al., 2017): one-hot codes forward (the
    argmax of ``logits + G``, a Categorical draw), the Concrete's gradient backward. Its
    values are in probability space, not log space; ``log_prob`` is the Categorical's, the
    distribution of the forward values; its KL is the categoricals'."""

    support = constraints.one_hot

    def rsample(self, sample_shape=()) -> torch.Tensor:
        soft = super().rsample(sample_shape).exp()
        hard = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard + (soft - soft.detach())  # exactly one-hot forward

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return (logits * value).sum(-1)
