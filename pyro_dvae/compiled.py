"""A Pyro function traced by ``torch.jit`` into one graph, specialised to its input shapes.

Pyro's effect handlers leave a traced ELBO with many tiny operations that do
nothing at a fixed batch shape: plate scales computed from traced sizes and then
multiplied in (×1), ``+ 0`` starts of sums, same-shape ``reshape``/``expand``/
``broadcast_tensors``. Each costs a dispatch forward and an autograd node
backward, which at batch 50 is a visible share of a step. A compiled graph is
only ever called with the shapes it was traced at, so :func:`specialise` makes
those sizes constants, folds constants and drops the no-ops.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pyro
import torch
from pyro import poutine

# Operations whose output shape depends on the data: a graph holding one keeps its sizes dynamic.
_DATA_DEPENDENT_SHAPES = (
    "aten::nonzero",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique",
    "aten::unique_dim",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::repeat_interleave",
    "aten::bincount",
    "aten::index",  # boolean-mask indexing
    "aten::item",
    "aten::_local_scalar_dense",
    "prim::If",
    "prim::Loop",
)


_compiling = 0


def compiling() -> bool:
    """Whether a :class:`CompiledGraph` is being built: the runs of the function and graphs
    now are trials, whose random draws must leave every stream as it was. torch's own
    streams are forked meanwhile; a stream of one's own (a generator) is the caller's to
    spare (:mod:`pyro_dvae.group` draws from a copy of each member's)."""
    return _compiling > 0


class CompiledGraph:
    """``fn`` traced by ``torch.jit`` with the parameters it reads as graph inputs.

    Like ``pyro.ops.jit.trace``, but the parameter tensors are looked up once at
    compile time, not by name through ``pyro.param`` on every call, and the graph
    is :func:`specialise`\\ d to the traced shapes (kept only if it reproduces the
    traced graph's outputs). ``is_current`` says whether the param store still
    holds those parameter tensors.
    """

    def __init__(self, fn: Callable, args: tuple):
        global _compiling
        devices = sorted({a.device.index or 0 for a in args if torch.is_tensor(a) and a.is_cuda})
        # Compiling runs ``fn`` and the graphs a few times; keep those draws off the caller's
        # random state, so that a resumed run matches an uninterrupted one (streams of their
        # own, a group's member streams, ask :func:`compiling`).
        _compiling += 1
        try:
            with torch.random.fork_rng(devices=devices):
                self._compile(fn, args)
        finally:
            _compiling -= 1

    def _compile(self, fn: Callable, args: tuple) -> None:
        with poutine.block(), poutine.trace(param_only=True) as capture:
            fn(*args)
        self.names = sorted(capture.trace.nodes)
        store = dict(pyro.get_param_store().named_parameters())
        self.params = [store[name] for name in self.names]
        names = self.names

        def replayed(*inputs):
            # pyro.param returns the constrained value of each input (itself where unconstrained)
            values = {name: pyro.param(name) for name in names}
            return poutine.replay(fn, params=values)(*inputs[len(names) :])

        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's notice
            traced = torch.jit.trace(replayed, (*self.params, *args), check_trace=False)
        self.traced = traced
        self.function = traced
        graph = specialise(traced.graph)
        if graph is not None:
            try:
                fast = torch._C._create_function_from_graph("pyro_dvae_elbo", graph)
            except (AttributeError, RuntimeError):  # private torch API; keep the traced graph
                return
            if _same_outputs(traced, fast, (*self.params, *args)):
                self.function = fast

    @property
    def graph(self) -> torch._C.Graph:
        return self.function.graph

    def is_current(self) -> bool:
        store = dict(pyro.get_param_store().named_parameters())
        return all(store.get(n) is p for n, p in zip(self.names, self.params, strict=True))

    def __call__(self, *args):
        with torch.jit.optimized_execution(False):
            return self.function(*self.params, *args)


def specialise(graph: torch._C.Graph) -> torch._C.Graph | None:
    """A copy of a traced ``graph`` for its recorded input shapes, with fewer operations.

    Sizes become constants, constants are folded, and operations that are the
    identity at these shapes are removed: ``x * 1``, ``x + 0``, ``x - 0``, and a
    ``reshape``, ``expand`` or ``broadcast_tensors`` that keeps the shape.
    Returns None where that is not safe (an operation with a data-dependent
    output shape, or control flow) or where a torch pass fails. The passes are
    torch's private ``torch._C._jit_pass_*`` functions.
    """
    if any(n.kind() in _DATA_DEPENDENT_SHAPES for n in graph.nodes()):
        return None
    g = graph.copy()
    try:
        for node in list(g.nodes()):
            if node.kind() == "aten::size":
                _size_to_constant(g, node)
        torch._C._jit_pass_constant_propagation(g)
        for node in list(g.nodes()):
            _drop_identity(node)
        torch._C._jit_pass_dce(g)
        g.lint()
    except (AttributeError, RuntimeError):  # torch's private JIT passes changed or refused
        return None
    return g


def aten_ops(graph: torch._C.Graph) -> int:
    """How many ``aten::`` operations a graph runs."""
    return sum(n.kind().startswith("aten::") for n in graph.nodes())


def _sizes(value) -> list[int] | None:
    t = value.type()
    if not isinstance(t, torch._C.TensorType):
        return None
    sizes = t.sizes()
    return list(sizes) if sizes is not None and all(s is not None for s in sizes) else None


def _size_to_constant(g: torch._C.Graph, node) -> None:
    inputs = list(node.inputs())
    sizes = _sizes(inputs[0])
    if sizes is None:
        return
    if len(inputs) == 1:
        value = sizes
    else:
        dim = _constant(inputs[1])
        if not isinstance(dim, int):
            return
        value = sizes[dim]
    const = g.insertConstant(value)
    const.node().moveBefore(node)
    node.output().replaceAllUsesWith(const)


def _constant(value):
    """The Python value of a graph constant (a tensor of one repeated number: that number)."""
    node = value.node()
    if node.kind() != "prim::Constant" or not node.hasAttribute("value"):
        return None
    kind = node.kindOf("value")
    if kind == "t":
        t = node.t("value")
        if t.numel() == 0 or t.is_complex():
            return None
        first = t.reshape(-1)[0]
        return first.item() if bool((t == first).all()) else None
    if kind == "i":
        return node.i("value")
    if kind == "f":
        return node.f("value")
    return None


def _same_type(a, b) -> bool:
    ta, tb = a.type(), b.type()
    return (
        isinstance(ta, torch._C.TensorType)
        and isinstance(tb, torch._C.TensorType)
        and _sizes(a) is not None
        and _sizes(a) == _sizes(b)
        and ta.dtype() == tb.dtype()
        and ta.device() == tb.device()
    )


def _drop_identity(node) -> None:
    kind, ins = node.kind(), list(node.inputs())
    if kind == "prim::ListUnpack":
        _drop_broadcast(node)
        return
    if node.outputsSize() != 1:
        return
    out, keep = node.output(), None
    if kind == "aten::mul" and len(ins) == 2:
        if _constant(ins[1]) == 1 and _same_type(ins[0], out):
            keep = ins[0]
        elif _constant(ins[0]) == 1 and _same_type(ins[1], out):
            keep = ins[1]
    elif kind in ("aten::add", "aten::sub") and len(ins) == 3:
        if _constant(ins[1]) == 0 and _same_type(ins[0], out):
            keep = ins[0]
    elif kind in ("aten::reshape", "aten::expand", "aten::view") and _same_type(ins[0], out):
        keep = ins[0]
    if keep is not None:
        out.replaceAllUsesWith(keep)


def _drop_broadcast(unpack) -> None:
    """``a, b = broadcast_tensors([a, b])`` where every shape already matches: use a, b."""
    producer = unpack.input().node()
    if producer.kind() != "aten::broadcast_tensors":
        return
    listed = producer.input().node()
    if listed.kind() != "prim::ListConstruct":
        return
    sources, outputs = list(listed.inputs()), list(unpack.outputs())
    if len(sources) != len(outputs) or not all(
        _same_type(s, o) for s, o in zip(sources, outputs, strict=True)
    ):
        return
    for s, o in zip(sources, outputs, strict=True):
        o.replaceAllUsesWith(s)


def _same_outputs(reference, candidate, inputs: tuple) -> bool:
    """Whether two graphs give equal outputs for ``inputs`` from the same random state."""
    results = []
    for fn in (reference, candidate):
        torch.manual_seed(0)  # inside CompiledGraph's torch.random.fork_rng
        with torch.no_grad(), torch.jit.optimized_execution(False):
            results.append(fn(*inputs))
    flat = [torch.utils._pytree.tree_leaves(r) for r in results]
    return len(flat[0]) == len(flat[1]) and all(
        torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
        for a, b in zip(*flat, strict=True)
    )
