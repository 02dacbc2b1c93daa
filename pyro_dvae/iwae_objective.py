"""Training with the importance-weighted bound (Burda et al., 2016), and its DReG and STL gradients.

:class:`IWAEELBO` is a ``pyro.infer.ELBO`` (use it with ``pyro.infer.SVI``) for a model and
guide whose local latents sit in one ``data`` plate. Its loss is the mean over the images of
each image's bound −log (1/K) Σ_k p(x, z_k) / q(z_k | x), its K particles drawn in one
vectorised pass (an outer plate, :func:`~pyro_dvae.iwae_bound.vectorized`). Pyro's ``RenyiELBO``
with α = 0 (pyro 1.9) gives this bound only while every sample site is in the ``data``
plate; one site outside it (a global latent, a ``pyro.factor``) makes it sum each particle's
log-weight over the whole batch before the log-mean-exp, one weight per batch instead of one
per image, silently; and it has no DReG or STL gradient (docs/estimators.md). This ELBO
refuses a site outside the plate instead.

``gradient`` chooses the estimator of the bound's gradient (w̃ = the normalised weights):

- ``standard``: the reparameterised gradient, Σ_k w̃_k ∇ log w_k.
- ``stl`` (sticking the landing; Roeder et al., 2017): the same with the guide's parameters
  stopped in log q. That drops the score term ∇_φ log q, whose mean is zero for one particle
  (so it is unbiased for the ELBO, :class:`STLTraceELBO`; for K > 1 it is biased, Tucker et
  al., 2019); when q is the exact posterior every log-weight is log p(x) and the guide's
  gradient is exactly zero.
- ``dreg`` (doubly reparameterised; Tucker et al., 2019): the guide's gradient is
  Σ_k w̃_k² ∂ log w_k / ∂z_k · ∂z_k / ∂φ (log q's parameters stopped), unbiased, with a
  signal-to-noise ratio that does not fall as K grows; the model's gradient is the standard
  one, exactly. One backward pass weighs the gradient reaching each particle's draw by w̃ once
  more; where some parameter path skips the draw (a flow's transforms), two passes, one for
  each side's parameters.

Log q with stopped parameters scores the guide's own samples under :func:`detached` copies of
its distributions: the gradient then reaches the guide's parameters only through the sample.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import pyro
import torch
from torch.distributions import Distribution, Independent, Transform, TransformedDistribution

from .compiled_elbo import CompiledELBO, gradients_by_name, trace_parameters, unique
from .errors import ConfigError
from .iwae_bound import log_densities, log_mean_exp, scaled_log_prob, vectorized_traces
from .loss_graph import NotCapturable
from .pyro_internals import SurrogateELBO

#: the gradient estimators (``--gradient``)
GRADIENTS = ("standard", "dreg", "stl")


class ImportanceWeightedBound(SurrogateELBO):
    """The per-image importance-weighted bound with ``num_particles`` = K particles (K = 1 is
    ``Trace_ELBO``'s loss), and its ``gradient`` (``standard``, ``dreg`` or ``stl``), stepped
    eagerly; :class:`IWAEELBO` is the same bound with ``--compile``.

    ``max_plate_nesting``: plates around the model's sites besides the particles' own (1: the
    ``data`` plate); ``options``: ``gradient`` (default ``standard``); others, such as the
    ``compile`` and ``step_inputs`` that :func:`~pyro_dvae.inference.make_elbo` passes every
    ELBO, go to :class:`IWAEELBO`.

    ``loss`` and ``loss_and_grads`` give the mean loss per image (its gradient divided by
    the batch size, as pyro-dvae's losses are); ``last_recon`` is the step's mean
    −log p(x | z) over its particles.
    """

    #: how the trainer and its messages name this objective
    objective = "--elbo iwae"
    #: its loss is the K-particle bound, for K > 1 tighter than the ELBO: loss − recon is no KL
    importance_weighted = True

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **options: Any):
        gradient = options.pop("gradient", "standard")
        super().__init__(
            num_particles=num_particles, max_plate_nesting=max_plate_nesting, **options
        )
        if gradient not in self.gradients():
            raise ConfigError(
                f"{self.objective} takes --gradient {', '.join(self.gradients())}, not {gradient!r}"
            )
        self.gradient = gradient

    @classmethod
    def gradients(cls) -> tuple[str, ...]:
        return GRADIENTS

    @staticmethod
    def bound(log_w: torch.Tensor) -> torch.Tensor:
        """Each image's bound from its (K, batch) log-weights."""
        return log_mean_exp(log_w, 0)

    def log_weights(self, model, guide, x) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        """log w and log w with log q's parameters stopped (None for ``standard``), each
        (K, batch), and the model's and the guide's traces."""
        k = self.num_particles
        model_tr, guide_tr = vectorized_traces(model, guide, x, k)
        check_sites(model_tr, guide_tr, f"{self.objective} --gradient {self.gradient}")
        shape = (k, x.shape[0])
        log_px, log_pz, log_qz = log_densities(model_tr, guide_tr, shape)
        self.last_recon = -log_px.detach().mean()
        log_p = log_px + log_pz
        stopped = log_p - stopped_log_q(guide_tr, shape) if self.gradient != "standard" else None
        return log_p - log_qz, stopped, model_tr, guide_tr

    def surrogate(self, model, guide, x, training):
        log_w, stopped = self.log_weights(model, guide, x)[:2]
        value = -self.bound(log_w.detach()).mean()
        if self.gradient == "dreg" and training:  # one surrogate cannot weigh φ by w̃², θ by w̃
            raise ConfigError("DReG's gradient comes from loss_and_grads, not from one surrogate")
        target = log_w if stopped is None else stopped  # the same values: log q̄ = log q
        return -self.bound(target).mean(), value

    def differentiable_loss(self, model, guide, x) -> torch.Tensor:
        """The loss per image whose gradient is the ``standard`` or ``stl`` estimate."""
        return self.surrogate(model, guide, x, training=True)[0]

    #: DReG in one backward pass where every path from the guide's parameters goes through
    #: its samples' draws (:func:`sample_roots`); else (a flow) one pass per side
    one_pass = True

    def step_gradients(self, model, guide, x) -> StepGradients:
        """One step's loss, mean −log p(x | z) and gradients, computed without touching any
        parameter's ``.grad`` (so that the compiled step can trace it whole)."""
        log_w, stopped, model_tr, guide_tr = self.log_weights(model, guide, x)
        recon, value = self.last_recon, -self.bound(log_w.detach()).mean()
        decoder, encoder = trace_parameters(model_tr), trace_parameters(guide_tr)
        if self.gradient != "dreg":
            target = log_w if stopped is None else stopped  # the same values: log q̄ = log q
            learned = unique(decoder + encoder)
            grads = torch.autograd.grad(-self.bound(target).mean(), learned, allow_unused=True)
            return StepGradients(value, recon, gradients_by_name(learned, grads), guide_tr)
        if set(map(id, decoder)) & set(map(id, encoder)):
            raise ConfigError("DReG needs the model and the guide to share no parameters")
        w = torch.softmax(log_w.detach(), 0)
        n = x.shape[0]
        roots = sample_roots(guide_tr, w.shape) if self.one_pass else None
        if roots is not None:  # θ: Σ w̃ ∇θ log p; φ: the draws' gradients weighed by w̃ once more
            for root in roots:
                root.register_hook(lambda g: g * w.reshape(w.shape + (1,) * (g.dim() - 2)))
            learned = decoder + encoder
            grads = torch.autograd.grad(-(w * stopped).sum() / n, learned, allow_unused=True)
            return StepGradients(value, recon, gradients_by_name(learned, grads), guide_tr)
        grads = {}
        if encoder:  # Σ w̃² ∇ log w̄ reaches φ only through the samples
            g = torch.autograd.grad(
                -(w * w * stopped).sum() / n, encoder, retain_graph=bool(decoder), allow_unused=True
            )
            grads.update(gradients_by_name(encoder, g))
        if decoder:  # the standard gradient: log q has no θ, so Σ w̃ ∇θ log p
            g = torch.autograd.grad(-(w * stopped).sum() / n, decoder, allow_unused=True)
            grads.update(gradients_by_name(decoder, g))
        return StepGradients(value, recon, grads, guide_tr)

    def loss_and_grads(self, model, guide, x) -> float:
        step = self.step_gradients(model, guide, x)
        store = pyro.get_param_store()
        for name, g in step.grads.items():
            p = store[name].unconstrained()
            p.grad = g if p.grad is None else p.grad + g
        return float(step.loss)


class IWAEELBO(CompiledELBO, ImportanceWeightedBound):
    """:class:`ImportanceWeightedBound`, its step compiled with ``compile`` (True): the graph
    traced through the bound's own backward (DReG's weighting hooks included), the K
    particles' noise drawn as the eager step draws it, so the two agree to rounding.
    ``step_inputs``: the per-step values the graph takes as inputs (an annealed
    temperature; :class:`~pyro_dvae.compiled_elbo.CompiledELBO`).
    A guide whose stopped log q copies a learned transform (a flow, with ``dreg`` or
    ``stl``) steps eagerly after one warning: the copy would freeze its weights."""

    def graph_outputs(self, model, guide, args, kwargs) -> tuple[torch.Tensor, ...]:
        step = self.step_gradients(model, guide, *args, **kwargs)
        if self.gradient != "standard" and learned_transforms(step.guide_trace):
            raise NotCapturable("its stopped log q copies a learned transform (a flow)")
        self.gradient_names = tuple(step.grads)
        return (step.loss, step.recon, *step.grads.values())


class StepGradients(NamedTuple):
    """What one step of an importance-weighted bound computes."""

    loss: torch.Tensor  #: the mean bound per image (its negative)
    recon: torch.Tensor  #: the mean −log p(x | z) over the particles
    grads: dict[str, torch.Tensor]  #: each reached parameter's gradient, by param-store name
    guide_trace: Any


def learned_transforms(guide_tr) -> bool:
    """Whether a latent site of the guide transforms its draw by a learned module."""
    for site in guide_tr.nodes.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn = site["fn"]
        while isinstance(fn, Independent | TransformedDistribution):
            if isinstance(fn, TransformedDistribution):
                if any(isinstance(t, torch.nn.Module) for t in fn.transforms):
                    return True
            fn = fn.base_dist
    return False


class STLTraceELBO(IWAEELBO):
    """``Trace_ELBO``'s loss (the mean of the K log-weights per image) with the STL gradient:
    log q's parameters stopped (Roeder et al., 2017); unbiased, and zero for the guide at
    the exact posterior."""

    objective = "--elbo trace"
    importance_weighted = False  # the mean of the log-weights: the ELBO, recon + KL

    def __init__(self, *args, **options):
        options.setdefault("gradient", "stl")
        super().__init__(*args, **options)

    @classmethod
    def gradients(cls) -> tuple[str, ...]:
        return ("stl",)

    @staticmethod
    def bound(log_w: torch.Tensor) -> torch.Tensor:
        return log_w.mean(0)


def check_sites(model_tr, guide_tr, asked: str) -> None:
    """Refuse (one line) a latent site that is enumerated or has no ``rsample``, and a site
    outside the ``data`` plate (a term of the whole batch has no per-image bound)."""
    for trace in (model_tr, guide_tr):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            if not any(f.name == "data" for f in site["cond_indep_stack"]):
                raise ConfigError(
                    f"{asked} bounds each image of the 'data' plate; site {name!r} is outside "
                    "it (a global latent or factor has no per-image bound)"
                )
            if trace is guide_tr and not site["is_observed"] and not _reparameterized(site):
                raise ConfigError(
                    f"{asked} needs reparameterised latent sites; site {name!r} "
                    f"({type(site['fn']).__name__}) has no rsample (discrete latents: "
                    "--estimator vimco is their importance-weighted bound)"
                )


def _reparameterized(site: dict) -> bool:
    return site["fn"].has_rsample and not site["infer"].get("enumerate")


def sample_roots(guide_tr, shape: torch.Size) -> list[torch.Tensor] | None:
    """Each latent site's draw that every path from the guide's parameters to the bound goes
    through: the sample itself, or for a transformed distribution whose transforms have no
    parameters its base draw (read from the transforms' caches, which its log-densities use);
    None where some site has no such draw (a flow) or its draws are not (K, batch, ...)."""
    roots = []
    for site in guide_tr.nodes.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn, value = site["fn"], site["value"]
        while isinstance(fn, Independent | TransformedDistribution):
            if isinstance(fn, TransformedDistribution):
                for t in reversed(fn.transforms):
                    x, y = getattr(t, "_cached_x_y", (None, None))
                    if _has_parameters(t) or y is not value or x is None:
                        return None
                    value = x
            fn = fn.base_dist
        if not value.requires_grad or tuple(value.shape[:2]) != tuple(shape):
            return None
        roots.append(value)
    return roots


def stopped_log_q(guide_tr, shape: tuple[int, int]) -> torch.Tensor:
    """log q of the guide's samples, each (K, batch), with the guide's parameters stopped."""
    total = 0.0
    for site in guide_tr.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            stopped = scaled_log_prob({**site, "fn": detached(site["fn"])})
            total = total + stopped.expand(shape)
    return total


def detached(obj: Any) -> Any:
    """A copy of a distribution (or transform) with every parameter cut from the graph.

    Tensors are detached; parameter-free transforms are kept as they are, with their caches,
    so a sample's pre-image (a Logit-normal's y) still carries its path to the parameters; a
    learned transform (an ``nn.Module``, as a flow's) is deep-copied without its caches, so
    scoring a sample under it inverts the copy.
    """
    if torch.is_tensor(obj):
        return obj.detach()
    if isinstance(obj, torch.nn.Module):
        return _frozen_module(obj)
    if isinstance(obj, list | tuple) and any(_has_parameters(v) for v in obj):
        return type(obj)(detached(v) for v in obj)
    if not isinstance(obj, Distribution | Transform) or not _has_parameters(obj):
        return obj
    out = copy.copy(obj)
    for key, value in vars(obj).items():
        if not key.startswith("_cached"):  # a pre-image keeps its path through the sample
            setattr(out, key, detached(value))
    return out


def _has_parameters(obj: Any, depth: int = 0) -> bool:
    if torch.is_tensor(obj) or isinstance(obj, torch.nn.Module):
        return True
    if depth > 8:
        return False
    if isinstance(obj, list | tuple):
        return any(_has_parameters(v, depth + 1) for v in obj)
    if isinstance(obj, Distribution | Transform):
        return any(
            _has_parameters(v, depth + 1)
            for k, v in vars(obj).items()
            if not k.startswith("_cached")
        )
    return False


def _frozen_module(module: torch.nn.Module) -> torch.nn.Module:
    shallow = copy.copy(module)
    for key, value in vars(module).items():
        if key.startswith("_cached"):  # their tensors hold the graph of this step's sample
            setattr(shallow, key, (None, None) if isinstance(value, tuple) else None)
    if hasattr(shallow, "_inv"):  # a transform's inverse, which refers back to it (and its caches)
        shallow._inv = None
    return copy.deepcopy(shallow).requires_grad_(False)
