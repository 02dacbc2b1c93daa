"""Where pyro-dvae reaches into Pyro's ELBO internals, all in this one module.

Two private members of ``pyro.infer.ELBO`` subclasses are used, known to work with
pyro-ppl 1.9.0-1.9.2 (``setup.cfg`` asks for >= 1.9; CI installs the newest allowed):

- ``_differentiable_loss_particle(model_trace, guide_trace)``: the (loss, surrogate)
  of one particle, called by ``Trace_ELBO`` and ``TraceMeanField_ELBO`` for every
  particle. :class:`PerImageELBO` overrides it to divide by the ``data`` plate size.
- ``_get_traces(model, guide, args, kwargs)``: the particles' (model, guide) traces,
  used by the compiled step (:mod:`.compiled_elbo`) through :func:`particle_traces`, and
  wrapped by :class:`ScaledPerImageELBO` (``TraceEnum_ELBO``, ``TraceGraph_ELBO``) to read
  each particle's reconstruction.

:class:`SurrogateELBO` fills in ``pyro.infer.ELBO``'s abstract ``_get_trace`` (it draws its
own vectorised traces instead).

If a Pyro release renames them, this module is the one to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyro
import torch
from pyro import poutine


def data_size(model_trace) -> int:
    """Size of the ``data`` plate around the observed sites (1 if there is none)."""
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            for frame in site["cond_indep_stack"]:
                if frame.name == "data":
                    return frame.size
    return 1


def reconstruction(model_trace) -> torch.Tensor:
    """−Σ log p(x | z) over the observed sites of a trace (detached); inside a ``members``
    plate (a group, :mod:`pyro_dvae.group`), one sum per member."""
    total = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            members = [f.dim for f in site["cond_indep_stack"] if f.name == "members"]
            if members:
                log_p = site["log_prob"].detach().movedim(members[0], 0)
                total = total - log_p.reshape(log_p.shape[0], -1).sum(-1)
            else:
                total = total - site["log_prob_sum"].detach()
    return total


class PerImageELBO:
    """Mixin: the loss is the mean −ELBO per image (the paper's loss), not the sum.

    Dividing by the size of the ``data`` plate here, rather than scaling the model
    and guide, keeps user guides free of any scaling. ``last_recon`` holds the
    mean −log p(x | z) of the last ``loss_and_grads`` call.
    """

    last_recon: torch.Tensor | float = 0.0
    #: a :class:`~pyro_dvae.schedules.KLObjective` computing the particle loss instead of
    #: Pyro (KL warm-up, free bits); None: Pyro's own
    objective = None

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.last_recon = 0.0
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def pyro_particle_loss(self, model_trace, guide_trace):
        """Pyro's own (loss, surrogate) of one particle, summed over images (or the
        ``objective``'s loss, for a reparameterised guide its own surrogate)."""
        if self.objective is not None:
            loss = self.objective.particle_loss(model_trace, guide_trace)
            return loss.detach(), loss
        return super()._differentiable_loss_particle(model_trace, guide_trace)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = self.pyro_particle_loss(model_trace, guide_trace)
        n = data_size(model_trace)
        self.last_recon = self.last_recon + reconstruction(model_trace) / (n * self.num_particles)
        return loss / n, surrogate / n


def particle_traces(elbo, model, guide, args, kwargs) -> Iterator[tuple]:
    """The (model trace, guide trace) of each particle, as ``elbo`` draws them."""
    return elbo._get_traces(model, guide, args, kwargs)


class ScaledPerImageELBO:
    """Mixin for the ELBOs whose particle loss is not ``Trace_ELBO``'s (``TraceEnum_ELBO``,
    ``TraceGraph_ELBO``): the mean −ELBO per image by scaling model and guide by 1/batch
    (``poutine.scale``: every log-density, baselines' targets included), and ``last_recon``
    read from each particle's traces as ``_get_traces`` yields them. Runs eagerly.
    """

    last_recon: torch.Tensor | float = 0.0

    def __init__(self, *args, compile: bool = False, step_inputs=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compile = False

    def prepare_guide(self, guide):
        """The guide as this estimator runs it (``TraceEnum_ELBO``: enumerated)."""
        return guide

    def _scaled(self, model, guide, args):
        scale = 1.0 / args[0].shape[0]
        return poutine.scale(model, scale), poutine.scale(self.prepare_guide(guide), scale)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.last_recon = 0.0
        return super().loss_and_grads(*self._scaled(model, guide, args), *args, **kwargs)

    def loss(self, model, guide, *args, **kwargs):
        self.last_recon = 0.0
        return super().loss(*self._scaled(model, guide, args), *args, **kwargs)

    def _get_traces(self, model, guide, args, kwargs):
        for model_trace, guide_trace in super()._get_traces(model, guide, args, kwargs):
            recon = expected_reconstruction(model_trace, guide_trace)
            self.last_recon = self.last_recon + recon / self.num_particles
            yield model_trace, guide_trace


def expected_reconstruction(model_trace, guide_trace) -> torch.Tensor:
    """−E_q[log p(x | z)] of a particle (detached): its reconstruction, or with an
    enumerated latent the exact sum Σ_c q(c | x) (−log p(x | c)) over the codes."""
    weight = 1.0
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and site["infer"].get("enumerate") == "parallel":
            weight = weight * site["fn"].log_prob(site["value"]).detach().exp()
    total = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            total = total - (weight * site["log_prob"].detach()).sum()
    return total


class SurrogateELBO(pyro.infer.ELBO):
    """An ELBO that draws its own (vectorised) traces and backpropagates a surrogate: the
    ``loss`` / ``loss_and_grads`` pair over :meth:`surrogate` (the score-function estimators
    of :mod:`.score_function`, the importance-weighted bounds of :mod:`.iwae_objective`)."""

    compile = False  # eager: these estimators read sampled values to weight their terms
    last_recon: torch.Tensor | float = 0.0

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **_: Any):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)

    def _get_trace(self, model, guide, args, kwargs):  # pyro.infer.ELBO's abstract hook
        raise NotImplementedError(f"{type(self).__name__} draws its own traces")

    def surrogate(self, model, guide, x, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(the surrogate loss to backpropagate, the loss per image it estimates)."""
        raise NotImplementedError

    def loss(self, model, guide, x) -> float:
        with torch.no_grad():
            return float(self.surrogate(model, guide, x, training=False)[1])

    def loss_and_grads(self, model, guide, x) -> float:
        surrogate, value = self.surrogate(model, guide, x, training=True)
        surrogate.backward()
        return float(value)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], like: torch.Tensor) -> None:
        """Restore :meth:`state_dict` (``like``: a tensor on the run's device and dtype)."""
