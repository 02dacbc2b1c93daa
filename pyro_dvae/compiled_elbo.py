"""The ELBO step compiled by ``torch.compile`` (``--compile``).

The particle loss (guide, model, log-densities, KL) is captured once as one ATen graph
(:class:`~.loss_graph.LossGraph`), traced through its own backward (``torch.autograd.grad``),
and compiled by ``torch.compile`` (TorchInductor): one graph whose outputs are the loss and
the gradients. Only public torch APIs are used: no TorchScript. The loss
is computed from the traces here (:func:`particle_loss`), not by Pyro's
``_differentiable_loss_particle``, whose ``torch_item`` reads no tracer follows; for a
reparameterised guide the two are the same sum.

One input shape is compiled: the first batch's. Another shape (an epoch's smaller last
batch) steps eagerly, so an epoch never compiles a second graph. A guide with
score-function sites, or a loss that cannot be captured or compiled (no C++ compiler),
steps eagerly after one warning. Values that change from step to step (an annealed
temperature, the KL weight) come from ``step_inputs``, an object with ``step_inputs(like) ->
tuple of tensors`` and ``use_step_inputs(tensors or None)``: graph inputs, not constants.

An estimator whose gradient is not the backward of one surrogate (DReG, which hooks its
draws' gradients) computes its gradients itself in its :meth:`CompiledELBO.graph_outputs`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pyro
import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask

from .loss_graph import LossGraph, NotCapturable, cuda_devices, reason
from .pyro_internals import data_size, particle_traces, reconstruction

#: the ``torch.compile`` backend: ``inductor`` (generated kernels), or ``aot_eager``
#: (the captured graph and its AOTAutograd backward run by eager kernels: no C++ compiler
#: needed, and compiles in a fraction of the time; what the test suite uses)
BACKEND_VARIABLE = "PYRO_DVAE_COMPILE_BACKEND"


def backend() -> str:
    """The backend ``$PYRO_DVAE_COMPILE_BACKEND`` names (default ``inductor``)."""
    return os.environ.get(BACKEND_VARIABLE, "") or "inductor"


#: ``torch.compile``'s mode: unset, its default; ``reduce-overhead`` replays the step's
#: kernels as a CUDA graph (scripts/gpu_check.py measures both on a GPU)
MODE_VARIABLE = "PYRO_DVAE_COMPILE_MODE"


#: ``--compile auto`` compiles a run with at least this many training steps left: about
#: the compile time over the time it saves a step (docs/speed.md has the measurement)
AUTO_COMPILE_STEPS = 30_000


def compile_pays(mode: str, steps_left: int) -> bool:
    """Whether to compile: ``mode`` ``on``, ``off``, or ``auto`` (enough ``steps_left``)."""
    return mode == "on" or (mode == "auto" and steps_left >= AUTO_COMPILE_STEPS)


def particle_loss(model_trace, guide_trace, analytic: bool) -> torch.Tensor:
    """−ELBO of one particle summed over its images, from its traces: −log p(x | z) plus
    the KL, analytic where ``analytic`` and registered for the (guide, prior) pair, else
    log q(z) − log p(z) at the sample (as ``TraceMeanField_ELBO`` / ``Trace_ELBO``)."""
    loss = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            loss = loss - site["log_prob_sum"]
            continue
        q_site = guide_trace.nodes[name]
        kl = _analytic_kl(q_site["fn"], site["fn"]) if analytic else None
        if kl is None:
            loss = loss + q_site["log_prob_sum"] - site["log_prob_sum"]
        else:
            loss = loss + scale_and_mask(kl, q_site["scale"], q_site["mask"]).sum()
    for name, site in guide_trace.nodes.items():  # guide-only (auxiliary) sites
        if site["type"] == "sample" and name not in model_trace.nodes:
            loss = loss + site["log_prob_sum"]
    return loss


def trace_parameters(trace) -> list[torch.Tensor]:
    """The unconstrained leaves of a trace's parameters (what ``pyro.infer.SVI`` updates)."""
    return [
        site["value"].unconstrained()
        for site in trace.nodes.values()
        if site["type"] == "param" and site["value"].unconstrained().requires_grad
    ]


def learned_inputs(args: tuple) -> list[torch.Tensor]:
    """The step's inputs that take a gradient (a group's member weights)."""
    return [a for a in args if torch.is_tensor(a) and a.requires_grad]


