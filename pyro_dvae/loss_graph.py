"""A Pyro loss captured as one ATen graph, its parameters and its noise as inputs.

``torch.compile`` cannot follow Pyro's effect handlers (Dynamo breaks its graph at
their message dicts), and Pyro's own ELBO reads values back (``warn_if_nan``,
``torch_item``), which no tracer can follow. So the loss (a function that computes
the ELBO's terms itself) runs once under ``make_fx``: Python and Pyro run, and what
is kept is the ATen operations they issued at these shapes. That graph, free of
Python, is what :mod:`.compiled_elbo` hands to ``torch.compile``.

Two kinds of tensor become inputs of the graph rather than constants:

- the parameters it read from Pyro's param store, so the optimiser's updates reach it;
- its random draws. A standard draw (``normal_``, ``rand``, ...) is replaced by an input,
  and :meth:`LossGraph.draw_noise` makes the same calls eagerly, in the same order, before
  every run of the graph: the compiled step takes the same numbers from torch's random
  stream (or a group's member streams) as the eager step, so the two agree to rounding.
  A draw whose values depend on the model's tensors (``bernoulli(probs)``, a Dirichlet's
  sampler) has no such input: the loss is not captured (:class:`NotCapturable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from .fileio import first_line


class NotCapturable(Exception):
    """The loss cannot be captured as one graph; the message says why, in one line."""


#: in-place draws that fill their tensor with noise independent of its values
FILLS = frozenset(
    [
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        torch.Tensor.exponential_,
        torch.Tensor.log_normal_,
        torch.Tensor.cauchy_,
        torch.Tensor.geometric_,
    ]
)
#: draws that make a new tensor from a size (or numbers and a size)
FACTORIES = frozenset([torch.rand, torch.randn, torch.randint])
#: draws that make a new tensor shaped like another, whose values they ignore
LIKES = frozenset([torch.rand_like, torch.randn_like, torch.randint_like])
#: draws whose values depend on their tensor arguments: no fixed input can stand for them
DEPENDENT = frozenset(
    [
        torch.bernoulli,
        torch.Tensor.bernoulli,
        torch.Tensor.bernoulli_,
        torch.multinomial,
        torch.Tensor.multinomial,
        torch.poisson,
        torch.binomial,
        torch.randperm,
        torch.Tensor.random_,
        torch._standard_gamma,  # random functions torch exposes only by these names
        torch._sample_dirichlet,
    ]
)


@dataclass(frozen=True)
class Draw:
    """One random call of the loss, as :meth:`LossGraph.draw_noise` repeats it."""

    func: Callable
    args: tuple
    kwargs: dict
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def __call__(self) -> torch.Tensor:
        if self.func in FILLS:
            target = torch.empty(self.shape, dtype=self.dtype, device=self.device)
            return self.func(target, *self.args[1:], **self.kwargs)
        if self.func in LIKES:
            like = torch.empty(self.shape, dtype=self.dtype, device=self.device)
            return self.func(like, *self.args[1:], **self.kwargs)
        return self.func(*self.args, **self.kwargs)


def _name(func) -> str:
    return f"torch.{getattr(func, '__name__', func)}"


class NoiseTap(TorchFunctionMode):
    """Within it, random calls are recorded (``feed`` None) or answered from ``feed``."""

    def __init__(self, feed: Sequence[torch.Tensor] | None = None):
        super().__init__()
        self.feed = feed
        self.draws: list[Draw] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in DEPENDENT:
            raise NotCapturable(
                f"the loss draws with {_name(func)}, whose values depend on its arguments"
            )
        if func not in FILLS and func not in FACTORIES and func not in LIKES:
            if func is torch.normal:
                raise NotCapturable("the loss draws with torch.normal(mean, std)")
            return func(*args, **kwargs)
        if kwargs.get("generator") is not None or kwargs.get("out") is not None:
            raise NotCapturable(f"the loss draws with {_name(func)} from a generator or into out=")
        if self.feed is not None:
            noise = self.feed[len(self.draws)]
            self.draws.append(None)  # counted
            return args[0].copy_(noise) if func in FILLS else noise
        out = func(*args, **kwargs)
        plain = tuple(None if torch.is_tensor(a) else a for a in args)
        self.draws.append(Draw(func, plain, kwargs, tuple(out.shape), out.dtype, out.device))
        return out


class LossGraph:
    """``fn(*inputs)`` captured for these inputs' shapes: call it as ``fn`` (same outputs,
    to rounding), with its noise drawn by :meth:`draw_noise` first.

    ``fn``: a function of tensors returning a tensor or a tuple of tensors, which reads
    its parameters from Pyro's param store and makes no data-dependent Python decisions;
    ``inputs``: example inputs. ``params``: the unconstrained tensors it reads, which the
    graph takes first; ``draws``: its random calls in order; ``graph``: the
    ``torch.fx.GraphModule``, called as ``graph(*params, *noise, *inputs)``. Capturing
    runs ``fn`` twice, on a fork of torch's random state.
    """

    def __init__(self, fn: Callable, inputs: tuple[torch.Tensor, ...]):
        with torch.random.fork_rng(devices=cuda_devices(inputs)), pyro.validation_enabled(False):
            with poutine.block(), poutine.trace(param_only=True) as params, NoiseTap() as tap:
                fn(*inputs)
            self.draws: list[Draw] = tap.draws
            store = dict(pyro.get_param_store().named_parameters())
            self.names = sorted(params.trace.nodes)
            self.params = [store[name] for name in self.names]
            noise = [d() for d in self.draws]
            n = len(noise)

            def fed(*flat):
                with NoiseTap(feed=flat[:n]) as feed:
                    out = fn(*flat[n:])
                if len(feed.draws) != n:
                    raise NotCapturable("the loss drew differently on a second run")
                return out

            try:
                graph = make_fx(fed)(*noise, *inputs)
            except NotCapturable:
                raise
            except Exception as err:  # a data-dependent read, an unsupported operation
                raise NotCapturable(reason(err)) from err
        self.graph = self._params_as_inputs(graph)

    def _params_as_inputs(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
        """Turn each parameter, which ``make_fx`` keeps as a constant, into a first input."""
        index = {id(p): i for i, p in enumerate(self.params)}
        nodes = list(graph.graph.nodes)
        first = next(n for n in nodes if n.op == "placeholder")
        with graph.graph.inserting_before(first):
            inputs = [graph.graph.placeholder(f"param_{i}") for i in range(len(self.params))]
        for node in nodes:
            if node.op != "get_attr":
                continue
            value = getattr(graph, node.target)
            if id(value) in index:
                node.replace_all_uses_with(inputs[index[id(value)]])
                graph.graph.erase_node(node)
            elif torch.is_tensor(value) and value.requires_grad:
                raise NotCapturable("the loss reads a learned tensor outside Pyro's param store")
        graph.graph.lint()
        graph.recompile()
        return graph

    def is_current(self) -> bool:
        """Whether the param store still holds the tensors the graph takes."""
        store = dict(pyro.get_param_store().named_parameters())
        return all(store.get(n) is p for n, p in zip(self.names, self.params, strict=True))

    def draw_noise(self) -> list[torch.Tensor]:
        """The noise of one run: each recorded random call made again, in order."""
        return [d() for d in self.draws]

    def __call__(self, *inputs: Any):
        return self.graph(*self.params, *self.draw_noise(), *inputs)


def reason(err: BaseException, limit: int = 160) -> str:
    """``Type: message`` in one short line: :func:`~pyro_dvae.fileio.first_line`, cut at its
    first sentence (torch's tracing errors run on for a paragraph)."""
    line = first_line(err).split("! ")[0].split(". ")[0]
    return f"{type(err).__name__}: {line[:limit]}"


def cuda_devices(tensors) -> list[torch.device]:
    """The CUDA devices among ``tensors``, for ``torch.random.fork_rng``."""
    return sorted({t.device for t in tensors if torch.is_tensor(t) and t.is_cuda}, key=str)
