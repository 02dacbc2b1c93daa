"""Where pyro-dvae reaches into Pyro's ELBO internals, all in this one module.

Two private members of ``pyro.infer.ELBO`` subclasses are used, known to work with
pyro-ppl 1.9.0-1.9.2 (``setup.cfg`` asks for >= 1.9; CI installs the newest allowed):

- ``_differentiable_loss_particle(model_trace, guide_trace)``: the (loss, surrogate)
  of one particle, called by ``Trace_ELBO`` and ``TraceMeanField_ELBO`` for every
  particle. :class:`PerImageELBO` overrides it to divide by the ``data`` plate size.
- ``_get_traces(model, guide, args, kwargs)``: the particles' (model, guide) traces,
  used by the compiled step (:mod:`.compiled_elbo`) through :func:`particle_traces`.

If a Pyro release renames them, this module is the one to change.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def data_size(model_trace) -> int:
    """Size of the ``data`` plate around the observed sites (1 if there is none)."""
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            for frame in site["cond_indep_stack"]:
                if frame.name == "data":
                    return frame.size
    return 1


def reconstruction(model_trace) -> torch.Tensor:
    """−Σ log p(x | z) over the observed sites of a trace (detached)."""
    total = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            total = total - site["log_prob_sum"].detach()
    return total


class PerImageELBO:
    """Mixin: the loss is the mean −ELBO per image (the paper's loss), not the sum.

    Dividing by the size of the ``data`` plate here, rather than scaling the model
    and guide, keeps user guides free of any scaling. ``last_recon`` holds the
    mean −log p(x | z) of the last ``loss_and_grads`` call.
    """

    last_recon: torch.Tensor | float = 0.0

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.last_recon = 0.0
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def pyro_particle_loss(self, model_trace, guide_trace):
        """Pyro's own (loss, surrogate) of one particle, summed over images."""
        return super()._differentiable_loss_particle(model_trace, guide_trace)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = self.pyro_particle_loss(model_trace, guide_trace)
        n = data_size(model_trace)
        self.last_recon = self.last_recon + reconstruction(model_trace) / (n * self.num_particles)
        return loss / n, surrogate / n


def particle_traces(elbo, model, guide, args, kwargs) -> Iterator[tuple]:
    """The (model trace, guide trace) of each particle, as ``elbo`` draws them."""
    return elbo._get_traces(model, guide, args, kwargs)
