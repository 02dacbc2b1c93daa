"""ELBO estimators, which KL each latent site gets, and ELBO evaluation with its parts."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import torch_item, zero_grads
from pyro.poutine.util import prune_subsample_sites

from .compiled import CompiledGraph

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

    With ``jit=True`` the particle loop (guide, model, log-densities, KL) is
    compiled by ``torch.jit.trace`` once per input shape (:mod:`.compiled`), which removes the
    Python overhead of Pyro's effect handlers from every step. It needs a fully
    reparameterised guide with a static structure. Values that change from step
    to step (an annealed temperature) come from ``state``, an object with
    ``step_inputs(like) -> tuple of tensors`` and ``use_step_inputs(tensors or
    None)`` (a latent family): they enter the compiled graph as inputs, not as
    constants frozen at the first step.
    """

    last_recon: torch.Tensor | float = 0.0

    def __init__(self, *args, jit: bool = False, state: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = jit
        self.state = state
        self._compiled: dict = {}

    def loss_and_grads(self, model, guide, *args, **kwargs):
        out = self._compiled_step(model, guide, *args, **kwargs) if self.jit else None
        if out is None:
            self.last_recon = 0.0
            return super().loss_and_grads(model, guide, *args, **kwargs)
        loss, graph = out
        # A compiled graph reads its parameters as inputs, not through pyro.param;
        # name them so a param-capturing caller (pyro's SVI.step) sees them.
        for name in graph.names:
            pyro.param(name)
        return loss

    def loss_and_params(self, model, guide, *args, **kwargs) -> tuple[float, list[torch.Tensor]]:
        """``loss_and_grads`` and the unconstrained parameters it reached (what SVI updates).

        The compiled step knows its parameters, so it skips the param-capturing
        trace that ``pyro.infer.SVI.step`` puts around every step.
        """
        out = self._compiled_step(model, guide, *args, **kwargs) if self.jit else None
        if out is not None:
            return out[0], out[1].params
        with poutine.trace(param_only=True) as capture:
            loss = self.loss_and_grads(model, guide, *args, **kwargs)
        return loss, [site["value"].unconstrained() for site in capture.trace.nodes.values()]

    def _compiled_step(self, model, guide, *args, **kwargs):
        """The loss (after backward) and the graph that gave it; None if it cannot compile."""
        try:
            graph, surrogate, recon = self._compiled_particles(model, guide, *args, **kwargs)
        except _NotCompilable as err:
            warnings.warn(
                f"the ELBO could not be compiled ({err}); using the eager step", stacklevel=3
            )
            self.jit = False
            return None
        surrogate.backward()
        self.last_recon = recon.detach()
        # For a reparameterised guide the surrogate's value is the loss itself.
        return surrogate.item(), graph

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        n = data_size(model_trace)
        self.last_recon = self.last_recon + _reconstruction(model_trace) / (n * self.num_particles)
        return loss / n, surrogate / n

    def _compiled_particles(self, model, guide, *args, **kwargs):
        like = next((a for a in args if torch.is_tensor(a)), torch.zeros(()))
        step_inputs = tuple(self.state.step_inputs(like)) if self.state is not None else ()
        shapes = tuple(tuple(a.shape) if torch.is_tensor(a) else a for a in args)
        key = (_identity(model), _identity(guide), shapes, tuple(sorted(kwargs.items())))
        graph = self._compiled.get(key)
        if graph is None or not graph.is_current():
            elbo, base, n_step = self, super(), len(step_inputs)

            def particles(*inputs):
                if elbo.state is not None:
                    elbo.state.use_step_inputs(inputs[:n_step])
                args = inputs[n_step:]
                surrogate = recon = 0.0
                try:
                    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
                        _, surrogate_particle = base._differentiable_loss_particle(
                            model_trace, guide_trace
                        )
                        n = data_size(model_trace) * elbo.num_particles
                        surrogate = surrogate + surrogate_particle / n
                        recon = recon + _reconstruction(model_trace) / n
                finally:
                    if elbo.state is not None:
                        elbo.state.use_step_inputs(None)
                return surrogate, recon

            try:
                graph = CompiledGraph(particles, (*step_inputs, *args))
            except Exception as err:
                raise _NotCompilable(str(err).strip().split("\n")[0]) from err
            self._compiled[key] = graph
        return graph, *graph(*step_inputs, *args)


def _identity(fn: Callable) -> tuple:
    """The same key for every access of a bound method (``vae.model`` is a new object each time)."""
    owner = getattr(fn, "__self__", None)
    return (id(owner), getattr(fn, "__func__", fn)) if owner is not None else (id(fn),)


class _NotCompilable(Exception):
    """``torch.jit.trace`` failed on this model and guide."""


def _reconstruction(model_trace) -> torch.Tensor:
    """−Σ log p(x | z) over the observed sites of a trace (detached)."""
    total = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            total = total - site["log_prob_sum"].detach()
    return total


class MeanTraceELBO(_PerImage, Trace_ELBO):
    """``Trace_ELBO``: KL estimated by Monte Carlo, ``log q(z) − log p(z)`` at the sample."""


class MeanTraceMeanFieldELBO(_PerImage, TraceMeanField_ELBO):
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
        if not isinstance(self.elbo, _PerImage):
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
