"""ELBO estimators, which KL each latent site gets, and ELBO evaluation with its parts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import torch_item, zero_grads
from pyro.poutine.util import prune_subsample_sites

from .compiled_elbo import CompiledELBO
from .elbo_hooks import PerImageELBO

ANALYTIC, MONTE_CARLO = "analytic", "monte-carlo"


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Draws from their own ``seed``, validation off; the caller's random state (and the
    CUDA generator of ``device``) is as it was afterwards, so scoring never moves training."""
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        yield


class MeanTraceELBO(CompiledELBO, PerImageELBO, Trace_ELBO):
    """``Trace_ELBO``: KL estimated by Monte Carlo, ``log q(z) − log p(z)`` at the sample."""


class MeanTraceMeanFieldELBO(CompiledELBO, PerImageELBO, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO``: analytic KL where one is registered, else Monte Carlo."""


#: ``--elbo`` name → (ELBO class, whether it uses analytic KLs where it can)
ELBOS: dict[str, tuple[type, bool]] = {
    "trace": (MeanTraceELBO, False),
    "analytic": (MeanTraceMeanFieldELBO, True),
}


class SVI(pyro.infer.SVI):
    """``pyro.infer.SVI`` whose step asks a pyro-dvae ELBO for the parameters it reached.

    Same update as ``pyro.infer.SVI.step``; with a compiled ELBO it skips the
    per-step param-capturing trace. Any other ELBO takes ``pyro.infer.SVI.step``.
    """

    def __init__(self, model, guide, optim, loss, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.elbo = loss  # pyro's SVI keeps only the bound methods of ``loss``

    def step(self, *args, **kwargs) -> float:
        if not isinstance(self.elbo, CompiledELBO):
            return super().step(*args, **kwargs)
        loss, params = self.elbo.loss_and_params(self.model, self.guide, *args, **kwargs)
        self.optim(params)
        zero_grads(params)
        return torch_item(loss)


def make_elbo(name: str, num_particles: int = 1, jit: bool = False, state: Any = None):
    """The ``--elbo`` estimator; ``state`` feeds per-step values to a compiled graph."""
    cls, _ = ELBOS[name]
    return cls(num_particles=num_particles, max_plate_nesting=1, jit=jit, state=state)


def fully_reparameterized(model: Callable, guide: Callable, *args, **kwargs) -> bool:
    """Whether every latent site of the guide has ``rsample``."""
    _, guide_tr = _traces(model, guide, *args, **kwargs)
    return all(
        site["fn"].has_rsample
        for site in guide_tr.nodes.values()
        if site["type"] == "sample" and not site["is_observed"]
    )


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
