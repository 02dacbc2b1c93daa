"""ELBO estimators, which KL each latent site gets, and ELBO evaluation with its parts."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import prune_subsample_sites

ANALYTIC, MONTE_CARLO = "analytic", "monte-carlo"


def data_size(model_trace) -> int:
    """Size of the ``data`` plate around the observed sites (1 if there is none)."""
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            for frame in site["cond_indep_stack"]:
                if frame.name == "data":
                    return frame.size
    return 1


class _PerImage:
    """Mixin: the loss is the mean −ELBO per image (the paper's loss), not the sum.

    Dividing by the size of the ``data`` plate here, rather than scaling the model
    and guide, keeps user guides free of any scaling. ``last_recon`` holds the
    mean −log p(x | z) of the last ``loss_and_grads`` call.
    """

    last_recon: torch.Tensor | float = 0.0

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.last_recon = 0.0
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        n = data_size(model_trace)
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                self.last_recon = self.last_recon - site["log_prob_sum"].detach() / (
                    n * self.num_particles
                )
        return loss / n, surrogate / n


class MeanTraceELBO(_PerImage, Trace_ELBO):
    """``Trace_ELBO``: KL estimated by Monte Carlo, ``log q(z) − log p(z)`` at the sample."""


class MeanTraceMeanFieldELBO(_PerImage, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO``: analytic KL where one is registered, else Monte Carlo."""


#: ``--elbo`` name → (ELBO class, whether it uses analytic KLs where it can)
ELBOS: dict[str, tuple[type, bool]] = {
    "trace": (MeanTraceELBO, False),
    "analytic": (MeanTraceMeanFieldELBO, True),
}


def make_elbo(name: str, num_particles: int = 1):
    cls, _ = ELBOS[name]
    return cls(num_particles=num_particles, max_plate_nesting=1)


def _traces(model: Callable, guide: Callable, *args, **kwargs):
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr)


def _has_analytic_kl(q, p) -> bool:
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


def kl_kinds(model: Callable, guide: Callable, *args, analytic: bool = True, **kwargs) -> dict:
    """For each latent site, the KL an estimator gets: ``analytic`` or ``monte-carlo``.

    With ``analytic=False`` (``Trace_ELBO``) every site is Monte Carlo. With
    ``analytic=True`` (``TraceMeanField_ELBO``) a site is analytic when a KL is
    registered for its (guide, prior) pair; Pyro silently falls back otherwise.
    """
    model_tr, guide_tr = _traces(model, guide, *args, **kwargs)
    kinds = {}
    for name, site in model_tr.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            q = guide_tr.nodes[name]["fn"]
            kinds[name] = ANALYTIC if analytic and _has_analytic_kl(q, site["fn"]) else MONTE_CARLO
    return kinds


@torch.no_grad()
def elbo_parts(
    model: Callable, guide: Callable, x: torch.Tensor, analytic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image reconstruction ``−log p(x|z)`` and KL, each of shape ``(batch,)``.

    One posterior sample per image. The KL is analytic where ``analytic`` and a
    KL is registered, else ``log q(z|x) − log p(z)`` at the sample.
    """
    model_tr, guide_tr = _traces(model, guide, x)
    recon = x.new_zeros(x.shape[0])
    kl = x.new_zeros(x.shape[0])
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            recon = recon - site["fn"].log_prob(site["value"])
            continue
        q, p, z = guide_tr.nodes[name]["fn"], site["fn"], site["value"]
        if analytic and _has_analytic_kl(q, p):
            kl = kl + kl_divergence(q, p)
        else:
            kl = kl + q.log_prob(z) - p.log_prob(z)
    return recon, kl


def evaluate_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    analytic: bool = False,
    batch_size: int = 1000,
    num_samples: int = 1,
) -> dict[str, float]:
    """Mean −ELBO per image over ``x`` with its reconstruction and KL parts."""
    recon_total = kl_total = 0.0
    for _ in range(num_samples):
        for start in range(0, x.shape[0], batch_size):
            recon, kl = elbo_parts(model, guide, x[start : start + batch_size], analytic)
            recon_total += float(recon.sum())
            kl_total += float(kl.sum())
    n = x.shape[0] * num_samples
    return {"loss": (recon_total + kl_total) / n, "recon": recon_total / n, "kl": kl_total / n}
