"""The ELBO step compiled into one graph per input shape (``--jit``).

``torch.jit.trace`` records the particle loop (guide, model, log-densities, KL) once
per input shape and :mod:`.compiled` specialises it, which removes the Python
overhead of Pyro's effect handlers from every step. It needs a fully reparameterised
guide with a static structure; otherwise the step stays eager (with a warning).
Values that change from step to step (an annealed temperature) come from ``state``,
an object with ``step_inputs(like) -> tuple of tensors`` and ``use_step_inputs(tensors
or None)`` (a latent family): they enter the graph as inputs, not as constants frozen
at the first step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine

from .compiled import CompiledGraph
from .elbo_hooks import data_size, particle_traces, reconstruction


class CompiledELBO:
    """Mixin over a :class:`~.elbo_hooks.PerImageELBO` ELBO: the same loss, compiled."""

    def __init__(self, *args, jit: bool = False, state: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = jit
        self.state = state
        self._compiled: dict = {}

    def loss_and_grads(self, model, guide, *args, **kwargs):
        out = self._compiled_step(model, guide, *args, **kwargs) if self.jit else None
        if out is None:
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

    def _compiled_particles(self, model, guide, *args, **kwargs):
        like = next((a for a in args if torch.is_tensor(a)), torch.zeros(()))
        step_inputs = tuple(self.state.step_inputs(like)) if self.state is not None else ()
        shapes = tuple(tuple(a.shape) if torch.is_tensor(a) else a for a in args)
        key = (_identity(model), _identity(guide), shapes, tuple(sorted(kwargs.items())))
        graph = self._compiled.get(key)
        if graph is None or not graph.is_current():
            graph = self._compile(model, guide, step_inputs, args, kwargs)
            self._compiled[key] = graph
        return graph, *graph(*step_inputs, *args)

    def _compile(self, model, guide, step_inputs, args, kwargs) -> CompiledGraph:
        elbo, n_step = self, len(step_inputs)

        def particles(*inputs):
            if elbo.state is not None:
                elbo.state.use_step_inputs(inputs[:n_step])
            args = inputs[n_step:]
            surrogate = recon = 0.0
            try:
                for model_trace, guide_trace in particle_traces(elbo, model, guide, args, kwargs):
                    _refuse_score_functions(guide_trace)
                    _, surrogate_particle = elbo.pyro_particle_loss(model_trace, guide_trace)
                    n = data_size(model_trace) * elbo.num_particles
                    surrogate = surrogate + surrogate_particle / n
                    recon = recon + reconstruction(model_trace) / n
            finally:
                if elbo.state is not None:
                    elbo.state.use_step_inputs(None)
            return surrogate, recon

        try:
            return CompiledGraph(particles, (*step_inputs, *args))
        except Exception as err:
            raise _NotCompilable(str(err).strip().split("\n")[0]) from err


def _refuse_score_functions(guide_trace) -> None:
    """The compiled step returns the surrogate's value as the loss, which only a fully
    reparameterised guide makes equal; a score-function site stays eager."""
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            raise ValueError(f"site {name!r} has no rsample (score-function gradients)")


def _identity(fn: Callable) -> tuple:
    """The same key for every access of a bound method (``vae.model`` is a new object each time)."""
    owner = getattr(fn, "__self__", None)
    return (id(owner), getattr(fn, "__func__", fn)) if owner is not None else (id(fn),)


class _NotCompilable(Exception):
    """``torch.jit.trace`` failed on this model and guide."""