def unique(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` without repeats (a parameter the model and the guide share), in order."""
    return list({id(t): t for t in tensors}.values())


def gradients_by_name(learned: list[torch.Tensor], grads) -> dict[str, torch.Tensor]:
    """Each reached parameter's gradient, by its param-store name, sorted by name."""
    store = pyro.get_param_store()
    pairs = [(store.param_name(p), g) for p, g in zip(learned, grads, strict=True)]
    return dict(sorted((name, g) for name, g in pairs if g is not None))


def _analytic_kl(q, p) -> torch.Tensor | None:
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


class CompiledELBO:
    """Mixin over a per-image ELBO (:class:`~.pyro_internals.PerImageELBO`,
    :class:`~.iwae_objective.ImportanceWeightedBound`): the same loss, compiled.

    ``compile``: compile the step (else Pyro's eager step); ``step_inputs``: the per-step
    inputs (see the module); ``noise_mode``: a group's
    :class:`~pyro_dvae.member_streams.MemberDraws`, around the eager step's guide and the
    compiled step's noise draws. ``graphs`` counts the
    graphs compiled, ``compile_seconds`` their time.
    """

    def __init__(self, *args, compile: bool = False, step_inputs: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compile = compile
        self.step_source = step_inputs
        self.noise_mode: Any = None
        self.graphs = 0
        self.compile_seconds = 0.0
        self._shape: tuple | None = None  # the one shape compiled
        self._graph: LossGraph | None = None
        self._compiled: Callable | None = None
        self._grad_params: list[torch.Tensor] = []

    def reset(self) -> None:
        """Forget the compiled graph: the next step's shape is captured and compiled anew."""
        self._shape = self._graph = self._compiled = None

    def loss_and_grads(self, model, guide, *args, **kwargs):
        out = self._compiled_step(model, guide, *args, **kwargs) if self.compile else None
        if out is not None:
            for name in self._graph.names:  # a param-capturing caller (pyro's SVI) sees them
                pyro.param(name)
            return out
        if self.noise_mode is not None:
            guide = self.noise_mode.around(guide)
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def loss_and_params(self, model, guide, *args, **kwargs) -> tuple[float, list[torch.Tensor]]:
        """``loss_and_grads`` and the unconstrained parameters it reached (what SVI updates).

        The compiled step knows its parameters, so it skips the param-capturing
        trace that ``pyro.infer.SVI.step`` puts around every step.
        """
        out = self._compiled_step(model, guide, *args, **kwargs) if self.compile else None
        if out is not None:
            return out, self._graph.params
        with pyro.poutine.trace(param_only=True) as capture:
            loss = self.loss_and_grads(model, guide, *args, **kwargs)
        return loss, [site["value"].unconstrained() for site in capture.trace.nodes.values()]

    def _compiled_step(self, model, guide, *args, **kwargs) -> float | None:
        """The loss (after backward); None where this shape or this loss steps eagerly."""
        like = next((a for a in args if torch.is_tensor(a)), torch.zeros(()))
        source = self.step_source
        step_inputs = tuple(source.step_inputs(like)) if source is not None else ()
        shapes = tuple(tuple(a.shape) if torch.is_tensor(a) else a for a in args)
        key = (_identity(model), _identity(guide), shapes, tuple(sorted(kwargs.items())))
        if self._shape is None:
            self._shape = key
        if key != self._shape:
            return None
        if self._graph is None or not self._graph.is_current():
            try:
                self._build(model, guide, step_inputs, args, kwargs)
            except NotCapturable as err:
                warnings.warn(
                    f"the ELBO could not be compiled ({err}); using the eager step", stacklevel=3
                )
                self.compile = False
                return None
        graph = self._graph
        with self.noise_mode or nullcontext():
            noise = graph.draw_noise()
        with torch.no_grad():
            loss, recon, *grads = self._compiled(*graph.params, *noise, *step_inputs, *args)
        for p, g in zip(self._grad_params + learned_inputs(args), grads, strict=True):
            if g.stride() != p.stride():  # a graph's gradient may come out transposed
                g = torch.empty_like(p).copy_(g)  # fused Adam reads it in p's layout
            p.grad = g if p.grad is None else p.grad + g
        self.last_recon = recon
        return loss.item()

    def _build(self, model, guide, step_inputs, args, kwargs) -> None:
        elbo, n_step = self, len(step_inputs)

        def outputs(*inputs):
            if elbo.step_source is not None:
                elbo.step_source.use_step_inputs(inputs[:n_step])
            try:
                return elbo.graph_outputs(model, guide, inputs[n_step:], kwargs)
            finally:
                if elbo.step_source is not None:
                    elbo.step_source.use_step_inputs(None)

        start = time.perf_counter()
        graph = LossGraph(outputs, (*step_inputs, *args))
        store = dict(zip(graph.names, graph.params, strict=True))
        if not set(self.gradient_names) <= set(store):
            raise NotCapturable("the loss differentiates tensors outside Pyro's param store")
        self._grad_params = [store[name] for name in self.gradient_names]
        compiled = _compile(graph, (*step_inputs, *args))
        self.compile_seconds += time.perf_counter() - start
        self.graphs += 1
        self._graph, self._compiled = graph, compiled

    def graph_outputs(self, model, guide, args, kwargs) -> tuple[torch.Tensor, ...]:
        """What the captured graph computes from a step's inputs: the surrogate loss per
        image (its value the loss), the mean −log p(x | z), the gradient of each parameter
        that :attr:`gradient_names` names, in its order, and those of :func:`learned_inputs`:
        the graph is traced through its own backward (one graph, faster on a CPU than
        AOTAutograd's forward/backward pair, and what DReG's hooked backward needs)."""
        surrogate = recon = 0.0
        learned: list[torch.Tensor] = []
        for model_trace, guide_trace in particle_traces(self, model, guide, args, kwargs):
            _refuse_score_functions(guide_trace)
            loss = self.particle_surrogate(model_trace, guide_trace)
            n = data_size(model_trace) * self.num_particles
            surrogate = surrogate + loss / n
            recon = recon + reconstruction(model_trace) / n
            learned += trace_parameters(model_trace) + trace_parameters(guide_trace)
        learned, inputs = unique(learned), learned_inputs(args)
        grads = torch.autograd.grad(surrogate, learned + inputs, allow_unused=True)
        of_inputs = [
            torch.zeros_like(a) if g is None else g
            for a, g in zip(inputs, grads[len(learned) :], strict=True)
        ]
        of_params = gradients_by_name(learned, grads[: len(learned)])
        self.gradient_names = tuple(of_params)
        return (surrogate.detach(), recon, *of_params.values(), *of_inputs)

    #: the param-store names of the gradients the last
    #: :meth:`graph_outputs` returned
    gradient_names: tuple[str, ...] = ()

    def particle_surrogate(self, model_trace, guide_trace) -> torch.Tensor:
        """The loss of one particle that the compiled graph computes, summed over images."""
        if self.objective is not None:
            return self.objective.particle_loss(model_trace, guide_trace)
        return particle_loss(model_trace, guide_trace, self.analytic_kl)

    #: whether the KL is analytic where registered (``TraceMeanField_ELBO``)
    analytic_kl = False


def _compile(graph: LossGraph, inputs: tuple) -> Callable:
    """``graph`` (forward and backward, returning the gradients) compiled, now: on a fork
    of torch's random state (noise drawn without any member streams), so a failure leaves
    no trace in the run."""
    devices = cuda_devices(inputs)
    # Inductor's C++ toolchain lookup notes a CUDA_HOME without a CUDA runtime at WARNING
    # level, which says nothing about a CPU step: keep it off the run's output
    toolchain = logging.getLogger("torch.utils.cpp_extension")
    level = toolchain.level
    toolchain.setLevel(max(level, logging.ERROR))
    try:
        compiled = torch.compile(
            graph.graph, **compile_settings(bool(devices)), dynamic=False, fullgraph=True
        )
        with torch.random.fork_rng(devices=devices):
            with torch.no_grad():
                compiled(*graph.params, *graph.draw_noise(), *inputs)
    except Exception as err:  # Inductor's errors have no public base class
        raise NotCapturable(f"torch.compile failed: {reason(err)}") from err
    finally:
        toolchain.setLevel(level)
    return compiled


def compile_settings(on_cuda: bool) -> dict[str, Any]:
    """``torch.compile``'s ``backend``, ``mode`` and ``options`` for a step, from
    ``$PYRO_DVAE_COMPILE_BACKEND`` and ``$PYRO_DVAE_COMPILE_MODE`` (``scripts/benchmark.py``
    compiles its hand-written peer with the same, so that the two compare like for like)."""
    mode = os.environ.get(MODE_VARIABLE) or None
    options = None if mode is not None or on_cuda else inductor_options(backend())
    return {"backend": backend(), "mode": mode, "options": options}


def inductor_options(backend_name: str) -> dict[str, Any] | None:
    """Inductor's options for a CPU graph: its vector width pinned to the ISA whose kernels
    ATen runs (``ATEN_CPU_CAPABILITY``, else the CPU's best).

    Inductor generates its C++ for the ISA that ``ATEN_CPU_CAPABILITY`` names, but its
    on-disk cache key (torch 2.14) leaves that variable out: on an AVX-512 machine a graph
    compiled under ``ATEN_CPU_CAPABILITY=avx2`` and reused without it ran its 8-wide loops
    16-wide and wrote past its buffers (heap corruption); the other way round, the loss came
    out NaN. An explicit width is part of the key, so each ISA gets its own entry.
    """
    if backend_name != "inductor":
        return None
    width = VECTOR_BITS.get(torch.backends.cpu.get_cpu_capability().split("_")[0])
    return None if width is None else {"cpp.simdlen": width}


#: the vector width in bits of ATen's x86 CPU capabilities
VECTOR_BITS = {"AVX512": 512, "AVX2": 256}


def _refuse_score_functions(guide_trace) -> None:
    """The compiled step returns the surrogate's value as the loss, which only a fully
    reparameterised guide makes equal; a score-function site stays eager."""
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            raise NotCapturable(f"site {name!r} has no rsample (score-function gradients)")


def _identity(fn: Callable) -> tuple:
    """The same key for every access of a bound method (``vae.model`` is a new object each time)."""
    owner = getattr(fn, "__self__", None)
    return (id(owner), getattr(fn, "__func__", fn)) if owner is not None else (id(fn),)
